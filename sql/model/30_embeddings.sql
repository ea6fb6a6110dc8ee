-- model/30_embeddings.sql: x = wte[token] + wpe[position]
--
-- embed(tokens, positions) -> [T][C]: the input of the first block, row t for token tokens[t] at
-- position positions[t] (positions continue after those held in a KV cache; in a batch each
-- sequence counts its own).
CREATE FUNCTION embed(tokens int[], positions int[])
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN add(embedding_rows('wte.weight', tokens),                                   -- [T][C] token embeddings
           embedding_rows('wpe.weight', positions));                               -- [T][C] position embeddings
