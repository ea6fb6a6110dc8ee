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

-- one prompt's finished hypotheses in a beam search (num_beams at most): their tokens and scores
CREATE TYPE beam_hypotheses AS (tokens token_list[], scores float8[]);

-- The finished hypotheses with one more (tokens, score): added if there are fewer than num_beams,
-- or if it beats the worst kept, which then leaves (the first of the worst)
CREATE FUNCTION keep_hypothesis(hyps beam_hypotheses, tokens int[], score float8, num_beams int)
RETURNS beam_hypotheses
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    worst int := (SELECT h.i FROM unnest(hyps.scores) WITH ORDINALITY AS h(s, i) ORDER BY h.s, h.i LIMIT 1);
    kept  beam_hypotheses := hyps;
BEGIN
    IF cardinality(hyps.scores) < num_beams OR score > hyps.scores[worst] THEN
        kept.tokens := kept.tokens || ROW(tokens)::token_list;
        kept.scores := kept.scores || score;
        IF cardinality(kept.scores) > num_beams THEN
            kept.tokens := kept.tokens[:worst - 1] || kept.tokens[worst + 1:];
            kept.scores := kept.scores[:worst - 1] || kept.scores[worst + 1:];
        END IF;
    END IF;
    RETURN kept;
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

-- Prompts -> (prompt_index, rank) -> tokens, text, score, finish: the num_return_sequences best
-- hypotheses of each prompt's beam search, best first.
--   prompts               1 to max_batch_prompts() / num_beams non-empty texts (64 beams in all)
--   num_beams             beams kept each step, 1 to max_beams() (16); 1 is greedy search
--   max_new_tokens        new tokens at most, 1 to max_new_tokens_limit(); fewer if the model's
--                         n_positions run out first (finish 'context_full')
--   length_penalty        a hypothesis scores sum of log-probabilities / new_tokens ^ length_penalty:
--                         > 0 favours longer ones, < 0 shorter ones (default 1)
--   early_stopping        'true', 'false' (the default) or 'never', as transformers defines them
--                         (beams_done above)
--   num_return_sequences  hypotheses returned per prompt, 1 to num_beams
--   repetition_penalty, no_repeat_ngram_size, min_new_tokens: the processors (55_processors.sql),
--                         applied, as transformers does, to each beam's log-probabilities
-- tokens: the new tokens (a hypothesis that ended with <|endoftext|> keeps it last); text: what
-- they add to the prompt; score: as above; finish: 'endoftext', 'length' or 'context_full'.
-- Every prompt's beams advance together: one forward_batch per step for all live beams of all
-- prompts; a prompt whose search is done leaves the batch. A prompt's hypotheses are the same
-- alone and in any batch.
CREATE FUNCTION beam_search_batch(prompts text[], num_beams int DEFAULT 4, max_new_tokens int DEFAULT 20,
                                  length_penalty float8 DEFAULT 1, early_stopping text DEFAULT 'false',
                                  num_return_sequences int DEFAULT 1, repetition_penalty float8 DEFAULT 1,
                                  no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0)
