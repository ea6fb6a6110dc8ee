-- inspect/72_linear_plain.sql: the same product as linear() (model/32_linear.sql), written the way
-- the formula reads.
--
-- It reads matrix_cells (tables/01_matrices.sql): (name, row, col) -> value, one row per weight.

-- y[t][j] = sum_i x[t][i] * W[i][j] + b[j], as a join of (position, input) cells with
-- (output, input) weights. Slow (a row per multiply-add), for reading and for checking:
-- tests/test_forward.py asserts linear_plain = linear.
CREATE FUNCTION linear_plain(x float8[], weight text, bias text)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH xs AS (                -- (t, i) -> x[t][i]
        SELECT ((u.k - 1) / array_length(x, 2) + 1)::int AS t, ((u.k - 1) % array_length(x, 2))::int AS i, u.e AS value
          FROM unnest(x) WITH ORDINALITY AS u(e, k)
    ),
    ys AS (                     -- (t, j) -> sum over i of x[t][i] * W[i][j], plus b[j]
        SELECT xs.t, w.row AS j,
               sum(xs.value * w.value) + coalesce((SELECT v.value[w.row + 1] FROM vectors AS v WHERE v.name = bias), 0) AS y
          FROM xs
          JOIN matrix_cells AS w ON w.col = xs.i
         WHERE w.name = weight
         GROUP BY xs.t, w.row
    )
    SELECT array_agg(r.v ORDER BY r.t)
      FROM (SELECT ys.t, array_agg(ys.y ORDER BY ys.j) AS v FROM ys GROUP BY ys.t) AS r;
END;
