-- model/35_block.sql: one transformer block
--
--   x = x + mha(layer_norm_1(x))
--   x = x + mlp(layer_norm_2(x))
--
-- The rows of x are the new positions of one or more sequences: lengths[seq] rows for sequence seq,
-- in order (0 rows for a sequence that does not advance). Every row goes through the same product
-- queries, so a batch reads the weights once; attention is the only stage that looks across rows,
-- and it runs per sequence, on that sequence's own cache past[seq]. present: the caches mha extended.
-- Written in SQL so that mha's result is used as it is (its caches are not copied into variables).
CREATE FUNCTION block(layer int, x float8[], lengths int[], past kv[], OUT y float8[], OUT present kv[])
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT mlp(layer_norm((s.a).y, format('h.%s.ln_2', layer)), layer, residual => (s.a).y),    -- [T][C] y + mlp
           (s.a).present                                                                     -- [B]
      FROM (SELECT mha(layer_norm(x, format('h.%s.ln_1', layer)), layer, lengths, past,
                       residual => x) AS a                                                   -- x + attn
             OFFSET 0) AS s;                                         -- (one call of mha, not one per field)
END;
