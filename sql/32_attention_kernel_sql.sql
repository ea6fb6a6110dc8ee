-- 32_attention_kernel_sql.sql: causal multi-head self-attention and the KV cache, sql kernel
-- (32_attention_kernel_vector.sql is the same with pgvector)
--
--   attention(q [T][C], cache kv) -> [T][C], where cache holds the keys k [S][C] and values v [S][C]
--   per head h (columns h*D+1 .. h*D+D, D = C / n_head):
--     out_h = softmax(q_h k_h^T / sqrt(D) + causal mask) v_h
--   The T queries are the last T of the S positions (S > T when earlier keys and values come
--   from the KV cache), so query t sees keys s <= S - T + t.
--   Queries, keys and values are cut into one row per (position, head) with D columns, and the
--   dot product q_h . k_h is one generated expression per pair (q0*k0 + ... + q{D-1}*k{D-1}).

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

DO $do$
DECLARE
    d int := (SELECT n_embd / n_head FROM config);
    h int := (SELECT n_head FROM config);
BEGIN
    EXECUTE format($fn$
CREATE FUNCTION attention(q float8[], cache kv)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan   -- plan this long query once per session, not per call
SET jit = off                              -- compiling it costs more than it saves (README, Benchmarks)
SET work_mem = '64MB'                      -- keys, values and scores of a 1,024-position context stay in memory
AS $body$
DECLARE
    k   float8[] := cache.k;  -- [S][C]
    v   float8[] := cache.v;  -- [S][C]
    out float8[];
BEGIN
    WITH qs AS MATERIALIZED (   -- (t, h) -> q0 .. q{D-1}: query of position t, head h
        SELECT t, h, %3$s
          FROM generate_series(1, array_length(q, 1)) AS t, generate_series(0, %2$s - 1) AS h
    ),
    ks AS MATERIALIZED (        -- (s, h) -> k0 .. k{D-1}: key of position s, head h
        SELECT s, h, %4$s
          FROM generate_series(1, array_length(k, 1)) AS s, generate_series(0, %2$s - 1) AS h
    ),
    vs AS MATERIALIZED (        -- (s, h) -> v0 .. v{D-1}: value of position s, head h
        SELECT s, h, %5$s
          FROM generate_series(1, array_length(v, 1)) AS s, generate_series(0, %2$s - 1) AS h
    ),
    scores AS MATERIALIZED (    -- (t, h, s) -> q . k / sqrt(D), only for keys s at or before t (causal mask)
        SELECT qs.t, qs.h, ks.s, (%6$s) / sqrt(%1$s) AS score
          FROM qs
          JOIN ks ON ks.h = qs.h AND ks.s <= array_length(k, 1) - array_length(q, 1) + qs.t
    ),
    exps AS (                   -- (t, h, s) -> exp(score - max score of the row): softmax numerators
        SELECT sc.t, sc.h, sc.s, exp(sc.score - max(sc.score) OVER (PARTITION BY sc.t, sc.h)) AS e
          FROM scores AS sc
    ),
    weights AS (                -- (t, h, s) -> attention weight: softmax over s
        SELECT ex.t, ex.h, ex.s, ex.e / sum(ex.e) OVER (PARTITION BY ex.t, ex.h) AS a
          FROM exps AS ex
    ),
    heads AS (                  -- (t, h) -> out0 .. out{D-1}: weighted sum of the values
        SELECT w.t, w.h, ARRAY[%7$s] AS o
          FROM weights AS w
          JOIN vs ON vs.s = w.s AND vs.h = w.h
         GROUP BY w.t, w.h
    ),
    merged AS (                 -- (t) -> the heads side by side: [C]
        SELECT hd.t, array_agg(u.e ORDER BY hd.h, u.j) AS v
          FROM heads AS hd
         CROSS JOIN LATERAL unnest(hd.o) WITH ORDINALITY AS u(e, j)
         GROUP BY hd.t
    )
    SELECT array_agg(m.v ORDER BY m.t) INTO out FROM merged AS m;
    RETURN out;
END
$body$
$fn$, d, h,
        terms('q[t][h * ' || d || ' + %1$s + 1] AS q%1$s', d, ', '),
        terms('k[s][h * ' || d || ' + %1$s + 1] AS k%1$s', d, ', '),
        terms('v[s][h * ' || d || ' + %1$s + 1] AS v%1$s', d, ', '),
        terms('qs.q%1$s * ks.k%1$s', d, ' + '),
        terms('sum(w.a * vs.v%1$s)', d, ', '));
END
$do$;

-- The attention sublayer of block `layer` (34_block.sql): residual + mha(x), and the extended caches.
--   qkv = x @ W_attn + b_attn; per sequence b, attention of its rows' queries over its cache past[b]
--   extended by its rows' keys and values; then the heads' outputs @ W_proj + b_proj.
-- x [T][C] holds lengths[b] rows of sequence b after one another.
CREATE FUNCTION mha(x float8[], layer int, lengths int[], past kv[], residual float8[] DEFAULT NULL,
                    OUT y float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    pre text := format('h.%s.attn.', layer);
    c   int := array_length(x, 2);
    qkv float8[];
    a   float8[] := '{}';   -- [T][C] attention output, sequence after sequence
    r   int := 0;           -- rows before sequence b
    n   int;
BEGIN
    qkv := linear(x, pre || 'c_attn.weight', pre || 'c_attn.bias');                     -- [T][3C]
    present := '{}';
    FOR b IN 1 .. cardinality(lengths) LOOP
        n := lengths[b];
        IF n = 0 THEN
            present[b] := past[b];                                                   -- not advancing
            CONTINUE;
        END IF;
        present[b] := kv_append(past[b], qkv[r + 1:r + n][c + 1:2 * c], qkv[r + 1:r + n][2 * c + 1:3 * c]);  -- S = past + n
        a := array_cat(a, attention(qkv[r + 1:r + n][1:c], present[b]));             -- [n][C]
        r := r + n;
    END LOOP;
    y := linear(a, pre || 'c_proj.weight', pre || 'c_proj.bias', residual => residual);  -- [T][C]
END
$$;
