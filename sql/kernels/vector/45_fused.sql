-- kernels/vector/45_fused.sql: the vector kernel's fused sub-layers. Each replaces the model's
-- function of the same name and signature (model/33_attention.sql, model/34_mlp.sql) by one that
-- computes the same values with pgvector vectors passed from one product to the next, instead of
-- float8 arrays that the next product would read out and cut into vectors again (they are rounded
-- to float32 there either way). tests/test_kernels.py checks each against the composition that
-- trace() shows. Loaded after the model's files (the loader's order: kernels/contract.sql).

-- residual + mha(x), and the extended caches, as model/33_attention.sql's mha: qkv comes out of its
-- product as one vector of 3C floats per row, cut into the (row, head) queries, keys and values by
-- subvector once for every sequence; the heads' outputs go into W_proj as vectors.
CREATE OR REPLACE FUNCTION mha(x float8[], layer int, lengths int[], past kv[], residual float8[] DEFAULT NULL,
                    OUT y float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    pre    text := format('h.%s.attn.', layer);
    n_head int := (SELECT cf.n_head FROM config AS cf);
    c      int := (SELECT cf.n_embd FROM config AS cf);
    d      int := c / n_head;
    chunk  int := (SELECT cf.chunk FROM config AS cf);
    n_t    int := array_length(x, 1);
    qkv    vector[];            -- [T] q | k | v of each row, 3C floats
    q      vector[];            -- [T * n_head] (t, h) queries, D floats each
    k      vector[];            -- keys
    v      vector[];            -- values
    a      vector[] := '{}';    -- [T] attention output rows, C floats each, sequence after sequence
    r      int := 0;            -- rows before sequence seq
    n      int;
BEGIN
    qkv := (linear_vectors(row_vectors(x, chunk), n_t, pre || 'c_attn.weight', pre || 'c_attn.bias',
                           as_vectors => true)).yv;
    q := vector_pieces(qkv, d, 1, c);           -- floats 1 .. C of each row, per head
    k := vector_pieces(qkv, d, c + 1, c);       -- C+1 .. 2C
    v := vector_pieces(qkv, d, 2 * c + 1, c);   -- 2C+1 .. 3C
    present := '{}';
    FOR seq IN 1 .. cardinality(lengths) LOOP
        n := lengths[seq];
        IF n = 0 THEN
            present[seq] := past[seq];                                                   -- not advancing
            CONTINUE;
        END IF;
        present[seq] := ROW(coalesce(past[seq].k, '{}') || k[r * n_head + 1:(r + n) * n_head],      -- S = past + n
                          coalesce(past[seq].v, '{}') || v[r * n_head + 1:(r + n) * n_head])::kv;
        a := a || attention_heads(q[r * n_head + 1:(r + n) * n_head], present[seq]);   -- + n rows
        r := r + n;
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
