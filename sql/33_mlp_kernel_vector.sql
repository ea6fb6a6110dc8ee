-- 33_mlp_kernel_vector.sql: mlp(x) = gelu(x @ W_fc + b_fc) @ W_proj + b_proj, vector kernel
-- (33_mlp_kernel_sql.sql is the same with float8 arrays throughout)

-- [T][C] -> [T][C]: residual + mlp(x). The hidden activations come out of the first product as one
-- vector of 4C floats per row and go into the second cut by subvector (24_linear_kernel_vector.sql):
-- 8 rows: 10.5 -> 8.5 ms a layer, against a [8][3072] float8 array read out again and cut. They
-- are rounded to float32 there either way, so the result is the same.
CREATE FUNCTION mlp(x float8[], layer int, residual float8[] DEFAULT NULL)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    chunk int := (SELECT cf.chunk FROM config AS cf);
    n_t   int := array_length(x, 1);
    h     vector[];         -- [T] gelu(x @ W_fc + b_fc), 4C floats each
BEGIN
    h := (linear_vectors(row_vectors(x, chunk), n_t, format('h.%s.mlp.c_fc.weight', layer),
                         format('h.%s.mlp.c_fc.bias', layer), gelu => true, as_vectors => true)).yv;
    RETURN (linear_vectors(vector_pieces(h, chunk), n_t, format('h.%s.mlp.c_proj.weight', layer),
                           format('h.%s.mlp.c_proj.bias', layer), residual => residual)).y;  -- [T][C]
END
$$;
