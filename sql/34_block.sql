-- 34_block.sql: one transformer block, and the KV cache it extends
--
--   x = x + attn(layer_norm_1(x))
--   x = x + mlp(layer_norm_2(x))

-- The KV cache of a layer (type kv, with kv_append and attention) is the kernel's: see
-- 32_attention_kernel_sql.sql and 32_attention_kernel_vector.sql.

CREATE FUNCTION block(layer int, x float8[], past kv, OUT y float8[], OUT present kv)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    c   int := array_length(x, 2);
    t   int := array_length(x, 1);
    pre text := format('h.%s.', layer);
    qkv float8[];
BEGIN
    qkv := linear(layer_norm(x, pre || 'ln_1'), pre || 'attn.c_attn.weight', pre || 'attn.c_attn.bias');  -- [T][3C]
    present := kv_append(past, qkv[1:t][c + 1:2 * c], qkv[1:t][2 * c + 1:3 * c]);         -- S = past + T keys, values
    y := add(x, linear(attention(qkv[1:t][1:c], present),                                   -- [T][C]
                       pre || 'attn.c_proj.weight', pre || 'attn.c_proj.bias'));
    y := add(y, mlp(layer_norm(y, pre || 'ln_2'), layer));                                  -- [T][C]
END
$$;
