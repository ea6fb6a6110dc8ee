-- generate/60_generate.sql: text generation with a KV cache, and the functions people call from psql
--
--   prompt -> tokenize -> forward(prompt) (prefill) -> sample -> forward(token, cache) -> sample -> ...
--
-- The KV caches (one kv per layer and sequence) live in generate_batch's variables: generation writes
-- nothing, so it runs on a read-only replica and leaves nothing behind when it ends or fails.
-- Each new token runs the model on its own position only, reading earlier keys and values from
-- the cache. A NOTICE per token shows progress in psql; its DETAIL is JSON for programs.
--
-- finish (on the last row): 'length' (max_new_tokens reached), 'endoftext' (the model emitted
-- <|endoftext|>), 'stop' (the stop string appeared; the text is cut before it), or
-- 'context_full' (the model's n_positions are used up; no silent truncation).

-- the most new tokens one generation may ask for
CREATE FUNCTION max_new_tokens_limit() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 100000;

-- the most prompts one generate_batch call may hold
CREATE FUNCTION max_batch_prompts() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 64;

-- What one sampled token adds to the text, and whether its sequence ends there. pending holds the
-- bytes of a character not yet complete (a token may end mid-character); text_so_far is what the
-- sequence generated before, for the stop string; is_last: max_new_tokens is reached;
-- context_full: the token has no position left to go to.
CREATE TYPE token_text AS (piece text, pending bytea, finish text);

-- (piece, pending, finish): the text one sampled token adds, and whether its sequence ends there
CREATE FUNCTION next_piece(token int, pending bytea, text_so_far text, stop text,
                           is_last boolean, context_full boolean)
RETURNS token_text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    decoded record;
    out     token_text;
    cut     int;
BEGIN
    IF token = (SELECT v.token FROM vocab AS v WHERE v.piece = '<|endoftext|>') THEN
        decoded := decode_utf8(pending, true);
        RETURN ROW(decoded.txt, ''::bytea, 'endoftext')::token_text;
    END IF;
    decoded := decode_utf8(pending || (SELECT v.bytes FROM vocab AS v WHERE v.token = next_piece.token), is_last);
    out := ROW(decoded.txt, decoded.rest, NULL)::token_text;
    IF stop IS NOT NULL AND stop <> '' THEN
        cut := strpos(text_so_far || out.piece, stop);
        IF cut > 0 THEN
            out.piece := left(out.piece, greatest(0, cut - 1 - length(text_so_far)));
            out.finish := 'stop';
        END IF;
    END IF;
    IF out.finish IS NULL AND is_last THEN
        out.finish := 'length';
    ELSIF out.finish IS NULL AND context_full THEN
        out.piece := out.piece || (decode_utf8(out.pending, true)).txt;
        out.pending := ''::bytea;
        out.finish := 'context_full';
    END IF;
    RETURN out;
END
$$;

-- the options of generate_batch (and so of generate) are in range
CREATE FUNCTION check_generation(max_new_tokens int, temperature float8, top_k int, top_p float8, seed float8,
                                 min_p float8, repetition_penalty float8, no_repeat_ngram_size int, min_new_tokens int,
                                 logprobs int)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF max_new_tokens IS NULL OR max_new_tokens < 1 OR max_new_tokens > max_new_tokens_limit() THEN
        RAISE EXCEPTION 'gpt2sql: max_new_tokens must be between 1 and %, got %', max_new_tokens_limit(), max_new_tokens
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM check_sampling(temperature, top_k, top_p, min_p);
    PERFORM check_processors(repetition_penalty, no_repeat_ngram_size, min_new_tokens, max_new_tokens);
    IF logprobs IS NULL OR logprobs < 0 OR logprobs > 100 THEN
        RAISE EXCEPTION 'gpt2sql: logprobs must be from 0 (none) to 100, got %', logprobs
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF seed IS NOT NULL AND NOT (seed BETWEEN -1 AND 1) THEN
        RAISE EXCEPTION 'gpt2sql: seed must be between -1 and 1, got %', seed
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Prompts -> (prompt_index, step) -> token, piece, finish: every prompt's continuation.
--   prompts         1 to max_batch_prompts() (64) non-empty texts
--   max_new_tokens  tokens to add to each, 1 to max_new_tokens_limit() (100,000); fewer where the
--                   model's n_positions run out (finish 'context_full')
--   temperature     0 = greedy (always the likeliest token); > 0: sample from softmax(logits / temperature)
--   top_k           sample among the k likeliest tokens only, k >= 1 (NULL: all)
--   top_p           sample among the likeliest tokens whose probabilities add up to top_p, in (0, 1] (NULL: 1)
--   seed            in [-1, 1]: each sequence draws from its own stream for this seed (stream_uniform),
--                   so a sampled run repeats, and a prompt's samples do not depend on the rest of
--                   the batch (NULL: random())
--   stop            a text that ends a sequence where it appears, cut before it (NULL: none)
--   min_p           sample among the tokens at least min_p times as likely as the likeliest, in [0, 1]
--   repetition_penalty, no_repeat_ngram_size, min_new_tokens: the logits processors of
--                   55_processors.sql (1, 0 and 0: off), as transformers' generate applies them
--   logprobs        n from 1 to 100: each row also gives logprob, the natural log of the token's
--                   probability under the distribution it was drawn from (greedy: the model's, after
--                   the processors; sampling: after temperature, top_k, top_p and min_p), and the n
--                   likeliest tokens of that distribution with theirs (top_tokens, top_logprobs);
--                   0 (the default): those columns are NULL
--   num_return_sequences  samples per prompt, 1 to max_batch_prompts() in all (sampling only: greedy
--                   would repeat one); sample counts them from 1, and sample s of each prompt draws
--                   from stream s
-- step counts from 1; piece is the text the token adds (a character split across tokens comes
-- whole with its last token); finish is NULL but on a sequence's last row. All
-- sequences advance together: each step runs the model once for every unfinished sequence (their
-- new positions go through the same product queries, each with its own KV cache and position:
-- forward_batch), so the weights are read once per step, not once per prompt. Each sequence stops
-- on its own; rows come step by step, prompt_index counting from 1 like the array. generate() is
-- the case of one prompt; a batch's greedy results equal each prompt's own, a seeded batch repeats.
CREATE FUNCTION generate_batch(prompts text[], max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                               top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                               stop text DEFAULT NULL, min_p float8 DEFAULT NULL, repetition_penalty float8 DEFAULT 1,
                               no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0,
                               logprobs int DEFAULT 0, num_return_sequences int DEFAULT 1)
RETURNS TABLE (prompt_index int, step int, token int, piece text, finish text, logprob float8, top_tokens int[],
               top_logprobs float8[], sample int)
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
AS $$
DECLARE
    n_positions int := (SELECT c.n_positions FROM config AS c);
    n        int := cardinality(prompts);
    n_seq    int;               -- sequences: n prompts x num_return_sequences samples, prompt after prompt
    prompt   text;
    which    text;              -- 'the prompt' or 'prompt 3': how errors and notices name prompt seq
    tokens   int[] := '{}';     -- the new tokens of every advancing sequence, one after another
    lengths  int[] := '{}';     -- [n_seq] new tokens of sequence seq in this step (0: finished)
    n_ctx    int[] := '{}';     -- [n_seq] positions sequence seq has used
    pending  bytea[] := '{}';   -- [n_seq] bytes of a character not yet complete
    text_out text[] := '{}';    -- [n_seq] what sequence seq generated so far, for the stop string
    state    record;            -- (logits [B'][V], present, best [B']): the model's output and the KV caches
    out      token_text;
    k        int;               -- row of state.logits for sequence seq
    history  token_list[] := '{}';  -- [n_seq] the tokens of sequence seq so far, for the processors
    prompt_tokens int[];
    processed boolean := repetition_penalty <> 1 OR no_repeat_ngram_size > 0 OR min_new_tokens > 0;
    row_logits float8[];        -- [V] sequence seq's next-token logits, when the processors or logprobs need them
    u        float8;            -- the seeded draw of sequence seq at this step (NULL: random())
    picks    int[];             -- [n_seq] the prompt of each sequence
BEGIN
    IF prompts IS NULL OR n = 0 THEN
        RAISE EXCEPTION 'gpt2sql: prompts is an empty array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_ndims(prompts) > 1 THEN
        RAISE EXCEPTION 'gpt2sql: prompts must be a one-dimensional array, got % dimensions', array_ndims(prompts)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF num_return_sequences IS NULL OR num_return_sequences < 1 THEN
        RAISE EXCEPTION 'gpt2sql: num_return_sequences must be >= 1, got %', coalesce(num_return_sequences::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF num_return_sequences > 1 AND NOT (temperature > 0) THEN
        RAISE EXCEPTION 'gpt2sql: num_return_sequences > 1 needs sampling (temperature > 0): greedy decoding would return one sequence % times', num_return_sequences
            USING ERRCODE = 'invalid_parameter_value', HINT = 'for several greedy-like answers use beam_search(..., num_return_sequences => n)';
    END IF;
    IF n > max_batch_prompts() / num_return_sequences THEN
        RAISE EXCEPTION 'gpt2sql: % in one batch; the limit is % sequences',
            CASE WHEN num_return_sequences = 1 THEN format('%s prompts', n)
                 ELSE format('%s prompts x %s samples', n, num_return_sequences) END,
            max_batch_prompts() USING ERRCODE = 'program_limit_exceeded', HINT = 'split the prompts into several batches';
    END IF;
    n_seq := n * num_return_sequences;
    PERFORM check_generation(max_new_tokens, temperature, top_k, top_p, seed, min_p, repetition_penalty,
                             no_repeat_ngram_size, min_new_tokens, logprobs);
    FOR seq IN 1 .. n LOOP
        prompt := prompts[array_lower(prompts, 1) + seq - 1];
        which := CASE WHEN n = 1 THEN 'the prompt' ELSE format('prompt %s', seq) END;
        IF prompt IS NULL OR prompt = '' THEN
            RAISE EXCEPTION 'gpt2sql: % is %', which, CASE WHEN prompt IS NULL THEN 'NULL' ELSE 'empty' END
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        BEGIN
            PERFORM check_text(prompt);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'gpt2sql: %: %', which, regexp_replace(SQLERRM, '^gpt2sql: ', '')
                USING ERRCODE = SQLSTATE;
        END;
        prompt_tokens := tokenize(prompt);
        tokens := tokens || prompt_tokens;
        lengths[seq] := cardinality(prompt_tokens);
        IF lengths[seq] > n_positions THEN
            RAISE EXCEPTION 'gpt2sql: % is % tokens; the model''s context is % positions', which, lengths[seq], n_positions
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
        FOR s IN 1 .. num_return_sequences LOOP                        -- its samples' state
            history[(seq - 1) * num_return_sequences + s] := ROW(prompt_tokens)::token_list;
            n_ctx[(seq - 1) * num_return_sequences + s] := lengths[seq];
            pending[(seq - 1) * num_return_sequences + s] := ''::bytea;
            text_out[(seq - 1) * num_return_sequences + s] := '';
        END LOOP;
    END LOOP;
    state := forward_batch(tokens, lengths, NULL);                    -- prefill: every prompt once
    IF num_return_sequences > 1 THEN                                  -- each sample starts from its prompt's
        picks := ARRAY(SELECT (j - 1) / num_return_sequences + 1 FROM generate_series(1, n_seq) AS j);  -- logits and
        SELECT pick_rows(state.logits, picks) AS logits,                                               -- a copy of
               pick_caches(state.present, n_seq => n, picks => picks) AS present,                      -- its caches
               ARRAY(SELECT state.best[p.r] FROM unnest(picks) WITH ORDINALITY AS p(r, j) ORDER BY p.j) AS best
          INTO state;
    END IF;
    lengths := array_fill(1, ARRAY[n_seq]);

    FOR i IN 1 .. max_new_tokens LOOP
        step := i;
        k := 0;
        tokens := '{}';
        FOR seq IN 1 .. n_seq LOOP
            CONTINUE WHEN lengths[seq] = 0;                             -- finished earlier
            k := k + 1;
            prompt_index := (seq - 1) / num_return_sequences + 1;
            sample := (seq - 1) % num_return_sequences + 1;
            u := CASE WHEN temperature > 0 AND seed IS NOT NULL THEN stream_uniform(seed, sample, i) END;
            IF processed OR logprobs > 0 THEN   -- this sequence's logits are needed (greedy cannot take best)
                row_logits := ARRAY(SELECT unnest(state.logits[k:k][:]));                     -- [V]
                IF processed THEN
                    row_logits := process_logits(row_logits, (history[seq]).tokens, i - 1, repetition_penalty,
                                                 no_repeat_ngram_size, min_new_tokens);
                END IF;
                token := sample_token(row_logits, temperature, top_k, top_p, CASE WHEN processed THEN NULL
                                                                                   ELSE state.best[k] END, min_p, u);
                IF processed THEN
                    history[seq] := ROW((history[seq]).tokens || token)::token_list;
                END IF;
                IF logprobs > 0 THEN
                    SELECT lp.logprob, lp.top_tokens, lp.top_logprobs INTO logprob, top_tokens, top_logprobs
                      FROM token_logprobs(row_logits, token, logprobs, temperature, top_k, top_p, min_p) AS lp;
                END IF;
            ELSE
                token := sample_token(CASE WHEN temperature > 0 THEN state.logits[k:k][:] END,  -- [1][V]: greedy
                                      temperature, top_k, top_p, state.best[k], min_p, u);   -- takes best (a slice
                                                                                             -- copies all logits)
            END IF;
            out := next_piece(token, pending[seq], text_out[seq], stop, i = max_new_tokens, n_ctx[seq] >= n_positions);
            piece := out.piece;
            finish := out.finish;
            which := CASE WHEN n = 1 THEN '' ELSE format(' of prompt %s', prompt_index) END
                     || CASE WHEN num_return_sequences = 1 THEN '' ELSE format(', sample %s', sample) END;
            IF finish = 'context_full' THEN
                RAISE WARNING 'gpt2sql: stopped after % new tokens%: the context of % positions is full',
                    i, which, n_positions;
            END IF;
            pending[seq] := out.pending;
            text_out[seq] := text_out[seq] || piece;
            RAISE NOTICE 'gpt2sql token %: % %', format('%s/%s%s', i, max_new_tokens, which), token, quote_literal(piece)
                USING DETAIL = json_build_object('prompt_index', prompt_index, 'step', i, 'token', token, 'piece', piece,
                                                 'finish', finish, 'sample', sample)::text;
            RETURN NEXT;
            IF finish IS NULL THEN
                tokens := tokens || token;
                lengths[seq] := 1;
                n_ctx[seq] := n_ctx[seq] + 1;
            ELSE
                lengths[seq] := 0;
            END IF;
        END LOOP;
        EXIT WHEN cardinality(tokens) = 0;                            -- every sequence has finished
        state := forward_batch(tokens, lengths, state.present);       -- one new position per unfinished sequence
    END LOOP;
END
$$;

-- prompt -> (step) -> token, piece, finish: the continuation of one prompt, generate_batch's case
-- of one; the arguments are generate_batch's: prompt (non-empty text), max_new_tokens (1 to 100,000),
-- temperature (0 = greedy, > 0 samples), top_k (>= 1 or NULL), top_p ((0, 1] or NULL), seed
-- ([-1, 1] or NULL), stop (text or NULL), min_p ([0, 1] or NULL), repetition_penalty (> 0; 1 = off),
-- no_repeat_ngram_size (>= 0; 0 = off), min_new_tokens (0 to max_new_tokens), logprobs (0 to 100:
-- logprob, top_tokens and top_logprobs, NULL for 0), num_return_sequences (samples, 1 to 64, each
-- from its own seeded stream; rows sample by sample)
CREATE FUNCTION generate(prompt text, max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                         top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                         stop text DEFAULT NULL, min_p float8 DEFAULT NULL, repetition_penalty float8 DEFAULT 1,
                         no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0, logprobs int DEFAULT 0,
                         num_return_sequences int DEFAULT 1)
RETURNS TABLE (step int, token int, piece text, finish text, logprob float8, top_tokens int[], top_logprobs float8[],
               sample int)
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT g.step, g.token, g.piece, g.finish, g.logprob, g.top_tokens, g.top_logprobs, g.sample
      FROM generate_batch(ARRAY[prompt], max_new_tokens, temperature, top_k, top_p, seed, stop, min_p,
                          repetition_penalty, no_repeat_ngram_size, min_new_tokens, logprobs, num_return_sequences) AS g
     ORDER BY g.sample, g.step;
END;

-- prompt + continuation as one text; the arguments are generate's (prompt, max_new_tokens,
-- temperature, top_k, top_p, seed, stop, min_p, repetition_penalty, no_repeat_ngram_size, min_new_tokens),
-- then beam_search's: num_beams > 1 (with length_penalty, early_stopping) completes with its best
-- hypothesis instead (62_beam_search.sql; the sampling options must then be left at their defaults)
CREATE FUNCTION complete(prompt text, max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                         top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                         stop text DEFAULT NULL, min_p float8 DEFAULT NULL, repetition_penalty float8 DEFAULT 1,
                         no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0, num_beams int DEFAULT 1,
                         length_penalty float8 DEFAULT 1, early_stopping text DEFAULT 'false')
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
AS $$
BEGIN
    IF num_beams IS DISTINCT FROM 1 THEN
        IF temperature <> 0 OR top_k IS NOT NULL OR top_p IS NOT NULL OR seed IS NOT NULL OR stop IS NOT NULL
           OR min_p IS NOT NULL THEN
            RAISE EXCEPTION 'gpt2sql: beam search (num_beams > 1) is deterministic: temperature, top_k, top_p, seed, stop and min_p do not apply to it'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN prompt || (SELECT b.text FROM beam_search(prompt, num_beams, max_new_tokens, length_penalty, early_stopping,
                                                        1, repetition_penalty, no_repeat_ngram_size, min_new_tokens) AS b);
    END IF;
    RETURN (SELECT prompt || coalesce(string_agg(g.piece, '' ORDER BY g.step), '')
              FROM generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop, min_p, repetition_penalty,
                            no_repeat_ngram_size, min_new_tokens) AS g);
END
$$;

-- (rank) -> token, piece, probability: the k most likely next tokens after the prompt (a non-empty
-- text); k from 1 to the vocabulary's size; rank counts from 1, probability is in [0, 1]
CREATE FUNCTION next_token_probs(prompt text, k int DEFAULT 10)
RETURNS TABLE (rank int, token int, piece text, probability float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM check_text(prompt);
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'gpt2sql: k must be >= 1, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT d.rank, d.token, (decode_utf8(v.bytes, true)).txt, d.probability
      FROM sampling_distribution((forward(tokenize(prompt), NULL)).logits, 1, NULL, NULL) AS d  -- softmax over all
      JOIN vocab AS v ON v.token = d.token
     WHERE d.rank <= k
     ORDER BY d.rank;
END
$$;
