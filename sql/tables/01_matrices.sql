-- tables/01_matrices.sql: the table holding every 2-D weight, laid out for fast matrix-vector products,
-- and matrix_cells, the same weights one value per row.
--
-- (name, row, chunk) -> weights c*chunk .. c*chunk+chunk-1 of row `row`
--   A weight matrix W is stored by output unit: row j holds the weights of output j, cut into
--   chunks of config.chunk inputs. Conv1D weights ([in, out] in the checkpoint) are transposed on
--   load, so row = output unit. wte: row = token id (the LM head multiplies by it too); wpe: row
--   = position. The table is partitioned by name, one partition per tensor, so a product reads
--   only its own weights (the partition is chosen when the query starts).
--
--   How a chunk is stored depends on the model's kernel (config.kernel, chosen at load time):
--   sql     w0 .. w{chunk-1} real: 256 plain columns, so that a product is one generated expression
--           per row, w0*x0 + w1*x1 + ..., which PostgreSQL evaluates far faster than unnest()-ing
--           arrays or joining (row, col, value) triples (docs/performance.md).
--   vector  w vector(chunk): one pgvector value of n_embd floats, so that a product is pgvector's
--           inner product (C code) of a weight row with an input row. Stored PLAIN (in the row,
--           never out of line in TOAST, which makes reading the LM head several times slower).
DO $$
DECLARE
    cfg config := (SELECT c FROM config AS c);
    t record;
    part text;
BEGIN
    EXECUTE format(
        'CREATE TABLE matrices (name text NOT NULL, row int NOT NULL, chunk int NOT NULL, %s, '
        'PRIMARY KEY (name, row, chunk)) PARTITION BY LIST (name)',
        CASE cfg.kernel
            WHEN 'sql' THEN (SELECT string_agg(format('w%s real', i), ', ' ORDER BY i)
                               FROM generate_series(0, cfg.chunk - 1) AS i)
            WHEN 'vector' THEN format('w vector(%s)', cfg.chunk)
        END);
    FOR t IN SELECT name FROM tensors WHERE stored = 'matrices' ORDER BY name LOOP
        part := 'matrices_' || regexp_replace(t.name, '[^a-z0-9]+', '_', 'g');
        EXECUTE format('CREATE TABLE %I PARTITION OF matrices FOR VALUES IN (%L)', part, t.name);
        IF cfg.kernel = 'vector' THEN
            EXECUTE format('ALTER TABLE %I ALTER COLUMN w SET STORAGE PLAIN', part);
        END IF;
        UPDATE tensors SET partition = part WHERE name = t.name;
    END LOOP;

    -- matrix_cells: (name, row, col) -> value, every weight as one row, derived from the chunks
    -- above (no extra storage). For a Conv1D weight, row is the output unit j and col the input i,
    -- i.e. value = W[i][j] of the checkpoint; for wte/wpe, row is the token/position.
    EXECUTE format($v$
CREATE VIEW matrix_cells AS
SELECT m.name, m.row, m.chunk * %1$s + (u.k - 1)::int AS col, u.value
  FROM matrices AS m
 CROSS JOIN LATERAL unnest(%2$s) WITH ORDINALITY AS u(value, k)
$v$, cfg.chunk,
        CASE cfg.kernel
            WHEN 'sql' THEN 'ARRAY[' || (SELECT string_agg(format('m.w%s', i), ', ' ORDER BY i)
                                           FROM generate_series(0, cfg.chunk - 1) AS i) || ']::float8[]'
            WHEN 'vector' THEN 'm.w::real[]::float8[]'
        END);
END
$$;