RETURNS TABLE (prompt_index int, rank int, tokens int[], text text, score float8, finish text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    eos        int := (SELECT v.token FROM vocab AS v WHERE v.piece = '<|endoftext|>');
    n_positions int := (SELECT c.n_positions FROM config AS c);
    stopping   text := lower(early_stopping);
    prompt_ids token_list[];        -- [n] each prompt's tokens
    n          int;                 -- prompts
    n_steps    int[] := '{}';       -- [n] steps at most: max_new_tokens, or fewer where the prompt's context ends
    hyps       beam_hypotheses[] := '{}';   -- [n] each prompt's finished hypotheses
    prefill    int[] := '{}';       -- every prompt's tokens, one after another
    lengths    int[] := '{}';       -- [n] their lengths
    state      record;              -- (logits [B][V], present [n_layer * B], best): the model on the live beams
    beams      token_list[] := '{}';    -- [B] each live beam's new tokens,
    sums       float8[] := '{}';        -- its sum of log-probabilities,
    owner      int[] := '{}';           -- its prompt (the beams of a prompt are consecutive)
    cand       record;              -- a candidate of one prompt: (total, beam, token, r), best first
    next_beams token_list[];        -- the beams chosen this step, as beams, sums and owner above
    next_sums  float8[];
    next_owner int[];
    parents    int[];               -- [B'] the beam each chosen beam extends
    new_tokens int[];               -- [B'] the token it extends it by
    chosen     int;                 -- beams chosen so far for the prompt at hand
    scores     float8[];            -- [V] one beam's next-token log-probabilities, processed
    c_total    float8[];            -- each beam's 2 * num_beams best candidates: total, beam, token
    c_beam     int[];
    c_token    int[];
    p          int;                 -- a prompt
    processed  boolean := repetition_penalty <> 1 OR no_repeat_ngram_size > 0 OR min_new_tokens > 0;
    done       boolean;
BEGIN
    PERFORM check_generation(max_new_tokens, 0, NULL, NULL, NULL, NULL, repetition_penalty, no_repeat_ngram_size,
                             min_new_tokens, 0);
    PERFORM check_beams(num_beams, length_penalty, early_stopping, num_return_sequences);
    prompt_ids := batch_tokens(prompts, per_prompt => num_beams, per_prompt_name => 'beams');
    n := cardinality(prompt_ids);
    FOR p IN 1 .. n LOOP                                    -- one beam per prompt, its score 0
        prefill := prefill || (prompt_ids[p]).tokens;
        lengths[p] := cardinality((prompt_ids[p]).tokens);
        n_steps[p] := least(max_new_tokens, n_positions - lengths[p] + 1);
        hyps[p] := ROW('{}', '{}')::beam_hypotheses;
        beams[p] := ROW('{}'::int[])::token_list;
        sums[p] := 0;
        owner[p] := p;
    END LOOP;
    state := forward_batch(prefill, lengths, NULL);                             -- prefill: every prompt once
    FOR step IN 1 .. max_new_tokens LOOP
        -- each live beam's 2 * num_beams best (beam, token) continuations
        c_total := '{}'; c_beam := '{}'; c_token := '{}';
        FOR b IN 1 .. cardinality(beams) LOOP
            scores := log_softmax(ARRAY(SELECT unnest(state.logits[b:b][:])));                    -- [V]
            IF processed THEN
                scores := process_logits(scores, (prompt_ids[owner[b]]).tokens || (beams[b]).tokens, step - 1,
                                         repetition_penalty, no_repeat_ngram_size, min_new_tokens);
            END IF;
            SELECT c_total || array_agg(sums[b] + u.s ORDER BY u.s DESC, u.i),
                   c_beam || array_agg(b ORDER BY u.s DESC, u.i),
                   c_token || array_agg((u.i - 1)::int ORDER BY u.s DESC, u.i)
              INTO c_total, c_beam, c_token
              FROM (SELECT * FROM unnest(scores) WITH ORDINALITY AS x(s, i)
                     ORDER BY x.s DESC, x.i LIMIT 2 * num_beams) AS u;
        END LOOP;
        next_beams := '{}'; next_sums := '{}'; next_owner := '{}'; parents := '{}'; new_tokens := '{}';
        FOR p IN SELECT DISTINCT o FROM unnest(owner) AS o ORDER BY o LOOP
            -- the prompt's 2 * num_beams best candidates of all its beams
            chosen := 0;
            FOR cand IN SELECT c.total, c.beam, c.token, (row_number() OVER (ORDER BY c.total DESC, c.beam, c.token))::int AS r
                          FROM unnest(c_total, c_beam, c_token) AS c(total, beam, token)
                         WHERE owner[c.beam] = p
                         ORDER BY c.total DESC, c.beam, c.token
                         LIMIT 2 * num_beams LOOP
                IF cand.token = eos THEN
                    CONTINUE WHEN cand.r > num_beams;       -- an end among the worse half is not kept
                    hyps[p] := keep_hypothesis(hyps[p], (beams[cand.beam]).tokens || eos,      -- a finished
                                               cand.total / step::float8 ^ length_penalty, num_beams);  -- hypothesis
                ELSE
                    next_beams := next_beams || ROW((beams[cand.beam]).tokens || cand.token)::token_list;
                    next_sums := next_sums || cand.total;
                    next_owner := next_owner || p;
                    parents := parents || cand.beam;
                    new_tokens := new_tokens || cand.token;
                    chosen := chosen + 1;
                END IF;
                EXIT WHEN chosen = num_beams;
            END LOOP;
            done := cardinality((hyps[p]).scores) >= num_beams
                    AND beams_done(stopping, worst => (SELECT min(h) FROM unnest((hyps[p]).scores) AS h),
                                   best_sum => (SELECT max(c.total) FROM unnest(c_total, c_beam) AS c(total, beam)
                                                 WHERE owner[c.beam] = p),
                                   new_tokens => step, max_new_tokens => n_steps[p], length_penalty => length_penalty);
            IF done OR step = n_steps[p] THEN               -- the prompt leaves the batch
                IF NOT done THEN                            -- its live beams join its hypotheses
                    FOR j IN cardinality(next_beams) - chosen + 1 .. cardinality(next_beams) LOOP
                        hyps[p] := keep_hypothesis(hyps[p], (next_beams[j]).tokens,
                                                   next_sums[j] / step::float8 ^ length_penalty, num_beams);
                    END LOOP;
                END IF;
                next_beams := next_beams[:cardinality(next_beams) - chosen];
                next_sums := next_sums[:cardinality(next_sums) - chosen];
                next_owner := next_owner[:cardinality(next_owner) - chosen];
                parents := parents[:cardinality(parents) - chosen];
                new_tokens := new_tokens[:cardinality(new_tokens) - chosen];
            END IF;
        END LOOP;
        EXIT WHEN cardinality(next_beams) = 0;              -- every prompt's search is done
        state := forward_batch(new_tokens, array_fill(1, ARRAY[cardinality(next_beams)]),  -- one position per beam,
                               pick_caches(state.present, n_seq => cardinality(beams), picks => parents));  -- its
        beams := next_beams;                                                                   -- parent's caches
        sums := next_sums;
        owner := next_owner;
    END LOOP;
    FOR p IN 1 .. n LOOP
        RETURN QUERY
        SELECT p, (row_number() OVER (ORDER BY h.s DESC, h.i DESC))::int, ((hyps[p]).tokens[h.i]).tokens,
               (decode_utf8(detokenize_bytes(array_remove(((hyps[p]).tokens[h.i]).tokens, eos)), true)).txt, h.s,
               CASE WHEN ((hyps[p]).tokens[h.i]).tokens[cardinality(((hyps[p]).tokens[h.i]).tokens)] = eos THEN 'endoftext'
                    WHEN n_steps[p] < max_new_tokens THEN 'context_full' ELSE 'length' END
          FROM unnest((hyps[p]).scores) WITH ORDINALITY AS h(s, i)
         ORDER BY h.s DESC, h.i DESC
         LIMIT num_return_sequences;
    END LOOP;
END
$$;

-- prompt -> (rank) -> tokens, text, score, finish: the num_return_sequences best hypotheses of one
-- prompt's beam search, best first: beam_search_batch's case of one, with the same arguments
CREATE FUNCTION beam_search(prompt text, num_beams int DEFAULT 4, max_new_tokens int DEFAULT 20,
                            length_penalty float8 DEFAULT 1, early_stopping text DEFAULT 'false',
                            num_return_sequences int DEFAULT 1, repetition_penalty float8 DEFAULT 1,
                            no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0)
RETURNS TABLE (rank int, tokens int[], text text, score float8, finish text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT b.rank, b.tokens, b.text, b.score, b.finish
      FROM beam_search_batch(ARRAY[prompt], num_beams, max_new_tokens, length_penalty, early_stopping,
                             num_return_sequences, repetition_penalty, no_repeat_ngram_size, min_new_tokens) AS b
     ORDER BY b.rank;
END;
