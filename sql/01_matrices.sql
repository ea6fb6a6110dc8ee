-- 01_matrices.sql: the table holding every 2-D weight, laid out for fast matrix-vector products.
--
-- (name, row, chunk) -> w0 .. w{chunk-1}
--   A weight matrix W is stored by output unit: row j, chunk c holds the inputs
--   c*chunk .. c*chunk+chunk-1 of output j as plain real columns. A product y = x @ W then is
--   one generated expression per row, sum(w0*x0 + w1*x1 + ...), which PostgreSQL evaluates far
--   faster than unnest()-ing arrays or joining (row, col, value) triples (see README, Benchmarks).
--   Conv1D weights ([in, out] in the checkpoint) are transposed on load, so row = output unit.
--   wte: row = token id (the LM head multiplies by it too); wpe: row = position.
DO $$
DECLARE
    width int := (SELECT chunk FROM config);
BEGIN
    EXECUTE format(
        'CREATE TABLE matrices (name text NOT NULL, row int NOT NULL, chunk int NOT NULL, %s, '
        'PRIMARY KEY (name, row, chunk))',
        (SELECT string_agg(format('w%s real NOT NULL', i), ', ' ORDER BY i)
           FROM generate_series(0, width - 1) AS i));
END
$$;
