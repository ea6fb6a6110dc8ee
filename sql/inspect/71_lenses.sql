-- inspect/71_lenses.sql: ready-made questions to ask a trace (70_trace.sql)
--
--   attention_pattern(trace, layer, head)  who each position looks at
--   top_predictions(trace, position, k)    the k likeliest next tokens after a position
--   token_probability(trace, token)        how likely one token is after each position
--   logit_lens(trace, k)                   what the residual stream "predicts" after each layer
--   compare_traces(a, b, k)                how the top predictions changed from trace a to trace b
--   compare_residuals(a, b)                how far the residual stream moved, after every sub-layer
--
-- For how the prompt became tokens, see tokenize_trace(text) in tokenizer/10_tokenizer.sql.

-- the trace must exist (and, when given, layer / head / position be inside the model and prompt)
CREATE FUNCTION check_trace(id bigint, layer int DEFAULT NULL, head int DEFAULT NULL, pos int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    t   int;
    cfg config;
BEGIN
    SELECT cardinality(tr.tokens) INTO t FROM traces AS tr WHERE tr.trace_id = id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gpt2sql: no trace %; make one with trace(prompt) (traces expire; see the traces table)', id
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO cfg FROM config;
    IF layer IS NOT NULL AND NOT layer BETWEEN 0 AND cfg.n_layer - 1 THEN
        RAISE EXCEPTION 'gpt2sql: layer % is outside the model (0..%)', layer, cfg.n_layer - 1
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF head IS NOT NULL AND NOT head BETWEEN 0 AND cfg.n_head - 1 THEN
        RAISE EXCEPTION 'gpt2sql: head % is outside the model (0..%)', head, cfg.n_head - 1
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pos IS NOT NULL AND NOT pos BETWEEN 0 AND t - 1 THEN
        RAISE EXCEPTION 'gpt2sql: position % is outside trace % (0..%)', pos, id, t - 1
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- the most predictions per position the lenses over every layer (logit_lens) or over two traces
-- (compare_traces) give: each costs a sort of the vocabulary and k rows per layer or trace and position
CREATE FUNCTION max_lens_k() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 100;

-- k >= 1, and at most limit where given
CREATE FUNCTION check_k(k int, limit_k int DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF limit_k IS NOT NULL AND (k IS NULL OR NOT k BETWEEN 1 AND limit_k) THEN
        RAISE EXCEPTION 'gpt2sql: k must be between 1 and %, got %', limit_k, coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'gpt2sql: k must be >= 1, got %', coalesce(k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- (rank) -> token, logit, probability: the k highest logits, with their softmax probability over
-- the whole vocabulary; ties go to the lower token id, as in sampling (generate/50_sampling.sql)
CREATE FUNCTION top_tokens(logits float8[], k int)
RETURNS TABLE (rank int, token int, logit float8, probability float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (row_number() OVER (ORDER BY b.logit DESC, b.i))::int, (b.i - 1)::int, b.logit,
           softmax_exp(b.logit - (SELECT logsumexp(logits)))                      -- a sub-query: computed once
      FROM (SELECT u.logit, u.i                                                     -- (i) -> logit, the k best
              FROM unnest(logits) WITH ORDINALITY AS u(logit, i)
             ORDER BY u.logit DESC, u.i
             LIMIT k) AS b
     ORDER BY 1;
END;

-- (position, key_position) -> score, weight: one head's attention matrix in trace trace_id, with
-- the tokens' text; layer from 0 to n_layer - 1, head from 0 to n_head - 1; weights in [0, 1], each
-- position's adding up to 1 over key_position <= position
CREATE FUNCTION attention_pattern(trace_id bigint, layer int, head int)
RETURNS TABLE ("position" int, key_position int, query_piece text, key_piece text, score float8, weight float8)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM check_trace(trace_id, layer, head);
    RETURN QUERY
    SELECT a.position, a.key_position, q.piece, k.piece, a.score, a.weight
      FROM trace_attention AS a
      JOIN trace_tokens AS q ON q.trace_id = a.trace_id AND q.position = a.position
      JOIN trace_tokens AS k ON k.trace_id = a.trace_id AND k.position = a.key_position
     WHERE a.trace_id = attention_pattern.trace_id AND a.layer = attention_pattern.layer
       AND a.head = attention_pattern.head
     ORDER BY a.position, a.key_position;
END
$$;

-- (rank) -> token, piece, logit, probability: the k likeliest tokens to follow position pos of trace
-- trace_id (pos from 0, or negative from the end: -1 is the last); k from 1 to the vocabulary's size
CREATE FUNCTION top_predictions(trace_id bigint, pos int, k int DEFAULT 10)
RETURNS TABLE (rank int, token int, piece text, logit float8, probability float8)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    logits float8[];
BEGIN
    PERFORM check_trace(trace_id, pos => pos);
    PERFORM check_k(k);
    SELECT s.value INTO logits
      FROM trace_vectors AS s
     WHERE s.trace_id = top_predictions.trace_id AND s.stage = 'logits' AND s.position = top_predictions.pos;
    RETURN QUERY
    SELECT d.rank, d.token, (decode_utf8(v.bytes, true)).txt, d.logit, d.probability
      FROM top_tokens(logits, k) AS d
      JOIN vocab AS v ON v.token = d.token
     ORDER BY d.rank;
END
$$;

-- (position) -> probability and rank of one token (the candidate, a token id) as the next token
-- after each position of trace trace_id; rank 1 = the model's first choice
CREATE FUNCTION token_probability(trace_id bigint, token int)
RETURNS TABLE ("position" int, piece text, candidate text, probability float8, rank int)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM check_trace(trace_id);
    PERFORM check_token_ids(ARRAY[token]);
    RETURN QUERY
    SELECT s.position, p.piece, (SELECT (decode_utf8(v.bytes, true)).txt FROM vocab AS v WHERE v.token = token_probability.token),
           softmax_exp(z.logit - z.lse),
           1 + (SELECT count(*) FROM unnest(s.value) AS e WHERE e > z.logit)::int   -- tokens more likely than it
      FROM trace_vectors AS s
     CROSS JOIN LATERAL (SELECT s.value[token_probability.token + 1] AS logit,       -- once per position
                                logsumexp(s.value) AS lse OFFSET 0) AS z
      JOIN trace_tokens AS p ON p.trace_id = s.trace_id AND p.position = s.position
     WHERE s.trace_id = token_probability.trace_id AND s.stage = 'logits'
     ORDER BY s.position;
END
$$;

-- the same over trace trace_id for a token given as text (token_text), which must be exactly one
-- token (e.g. ' the')
CREATE FUNCTION token_probability(trace_id bigint, token_text text)
RETURNS TABLE ("position" int, piece text, candidate text, probability float8, rank int)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    ids int[] := tokenize(token_text);
BEGIN
    IF cardinality(ids) <> 1 THEN
        RAISE EXCEPTION 'gpt2sql: % is % tokens, not one: %', quote_literal(token_text), cardinality(ids), ids
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM token_probability(trace_id, ids[1]);
END
$$;

-- (layer, position, rank) -> token, piece, probability: the logit lens. The residual stream after
-- `layer` blocks (layer 0 = the embeddings, layer n_layer = the final output) is put through
-- ln_f and the LM head as if it were the last layer; at layer n_layer this is the model's own
-- prediction. Costs one LM-head product per (layer, position) (docs/performance.md), so on big
-- models ask for one position (pos) at a time. trace_id: the trace; k: tokens per (layer,
-- position), 1 to 100; pos: one position (from 0), NULL for all.
CREATE FUNCTION logit_lens(trace_id bigint, k int DEFAULT 5, pos int DEFAULT NULL)
RETURNS TABLE (layer int, "position" int, rank int, token int, piece text, probability float8)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    x      float8[];            -- [R][C] the residual stream after each layer, one row per (layer, position)
    labels int[];               -- [R][2] (layer, position) of each row of x
    logits float8[];            -- [R][V]
BEGIN
    PERFORM check_trace(trace_id, pos => pos);
    PERFORM check_k(k, limit_k => max_lens_k());
    SELECT array_agg(r.value ORDER BY r.after, r.position), array_agg(ARRAY[r.after, r.position] ORDER BY r.after, r.position)
      INTO x, labels
      FROM (SELECT 0 AS after, s.position, s.value            -- the embeddings: after 0 blocks
              FROM trace_vectors AS s
             WHERE s.trace_id = logit_lens.trace_id AND s.stage = 'embedding'
            UNION ALL
            SELECT s.layer + 1, s.position, s.value            -- after block l: l + 1 blocks
              FROM trace_vectors AS s
             WHERE s.trace_id = logit_lens.trace_id AND s.stage = 'residual_mlp') AS r
     WHERE pos IS NULL OR r.position = pos;
    logits := (unembed(x)).logits;
    RETURN QUERY
    SELECT labels[r.t][1], labels[r.t][2], d.rank, d.token, (decode_utf8(v.bytes, true)).txt, d.probability
      FROM row_chunks(logits, array_length(logits, 2)) AS r                         -- (row) -> logits[row]
     CROSS JOIN LATERAL top_tokens(r.v, k) AS d                                    -- (rank) -> the k best
      JOIN vocab AS v ON v.token = d.token
     ORDER BY 1, 2, d.rank;
END
$$;

-- the two traces must exist and be of the same tokens (e.g. a trace and its ablated twin)
CREATE FUNCTION check_comparable(a bigint, b bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM check_trace(a);
    PERFORM check_trace(b);
    IF (SELECT tokens FROM traces WHERE trace_id = a) IS DISTINCT FROM (SELECT tokens FROM traces WHERE trace_id = b) THEN
        RAISE EXCEPTION 'gpt2sql: traces % and % are of different tokens; compare a trace with one of the same prompt', a, b
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. trace(prompt) and trace(prompt, ablate => ARRAY[[layer, head]])';
    END IF;
END
$$;

-- (position, rank) -> trace a's and trace b's rank-th likeliest next token after the position, their
-- probabilities, how likely b finds a's token (probability_b_of_a), and how far b's residual stream
-- is from a's at that position after the last block (stream_distance = ||x_b - x_a||, the same on
-- every rank; compare_residuals gives it after every sub-layer): what an ablation changed. a and b
-- are trace ids of the same tokens; k, the ranks compared per position, is 1 to 100
CREATE FUNCTION compare_traces(a bigint, b bigint, k int DEFAULT 5)
RETURNS TABLE ("position" int, rank int, token_a int, piece_a text, probability_a float8,
               token_b int, piece_b text, probability_b float8, probability_b_of_a float8, stream_distance float8)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    pos   record;               -- (position, la, lb, distance): one position of both traces
    la    float8[];             -- [V] a's logits there
    lb    float8[];             -- [V] b's logits there
    lse_b float8;               -- log-sum-exp of lb: b's probability of token i is exp(lb[i] - lse_b)
BEGIN
    PERFORM check_comparable(a, b);
    PERFORM check_k(k, limit_k => max_lens_k());
    FOR pos IN
        SELECT sa.position, sa.value AS la, sb.value AS lb, st.distance
          FROM trace_vectors AS sa
          JOIN trace_vectors AS sb ON sb.trace_id = b AND sb.stage = 'logits' AND sb.position = sa.position
          JOIN compare_residuals(a, b) AS st                  -- ||x_b - x_a|| after the last block
            ON st.position = sa.position AND st.sublayer = 'mlp' AND st.layer = (SELECT n_layer - 1 FROM config)
         WHERE sa.trace_id = a AND sa.stage = 'logits'
         ORDER BY sa.position
    LOOP
        la := pos.la;           -- read out once here: a query would read (and decompress) them per row
        lb := pos.lb;
        lse_b := logsumexp(lb);
        RETURN QUERY
        SELECT pos.position, ta.rank, ta.token, (decode_utf8(va.bytes, true)).txt, ta.probability,
               tb.token, (decode_utf8(vb.bytes, true)).txt, tb.probability, softmax_exp(lb[ta.token + 1] - lse_b), pos.distance
          FROM top_tokens(la, k) AS ta                                        -- (rank) -> a's k best
          JOIN top_tokens(lb, k) AS tb ON tb.rank = ta.rank                   -- (rank) -> b's k best
          JOIN vocab AS va ON va.token = ta.token
          JOIN vocab AS vb ON vb.token = tb.token
         ORDER BY ta.rank;
    END LOOP;
END
$$;

-- (layer, sublayer, position) -> distance, norm_a: how far trace b's residual stream is from trace a's
-- after each sub-layer ('attn', then 'mlp'), as the Euclidean distance ||x_b - x_a||, beside ||x_a||.
-- Zero up to the first ablated head's sub-layer, then the change it makes and how it spreads.
-- a and b are trace ids of the same tokens; layer counts blocks from 0.
CREATE FUNCTION compare_residuals(a bigint, b bigint)
RETURNS TABLE (layer int, sublayer text, "position" int, distance float8, norm_a float8)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM check_comparable(a, b);
    RETURN QUERY
    SELECT ra.layer, s.sublayer, ra.position, sqrt(sum((u.eb - u.ea) ^ 2)), sqrt(sum(u.ea ^ 2))
      FROM (VALUES ('attn', 'residual_attn'), ('mlp', 'residual_mlp')) AS s(sublayer, stage)
      JOIN trace_vectors AS ra ON ra.trace_id = a AND ra.stage = s.stage                  -- (layer, position) -> x_a
      JOIN trace_vectors AS rb ON rb.trace_id = b AND rb.stage = s.stage                  -- (layer, position) -> x_b
                              AND rb.layer = ra.layer AND rb.position = ra.position
     CROSS JOIN LATERAL unnest(ra.value, rb.value) AS u(ea, eb)                          -- (dimension) -> x_a, x_b
     GROUP BY ra.layer, s.sublayer, ra.position
     ORDER BY ra.layer, s.sublayer, ra.position;
END
$$;
