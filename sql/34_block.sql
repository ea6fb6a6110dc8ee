-- 34_block.sql: one transformer block, and the KV caches it extends
--
--   x = x + mha(layer_norm_1(x))
--   x = x + mlp(layer_norm_2(x))
--
-- The rows of x are the new positions of one or more sequences: lengths[b] rows for sequence b,
-- in order (0 rows for a sequence that does not advance). Every row goes through the same product
-- queries, so a batch reads the weights once; attention is the only stage that looks across
-- rows, and it runs per sequence, on that sequence's own cache past[b].
-- The two sublayers are the kernel's: mha (with the KV cache, type kv) in 32_attention_kernel_*.sql,
-- mlp in 33_mlp_kernel_*.sql; the vector kernel's pass pgvector vectors between their products.

CREATE FUNCTION block(layer int, x float8[], lengths int[], past kv[], OUT y float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    pre text := format('h.%s.', layer);
BEGIN
    SELECT a.y, a.present INTO y, present
      FROM mha(layer_norm(x, pre || 'ln_1'), layer, lengths, past, residual => x) AS a;  -- [T][C] x + attn, [B]
    y := mlp(layer_norm(y, pre || 'ln_2'), layer, residual => y);                       -- [T][C] y + mlp
END
$$;
