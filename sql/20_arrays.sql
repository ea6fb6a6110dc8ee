-- 20_arrays.sql: activations travel between stages as 2-D float8 arrays, x[t][i] = position t, unit i.
-- These helpers turn them into rows and back; every other stage is written with them.

-- terms(template, n, sep): the template written out for i = 0 .. n-1 and joined by sep, e.g.
--   terms('w%1$s * x%1$s', 3, ' + ') = 'w0 * x0 + w1 * x1 + w2 * x2'
-- Used once, at load time, to generate the wide-row expressions of the fast kernels.
CREATE FUNCTION terms(template text, n int, sep text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT string_agg(format(template, i), sep ORDER BY i) FROM generate_series(0, n - 1) AS i);

-- flat[] -> [n / width][width]: a flat array cut into rows of `width`
CREATE FUNCTION reshape(flat float8[], width int) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(r.v ORDER BY r.t)
      FROM (SELECT (u.k - 1) / width AS t, array_agg(u.e ORDER BY u.k) AS v   -- (t) -> row t
              FROM unnest(flat) WITH ORDINALITY AS u(e, k)
             GROUP BY 1) AS r;
END;

-- (t, i) -> value: a 2-D array as rows (1-based t and i)
CREATE FUNCTION cells(x float8[])
RETURNS TABLE (t int, i int, value float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ((u.k - 1) / array_length(x, 2) + 1)::int, ((u.k - 1) % array_length(x, 2) + 1)::int, u.e
      FROM unnest(x) WITH ORDINALITY AS u(e, k);
END;

-- (t, c) -> v[width]: each row of x cut into pieces of `width` values (row t, piece c from 0).
-- One sequential pass over x: subscripting a large array value element by element is far slower.
CREATE FUNCTION row_chunks(x float8[], width int)
RETURNS TABLE (t int, c int, v float8[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE
ROWS 12
BEGIN ATOMIC
    SELECT ((u.k - 1) / array_length(x, 2) + 1)::int,
           (((u.k - 1) % array_length(x, 2)) / width)::int,
           array_agg(u.e ORDER BY u.k)
      FROM unnest(x) WITH ORDINALITY AS u(e, k)
     GROUP BY 1, 2;
END;

-- a + b, element by element, for two arrays of the same shape
CREATE FUNCTION add(a float8[], b float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT reshape(array_agg(u.x + u.y ORDER BY u.k), array_length(a, 2))
      FROM unnest(a, b) WITH ORDINALITY AS u(x, y, k);
END;
