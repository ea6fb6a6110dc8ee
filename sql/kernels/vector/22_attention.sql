-- kernels/vector/22_attention.sql: causal multi-head self-attention and the KV cache, vector kernel:
-- kv, kv_append, kv_positions and attention of the contract (kernels/contract.sql)
--
--   attention(q [T][C], cache kv) -> [T][C]
--   per head h (D = C / n_head dimensions):
--     out_h = softmax(q_h k_h^T / sqrt(D) + causal mask) v_h
--   The T queries are the last T of the S cached positions, so query t sees keys s <= S - T + t.
--
--   Each score q_h . k_h is pgvector's inner product of two vectors of D floats; the scores of one
--   (query, head) come from one scan of that head's keys, in order, and their softmax numerators
--   exp(score - max) become one vector e of S floats, zeros past t (the causal mask). The values are
--   kept by column: for each (head, dimension), one vector of the S positions' values, so
--   out_h[d] = (e . column d of head h) / sum(e): D inner products per query and head, rather than
--   one weighted value per (query, head, key). All in float32. (The softmax is written out here
--   rather than taken from model/20_arrays.sql's softmax(), which gives one row per key.)

-- The keys and values of one layer for every position seen so far. k is [S][n_head]: k[s][h + 1] =
-- the key of position s (from 1), head h, as a vector of D floats (new positions are new rows, and a
-- head's keys are its column). v_columns is [C]: v_columns[h * D + d + 1] = the values of head h,
-- dimension d, at positions 1 .. S, as a vector of S floats.
CREATE TYPE kv AS (k vector[], v_columns vector[]);

-- [T][n_head] rows cut into the heads' pieces: element [t][h + 1] is floats first + h * D ..
-- first + h * D + D - 1 of rows[t] (a qkv row's queries: first = 1; its keys: first = C + 1)
CREATE FUNCTION head_pieces(rows vector[], first int)
RETURNS vector[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT ARRAY(SELECT ARRAY(SELECT subvector(r.v, first + h * cf.n_embd / cf.n_head, cf.n_embd / cf.n_head)
                                FROM generate_series(0, cf.n_head - 1) AS h
                               ORDER BY h)
                   FROM unnest(rows) WITH ORDINALITY AS r(v, t)
                  ORDER BY r.t)
      FROM config AS cf;
END;

-- [C] the value columns of T new positions given as [T][C]: column j holds v[1][j] .. v[T][j]
-- (one position: each value is its own column; more: each column a slice of v, read out in order)
CREATE FUNCTION value_columns(v real[])
RETURNS vector[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT CASE WHEN array_length(v, 1) = 1
                THEN ARRAY(SELECT ARRAY[u.x]::vector FROM unnest(v) AS u(x))
                ELSE ARRAY(SELECT ARRAY(SELECT unnest(v[:][j:j]))::vector
                             FROM generate_series(1, array_length(v, 2)) AS j
                            ORDER BY j)
           END;
END;

-- the cache extended by the keys and values of T new positions: the keys given as [T][n_head]
-- pieces of D floats (new rows), the values as [T][C] (each value column extended by its T values)
CREATE FUNCTION kv_append(past kv, k vector[], v real[]) RETURNS kv
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT ROW(coalesce(past.k, '{}') || k,
               ARRAY(SELECT coalesce(u.old || u.new, u.new)       -- unnest pairs the columns in order
                       FROM unnest(past.v_columns, value_columns(v)) AS u(old, new)))::kv;
END;

-- the cache extended by the keys and values [T][C] of T new positions
CREATE FUNCTION kv_append(past kv, k float8[], v float8[]) RETURNS kv
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN kv_append(past, k => head_pieces(row_vectors(k, array_length(k, 2)), 1), v => v::real[]);

-- positions held in the cache (0 for none)
CREATE FUNCTION kv_positions(cache kv) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(array_length(cache.k, 1), 0);

-- [T] attention for T query rows given as q [T][n_head], q[t][h + 1] the query of position t, head
-- h, as a vector of D floats (as head_pieces cuts them), over the S positions of cache (the T new
-- ones last): each row's output as one vector of C floats, the heads side by side
CREATE FUNCTION attention_heads(q vector[], cache kv)
RETURNS vector[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET work_mem = '64MB'                      -- keys, values and weights of a 1,024-position context stay in memory
AS $$
DECLARE
    n_head int := (SELECT cf.n_head FROM config AS cf);
    d      int := (SELECT cf.n_embd / cf.n_head FROM config AS cf);
    t_new  int := array_length(q, 1);             -- T queries
    s_all  int := array_length(cache.k, 1);       -- S positions in the cache, the T new ones last
    ones   vector := array_fill(1::real, ARRAY[s_all])::vector;   -- e . ones = the sum of e
    out    vector[];
BEGIN
    WITH qs AS (                -- (t, h) -> q: query of position t (from 1), head h; it sees n keys
        SELECT ((u.i - 1) / n_head + 1)::int AS t, ((u.i - 1) % n_head)::int AS h, u.q,
               s_all - t_new + ((u.i - 1) / n_head + 1)::int AS n
          FROM unnest(q) WITH ORDINALITY AS u(q, i)
    ),
    scores AS (                 -- (t, h) -> x: q . k / sqrt(D) for keys 1 .. n (the causal mask);
                                -- m: their max
        SELECT qs.t, qs.h, qs.n, sc.x, sc.m
          FROM generate_series(0, n_head - 1) AS g(head)
         CROSS JOIN LATERAL (SELECT cache.k[:][g.head + 1:g.head + 1] AS k OFFSET 0) AS keys  -- [S][1], cut once
         CROSS JOIN LATERAL (SELECT * FROM qs WHERE qs.h = g.head OFFSET 0) AS qs            -- its T queries
         CROSS JOIN LATERAL (   -- one scan of the head's first n keys, in order (nothing sorts them)
               SELECT array_agg(u.x) AS x, max(u.x) AS m
                 FROM (SELECT -(qs.q <#> kk.k) / sqrt(d) AS x
                         FROM unnest(keys.k) AS kk(k) LIMIT qs.n) AS u) AS sc
    ),
    numerators AS (             -- (t, h) -> e: exp(x - m), zeros for keys n+1 .. S
        SELECT sc.t, sc.h,
               (ARRAY(SELECT softmax_exp(u.x - sc.m) FROM unnest(sc.x) AS u(x))
                || array_fill(0::float8, ARRAY[s_all - sc.n]))::vector AS e
          FROM scores AS sc
        OFFSET 0                -- e computed once per row, not once per use below
    ),
    weights AS MATERIALIZED (   -- (t, h) -> e, and z = sum of e, the softmax's denominator
        SELECT nu.t, nu.h, nu.e, -(nu.e <#> ones) AS z
          FROM numerators AS nu
    ),
    heads AS (                  -- (t, h) -> out_h: e . v_column / z for each of the head's columns
        SELECT w.t, w.h, o.o
          FROM generate_series(0, n_head - 1) AS g(head)
         CROSS JOIN LATERAL (SELECT cache.v_columns[g.head * d + 1:g.head * d + d] AS v OFFSET 0) AS c  -- [D]
         CROSS JOIN LATERAL (SELECT * FROM weights AS w WHERE w.h = g.head) AS w
         CROSS JOIN LATERAL (   -- one scan of the head's columns, in order
               SELECT array_agg(-(w.e <#> vc.v) / w.z)::vector AS o
                 FROM unnest(c.v) AS vc(v)) AS o
    ),
    outputs AS (                -- (t) -> the heads side by side: [C]
        SELECT hd.t, concat_vectors(hd.o ORDER BY hd.h) AS o
          FROM heads AS hd
         GROUP BY hd.t
    )
    SELECT array_agg(o.o ORDER BY o.t) INTO out FROM outputs AS o;
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
      FROM unnest(attention_heads(head_pieces(row_vectors(q, array_length(q, 2)), 1), cache))
           WITH ORDINALITY AS u(v, t);
END;

