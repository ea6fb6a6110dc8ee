-- generate/62_beam_search.sql: beam search, as Hugging Face's generate does it with num_beams > 1 and
-- no sampling (transformers' BeamSearchScorer and BeamHypotheses):
--
--   beams = [prompt]                           one beam, its score (sum of log-probabilities) 0
--   each step, for every beam b and token t:   score(b) + log_softmax(logits of b)[t] (after the processors)
--     the 2 * num_beams best (b, t), best first:
--       t = <|endoftext|> among the first num_beams: beam b + t is a finished hypothesis,
--                                                   scored score / new_tokens ^ length_penalty
--       any other t: beam b + t goes on, until num_beams beams are chosen
--   stop when the hypotheses are done (early_stopping, below) or after max_new_tokens steps
--   (then the live beams join the hypotheses); return the best num_return_sequences
--
-- The beams advance together as one batch (forward_batch): one run of the model per step for every
-- beam, each beam's KV cache its parent's extended by one position (the caches are copied to the
-- chosen beams, never recomputed). Nothing is written.

-- the most beams one beam search may keep (each holds a KV cache of its own)
CREATE FUNCTION max_beams() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 16;

-- early_stopping as transformers defines it, from the text 'true', 'false' or 'never': whether the
-- finished hypotheses (num_beams of them) are done, given the worst of them, the best score a live
-- beam has this step (best_sum: its sum of log-probabilities, new_tokens long) and max_new_tokens.
--   'true'   done as soon as num_beams hypotheses are finished
--   'false'  done when no live beam, scored at this step's length, would beat the worst
--   'never'  done when no live beam could ever beat it: with length_penalty > 0 scored at the
--            longest length it may reach (max_new_tokens), else at this step's
CREATE FUNCTION beams_done(early_stopping text, worst float8, best_sum float8, new_tokens int,
                           max_new_tokens int, length_penalty float8)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE early_stopping
           WHEN 'true' THEN true
           WHEN 'never' THEN worst >= best_sum / (CASE WHEN length_penalty > 0 THEN max_new_tokens
                                                      ELSE new_tokens END)::float8 ^ length_penalty
           ELSE worst >= best_sum / new_tokens::float8 ^ length_penalty
       END;

-- The finished hypotheses (at most num_beams: tokens and scores) with one more (tokens, score):
-- added if there is room, or if it beats the worst kept, which then leaves (the first of the worst)
CREATE FUNCTION keep_hypothesis(hyp_tokens token_list[], hyp_scores float8[], tokens int[], score float8,
                                num_beams int, OUT kept_tokens token_list[], OUT kept_scores float8[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    worst int := (SELECT h.i FROM unnest(hyp_scores) WITH ORDINALITY AS h(s, i) ORDER BY h.s, h.i LIMIT 1);
BEGIN
    kept_tokens := hyp_tokens;
    kept_scores := hyp_scores;
    IF cardinality(hyp_scores) < num_beams OR score > hyp_scores[worst] THEN
        kept_tokens := kept_tokens || ROW(tokens)::token_list;
        kept_scores := kept_scores || score;
        IF cardinality(kept_scores) > num_beams THEN
            kept_tokens := kept_tokens[:worst - 1] || kept_tokens[worst + 1:];
            kept_scores := kept_scores[:worst - 1] || kept_scores[worst + 1:];
        END IF;
    END IF;
END
$$;

-- the beam search options are in range
CREATE FUNCTION check_beams(num_beams int, length_penalty float8, early_stopping text, num_return_sequences int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF num_beams IS NULL OR num_beams < 1 OR num_beams > max_beams() THEN
        RAISE EXCEPTION 'gpt2sql: num_beams must be from 1 to %, got %', max_beams(), num_beams
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length_penalty IS NULL OR length_penalty IN ('NaN', 'Infinity', '-Infinity') THEN
        RAISE EXCEPTION 'gpt2sql: length_penalty must be a finite number (1 = the average log-probability per token), got %',
            length_penalty USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF early_stopping IS NULL OR lower(early_stopping) NOT IN ('true', 'false', 'never') THEN
        RAISE EXCEPTION 'gpt2sql: early_stopping must be true, false or never, got %', coalesce(early_stopping, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF num_return_sequences IS NULL OR num_return_sequences < 1 OR num_return_sequences > num_beams THEN
        RAISE EXCEPTION 'gpt2sql: num_return_sequences must be from 1 to num_beams (%), got %', num_beams,
            num_return_sequences USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- prompt -> (rank) -> tokens, text, score, finish: the num_return_sequences best hypotheses of a beam
-- search, best first.
--   prompt                non-empty text
--   num_beams             beams kept each step, 1 to max_beams() (16); 1 is greedy search
--   max_new_tokens        new tokens at most, 1 to max_new_tokens_limit(); fewer if the model's
--                         n_positions run out first (finish 'context_full')
--   length_penalty        a hypothesis scores sum of log-probabilities / new_tokens ^ length_penalty:
--                         > 0 favours longer ones, < 0 shorter ones (default 1)
--   early_stopping        'true', 'false' (the default) or 'never', as transformers defines them
--                         (beams_done above)
--   num_return_sequences  hypotheses returned, 1 to num_beams
--   repetition_penalty, no_repeat_ngram_size, min_new_tokens: the processors (55_processors.sql),
--                         applied, as transformers does, to each beam's log-probabilities
-- tokens: the new tokens (a hypothesis that ended with <|endoftext|> keeps it last); text: what
-- they add to the prompt; score: as above; finish: 'endoftext', 'length' or 'context_full'.
CREATE FUNCTION beam_search(prompt text, num_beams int DEFAULT 4, max_new_tokens int DEFAULT 20,
                            length_penalty float8 DEFAULT 1, early_stopping text DEFAULT 'false',
                            num_return_sequences int DEFAULT 1, repetition_penalty float8 DEFAULT 1,
                            no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0)
RETURNS TABLE (rank int, tokens int[], text text, score float8, finish text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    eos        int := (SELECT v.token FROM vocab AS v WHERE v.piece = '<|endoftext|>');
    stopping   text := lower(early_stopping);
    prompt_ids int[];
    n_steps    int;                 -- steps at most: max_new_tokens, or fewer where the context ends
    state      record;              -- (logits [B][V], present [n_layer * B], best): the model on the beams
    beams      token_list[];        -- [B] each live beam's new tokens
    sums       float8[];            -- [B] each live beam's sum of log-probabilities
    cand       record;              -- a candidate: (total, beam, token), best first
    next_beams token_list[];
    next_sums  float8[];
    parents    int[];               -- [num_beams] the beam each chosen beam extends
    new_tokens int[];               -- [num_beams] the token it extends it by
    caches     kv[];                -- [n_layer * num_beams] the chosen beams' caches, their parents' copied
    hyp_tokens token_list[] := '{}';    -- the finished hypotheses (num_beams at most): tokens,
    hyp_scores float8[] := '{}';        -- score
    scores     float8[];            -- [V] one beam's next-token log-probabilities, processed
    c_total    float8[];            -- the 2 * num_beams best candidates: total, beam, token
    c_beam     int[];
    c_token    int[];
    processed  boolean := repetition_penalty <> 1 OR no_repeat_ngram_size > 0 OR min_new_tokens > 0;
    done       boolean := false;
BEGIN
    PERFORM check_text(prompt);
    PERFORM check_generation(max_new_tokens, 0, NULL, NULL, NULL, NULL, repetition_penalty, no_repeat_ngram_size,
                             min_new_tokens, 0);
    PERFORM check_beams(num_beams, length_penalty, early_stopping, num_return_sequences);
    prompt_ids := tokenize(prompt);
    n_steps := least(max_new_tokens, (SELECT c.n_positions FROM config AS c) - cardinality(prompt_ids) + 1);
    IF n_steps < 1 THEN
        RAISE EXCEPTION 'gpt2sql: the prompt is % tokens; the model''s context is % positions',
            cardinality(prompt_ids), (SELECT c.n_positions FROM config AS c) USING ERRCODE = 'program_limit_exceeded';
    END IF;
    state := forward_batch(prompt_ids, ARRAY[cardinality(prompt_ids)], NULL);   -- prefill: one beam
    beams := ARRAY[ROW('{}'::int[])::token_list];
    sums := ARRAY[0::float8];
    FOR step IN 1 .. n_steps LOOP
        -- the 2 * num_beams best (beam, token) continuations of all beams
        c_total := '{}'; c_beam := '{}'; c_token := '{}';
        FOR b IN 1 .. cardinality(beams) LOOP
            scores := log_softmax(ARRAY(SELECT unnest(state.logits[b:b][:])));                    -- [V]
            IF processed THEN
                scores := process_logits(scores, prompt_ids || (beams[b]).tokens, step - 1, repetition_penalty,
                                         no_repeat_ngram_size, min_new_tokens);
            END IF;
            SELECT c_total || array_agg(sums[b] + u.s ORDER BY u.s DESC, u.i),
                   c_beam || array_agg(b ORDER BY u.s DESC, u.i),
                   c_token || array_agg((u.i - 1)::int ORDER BY u.s DESC, u.i)
              INTO c_total, c_beam, c_token
              FROM (SELECT * FROM unnest(scores) WITH ORDINALITY AS x(s, i)
                     ORDER BY x.s DESC, x.i LIMIT 2 * num_beams) AS u;
        END LOOP;
        next_beams := '{}'; next_sums := '{}'; parents := '{}'; new_tokens := '{}';
        FOR cand IN SELECT c.total, c.beam, c.token, (row_number() OVER (ORDER BY c.total DESC, c.beam, c.token))::int AS r
                      FROM unnest(c_total, c_beam, c_token) AS c(total, beam, token)
                     ORDER BY c.total DESC, c.beam, c.token
                     LIMIT 2 * num_beams LOOP
            IF cand.token = eos THEN
                CONTINUE WHEN cand.r > num_beams;           -- an end among the worse half is not kept
                SELECT * INTO hyp_tokens, hyp_scores                                  -- a finished hypothesis
                  FROM keep_hypothesis(hyp_tokens, hyp_scores, (beams[cand.beam]).tokens || eos,
                                       cand.total / step::float8 ^ length_penalty, num_beams);
            ELSE
                next_beams := next_beams || ROW((beams[cand.beam]).tokens || cand.token)::token_list;
                next_sums := next_sums || cand.total;
                parents := parents || cand.beam;
                new_tokens := new_tokens || cand.token;
            END IF;
            EXIT WHEN cardinality(next_beams) = num_beams;
        END LOOP;
        beams := next_beams;
        sums := next_sums;
        done := cardinality(hyp_scores) >= num_beams
                AND beams_done(stopping, worst => (SELECT min(h) FROM unnest(hyp_scores) AS h),
                               best_sum => (SELECT max(c) FROM unnest(c_total) AS c), new_tokens => step,
                               max_new_tokens => n_steps, length_penalty => length_penalty);
        EXIT WHEN done OR step = n_steps;
        caches := pick_caches(state.present, n_seq => cardinality(state.best), picks => parents);  -- each its parent's
        state := forward_batch(new_tokens, array_fill(1, ARRAY[num_beams]), caches);   -- one position per beam
    END LOOP;
    IF NOT done THEN                                        -- the live beams join the hypotheses
        FOR j IN 1 .. cardinality(beams) LOOP
            SELECT * INTO hyp_tokens, hyp_scores
              FROM keep_hypothesis(hyp_tokens, hyp_scores, (beams[j]).tokens, sums[j] / n_steps::float8 ^ length_penalty,
                                   num_beams);
        END LOOP;
    END IF;
    RETURN QUERY
    SELECT (row_number() OVER (ORDER BY h.s DESC, h.i DESC))::int, (hyp_tokens[h.i]).tokens,
           (decode_utf8(detokenize_bytes(array_remove((hyp_tokens[h.i]).tokens, eos)), true)).txt, h.s,
           CASE WHEN (hyp_tokens[h.i]).tokens[cardinality((hyp_tokens[h.i]).tokens)] = eos THEN 'endoftext'
                WHEN n_steps < max_new_tokens THEN 'context_full' ELSE 'length' END
      FROM unnest(hyp_scores) WITH ORDINALITY AS h(s, i)
     ORDER BY h.s DESC, h.i DESC
     LIMIT num_return_sequences;
END
$$;
