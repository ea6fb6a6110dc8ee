-- kernels/sql/21_linear.sql: the sql kernel's products, on stock PostgreSQL (no extension):
-- matmul, lm_head and embedding_rows of the contract (kernels/contract.sql).
--
-- The weights are rows of config.chunk real columns w0 .. w{chunk-1} (tables/01_matrices.sql). The
-- input is cut the same way, one row per (position, chunk) with columns x0 .. x{chunk-1}, and each
-- (weight row, input row) pair computes one expression written out in full,
--     w0 * x0 + w1 * x1 + ... + w{chunk-1} * x{chunk-1}
-- summed over the chunks. PostgreSQL evaluates such an expression far faster than it unnests arrays
-- or joins (row, col, value) triples (docs/performance.md). The number of columns is the model's,
-- so the queries that name them are written by the small functions below, from config.chunk.

-- the expressions of the template for i = 0 .. n-1, joined by sep:
--   terms('w%1$s * x%1$s', 3, ' + ') = 'w0 * x0 + w1 * x1 + w2 * x2'
CREATE FUNCTION terms(template text, n int, sep text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT string_agg(format(template, i), sep ORDER BY i) FROM generate_series(0, n - 1) AS i);

-- (t, c) -> x0 .. x{chunk-1}: position t's input, chunk c, as columns (a type: its shape is the model's)
DO $$
BEGIN
    EXECUTE format('CREATE TYPE input_chunk AS (t int, c int, %s)',
                   terms('x%1$s float8', (SELECT cf.chunk FROM config AS cf), ', '));
END
$$;

