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
    s   record;             -- rows s.first_row .. s.last_row are sequence s.seq's (n of them)
BEGIN
    qkv := linear(x, pre || 'c_attn.weight', pre || 'c_attn.bias');                     -- [T][3C]
    present := past;                                                                 -- a sequence without rows keeps its cache
    FOR s IN SELECT * FROM sequence_rows(lengths) LOOP
        present[s.seq] := kv_append(past[s.seq], k => qkv[s.first_row:s.last_row][c + 1:2 * c],
                                    v => qkv[s.first_row:s.last_row][2 * c + 1:3 * c]);  -- S = past + n
        a := array_cat(a, attention(qkv[s.first_row:s.last_row][1:c], present[s.seq]));  -- [n][C]
    END LOOP;
    y := linear(a, pre || 'c_proj.weight', pre || 'c_proj.bias', residual => residual);  -- [T][C]
END
$$;
