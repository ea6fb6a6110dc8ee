-- model/32_linear.sql: y = x @ W + b, the matrix products that hold nearly all of GPT-2's arithmetic.
--
-- linear(x [T][n_in], weight, bias) -> [T][n_out]
--   W lives in the matrices table by output unit (tables/01_matrices.sql), b in vectors. For every
--   position t and output unit j,
--       y[t][j] = sum over i of x[t][i] * W[i][j] + b[j]
--   computed by the kernel's matmul (kernels/contract.sql). Written plainly, the same product is
--   inspect/72_linear_plain.sql (SELECT t, j, sum(x * w) ... GROUP BY t, j); tests/test_forward.py
--   checks them all against NumPy.
--
-- Two steps that follow a product element by element are done while its outputs are gathered,
-- instead of in a pass of their own over the array:
--   linear(x, weight, bias, residual => r)  = r + x @ W + b    (the residual connections)
--   linear(x, weight, bias, gelu => true)   = gelu(x @ W + b)  (the MLP's hidden layer)
CREATE FUNCTION linear(x float8[], weight text, bias text, residual float8[] DEFAULT NULL,
                       gelu boolean DEFAULT false)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    b real[] := (SELECT v.value FROM vectors AS v WHERE v.name = bias);  -- [n_out], or NULL for none
    y float8[];
BEGIN
    y := matmul(x, weight, b, residual => residual, gelu => gelu);          -- [T][n_out]
    IF y IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: no weight named %', weight;
    END IF;
    RETURN y;
END
$$;
