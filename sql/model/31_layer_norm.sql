-- model/31_layer_norm.sql: layer_norm(x) = g * (x - mean) / sqrt(var + eps) + b, for each position
-- Each value is read as x[t][i] (a subscript: x stays whole) rather than by unnesting the slice
-- x[t:t][:], which would copy x for every row.
CREATE FUNCTION layer_norm(x float8[], param text)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    g   real[] := (SELECT v.value FROM vectors AS v WHERE v.name = param || '.weight');  -- [C] gain
    b   real[] := (SELECT v.value FROM vectors AS v WHERE v.name = param || '.bias');    -- [C] shift
    eps float8 := (SELECT c.layer_norm_epsilon FROM config AS c);
    n_c int := array_length(x, 2);                                       -- C
    out float8[];
BEGIN
    SELECT array_agg(n.v ORDER BY r.t) INTO out
      FROM generate_series(1, array_length(x, 1)) AS r(t)                 -- (t): each position
     CROSS JOIN LATERAL (                                             -- mean and variance of row t
           SELECT avg(x[r.t][i]) AS mean, var_pop(x[r.t][i]) AS var
             FROM generate_series(1, n_c) AS i) AS s
     CROSS JOIN LATERAL (                                             -- the normalised row (an ARRAY
           SELECT ARRAY(SELECT g[i] * (x[r.t][i] - s.mean) / sqrt(s.var + eps) + b[i]   -- sub-query: faster
                          FROM generate_series(1, n_c) AS i) AS v) AS n;                  -- than array_agg)
    RETURN out;
END
$$;
