-- 30_embeddings.sql: x = wte[token] + wpe[position]
--
-- embed(tokens, start) -> [T][C]: the input of the first block for tokens at positions
-- start, start+1, ... (start > 0 when earlier positions sit in the KV cache).
CREATE FUNCTION embed(tokens int[], start int)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN add(matrix_rows('wte.weight', tokens),                                   -- [T][C] token embeddings
           matrix_rows('wpe.weight', ARRAY(SELECT generate_series(start, start + cardinality(tokens) - 1))));  -- [T][C] positions
