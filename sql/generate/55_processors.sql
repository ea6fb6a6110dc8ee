-- generate/55_processors.sql: the logits processors of Hugging Face's generate, applied to each
-- sequence's next-token logits before sampling (and before greedy's argmax), with transformers'
-- names and rules:
--   repetition_penalty    a token already in the sequence (prompt or output): its logit divided by
--                         the penalty if positive, multiplied by it if negative (CTRL's rule); 1 = off
--   no_repeat_ngram_size  n > 0: a token that would make an n-gram the sequence already holds gets
--                         -Infinity (never chosen); 0 = off
--   min_new_tokens        <|endoftext|> gets -Infinity until that many new tokens are generated

-- the processors' options are in range
CREATE FUNCTION check_processors(repetition_penalty float8, no_repeat_ngram_size int, min_new_tokens int,
                                 max_new_tokens int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF repetition_penalty IS NULL OR NOT (repetition_penalty > 0) OR repetition_penalty = 'Infinity'::float8
       OR repetition_penalty = 'NaN'::float8 THEN
        RAISE EXCEPTION 'gpt2sql: repetition_penalty must be a number > 0 (1 = none), got %', repetition_penalty
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF no_repeat_ngram_size IS NULL OR no_repeat_ngram_size < 0 THEN
        RAISE EXCEPTION 'gpt2sql: no_repeat_ngram_size must be >= 0 (0 = none), got %', no_repeat_ngram_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF min_new_tokens IS NULL OR min_new_tokens < 0 OR min_new_tokens > max_new_tokens THEN
        RAISE EXCEPTION 'gpt2sql: min_new_tokens must be from 0 to max_new_tokens (%), got %', max_new_tokens, min_new_tokens
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- the tokens that would complete an n-gram already in history (token ids): the last token of every
-- n-gram of history whose first n - 1 tokens are history's last n - 1 (for n = 1, every token in it)
CREATE FUNCTION repeated_ngram_ends(history int[], n int)
RETURNS int[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(SELECT DISTINCT history[i + n - 1]
               FROM generate_series(1, cardinality(history) - n + 1) AS i
              WHERE history[i : i + n - 2] = history[cardinality(history) - n + 2 : cardinality(history)]
              ORDER BY 1);

-- One sequence's next-token logits [V] after the processors: history is the sequence so far (its
-- prompt's tokens, then the new ones), n_new how many of them are new.
CREATE FUNCTION process_logits(logits float8[], history int[], n_new int, repetition_penalty float8,
                               no_repeat_ngram_size int, min_new_tokens int)
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    out float8[] := logits;     -- [V]; changed in place (a PL/pgSQL array variable is not copied per element)
    t   int;
BEGIN
    IF repetition_penalty <> 1 THEN
        FOR t IN SELECT DISTINCT u.t FROM unnest(history) AS u(t) LOOP
            out[t + 1] := CASE WHEN out[t + 1] < 0 THEN out[t + 1] * repetition_penalty
                               ELSE out[t + 1] / repetition_penalty END;
        END LOOP;
    END IF;
    IF no_repeat_ngram_size > 0 THEN
        FOREACH t IN ARRAY repeated_ngram_ends(history, no_repeat_ngram_size) LOOP
            out[t + 1] := '-Infinity';
        END LOOP;
    END IF;
    IF n_new < min_new_tokens THEN
        t := (SELECT v.token FROM vocab AS v WHERE v.piece = '<|endoftext|>');
        out[t + 1] := '-Infinity';
    END IF;
    RETURN out;
END
$$;

-- a list of token ids, so that an array can hold one per sequence
CREATE TYPE token_list AS (tokens int[]);
