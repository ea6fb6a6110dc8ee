-- 33_mlp_kernel_sql.sql: mlp(x) = gelu(x @ W_fc + b_fc) @ W_proj + b_proj, sql kernel
-- (33_mlp_kernel_vector.sql is the same with the hidden activations kept as pgvector vectors)

-- [T][C] -> [T][C]: residual + mlp(x); GELU and the residual add happen as each product's
-- outputs are gathered (21_linear.sql)
CREATE FUNCTION mlp(x float8[], layer int, residual float8[] DEFAULT NULL)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN linear(linear(x, format('h.%s.mlp.c_fc.weight', layer), format('h.%s.mlp.c_fc.bias', layer),  -- [T][4C]
                     gelu => true),
              format('h.%s.mlp.c_proj.weight', layer), format('h.%s.mlp.c_proj.bias', layer),           -- [T][C]
              residual => residual);
