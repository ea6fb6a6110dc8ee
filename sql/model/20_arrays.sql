-- model/20_arrays.sql: activations travel between stages as 2-D float8 arrays, x[t][i] = position t,
-- unit i (PostgreSQL arrays count from 1). The helpers the stages share: cutting rows into pieces,
-- adding two arrays (the residual connections), softmax and its logarithm, and the rows of each
-- sequence of a batch.

-- (t, c) -> v[width]: each row of x cut into pieces of `width` values (row t, piece c from 0).
-- A piece is the slice x[t:t][c*width+1 : c*width+width] unnested and aggregated back (1-D), which
-- is faster than unnesting the whole array and grouping its elements into rows; written as a
-- LATERAL join rather than a scalar sub-query, it may run inside parallel workers.
CREATE FUNCTION row_chunks(x float8[], width int)
RETURNS TABLE (t int, c int, v float8[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE
ROWS 12
BEGIN ATOMIC
    SELECT r.t, p.c, s.v
      FROM generate_series(1, array_length(x, 1)) AS r(t)
     CROSS JOIN generate_series(0, array_length(x, 2) / width - 1) AS p(c)
     CROSS JOIN LATERAL (SELECT array_agg(u.e ORDER BY u.k) AS v
                           FROM unnest(x[r.t:r.t][p.c * width + 1:(p.c + 1) * width]) WITH ORDINALITY AS u(e, k)) AS s;
END;

-- a + b, element by element, for two arrays of the same shape: row by row, the two rows' values
-- read out side by side (unnest of two arrays zips them, in storage order) and added
CREATE FUNCTION add(a float8[], b float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(ARRAY(SELECT u.x + u.y FROM unnest(a[r.t:r.t][:], b[r.t:r.t][:]) AS u(x, y)) ORDER BY r.t)
      FROM generate_series(1, array_length(a, 1)) AS r(t);                -- (t) -> a[t] + b[t]
END;

-- exp(x) for x <= 0, a softmax numerator exp(score - max score): below -700, where PostgreSQL's
-- exp() raises an underflow error instead of returning 0, exp(-700) ~ 1e-304 stands for it
CREATE FUNCTION softmax_exp(x float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN exp(greatest(x, -700));

-- (i) -> p: softmax(x) = exp(x - max(x)) / sum(exp(x - max(x))) of a 1-D array x, element i (from 1)
-- (subtracting the max keeps exp from overflowing and leaves the result as it is). Called in FROM
-- (CROSS JOIN LATERAL softmax(...)), PostgreSQL writes this query into the caller's in its place.
CREATE FUNCTION softmax(x float8[])
RETURNS TABLE (i int, p float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT n.i, n.e / sum(n.e) OVER ()                                            -- numerator / denominator
      FROM (SELECT u.i::int, softmax_exp(u.v - max(u.v) OVER ()) AS e             -- (i) -> numerator
              FROM unnest(x) WITH ORDINALITY AS u(v, i)) AS n;
END;

-- log(sum(exp(logits))), computed without overflow: softmax(logits)[i] = exp(logits[i] - logsumexp)
CREATE FUNCTION logsumexp(logits float8[]) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT u.m + ln(sum(softmax_exp(u.e - u.m)))
      FROM (SELECT e.e, max(e.e) OVER () AS m FROM unnest(logits) AS e(e)) AS u   -- one pass: no join a plan
     GROUP BY u.m;                                                                 -- could repeat per logit
END;

-- log(softmax(logits)): each logit's log-probability, logits[i] - logsumexp(logits)
CREATE FUNCTION log_softmax(logits float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(u.e - (SELECT logsumexp(logits)) ORDER BY u.i)       -- a sub-query: computed once
      FROM unnest(logits) WITH ORDINALITY AS u(e, i);
END;

-- (seq, first_row, last_row) -> rows first_row .. last_row (from 1) of a batch are sequence seq's,
-- for each sequence with rows: a batch holds lengths[seq] rows of sequence seq after one another,
-- and a sequence with 0 rows sits the step out
CREATE FUNCTION sequence_rows(lengths int[])
RETURNS TABLE (seq int, first_row int, last_row int)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT r.seq, r.ends - r.n + 1, r.ends
      FROM (SELECT l.seq::int, l.n, (sum(l.n) OVER (ORDER BY l.seq))::int AS ends
              FROM unnest(lengths) WITH ORDINALITY AS l(n, seq)) AS r
     WHERE r.n > 0
     ORDER BY r.seq;
END;

-- rows picks[1], picks[2], ... of a 2-D array x, in that order (a row may come several times):
-- [cardinality(picks)][width]
CREATE FUNCTION pick_rows(x float8[], picks int[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(ARRAY(SELECT unnest(x[p.r:p.r][:])) ORDER BY p.j)
      FROM unnest(picks) WITH ORDINALITY AS p(r, j);
END;
