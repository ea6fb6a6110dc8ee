-- 21_linear.sql: y = x @ W + b, the matrix products that hold nearly all of GPT-2's arithmetic.
--
-- linear(x [T][n_in], weight, bias) -> [T][n_out]
--   W lives in the matrices table by output unit (01_matrices.sql). The product itself, for every
--   position t and output unit j, y[t][j] = sum over i of x[t][i] * W[i][j], is linear_rows(x, weight),
--   written by the model's kernel, chosen when the model is loaded (config.kernel):
--     23_linear_kernel_sql.sql     stock PostgreSQL: one generated expression w0*x0 + ... + w255*x255
--                                  per (weight row, input chunk), summed over the chunks
--     24_linear_kernel_vector.sql  pgvector: the inner product of each weight row with each input row
--   Written plainly, the same product is 22_linear_plain.sql (SELECT t, j, sum(x * w) ... GROUP BY
--   t, j); tests/test_forward.py checks all of them against NumPy.
--   linear adds the bias and puts the (t, j) -> y rows back into an array.

CREATE FUNCTION linear(x float8[], weight text, bias text)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    b real[] := (SELECT v.value FROM vectors AS v WHERE v.name = bias);  -- [n_out], or NULL for none
    y float8[];
BEGIN
    WITH outputs AS (           -- (t) -> y[] + b: position t's outputs in unit order
        SELECT r.t, array_agg(r.y + coalesce(b[r.j + 1], 0) ORDER BY r.j) AS v
          FROM linear_rows(x, weight) AS r
         GROUP BY r.t
    )
    SELECT array_agg(o.v ORDER BY o.t) INTO y FROM outputs AS o;
    IF y IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: no weight named %', weight;
    END IF;
    RETURN y;
END
$$;

