-- inspect/70_trace.sql: a forward pass that keeps every intermediate value, for looking inside
--
--   trace(prompt) -> trace_id
--
-- runs the prompt through the model stage by stage, with the same functions forward() uses,
-- and stores what each stage produced under a new trace id. The views below turn the stored
-- vectors into rows with named columns: (trace_id, layer, head, position, dimension, value ...).
-- Layers, heads, positions, dimensions and tokens count from 0, as in GPT-2's own indexing.
-- trace(prompt, ablate => ARRAY[[layer, head], ...]) traces a changed model: the output of each
-- listed head is zeroed before attn.c_proj (the what-if of the explorer; compare_traces() in
-- 71_lenses.sql shows what changed). Traces are the one thing gpt2sql writes after loading: each
-- expires (after a day unless told otherwise), expired traces are deleted by the next trace(),
-- and drop_trace(id) / drop_traces() delete them on request.

-- (trace_id) -> the prompt traced
CREATE TABLE traces (
    trace_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt     text NOT NULL,
    tokens     int[] NOT NULL,
    ablate     int[] NOT NULL DEFAULT '{}',   -- [n][2]: the (layer, head) pairs whose output was zeroed; '{}' for none
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- (stage) -> what a stored stage is: its shape and formula, in the order the model computes them
CREATE TABLE trace_stages (
    stage   text PRIMARY KEY,
    ord     int NOT NULL UNIQUE,
    per     text NOT NULL,   -- 'model' (once) or 'layer' (once per block)
    shape   text NOT NULL,   -- per position: T rows of this many values
    formula text NOT NULL
);
INSERT INTO trace_stages VALUES
    ('token_embedding',    1, 'model', '[C]',  'wte[token]'),
    ('position_embedding', 2, 'model', '[C]',  'wpe[position]'),
    ('embedding',          3, 'model', '[C]',  'x = token_embedding + position_embedding'),
    ('ln_1',               4, 'layer', '[C]',  'layer_norm(x) with ln_1'),
    ('q',                  5, 'layer', '[C]',  'ln_1 @ c_attn + b, first third; head h = dimensions h*D .. h*D+D-1'),
    ('k',                  6, 'layer', '[C]',  'ln_1 @ c_attn + b, second third'),
    ('v',                  7, 'layer', '[C]',  'ln_1 @ c_attn + b, last third'),
    ('attn_heads',         8, 'layer', '[C]',  'per head: softmax(q k^T / sqrt(D) + causal mask) v, heads side by side'),
    ('attn_out',           9, 'layer', '[C]',  'attn_heads @ attn.c_proj + b'),
    ('residual_attn',     10, 'layer', '[C]',  'x = x + attn_out'),
    ('ln_2',              11, 'layer', '[C]',  'layer_norm(x) with ln_2'),
    ('mlp_fc',            12, 'layer', '[4C]', 'ln_2 @ mlp.c_fc + b'),
    ('mlp_gelu',          13, 'layer', '[4C]', 'gelu(mlp_fc): the hidden activations'),
    ('mlp_out',           14, 'layer', '[C]',  'mlp_gelu @ mlp.c_proj + b'),
    ('residual_mlp',      15, 'layer', '[C]',  'x = x + mlp_out: the block''s output'),
    ('ln_f',              16, 'model', '[C]',  'layer_norm(x) with ln_f'),
    ('logits',            17, 'model', '[V]',  'ln_f @ wte^T');

-- (trace_id, stage, layer, position) -> value[]: one stage's output at one position
CREATE TABLE trace_vectors (
    trace_id bigint NOT NULL REFERENCES traces ON DELETE CASCADE,
    stage    text NOT NULL REFERENCES trace_stages,
    layer    int,             -- block index; NULL for the stages outside the blocks
    position int NOT NULL,
    value    float8[] NOT NULL
);
CREATE INDEX ON trace_vectors (trace_id, stage, layer, position);

-- (trace_id, layer, head, position, key_position) -> score, weight: every head's causal attention matrix
CREATE TABLE trace_attention (
    trace_id     bigint NOT NULL REFERENCES traces ON DELETE CASCADE,
    layer        int NOT NULL,
    head         int NOT NULL,
    position     int NOT NULL,    -- the query's position
    key_position int NOT NULL,    -- the key's position, <= position
    score        float8 NOT NULL, -- q . k / sqrt(D), before the softmax
    weight       float8 NOT NULL, -- softmax of the scores over key_position: each row sums to 1
    PRIMARY KEY (trace_id, layer, head, position, key_position)
);


-- ---------------------------------------------------------------------------------------------
-- Views: the stored vectors as rows
-- ---------------------------------------------------------------------------------------------

-- (trace_id, stage, layer, position, dimension) -> value: every stored value
CREATE VIEW trace_values AS
SELECT s.trace_id, s.stage, s.layer, s.position, (u.i - 1)::int AS dimension, u.value
  FROM trace_vectors AS s
 CROSS JOIN LATERAL unnest(s.value) WITH ORDINALITY AS u(value, i);

-- (trace_id, position) -> token, piece: the prompt's tokens; piece is the token's text
CREATE VIEW trace_tokens AS
SELECT tr.trace_id, (u.k - 1)::int AS position, u.token, (decode_utf8(v.bytes, true)).txt AS piece
  FROM traces AS tr
 CROSS JOIN LATERAL unnest(tr.tokens) WITH ORDINALITY AS u(token, k)
  JOIN vocab AS v ON v.token = u.token;

-- (trace_id, position, dimension) -> token_value + position_value = value: the first block's input
CREATE VIEW trace_embeddings AS
SELECT te.trace_id, te.position, (u.i - 1)::int AS dimension,
       u.token_value, u.position_value, u.value
  FROM trace_vectors AS te
  JOIN trace_vectors AS pe ON pe.trace_id = te.trace_id AND pe.stage = 'position_embedding' AND pe.position = te.position
  JOIN trace_vectors AS x  ON x.trace_id = te.trace_id AND x.stage = 'embedding' AND x.position = te.position
 CROSS JOIN LATERAL unnest(te.value, pe.value, x.value) WITH ORDINALITY AS u(token_value, position_value, value, i)
 WHERE te.stage = 'token_embedding';

-- (trace_id, layer, norm, position, dimension) -> value: layer-norm outputs; norm is ln_1, ln_2
-- (layer 0 ..) or ln_f (layer NULL)
CREATE VIEW trace_layer_norm AS
SELECT v.trace_id, v.layer, v.stage AS norm, v.position, v.dimension, v.value
  FROM trace_values AS v
 WHERE v.stage IN ('ln_1', 'ln_2', 'ln_f');

-- (trace_id, layer, head, position, dimension) -> q, k, v: queries, keys and values per head
-- (dimension 0 .. D-1 within the head, D = n_embd / n_head)
CREATE VIEW trace_qkv AS
SELECT q.trace_id, q.layer, ((u.i - 1) / d.d)::int AS head, q.position, ((u.i - 1) % d.d)::int AS dimension,
       u.q, u.k, u.v
  FROM trace_vectors AS q
  JOIN trace_vectors AS k ON k.trace_id = q.trace_id AND k.stage = 'k' AND k.layer = q.layer AND k.position = q.position
  JOIN trace_vectors AS v ON v.trace_id = q.trace_id AND v.stage = 'v' AND v.layer = q.layer AND v.position = q.position
 CROSS JOIN (SELECT n_embd / n_head AS d FROM config) AS d
 CROSS JOIN LATERAL unnest(q.value, k.value, v.value) WITH ORDINALITY AS u(q, k, v, i)
 WHERE q.stage = 'q';

-- (trace_id, layer, head, position, dimension) -> value: each head's output, before attn.c_proj
CREATE VIEW trace_attention_output AS
SELECT s.trace_id, s.layer, ((u.i - 1) / d.d)::int AS head, s.position, ((u.i - 1) % d.d)::int AS dimension,
       u.value
  FROM trace_vectors AS s
 CROSS JOIN (SELECT n_embd / n_head AS d FROM config) AS d
 CROSS JOIN LATERAL unnest(s.value) WITH ORDINALITY AS u(value, i)
 WHERE s.stage = 'attn_heads';

-- (trace_id, layer, position, unit) -> pre_activation, activation: the MLP's hidden layer (4C units)
CREATE VIEW trace_mlp AS
SELECT f.trace_id, f.layer, f.position, (u.i - 1)::int AS unit, u.pre_activation, u.activation
  FROM trace_vectors AS f
  JOIN trace_vectors AS g ON g.trace_id = f.trace_id AND g.stage = 'mlp_gelu' AND g.layer = f.layer AND g.position = f.position
 CROSS JOIN LATERAL unnest(f.value, g.value) WITH ORDINALITY AS u(pre_activation, activation, i)
 WHERE f.stage = 'mlp_fc';

-- (trace_id, layer, sublayer, position, dimension) -> added, value: the residual stream after each
-- sub-layer ('attn', then 'mlp'); added is what the sub-layer added to the stream to give value
CREATE VIEW trace_residual AS
SELECT r.trace_id, r.layer, s.sublayer, r.position, (u.i - 1)::int AS dimension, u.added, u.value
  FROM (VALUES ('attn', 'attn_out', 'residual_attn'), ('mlp', 'mlp_out', 'residual_mlp')) AS s(sublayer, out_stage, stage)
  JOIN trace_vectors AS r ON r.stage = s.stage
  JOIN trace_vectors AS o ON o.trace_id = r.trace_id AND o.stage = s.out_stage AND o.layer = r.layer AND o.position = r.position
 CROSS JOIN LATERAL unnest(o.value, r.value) WITH ORDINALITY AS u(added, value, i);

-- (trace_id, position, token) -> logit, probability: the model's prediction for the position after
-- each position (probability = softmax of the logits over the vocabulary)
CREATE VIEW trace_logits AS
SELECT s.trace_id, s.position, (u.i - 1)::int AS token, u.logit, softmax_exp(u.logit - z.lse) AS probability
  FROM trace_vectors AS s
 CROSS JOIN LATERAL (SELECT logsumexp(s.value) AS lse OFFSET 0) AS z   -- OFFSET 0: once per position, not per row
 CROSS JOIN LATERAL unnest(s.value) WITH ORDINALITY AS u(logit, i)
 WHERE s.stage = 'logits';


-- ---------------------------------------------------------------------------------------------
-- Making and deleting traces
-- ---------------------------------------------------------------------------------------------

-- stores x [T][n] as one row per position and returns it unchanged
CREATE FUNCTION trace_store(id bigint, stage text, layer int, x float8[])
RETURNS float8[]
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO trace_vectors (trace_id, stage, layer, position, value)
    SELECT id, stage, layer, r.t - 1, r.v
      FROM row_chunks(x, array_length(x, 2)) AS r;                    -- (t) -> x[t]
    RETURN x;
END
$$;

-- fills trace_attention for one layer from the stored queries and keys, the way the formula reads
CREATE FUNCTION trace_attention_weights(id bigint, layer_ int)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
BEGIN ATOMIC
    INSERT INTO trace_attention (trace_id, layer, head, position, key_position, score, weight)
    WITH scores AS (            -- (head, position, key_position) -> q . k / sqrt(D), keys at or before the query
        SELECT q.head, q.position, k.position AS key_position,
               sum(q.q * k.k) / sqrt((SELECT n_embd / n_head FROM config)) AS score
          FROM trace_qkv AS q
          JOIN trace_qkv AS k ON k.trace_id = q.trace_id AND k.layer = q.layer AND k.head = q.head
                             AND k.dimension = q.dimension AND k.position <= q.position
         WHERE q.trace_id = id AND q.layer = layer_
         GROUP BY q.head, q.position, k.position
    ),
    score_rows AS (             -- (head, position) -> [key] the scores of the keys, in key order
        SELECT sc.head, sc.position, array_agg(sc.key_position ORDER BY sc.key_position) AS keys,
               array_agg(sc.score ORDER BY sc.key_position) AS scores
          FROM scores AS sc
         GROUP BY sc.head, sc.position
    )
    SELECT id, layer_, r.head, r.position, r.keys[w.i], r.scores[w.i], w.p                -- softmax over the keys
      FROM score_rows AS r
     CROSS JOIN LATERAL softmax(r.scores) AS w;
END;

-- tracing writes; a read-only replica, a read-only transaction or a reader role cannot
CREATE FUNCTION check_can_trace() RETURNS void
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean THEN
        RAISE EXCEPTION 'gpt2sql: trace() stores its intermediate values in tables, and this session is read-only'
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Trace on the primary server, outside a read-only transaction.';
    END IF;
    IF NOT (has_table_privilege('traces', 'INSERT, DELETE') AND has_table_privilege('trace_vectors', 'INSERT')
            AND has_table_privilege('trace_attention', 'INSERT')) THEN
        RAISE EXCEPTION 'gpt2sql: role % may not write traces (trace() stores its intermediate values in tables)', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Trace as the model''s owner; a reader role can still query existing traces and their lenses.';
    END IF;
END
$$;

-- how long a trace is kept: a positive interval
CREATE FUNCTION check_keep(keep interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF keep IS NULL OR keep <= interval '0' THEN
        RAISE EXCEPTION 'gpt2sql: keep must be a positive interval, got %', coalesce(keep::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- ablate -> the same pairs as a sorted [n][2] array without repeats ('{}' for none). Accepts NULL,
-- '{}', one pair ARRAY[layer, head] or pairs ARRAY[[layer, head], ...]; every pair must be in the model.
CREATE FUNCTION check_ablate(ablate int[]) RETURNS int[]
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    cfg   config := (SELECT c FROM config AS c);
    pairs int[];
    pair  int[];
BEGIN
    IF ablate IS NULL OR cardinality(ablate) = 0 THEN
        RETURN '{}';
    END IF;
    IF array_ndims(ablate) = 1 AND cardinality(ablate) = 2 THEN                   -- one pair
        pairs := ARRAY[ARRAY(SELECT unnest(ablate))];                           -- (counted from 1
    ELSIF array_ndims(ablate) = 2 AND array_length(ablate, 2) = 2 THEN          -- whatever its bounds)
        pairs := (SELECT array_agg(ARRAY[ablate[i][array_lower(ablate, 2)], ablate[i][array_upper(ablate, 2)]] ORDER BY i)
                    FROM generate_subscripts(ablate, 1) AS i);
    ELSE
        RAISE EXCEPTION 'gpt2sql: ablate must be (layer, head) pairs, e.g. ARRAY[[0, 1], [1, 3]], got %', ablate
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH pair SLICE 1 IN ARRAY pairs LOOP
        IF pair[1] IS NULL OR pair[2] IS NULL
           OR NOT pair[1] BETWEEN 0 AND cfg.n_layer - 1 OR NOT pair[2] BETWEEN 0 AND cfg.n_head - 1 THEN
            RAISE EXCEPTION 'gpt2sql: cannot ablate layer %, head %: the model has layers 0..% and heads 0..%',
                coalesce(pair[1]::text, 'NULL'), coalesce(pair[2]::text, 'NULL'), cfg.n_layer - 1, cfg.n_head - 1
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    RETURN (SELECT array_agg(ARRAY[p.layer, p.head] ORDER BY p.layer, p.head)
              FROM (SELECT DISTINCT pairs[i][1] AS layer, pairs[i][2] AS head
                      FROM generate_subscripts(pairs, 1) AS i) AS p);
END
$$;

-- whether trace id zeroed the output of (layer, head)
CREATE FUNCTION trace_ablated(id bigint, layer int, head int) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT EXISTS (SELECT 1 FROM traces AS tr, generate_subscripts(tr.ablate, 1) AS i
                    WHERE tr.trace_id = id AND tr.ablate[i][1] = layer AND tr.ablate[i][2] = head);
END;

-- tokens -> trace_id: one forward pass over all the tokens (1 to n_positions token ids), every
-- stage stored (trace_stages), kept for keep (an interval; the next trace() deletes expired ones);
-- the heads listed in ablate ([n][2] (layer, head) pairs, each counted from 0) output zeros
CREATE FUNCTION trace(tokens int[], keep interval DEFAULT '1 day', ablate int[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_layer int := (SELECT c.n_layer FROM config AS c);
    c       int := (SELECT c.n_embd FROM config AS c);
    d       int := (SELECT c.n_embd / c.n_head FROM config AS c);
    t       int := cardinality(tokens);
    pairs   int[] := check_ablate(ablate);  -- [n][2] (layer, head)
    i       int;
    id      bigint;
    pre     text;
    x       float8[];           -- [T][C] the residual stream
    y       float8[];           -- [T][n] the current stage's output
BEGIN
    PERFORM check_can_trace();
    PERFORM check_tokens(tokens, 0);
    PERFORM check_keep(keep);
    DELETE FROM traces WHERE expires_at < now();                                       -- expired traces go first
    INSERT INTO traces (prompt, tokens, ablate, expires_at)
    VALUES ((decode_utf8(detokenize_bytes(tokens), true)).txt, tokens, pairs, now() + keep)
    RETURNING trace_id INTO id;

    x := trace_store(id, 'embedding', NULL, add(                                       -- [T][C]
             trace_store(id, 'token_embedding', NULL, embedding_rows('wte.weight', tokens)),
             trace_store(id, 'position_embedding', NULL,
                         embedding_rows('wpe.weight', ARRAY(SELECT generate_series(0, t - 1))))));
    FOR layer IN 0 .. n_layer - 1 LOOP
        pre := format('h.%s.', layer);
        y := trace_store(id, 'ln_1', layer, layer_norm(x, pre || 'ln_1'));               -- [T][C]
        y := linear(y, pre || 'attn.c_attn.weight', pre || 'attn.c_attn.bias');          -- [T][3C]
        PERFORM trace_store(id, 'q', layer, y[1:t][1:c]),                                -- [T][C] each
                trace_store(id, 'k', layer, y[1:t][c + 1:2 * c]),
                trace_store(id, 'v', layer, y[1:t][2 * c + 1:3 * c]);
        PERFORM trace_attention_weights(id, layer);                                      -- (head, t, s) -> weight
        y := attention(y[1:t][1:c], kv_append(NULL, y[1:t][c + 1:2 * c], y[1:t][2 * c + 1:3 * c]));  -- [T][C]
        FOR i IN 1 .. coalesce(array_length(pairs, 1), 0) LOOP                           -- ablated heads output 0
            IF pairs[i][1] = layer THEN
                y[1:t][pairs[i][2] * d + 1:pairs[i][2] * d + d] := array_fill(0::float8, ARRAY[t, d]);
            END IF;
        END LOOP;
        PERFORM trace_store(id, 'attn_heads', layer, y);                                 -- [T][C]
        y := trace_store(id, 'attn_out', layer,                                          -- [T][C]
                         linear(y, pre || 'attn.c_proj.weight', pre || 'attn.c_proj.bias'));
        x := trace_store(id, 'residual_attn', layer, add(x, y));                         -- [T][C]
        y := trace_store(id, 'ln_2', layer, layer_norm(x, pre || 'ln_2'));               -- [T][C]
        y := trace_store(id, 'mlp_fc', layer,                                            -- [T][4C]
                         linear(y, pre || 'mlp.c_fc.weight', pre || 'mlp.c_fc.bias'));
        y := trace_store(id, 'mlp_gelu', layer, gelu(y));                                -- [T][4C]
        y := trace_store(id, 'mlp_out', layer,                                           -- [T][C]
                         linear(y, pre || 'mlp.c_proj.weight', pre || 'mlp.c_proj.bias'));
        x := trace_store(id, 'residual_mlp', layer, add(x, y));                          -- [T][C]
    END LOOP;
    y := trace_store(id, 'ln_f', NULL, layer_norm(x, 'ln_f'));                           -- [T][C]
    PERFORM trace_store(id, 'logits', NULL, (lm_head(y)).logits);                       -- [T][V]
    RETURN id;
END
$$;

-- prompt -> trace_id: trace(tokenize(prompt), keep, ablate), for a non-empty text
CREATE FUNCTION trace(prompt text, keep interval DEFAULT '1 day', ablate int[] DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
RETURN trace(tokenize(prompt), keep, ablate);

-- deletes the trace whose trace_id is id; false if there was none
CREATE FUNCTION drop_trace(id bigint)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH gone AS (DELETE FROM traces WHERE trace_id = id RETURNING 1)
    SELECT count(*) > 0 FROM gone;
END;

-- deletes every trace (with expired_only, only those past their expires_at); returns how many went
CREATE FUNCTION drop_traces(expired_only boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH gone AS (DELETE FROM traces WHERE NOT expired_only OR expires_at < now() RETURNING 1)
    SELECT count(*) FROM gone;
END;
