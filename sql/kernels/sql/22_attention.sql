-- kernels/sql/22_attention.sql: causal multi-head self-attention and the KV cache, sql kernel:
-- kv, kv_append, kv_positions and attention of the contract (kernels/contract.sql)
--
--   attention(q [T][C], cache kv) -> [T][C], where cache holds the keys k [S][C] and values v [S][C]
--   per head h (columns h*D+1 .. h*D+D, D = C / n_head):
--     out_h = softmax(q_h k_h^T / sqrt(D) + causal mask) v_h
--   The T queries are the last T of the S positions (S > T when earlier keys and values come
--   from the KV cache), so query t sees keys s <= S - T + t.
--   Queries, keys and values are cut into one row per (position, head) with D columns, and the
--   dot product q_h . k_h is one expression written out in full (q0*k0 + ... + q{D-1}*k{D-1}),
--   as the products are (21_linear.sql).

-- The keys and values of one layer for every position seen so far: k, v are [S][C].
CREATE TYPE kv AS (k float8[], v float8[]);

-- the cache extended by the keys and values [T][C] of T new positions
CREATE FUNCTION kv_append(past kv, k float8[], v float8[]) RETURNS kv
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ROW(array_cat(past.k, k), array_cat(past.v, v))::kv;

-- positions held in the cache (0 for none)
CREATE FUNCTION kv_positions(cache kv) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(array_length(cache.k, 1), 0);

-- The query of attention, for a head width d and n_head heads, over the variables q, k and v (k, v:
-- the cache's [S][C] keys and values). For d = 2 and 4 heads, the query of position t, head h, the
-- score it gives key s and the weighted sum of the values read
--   qs:     SELECT t, h, q[t][h * 2 + 0 + 1] AS q0, q[t][h * 2 + 1 + 1] AS q1
--             FROM generate_series(1, array_length(q, 1)) AS t, generate_series(0, 4 - 1) AS h
--   scores: (qs.q0 * ks.k0 + qs.q1 * ks.k1) / sqrt(2)
--   heads:  ARRAY[sum(w.a * vs.v0), sum(w.a * vs.v1)]
CREATE FUNCTION attention_query(d int, n_head int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN format($q$
WITH qs AS MATERIALIZED (       -- (t, h) -> q0 .. q{D-1}: query of position t, head h
    SELECT t, h, %3$s
      FROM generate_series(1, array_length(q, 1)) AS t, generate_series(0, %2$s - 1) AS h
),
ks AS MATERIALIZED (            -- (s, h) -> k0 .. k{D-1}: key of position s, head h
    SELECT s, h, %4$s
      FROM generate_series(1, array_length(k, 1)) AS s, generate_series(0, %2$s - 1) AS h
),
vs AS MATERIALIZED (            -- (s, h) -> v0 .. v{D-1}: value of position s, head h
    SELECT s, h, %5$s
      FROM generate_series(1, array_length(v, 1)) AS s, generate_series(0, %2$s - 1) AS h
),
scores AS (                     -- (t, h) -> keys[i], score[i] = q . k / sqrt(D) of the keys at or before t (causal mask)
    SELECT qs.t, qs.h, array_agg(ks.s) AS keys, array_agg((%6$s) / sqrt(%1$s)) AS score
      FROM qs
      JOIN ks ON ks.h = qs.h AND ks.s <= array_length(k, 1) - array_length(q, 1) + qs.t
     GROUP BY qs.t, qs.h
),
weights AS MATERIALIZED (       -- (t, h, s) -> attention weight: softmax over the keys
    SELECT sc.t, sc.h, sc.keys[w.i] AS s, w.p AS a
      FROM scores AS sc
     CROSS JOIN LATERAL softmax(sc.score) AS w
),
heads AS (                      -- (t, h) -> out0 .. out{D-1}: weighted sum of the values
    SELECT w.t, w.h, ARRAY[%7$s] AS o
      FROM weights AS w
      JOIN vs ON vs.s = w.s AND vs.h = w.h
     GROUP BY w.t, w.h
),
merged AS (                     -- (t) -> the heads side by side: [C]
    SELECT hd.t, array_agg(u.e ORDER BY hd.h, u.j) AS v
      FROM heads AS hd
     CROSS JOIN LATERAL unnest(hd.o) WITH ORDINALITY AS u(e, j)
     GROUP BY hd.t
)
SELECT array_agg(m.v ORDER BY m.t) FROM merged AS m$q$,
        d, n_head,
        terms('q[t][h * ' || d || ' + %1$s + 1] AS q%1$s', d, ', '),
        terms('k[s][h * ' || d || ' + %1$s + 1] AS k%1$s', d, ', '),
        terms('v[s][h * ' || d || ' + %1$s + 1] AS v%1$s', d, ', '),
        terms('qs.q%1$s * ks.k%1$s', d, ' + '),
        terms('sum(w.a * vs.v%1$s)', d, ', '));

-- attention(q [T][C], cache kv) -> [T][C], created with the query above as its body, planned once
-- per session (a generic plan: planning the long query on every call would cost more than running it)
DO $$
BEGIN
    EXECUTE format($function$
CREATE FUNCTION attention(q float8[], cache kv)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan
SET work_mem = '64MB'                      -- keys, values and scores of a 1,024-position context stay in memory
AS $body$
DECLARE
    k   float8[] := cache.k;  -- [S][C]
    v   float8[] := cache.v;  -- [S][C]
BEGIN
    RETURN (%s);
END
$body$
$function$, (SELECT attention_query(d => cf.n_embd / cf.n_head, n_head => cf.n_head) FROM config AS cf));
END
$$;
