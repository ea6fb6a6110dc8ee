-- 24_linear_kernel_vector.sql: the vector kernel, product and matrix_rows with pgvector.
-- Created for models loaded with --kernel vector (the default where the extension is available);
-- 23_linear_kernel_sql.sql has the same functions in plain SQL.
--
-- product(x [T][n_in], weight, b) -> y[t][j] = sum over i of x[t][i] * W[i][j] + b[j]
--   Each weight row is a pgvector vector of n_embd floats (01_matrices.sql); the input is cut the
--   same way, one vector per (position, chunk). Then y is pgvector's inner product of the two
--   rows, summed over the chunks (one chunk, except for mlp.c_proj's 4 * n_embd inputs):
--       y[t][j] = sum over c of  -(W[j, c] <#> x[t, c])  + b[j]
--   (<#> is the negative inner product, so that an index can sort by it; we only negate it.)
--   pgvector computes in float32: the logits differ from float64 NumPy by ~1e-6 (README, Kernels).

-- (t, c) -> v: row_chunks(x, width) as pgvector vectors; the products cut their input by
-- config.chunk, attention (32_attention_kernel_vector.sql) by head. Each piece is built by an
-- ARRAY(...) sub-query rather than row_chunks' LATERAL array_agg: 4-8x faster here (these run
-- without parallel workers, which is what the LATERAL form is for), e.g. 8 rows of 768 cut by
-- head 1.2 -> 0.2 ms.
CREATE FUNCTION row_vectors(x float8[], width int)
RETURNS TABLE (t int, c int, v vector)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
ROWS 12
BEGIN ATOMIC
    SELECT r.t, p.c, ARRAY(SELECT u.e FROM unnest(x[r.t:r.t][p.c * width + 1:(p.c + 1) * width]) WITH ORDINALITY AS u(e, k)
                            ORDER BY u.k)::vector
      FROM generate_series(1, array_length(x, 1)) AS r(t)
     CROSS JOIN generate_series(0, array_length(x, 2) / width - 1) AS p(c);
END;

-- (t, c) -> v: position t's input, chunk c, as a vector of config.chunk floats
CREATE FUNCTION input_vectors(x float8[])
RETURNS TABLE (t int, c int, v vector)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
ROWS 4
BEGIN ATOMIC
    SELECT * FROM row_vectors(x, (SELECT cf.chunk FROM config AS cf));
END;

-- [T][n_out]: x @ W + b (b NULL: no bias), plus residual[t][j] (NULL: none), through GELU if gelu.
-- One pass over the weight rows in (row, chunk) order computes, for every position t at once, the
-- inner products with t's input chunks, gathered by an ordered array_agg per position (the rows
-- arrive in the primary key's order, so nothing is sorted); for mlp.c_proj each output sums its
-- row's chunks. No (t, j) rows are formed, sorted or grouped: a batch of positions reads each
-- weight row once, and the arrays come out whole.
CREATE FUNCTION product(x float8[], weight text, b real[], residual float8[], gelu boolean)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET max_parallel_workers_per_gather = 0     -- one ordered pass; workers cannot share ordered aggregates
SET enable_sort = off                       -- the order comes from the primary key's index: sorting the
                                            -- wide weight rows instead spilled them to disk
AS $$
DECLARE
    n_t      int := array_length(x, 1);
    xs       vector[];          -- [T * n_chunks] input chunks, position after position
    n_chunks int;
    y        float8[] := '{}';  -- [T][n_out]
    part     float8[];          -- [positions of this block][n_out * n_chunks]
    block    int := 8;          -- positions per query, one array_agg each: a query's input vectors are
                                -- an array, and finding its k-th element walks the ones before it
    -- y[t][j] from the inner product(s) s: bias, residual, GELU
    finish   text := CASE WHEN gelu THEN 'gelu(%s + coalesce($3[%2$s], 0))'
                          ELSE '%s + coalesce($3[%2$s], 0) + coalesce($4[%3$s][%2$s], 0)' END;
BEGIN
    SELECT array_agg(iv.v ORDER BY iv.t, iv.c), max(iv.c) + 1 INTO xs, n_chunks FROM input_vectors(x) AS iv;
    FOR t0 IN 0 .. n_t - 1 BY block LOOP
        IF n_chunks = 1 THEN    -- (t) -> y[t]: one inner product per weight row
            EXECUTE format('SELECT ARRAY[%s] FROM matrices AS m WHERE m.name = $2',
                           (SELECT string_agg(format('array_agg(' || finish || ' ORDER BY m.row)',
                                                     format('-(m.w <#> $1[%s])', t - t0 + 1), 'm.row + 1', t + 1),
                                              ', ' ORDER BY t)
                              FROM generate_series(t0, least(t0 + block, n_t) - 1) AS t))
               INTO part USING xs[t0 * n_chunks + 1:(t0 + block) * n_chunks], weight, b, residual;
        ELSE                    -- (t) -> every chunk's inner product, in (row, chunk) order, then summed per row
            EXECUTE format('SELECT ARRAY[%s] FROM matrices AS m WHERE m.name = $2',
                           (SELECT string_agg(format('array_agg(-(m.w <#> $1[%s + m.chunk]) ORDER BY m.row, m.chunk)',
                                                     (t - t0) * n_chunks + 1), ', ' ORDER BY t)
                              FROM generate_series(t0, least(t0 + block, n_t) - 1) AS t))
               INTO part USING xs[t0 * n_chunks + 1:(t0 + block) * n_chunks], weight;
            EXECUTE format('SELECT array_agg(s.v ORDER BY r.t)
                              FROM generate_series(1, array_length($1, 1)) AS r(t)
                             CROSS JOIN LATERAL (SELECT array_agg(%s ORDER BY j) AS v
                                                   FROM generate_series(1, array_length($1, 2) / %s) AS j) AS s',
                           format(finish, (SELECT string_agg(format('$1[r.t][(j - 1) * %s + %s]', n_chunks, c), ' + ')
                                             FROM generate_series(1, n_chunks) AS c), 'j', 'r.t + ' || t0),
                           n_chunks)
               INTO part USING part, NULL::int, b, residual;
        END IF;
        y := array_cat(y, part);
    END LOOP;
    RETURN CASE WHEN y = '{}' THEN NULL ELSE y END;
END
$$;

-- (name, rows[]) -> [n][n_in]: whole rows of a matrix, e.g. the embeddings of some tokens
CREATE FUNCTION matrix_rows(weight text, wanted int[])
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT array_agg(r.v ORDER BY r.ord)
      FROM (SELECT q.ord, array_agg(u.e ORDER BY m.chunk, u.i) AS v     -- (ord) -> the row, chunks in order
              FROM unnest(wanted) WITH ORDINALITY AS q(row, ord)
              JOIN matrices AS m ON m.name = weight AND m.row = q.row
             CROSS JOIN LATERAL unnest(m.w::real[]::float8[]) WITH ORDINALITY AS u(e, i)
             GROUP BY q.ord) AS r;
END;
