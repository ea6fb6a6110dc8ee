-- 34_block.sql: one transformer block, and the KV caches it extends
--
--   x = x + attn(layer_norm_1(x))
--   x = x + mlp(layer_norm_2(x))
--
-- The rows of x are the new positions of one or more sequences: lengths[b] rows for sequence b,
-- in order (0 rows for a sequence that does not advance). Every row goes through the same product
-- queries, so a batch reads the weights once; attention is the only stage that looks across
-- rows, and it runs per sequence, on that sequence's own cache past[b] (attend).
-- The KV cache of a layer (type kv, with kv_append, attention and attend) is the kernel's: see
-- 32_attention_kernel_sql.sql and 32_attention_kernel_vector.sql.

CREATE FUNCTION block(layer int, x float8[], lengths int[], past kv[], OUT y float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    pre text := format('h.%s.', layer);
    qkv float8[];
    a   float8[];           -- [T][C] attention output, sequence after sequence
BEGIN
    qkv := linear(layer_norm(x, pre || 'ln_1'), pre || 'attn.c_attn.weight', pre || 'attn.c_attn.bias');  -- [T][3C]
    SELECT at.a, at.present INTO a, present FROM attend(qkv, lengths, past) AS at;         -- [T][C], [B]
    y := linear(a, pre || 'attn.c_proj.weight', pre || 'attn.c_proj.bias', residual => x); -- [T][C] x + attn
    y := mlp(layer_norm(y, pre || 'ln_2'), layer, residual => y);                           -- [T][C] y + mlp
END
$$;
