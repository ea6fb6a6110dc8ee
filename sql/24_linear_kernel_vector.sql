-- 24_linear_kernel_vector.sql: the vector kernel, linear_rows and matrix_rows with pgvector.
-- Created for models loaded with --kernel vector (the default where the extension is available);
-- 23_linear_kernel_sql.sql has the same functions in plain SQL.
--
-- linear_rows(x [T][n_in], weight) -> (t, j) -> y = sum over i of x[t][i] * W[i][j]
--   Each weight row is a pgvector vector of n_embd floats (01_matrices.sql); the input is cut the
--   same way, one vector per (position, chunk). Then y is pgvector's inner product of the two
--   rows, summed over the chunks (one chunk, except for mlp.c_proj's 4 * n_embd inputs):
--       y[t][j] = sum over c of  -(W[j, c] <#> x[t, c])
--   (<#> is the negative inner product, so that an index can sort by it; we only negate it.)
--   pgvector computes in float32: the logits differ from float64 NumPy by ~1e-6 (README, Kernels).

-- (t, c) -> v: row_chunks(x, width) as pgvector vectors; the products cut their input by
-- config.chunk, attention (32_attention_kernel_vector.sql) by head
CREATE FUNCTION row_vectors(x float8[], width int)
RETURNS TABLE (t int, c int, v vector)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
ROWS 12
BEGIN ATOMIC
    SELECT r.t, r.c, r.v::vector FROM row_chunks(x, width) AS r;
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

-- (t, j) -> y: output unit j at position t, without bias
CREATE FUNCTION linear_rows(x float8[], weight text)
RETURNS TABLE (t int, j int, y float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET min_parallel_table_scan_size = '64MB'   -- the LM head (wte) runs on two cores; smaller weights on one:
SET parallel_setup_cost = 100               -- there starting workers (each cutting the input again) and
SET parallel_tuple_cost = 0.0001            -- gathering their rows cost more than they save, at any T
SET work_mem = '64MB'                       -- the (t, j) groups of a long prompt stay in memory
AS $$
DECLARE
    n_chunks int := (SELECT s.shape[1] / cf.chunk FROM tensors AS s, config AS cf  -- input chunks per row
                      WHERE s.name = weight AND s.name NOT IN ('wte.weight', 'wpe.weight'));
BEGIN
    IF coalesce(n_chunks, 1) = 1 THEN           -- rows of n_embd inputs: one inner product per (t, j)
        RETURN QUERY
        SELECT xs.t, m.row, -(m.w <#> xs.v)
          FROM matrices AS m
          JOIN input_vectors(x) AS xs ON xs.c = m.chunk
         WHERE m.name = weight;
    ELSE                                        -- mlp.c_proj's 4 * n_embd inputs: summed over the chunks
        RETURN QUERY
        SELECT p.t, p.row, sum(p.y)
          FROM (SELECT xs.t, m.row, -(m.w <#> xs.v) AS y   -- (t, row, chunk) -> one chunk's inner product
                  FROM matrices AS m
                  JOIN input_vectors(x) AS xs ON xs.c = m.chunk
                 WHERE m.name = weight
                OFFSET 0) AS p
         GROUP BY p.t, p.row;
        -- OFFSET 0 keeps the sub-query whole: the sum then groups narrow (t, row, y) rows; with the
        -- inner product inside sum(), the wide vectors reached the aggregate, which spilled to disk.
    END IF;
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
