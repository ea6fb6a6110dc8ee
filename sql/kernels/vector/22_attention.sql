-- kernels/vector/22_attention.sql: causal multi-head self-attention and the KV cache, vector kernel:
-- kv, kv_append, kv_positions and attention of the contract (kernels/contract.sql)
--
--   attention(q [T][C], cache kv) -> [T][C]
--   per head h (D = C / n_head dimensions):
--     out_h = softmax(q_h k_h^T / sqrt(D) + causal mask) v_h
--   The T queries are the last T of the S cached positions, so query t sees keys s <= S - T + t.
--
--   The cache keeps every (position, head) key and value as a pgvector vector of D floats, so a
--   new token unnests the cache into rows instead of cutting [S][C] arrays again (the sql kernel's
--   cost at long contexts). q_h . k_h is pgvector's inner product; the weighted sum of values is
--   sum over s of v_h[s] * a[s] (pgvector's element-wise * and sum), all in float32.

-- The keys and values of one layer for every position seen so far, in position-major order:
-- k[s * n_head + h + 1] = key of position s (from 0), head h, as a vector of D floats; v likewise.
CREATE TYPE kv AS (k vector[], v vector[]);

-- the cache extended by the keys and values of T new positions, given as the cache holds them: [T *
-- n_head] (position, head) pieces of D floats
CREATE FUNCTION kv_append(past kv, k vector[], v vector[]) RETURNS kv
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ROW(coalesce(past.k, '{}') || k, coalesce(past.v, '{}') || v)::kv;

-- the cache extended by the keys and values [T][C] of T new positions
CREATE FUNCTION kv_append(past kv, k float8[], v float8[]) RETURNS kv
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN kv_append(past, k => row_vectors(k, (SELECT cf.n_embd / cf.n_head FROM config AS cf)),
                 v => row_vectors(v, (SELECT cf.n_embd / cf.n_head FROM config AS cf)));

-- positions held in the cache (0 for none)
CREATE FUNCTION kv_positions(cache kv) RETURNS int
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN coalesce(cardinality(cache.k) / (SELECT cf.n_head FROM config AS cf), 0);

-- [T] attention for T query rows given as q[t * n_head + h + 1], the query of position t (from 0),
-- head h, as a vector of D floats, over the S positions of cache (the T new ones last): each row's
-- output as one vector of C floats, the heads side by side
CREATE FUNCTION attention_heads(q vector[], cache kv)
RETURNS vector[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET work_mem = '64MB'                      -- keys, values and scores of a 1,024-position context stay in memory
AS $$
DECLARE
    n_head int := (SELECT cf.n_head FROM config AS cf);
    d      int := (SELECT cf.n_embd / cf.n_head FROM config AS cf);
    t_new  int := cardinality(q) / n_head;        -- T queries
    s_all  int := cardinality(cache.k) / n_head;  -- S positions in the cache, the T new ones last
    out    vector[];
BEGIN
    WITH qs AS MATERIALIZED (   -- (t, h) -> q: query of position t (from 1), head h
        SELECT ((u.i - 1) / n_head + 1)::int AS t, ((u.i - 1) % n_head)::int AS h, u.q
          FROM unnest(q) WITH ORDINALITY AS u(q, i)
    ),
    ks AS (                     -- (s, h) -> k: key of position s (from 1), head h
        SELECT ((u.i - 1) / n_head + 1)::int AS s, ((u.i - 1) % n_head)::int AS h, u.k
          FROM unnest(cache.k) WITH ORDINALITY AS u(k, i)
    ),
    vs AS (                     -- (s, h) -> v: value of position s, head h
        SELECT ((u.i - 1) / n_head + 1)::int AS s, ((u.i - 1) % n_head)::int AS h, u.v
          FROM unnest(cache.v) WITH ORDINALITY AS u(v, i)
    ),
    scores AS (                 -- (t, h) -> keys[i], score[i] = q . k / sqrt(D) of the keys at or before t (causal mask)
        SELECT qs.t, qs.h, array_agg(ks.s) AS keys, array_agg(-(qs.q <#> ks.k) / sqrt(d)) AS score
          FROM qs
          JOIN ks ON ks.h = qs.h AND ks.s <= s_all - t_new + qs.t
         GROUP BY qs.t, qs.h
    ),
    weights AS MATERIALIZED (   -- (t, h, s) -> attention weight: softmax over the keys
        SELECT sc.t, sc.h, sc.keys[w.i] AS s, w.p AS a
          FROM scores AS sc
         CROSS JOIN LATERAL softmax(sc.score) AS w
    ),
    heads AS (                  -- (t, h) -> out_h: the values weighted by the attention weights, summed
                                -- (values joined here rather than carried along with every score
                                -- through the sorts)
        SELECT w.t, w.h, sum(vs.v * array_fill(w.a, ARRAY[d])::vector) AS o
          FROM weights AS w
          JOIN vs ON vs.s = w.s AND vs.h = w.h
         GROUP BY w.t, w.h
    ),
    merged AS (                 -- (t) -> the heads side by side: [C]
        SELECT hd.t, concat_vectors(hd.o ORDER BY hd.h) AS v
          FROM heads AS hd
         GROUP BY hd.t
    )
    SELECT array_agg(m.v ORDER BY m.t) INTO out FROM merged AS m;
    RETURN out;
END
$$;

-- the same for q [T][C] as float8 rows, out [T][C]
CREATE FUNCTION attention(q float8[], cache kv)
RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT array_agg(u.v::real[]::float8[] ORDER BY u.t)
      FROM unnest(attention_heads(row_vectors(q, (SELECT cf.n_embd / cf.n_head FROM config AS cf)), cache))
           WITH ORDINALITY AS u(v, t);
END;

