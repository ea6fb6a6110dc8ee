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

-- Prompts -> [n] their tokens, each prompt checked: a one-dimensional array of 1 to
-- max_batch_prompts() / per_prompt non-empty texts (per_prompt sequences each: per_prompt_name
-- says what they are, e.g. 'samples'), each within the model's context. Errors name the prompt.
CREATE FUNCTION batch_tokens(prompts text[], per_prompt int, per_prompt_name text)
RETURNS token_list[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_positions int := (SELECT c.n_positions FROM config AS c);
    n      int := cardinality(prompts);
    prompt text;
    which  text;                -- 'the prompt' or 'prompt 3': how errors name it
    ids    int[];
    out    token_list[] := '{}';
BEGIN
    IF prompts IS NULL OR n = 0 THEN
        RAISE EXCEPTION 'gpt2sql: prompts is an empty array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_ndims(prompts) > 1 THEN
        RAISE EXCEPTION 'gpt2sql: prompts must be a one-dimensional array, got % dimensions', array_ndims(prompts)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n > max_batch_prompts() / per_prompt THEN
        RAISE EXCEPTION 'gpt2sql: % in one batch; the limit is % sequences',
            CASE WHEN per_prompt = 1 THEN format('%s prompts', n)
                 ELSE format('%s prompts x %s %s', n, per_prompt, per_prompt_name) END,
            max_batch_prompts() USING ERRCODE = 'program_limit_exceeded', HINT = 'split the prompts into several batches';
    END IF;
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
        ids := tokenize(prompt);
        IF cardinality(ids) > n_positions THEN
            RAISE EXCEPTION 'gpt2sql: % is % tokens; the model''s context is % positions', which, cardinality(ids), n_positions
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
        out := out || ROW(ids)::token_list;
    END LOOP;
    RETURN out;
END
$$;

-- The NOTICE of one generated row: progress in psql ('gpt2sql token 3/20 of prompt 2: 257 ' a''),
-- which names the sequence as which says (e.g. ' of prompt 2, sample 3'), and in its DETAIL the
-- row as JSON, for programs that stream
CREATE FUNCTION notify_token(prompt_index int, sample int, step int, max_new_tokens int, token int, piece text,
                             finish text, which text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE NOTICE 'gpt2sql token %: % %', format('%s/%s%s', step, max_new_tokens, which), token, quote_literal(piece)
        USING DETAIL = json_build_object('prompt_index', prompt_index, 'step', step, 'token', token, 'piece', piece,
                                         'finish', finish, 'sample', sample)::text;
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
--                   from stream s. With beam search: the best hypotheses, 1 to num_beams
--   num_beams       > 1: beam search with this many beams, 2 to max_beams() (16), prompts x num_beams
--                   at most 64 (beam_search_batch, 62_beam_search.sql); each returned hypothesis comes
--                   as rows, sample = its rank (1 = the best), once the search has ended. Sampling,
--                   stop and logprobs do not apply to it
--   length_penalty, early_stopping: beam search's, as transformers defines them (1 and 'false')
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
                               logprobs int DEFAULT 0, num_return_sequences int DEFAULT 1, num_beams int DEFAULT 1,
                               length_penalty float8 DEFAULT 1, early_stopping text DEFAULT 'false')
RETURNS TABLE (prompt_index int, step int, token int, piece text, finish text, logprob float8, top_tokens int[],
               top_logprobs float8[], sample int)
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
AS $$
DECLARE
    n_positions int := (SELECT c.n_positions FROM config AS c);
    n        int := cardinality(prompts);
    n_seq    int;               -- sequences: n prompts x num_return_sequences samples, prompt after prompt
    prompt_ids token_list[];    -- [n] each prompt's tokens
    which    text;              -- how notices name a sequence: '' or ' of prompt 3', ', sample 2'
    hyp      record;            -- a beam search hypothesis: (prompt_index, rank, tokens, text, score, finish)
    tokens   int[] := '{}';     -- the new tokens of every advancing sequence, one after another
    lengths  int[] := '{}';     -- [n_seq] new tokens of sequence seq in this step (0: finished)
    n_ctx    int[] := '{}';     -- [n_seq] positions sequence seq has used
    pending  bytea[] := '{}';   -- [n_seq] bytes of a character not yet complete
    text_out text[] := '{}';    -- [n_seq] what sequence seq generated so far, for the stop string
    state    record;            -- (logits [B'][V], present, best [B']): the model's output and the KV caches
    out      token_text;
    k        int;               -- row of state.logits for sequence seq
    history  token_list[] := '{}';  -- [n_seq] the tokens of sequence seq so far, for the processors
    processed boolean := repetition_penalty <> 1 OR no_repeat_ngram_size > 0 OR min_new_tokens > 0;
    row_logits float8[];        -- [V] sequence seq's next-token logits, when the processors or logprobs need them
    u        float8;            -- the seeded draw of sequence seq at this step (NULL: random())
    picks    int[];             -- [n_seq] the prompt of each sequence
BEGIN
    IF num_beams IS DISTINCT FROM 1 THEN                              -- beam search: its hypotheses' rows
        IF temperature IS DISTINCT FROM 0 OR top_k IS NOT NULL OR top_p IS NOT NULL OR seed IS NOT NULL
           OR stop IS NOT NULL OR min_p IS NOT NULL OR logprobs IS DISTINCT FROM 0 THEN
            RAISE EXCEPTION 'gpt2sql: beam search (num_beams > 1) is deterministic: temperature, top_k, top_p, seed, stop, min_p and logprobs do not apply to it'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR hyp IN SELECT * FROM beam_search_batch(prompts, num_beams, max_new_tokens, length_penalty, early_stopping,
                                                   num_return_sequences, repetition_penalty, no_repeat_ngram_size,
                                                   min_new_tokens) AS b
                    ORDER BY b.prompt_index, b.rank LOOP
            prompt_index := hyp.prompt_index;
            sample := hyp.rank;
            which := CASE WHEN n = 1 THEN '' ELSE format(' of prompt %s', prompt_index) END
                     || CASE WHEN num_return_sequences = 1 THEN '' ELSE format(', hypothesis %s', sample) END;
            out := ROW(NULL, ''::bytea, NULL)::token_text;           -- nothing pending before its first token
            FOR i IN 1 .. cardinality(hyp.tokens) LOOP
                step := i;
                token := hyp.tokens[i];
                out := next_piece(token, out.pending, '', NULL, i = cardinality(hyp.tokens), false);
                piece := out.piece;
                finish := CASE WHEN i = cardinality(hyp.tokens) THEN hyp.finish END;
                PERFORM notify_token(prompt_index, sample, i, max_new_tokens, token, piece, finish, which);
                RETURN NEXT;
            END LOOP;
        END LOOP;
        RETURN;
    END IF;
    IF num_return_sequences IS NULL OR num_return_sequences < 1 THEN
        RAISE EXCEPTION 'gpt2sql: num_return_sequences must be >= 1, got %', coalesce(num_return_sequences::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF num_return_sequences > 1 AND NOT (temperature > 0) THEN
        RAISE EXCEPTION 'gpt2sql: num_return_sequences > 1 needs sampling (temperature > 0) or beam search (num_beams > 1): greedy decoding would return one sequence % times', num_return_sequences
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM check_generation(max_new_tokens, temperature, top_k, top_p, seed, min_p, repetition_penalty,
                             no_repeat_ngram_size, min_new_tokens, logprobs);
    prompt_ids := batch_tokens(prompts, per_prompt => num_return_sequences, per_prompt_name => 'samples');
    n_seq := n * num_return_sequences;
    FOR p IN 1 .. n LOOP
        tokens := tokens || (prompt_ids[p]).tokens;
        lengths[p] := cardinality((prompt_ids[p]).tokens);
        FOR s IN 1 .. num_return_sequences LOOP                        -- its samples' state
            history[(p - 1) * num_return_sequences + s] := prompt_ids[p];
            n_ctx[(p - 1) * num_return_sequences + s] := lengths[p];
            pending[(p - 1) * num_return_sequences + s] := ''::bytea;
            text_out[(p - 1) * num_return_sequences + s] := '';
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
            PERFORM notify_token(prompt_index, sample, i, max_new_tokens, token, piece, finish, which);
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
-- from its own seeded stream; or beam search's best hypotheses; rows sample by sample), num_beams
-- (1, or 2 to 16: beam search), length_penalty and early_stopping (beam search's)
CREATE FUNCTION generate(prompt text, max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                         top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                         stop text DEFAULT NULL, min_p float8 DEFAULT NULL, repetition_penalty float8 DEFAULT 1,
                         no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0, logprobs int DEFAULT 0,
                         num_return_sequences int DEFAULT 1, num_beams int DEFAULT 1, length_penalty float8 DEFAULT 1,
                         early_stopping text DEFAULT 'false')
RETURNS TABLE (step int, token int, piece text, finish text, logprob float8, top_tokens int[], top_logprobs float8[],
               sample int)
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT g.step, g.token, g.piece, g.finish, g.logprob, g.top_tokens, g.top_logprobs, g.sample
      FROM generate_batch(ARRAY[prompt], max_new_tokens, temperature, top_k, top_p, seed, stop, min_p,
                          repetition_penalty, no_repeat_ngram_size, min_new_tokens, logprobs, num_return_sequences,
                          num_beams, length_penalty, early_stopping) AS g
     ORDER BY g.sample, g.step;
END;

-- prompt + continuation as one text; the arguments are generate's (prompt, max_new_tokens,
-- temperature, top_k, top_p, seed, stop, min_p, repetition_penalty, no_repeat_ngram_size, min_new_tokens),
-- then num_beams > 1 (with length_penalty, early_stopping): complete with beam search's best hypothesis
CREATE FUNCTION complete(prompt text, max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                         top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                         stop text DEFAULT NULL, min_p float8 DEFAULT NULL, repetition_penalty float8 DEFAULT 1,
                         no_repeat_ngram_size int DEFAULT 0, min_new_tokens int DEFAULT 0, num_beams int DEFAULT 1,
                         length_penalty float8 DEFAULT 1, early_stopping text DEFAULT 'false')
RETURNS text
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT prompt || coalesce(string_agg(g.piece, '' ORDER BY g.step), '')
      FROM generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop, min_p, repetition_penalty,
                    no_repeat_ngram_size, min_new_tokens, num_beams => num_beams, length_penalty => length_penalty,
                    early_stopping => early_stopping) AS g;
END;

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
