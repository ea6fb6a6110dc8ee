-- kernels/vector/45_fused.sql: the vector kernel's fused sub-layers. Each replaces the model's
-- function of the same name and signature (model/33_attention.sql, model/34_mlp.sql) by one that
-- computes the same values with pgvector vectors passed from one product to the next, instead of
-- float8 arrays that the next product would read out and cut into vectors again (they are rounded
-- to float32 there either way). tests/test_kernels.py checks each against the composition that
-- trace() shows. Loaded after the model's files (the loader's order: kernels/contract.sql).

-- residual + mha(x), and the extended caches, as model/33_attention.sql's mha: qkv comes out of its
-- product as one vector of 3C floats per row, cut once for every sequence by subvector: the (row,
-- head) queries and keys, and the value rows as floats (the cache keeps values by column,
-- 22_attention.sql); the heads' outputs go into W_proj as vectors.
CREATE OR REPLACE FUNCTION mha(x float8[], layer int, lengths int[], past kv[], residual float8[] DEFAULT NULL,
                    OUT y float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    pre    text := format('h.%s.attn.', layer);
    c      int := (SELECT cf.n_embd FROM config AS cf);
    chunk  int := (SELECT cf.chunk FROM config AS cf);
    n_t    int := array_length(x, 1);
    qkv    vector[];            -- [T] q | k | v of each row, 3C floats
    q      vector[];            -- [T][n_head] (t, h) queries, D floats each
    k      vector[];            -- [T][n_head] (t, h) keys
    v      real[];              -- [T][C] values
    a      vector[] := '{}';    -- [T] attention output rows, C floats each, sequence after sequence
    s      record;              -- rows s.first_row .. s.last_row are sequence s.seq's
BEGIN
    qkv := (linear_vectors(row_vectors(x, chunk), n_t, pre || 'c_attn.weight', pre || 'c_attn.bias',
                           as_vectors => true)).yv;
    q := head_pieces(qkv, 1);                   -- floats 1 .. C of each row, per head
    k := head_pieces(qkv, c + 1);               -- C+1 .. 2C
    v := ARRAY(SELECT subvector(r.v, 2 * c + 1, c)::real[] FROM unnest(qkv) WITH ORDINALITY AS r(v, t)
                ORDER BY r.t);                  -- [T][C] floats 2C+1 .. 3C
    present := past;                                                                 -- a sequence without rows keeps its cache
    FOR s IN SELECT * FROM sequence_rows(lengths) LOOP
        present[s.seq] := kv_append(past[s.seq], k => k[s.first_row:s.last_row][:],
                                    v => v[s.first_row:s.last_row][:]);                 -- S = past + n
        a := a || attention_heads(q[s.first_row:s.last_row][:], present[s.seq]);        -- + n rows
    END LOOP;
    y := (linear_vectors(vector_pieces(a, chunk), n_t, pre || 'c_proj.weight', pre || 'c_proj.bias',
                         residual => residual)).y;                                    -- [T][C]
END
$$;

-- residual + mlp(x), as model/34_mlp.sql's mlp: the hidden activations come out of the first
-- product as one vector of 4C floats per row and go into the second cut by subvector.
CREATE OR REPLACE FUNCTION mlp(x float8[], layer int, residual float8[] DEFAULT NULL)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    chunk  int := (SELECT cf.chunk FROM config AS cf);
    n_t    int := array_length(x, 1);
    hidden vector[];        -- [T] gelu(x @ W_fc + b_fc), 4C floats each
BEGIN
    hidden := (linear_vectors(row_vectors(x, chunk), n_t, format('h.%s.mlp.c_fc.weight', layer),
                              format('h.%s.mlp.c_fc.bias', layer), gelu => true, as_vectors => true)).yv;
    RETURN (linear_vectors(vector_pieces(hidden, chunk), n_t, format('h.%s.mlp.c_proj.weight', layer),
                           format('h.%s.mlp.c_proj.bias', layer), residual => residual)).y;  -- [T][C]
END
$$;
