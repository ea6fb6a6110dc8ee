-- model/33_attention.sql: the attention sub-layer of a block, written with the kernel's linear,
-- kv_append and attention (kernels/contract.sql)
--
--   qkv = x @ W_attn + b_attn                       [T][3C]
--   q, k, v = split(qkv)                            [T][C] each
--   per sequence seq: cache = past[seq] + (k, v)  the KV cache, extended by its new positions
--                     a = attention(q, cache)    causal, multi-head, over its rows
--   y = residual + a @ W_proj + b_proj              [T][C]
--
-- x holds lengths[seq] rows of sequence seq after one another (0 rows for a sequence that does not
-- advance): every row goes through the same products, and attention runs per sequence, over that
-- sequence's own cache past[seq]. present: the extended caches.
CREATE FUNCTION mha(x float8[], layer int, lengths int[], past kv[], residual float8[] DEFAULT NULL,
                    OUT y float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    pre text := format('h.%s.attn.', layer);
    c   int := array_length(x, 2);
    qkv float8[];
    a   float8[] := '{}';   -- [T][C] attention output, sequence after sequence
    r   int := 0;           -- rows before sequence seq
    n   int;
BEGIN
    qkv := linear(x, pre || 'c_attn.weight', pre || 'c_attn.bias');                     -- [T][3C]
    present := '{}';
    FOR seq IN 1 .. cardinality(lengths) LOOP
        n := lengths[seq];
        IF n = 0 THEN
            present[seq] := past[seq];                                                   -- not advancing
            CONTINUE;
        END IF;
        present[seq] := kv_append(past[seq], qkv[r + 1:r + n][c + 1:2 * c], qkv[r + 1:r + n][2 * c + 1:3 * c]);  -- S = past + n
        a := array_cat(a, attention(qkv[r + 1:r + n][1:c], present[seq]));             -- [n][C]
        r := r + n;
    END LOOP;
    y := linear(a, pre || 'c_proj.weight', pre || 'c_proj.bias', residual => residual);  -- [T][C]
END
$$;
