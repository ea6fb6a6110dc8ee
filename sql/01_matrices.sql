-- 01_matrices.sql: the table holding every 2-D weight, laid out for fast matrix-vector products.
--
-- (name, row, chunk) -> w0 .. w{chunk-1}
--   A weight matrix W is stored by output unit: row j, chunk c holds the inputs
--   c*chunk .. c*chunk+chunk-1 of output j as plain real columns. A product y = x @ W then is
--   one generated expression per row, w0*x0 + w1*x1 + ..., which PostgreSQL evaluates far
--   faster than unnest()-ing arrays or joining (row, col, value) triples (see README, Benchmarks).
--   Conv1D weights ([in, out] in the checkpoint) are transposed on load, so row = output unit.
--   wte: row = token id (the LM head multiplies by it too); wpe: row = position.
--   The table is partitioned by name, one partition per tensor, so a product reads only its own
--   weights (the partition is chosen when the query starts).
DO $$
DECLARE
    width int := (SELECT chunk FROM config);
    t record;
    part text;
BEGIN
    EXECUTE format(
        'CREATE TABLE matrices (name text NOT NULL, row int NOT NULL, chunk int NOT NULL, %s, '
        'PRIMARY KEY (name, row, chunk)) PARTITION BY LIST (name)',
        (SELECT string_agg(format('w%s real', i), ', ' ORDER BY i)
           FROM generate_series(0, width - 1) AS i));
    FOR t IN SELECT name FROM tensors WHERE stored = 'matrices' ORDER BY name LOOP
        part := 'matrices_' || regexp_replace(t.name, '[^a-z0-9]+', '_', 'g');
        EXECUTE format('CREATE TABLE %I PARTITION OF matrices FOR VALUES IN (%L)', part, t.name);
        UPDATE tensors SET partition = part WHERE name = t.name;
    END LOOP;
END
$$;
