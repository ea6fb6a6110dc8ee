-- 31_layer_norm.sql: layer_norm(x) = g * (x - mean) / sqrt(var + eps) + b, for each position
CREATE FUNCTION layer_norm(x float8[], param text)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    g   real[] := (SELECT v.value FROM vectors AS v WHERE v.name = param || '.weight');  -- [C] gain
    b   real[] := (SELECT v.value FROM vectors AS v WHERE v.name = param || '.bias');    -- [C] shift
    eps float8 := (SELECT c.layer_norm_epsilon FROM config AS c);
    out float8[];
BEGIN
    SELECT array_agg(n.v ORDER BY r.t) INTO out
      FROM row_chunks(x, array_length(x, 2)) AS r                     -- (t) -> x[t], the row of position t
     CROSS JOIN LATERAL (                                             -- mean and variance of the row
           SELECT avg(e) AS mean, var_pop(e) AS var FROM unnest(r.v) AS e) AS s
     CROSS JOIN LATERAL (                                             -- the normalised row
           SELECT array_agg(g[u.i] * (u.e - s.mean) / sqrt(s.var + eps) + b[u.i] ORDER BY u.i) AS v
             FROM unnest(r.v) WITH ORDINALITY AS u(e, i)) AS n;
    RETURN out;
END
$$;
