-- 23_linear_kernel_sql.sql: the sql kernel, product and matrix_rows on stock PostgreSQL (no extension).
-- Created for models loaded with --kernel sql; 24_linear_kernel_vector.sql has the same functions for pgvector.
--
-- product(x, weight, b, residual, gelu) -> [T][n_out] = x @ W + b (+ residual, or through GELU):
-- the (t, j) -> y rows of linear_rows, finished and gathered into one array per position t.
--
-- linear_rows(x [T][n_in], weight) -> (t, j) -> y = sum over i of x[t][i] * W[i][j]
--   The weights are rows of 256 real columns (01_matrices.sql). The input is cut the same way, one
--   row per (position, chunk) with columns x0 .. x{chunk-1} (input_chunks), and each (weight row,
--   input row) pair computes one generated expression
--       w0 * x0 + w1 * x1 + ... + w{chunk-1} * x{chunk-1}
--   summed over the chunks. The functions are generated at load time because the number of
--   columns (config.chunk) is fixed per model.
--
--   linear_rows runs its query with RETURN QUERY, the one way a function's query may use
--   parallel workers (PostgreSQL 14+): the product is then shared between the cores.

DO $do$
DECLARE
    w int := (SELECT chunk FROM config);
BEGIN
    -- (t, c) -> x0 .. x{chunk-1}: position t's input, chunk c, as columns
    EXECUTE format('CREATE TYPE input_chunk AS (t int, c int, %s)', terms('x%1$s float8', w, ', '));
    EXECUTE format($fn$
CREATE FUNCTION input_chunks(x float8[])
RETURNS SETOF input_chunk
LANGUAGE sql IMMUTABLE PARALLEL SAFE
ROWS 12                                     -- T * chunks; the default guess of 1000 misleads the planner
BEGIN ATOMIC
    SELECT r.t, r.c, %2$s
      FROM row_chunks(x, %1$s) AS r;
END
$fn$, w, terms('r.v[%1$s + 1]', w, ', '));

    -- (t, j) -> y: output unit j at position t, without bias
    EXECUTE format($fn$
CREATE FUNCTION linear_rows(x float8[], weight text)
RETURNS TABLE (t int, j int, y float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET min_parallel_table_scan_size = '1MB'   -- a product over 1 MB of weights is worth two cores
SET parallel_setup_cost = 100
SET work_mem = '64MB'                       -- the (t, j) groups of a long prompt stay in memory
SET jit = off                               -- JIT-compiling the generated expression on every call made
                                            -- PostgreSQL 15 ~12x slower (README, Benchmarks)
AS $body$
DECLARE
    -- the input cut once, here, and handed to the parallel workers as a value: as a function
    -- scan inside the query, each worker planned and ran input_chunks again (~6 ms a product)
    xs input_chunk[] := ARRAY(SELECT i FROM input_chunks(x) AS i);
BEGIN
    RETURN QUERY
    SELECT p.t, p.row, sum(p.y)
      FROM (SELECT xs.t, m.row,     -- (t, row, chunk) -> one chunk's share of the dot product
                   unnest(ARRAY[%1$s]) AS y
              FROM matrices AS m
              JOIN unnest(xs) AS xs ON xs.c = m.chunk
             WHERE m.name = weight) AS p
     GROUP BY p.t, p.row;
    -- unnest(ARRAY[...]) is a fence: a subquery with a set-returning function is not merged
    -- into the outer query, so the products are computed (in the parallel workers) before the
    -- narrow (t, row, y) rows are summed, instead of wide weight rows reaching the sum.
END
$body$
$fn$, terms('m.w%1$s * xs.x%1$s', w, ' + '));
END
$do$;

-- (name, rows[]) -> [n][n_in]: whole rows of a matrix, e.g. the embeddings of some tokens
DO $do$
DECLARE
    w int := (SELECT chunk FROM config);
BEGIN
    EXECUTE format($fn$
CREATE FUNCTION matrix_rows(weight text, wanted int[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $body$
DECLARE
    out float8[];
BEGIN
    SELECT array_agg(r.v ORDER BY r.ord) INTO out
      FROM (SELECT q.ord, array_agg(u.e ORDER BY m.chunk, u.i) AS v    -- (ord) -> the row, chunks in order
              FROM unnest(wanted) WITH ORDINALITY AS q(row, ord)
              JOIN matrices AS m ON m.name = weight AND m.row = q.row
             CROSS JOIN LATERAL unnest(ARRAY[%1$s]::float8[]) WITH ORDINALITY AS u(e, i)
             GROUP BY q.ord) AS r;
    RETURN out;
END
$body$
$fn$, terms('m.w%1$s', w, ', '));
END
$do$;

-- [T][n_out]: x @ W + b (b NULL: no bias), plus residual[t][j] (NULL: none), through GELU if gelu;
-- from the rows of linear_rows
CREATE FUNCTION product(x float8[], weight text, b real[], residual float8[], gelu boolean)
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
