-- model/34_mlp.sql: the feed-forward network of a block, written with the kernel's linear
--
--   mlp(x) = gelu(x @ W_fc + b_fc) @ W_proj + b_proj

-- gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (a plain SQL expression: inlined where used)
CREATE FUNCTION gelu(x float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 0.5 * x * (1 + tanh(sqrt(2 / pi()) * (x + 0.044715 * x * x * x)));

-- the same, element by element, over [T][n]
CREATE FUNCTION gelu(x float8[])
RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT array_agg(n.v ORDER BY r.t)
      FROM row_chunks(x, array_length(x, 2)) AS r                     -- (t) -> x[t]
     CROSS JOIN LATERAL (
           SELECT array_agg(gelu(u.e) ORDER BY u.i) AS v
             FROM unnest(r.v) WITH ORDINALITY AS u(e, i)) AS n;
END;

-- [T][C] -> [T][C]: residual + mlp(x); GELU and the residual add happen as each product's outputs
-- are gathered (model/32_linear.sql)
CREATE FUNCTION mlp(x float8[], layer int, residual float8[] DEFAULT NULL)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN linear(linear(x, format('h.%s.mlp.c_fc.weight', layer), format('h.%s.mlp.c_fc.bias', layer),  -- [T][4C]
                     gelu => true),
              format('h.%s.mlp.c_proj.weight', layer), format('h.%s.mlp.c_proj.bias', layer),           -- [T][C]
              residual => residual);
