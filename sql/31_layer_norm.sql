-- 31_layer_norm.sql: layer_norm(x) = g * (x - mean) / sqrt(var + eps) + b, per position
CREATE FUNCTION layer_norm(x float8[], param text)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH xs AS (                -- (t, i) -> x
        SELECT * FROM cells(x)
    ),
    stats AS (                  -- (t) -> mean, variance over the C units of position t
        SELECT xs.t, avg(xs.value) AS mean, var_pop(xs.value) AS var
          FROM xs
         GROUP BY xs.t
    ),
    normed AS (                 -- (t) -> normalised, scaled and shifted row
        SELECT xs.t,
               array_agg(g.value[xs.i] * (xs.value - s.mean) / sqrt(s.var + c.layer_norm_epsilon) + b.value[xs.i]
                         ORDER BY xs.i) AS v
          FROM xs
          JOIN stats AS s ON s.t = xs.t
         CROSS JOIN config AS c
         CROSS JOIN (SELECT value FROM vectors WHERE name = param || '.weight') AS g
         CROSS JOIN (SELECT value FROM vectors WHERE name = param || '.bias') AS b
         GROUP BY xs.t
    )
    SELECT array_agg(n.v ORDER BY n.t) FROM normed AS n;
END;