-- The expression that cuts x [T][n_in] into input_chunk rows, for a chunk width. For chunk = 2:
--   ARRAY(SELECT ROW(r.t, r.c, r.v[0 + 1], r.v[1 + 1])::input_chunk FROM row_chunks(x, 2) AS r)
CREATE FUNCTION input_chunks_query(chunk int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN format('ARRAY(SELECT ROW(r.t, r.c, %s)::input_chunk FROM row_chunks(x, %s) AS r)',
              terms('r.v[%1$s + 1]', chunk, ', '), chunk);

-- The query of linear_rows, for a chunk width. For chunk = 2:
--   SELECT p.t, p.row, sum(p.y)
--     FROM (SELECT xs.t, m.row, unnest(ARRAY[m.w0 * xs.x0 + m.w1 * xs.x1]) AS y
--             FROM matrices AS m
--             JOIN unnest(xs) AS xs ON xs.c = m.chunk
--            WHERE m.name = weight) AS p
--    GROUP BY p.t, p.row
-- unnest(ARRAY[...]) is a fence: a sub-query with a set-returning function is not merged into the
-- outer one, so the products are computed (in the parallel workers) before the narrow (t, row, y)
-- rows are summed, instead of wide weight rows reaching the sum.
CREATE FUNCTION linear_rows_query(chunk int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN format('SELECT p.t, p.row, sum(p.y)
  FROM (SELECT xs.t, m.row, unnest(ARRAY[%s]) AS y
          FROM matrices AS m
          JOIN unnest(xs) AS xs ON xs.c = m.chunk
         WHERE m.name = weight) AS p
 GROUP BY p.t, p.row', terms('m.w%1$s * xs.x%1$s', chunk, ' + '));

-- (t, j) -> y = sum over i of x[t][i] * W[i][j]: output unit j at position t, without bias. Created
-- here, with the two queries above written into its body, so that PL/pgSQL keeps their plans.
-- RETURN QUERY is the one way a function's query may use parallel workers: the product is then
-- shared between the cores.
DO $$
BEGIN
    EXECUTE format($function$
CREATE FUNCTION linear_rows(x float8[], weight text)
RETURNS TABLE (t int, j int, y float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET min_parallel_table_scan_size = '1MB'   -- a product over 1 MB of weights is worth two cores
SET parallel_setup_cost = 100
SET work_mem = '64MB'                       -- the (t, j) groups of a long prompt stay in memory
AS $body$
DECLARE
    -- the input cut once, here, and handed to the parallel workers as a value (as a function scan
    -- inside the query, each worker would plan and cut it again)
    xs input_chunk[] := %s;
BEGIN
    RETURN QUERY %s;
END
$body$
$function$, input_chunks_query(chunk => (SELECT cf.chunk FROM config AS cf)),
            linear_rows_query(chunk => (SELECT cf.chunk FROM config AS cf)));
END
$$;

-- The query of embedding_rows (a weight row's chunks as one float8 array), for a chunk width. For chunk = 2:
--   SELECT array_agg(r.v ORDER BY r.ord)
--     FROM (SELECT q.ord, array_agg(u.e ORDER BY m.chunk, u.i) AS v
--             FROM unnest(wanted) WITH ORDINALITY AS q(row, ord)
--             JOIN matrices AS m ON m.name = weight AND m.row = q.row
--            CROSS JOIN LATERAL unnest(ARRAY[m.w0, m.w1]::float8[]) WITH ORDINALITY AS u(e, i)
--            GROUP BY q.ord) AS r
CREATE FUNCTION embedding_rows_query(chunk int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN format('SELECT array_agg(r.v ORDER BY r.ord)
  FROM (SELECT q.ord, array_agg(u.e ORDER BY m.chunk, u.i) AS v
          FROM unnest(wanted) WITH ORDINALITY AS q(row, ord)
          JOIN matrices AS m ON m.name = weight AND m.row = q.row
         CROSS JOIN LATERAL unnest(ARRAY[%s]::float8[]) WITH ORDINALITY AS u(e, i)
         GROUP BY q.ord) AS r', terms('m.w%1$s', chunk, ', '));

-- (name, rows[]) -> [n][n_in]: whole rows of a matrix, e.g. the embeddings of some tokens (created
-- with the query above as its body)
DO $$
BEGIN
    EXECUTE format($function$
CREATE FUNCTION embedding_rows(weight text, wanted int[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $body$
BEGIN
    RETURN (%s);
END
$body$
$function$, embedding_rows_query(chunk => (SELECT cf.chunk FROM config AS cf)));
END
$$;

-- [T][n_out]: x @ W + b (b NULL: no bias), plus residual[t][j] (NULL: none), through GELU if gelu;
-- from the rows of linear_rows
CREATE FUNCTION matmul(x float8[], weight text, b real[], residual float8[] DEFAULT NULL, gelu boolean DEFAULT false)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE        -- PL/pgSQL keeps the query's plan for the session
SET search_path FROM CURRENT
AS $$
DECLARE
    y float8[];
BEGIN
    WITH outputs AS (           -- (t) -> y[] + b: position t's outputs in unit order
        SELECT r.t, array_agg(CASE WHEN gelu THEN gelu(r.y + coalesce(b[r.j + 1], 0))
                                   ELSE r.y + coalesce(b[r.j + 1], 0) + coalesce(residual[r.t][r.j + 1], 0) END
                              ORDER BY r.j) AS v
          FROM linear_rows(x, weight) AS r
         GROUP BY r.t
    )
    SELECT array_agg(o.v ORDER BY o.t) INTO y FROM outputs AS o;
    RETURN y;
END
$$;

-- logits [T][V] = x @ wte^T (GPT-2's LM head: the token embeddings, tied), and best[t]: the first of
-- position t's highest logits, the token greedy decoding takes, found from each position's array
-- as it is gathered (array_position of its max)
CREATE FUNCTION lm_head(x float8[], OUT logits float8[], OUT best int[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    WITH outputs AS (           -- (t) -> position t's logits in token order, and the highest
        SELECT r.t, array_agg(r.y ORDER BY r.j) AS v, max(r.y) AS top
          FROM linear_rows(x, 'wte.weight') AS r
         GROUP BY r.t
    )
    SELECT array_agg(o.v ORDER BY o.t), array_agg(array_position(o.v, o.top) - 1 ORDER BY o.t)
      INTO logits, best
      FROM outputs AS o;
END
$$;
