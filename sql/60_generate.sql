-- 60_generate.sql: text generation with a KV cache, and the functions people call from psql
--
--   prompt -> tokenize -> forward(prompt) (prefill) -> sample -> forward(token, cache) -> sample -> ...
--
-- The KV cache (one kv per layer) lives in this function's variables: generation writes
-- nothing, so it runs on a read-only replica and leaves nothing behind when it ends or fails.
-- Each new token runs the model on its own position only, reading earlier keys and values from
-- the cache. A NOTICE per token shows progress in psql; its DETAIL is JSON for programs.
--
-- finish (on the last row): 'length' (max_new_tokens reached), 'endoftext' (the model emitted
-- <|endoftext|>), 'stop' (the stop string appeared; the text is cut before it), or
-- 'context_full' (the model's n_positions are used up; no silent truncation).

CREATE FUNCTION max_new_tokens_limit() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 100000;

CREATE FUNCTION generate(prompt text, max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                         top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                         stop text DEFAULT NULL)
RETURNS TABLE (step int, token int, piece text, finish text)
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
AS $$
DECLARE
    cfg      config;
    tokens   int[];
    state    record;            -- (logits, present): the model's output and the KV cache
    n_ctx    int;               -- positions used so far
    pending  bytea := ''::bytea;  -- bytes of a character not yet complete
    decoded  record;
    text_out text := '';        -- everything generated so far, for the stop string
    cut      int;
    eot      int;
BEGIN
    SELECT * INTO cfg FROM config;
    PERFORM check_text(prompt);
    IF prompt = '' THEN
        RAISE EXCEPTION 'gpt2sql: the prompt is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_new_tokens IS NULL OR max_new_tokens < 1 OR max_new_tokens > max_new_tokens_limit() THEN
        RAISE EXCEPTION 'gpt2sql: max_new_tokens must be between 1 and %, got %', max_new_tokens_limit(), max_new_tokens
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM check_sampling(temperature, top_k, top_p);
    IF seed IS NOT NULL THEN
        IF NOT (seed BETWEEN -1 AND 1) THEN
            RAISE EXCEPTION 'gpt2sql: seed must be between -1 and 1 (PostgreSQL''s setseed range), got %', seed
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM setseed(seed);
    END IF;
    eot := (SELECT v.token FROM vocab AS v WHERE v.piece = '<|endoftext|>');

    tokens := tokenize(prompt);
    n_ctx := cardinality(tokens);
    IF n_ctx > cfg.n_positions THEN
        RAISE EXCEPTION 'gpt2sql: the prompt is % tokens; the model''s context is % positions', n_ctx, cfg.n_positions
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    state := forward(tokens, NULL);                                   -- prefill: the whole prompt at once

    FOR i IN 1 .. max_new_tokens LOOP
        step := i;
        token := sample_token(state.logits, temperature, top_k, top_p);
        finish := NULL;
        IF token = eot THEN
            decoded := decode_utf8(pending, true);
            piece := decoded.txt;
            finish := 'endoftext';
        ELSE
            decoded := decode_utf8(pending || (SELECT v.bytes FROM vocab AS v WHERE v.token = generate.token), i = max_new_tokens);
            piece := decoded.txt;
            pending := decoded.rest;
            IF stop IS NOT NULL AND stop <> '' THEN
                cut := strpos(text_out || piece, stop);
                IF cut > 0 THEN
                    piece := left(piece, cut - 1 - length(text_out));
                    finish := 'stop';
                END IF;
            END IF;
            IF finish IS NULL AND i = max_new_tokens THEN
                finish := 'length';
            ELSIF finish IS NULL AND n_ctx >= cfg.n_positions THEN
                decoded := decode_utf8(pending, true);
                piece := piece || decoded.txt;
                finish := 'context_full';
                RAISE WARNING 'gpt2sql: stopped after % new tokens: the context of % positions is full', i, cfg.n_positions;
            END IF;
        END IF;
        text_out := text_out || piece;
        RAISE NOTICE 'gpt2sql token %/%: % %', i, max_new_tokens, token, quote_literal(piece)
            USING DETAIL = json_build_object('step', i, 'token', token, 'piece', piece, 'finish', finish)::text;
        RETURN NEXT;
        EXIT WHEN finish IS NOT NULL;
        state := forward(ARRAY[token], state.present);                -- one new position, the cache holds the rest
        n_ctx := n_ctx + 1;
    END LOOP;
END
$$;

-- prompt + continuation as one text
CREATE FUNCTION complete(prompt text, max_new_tokens int DEFAULT 20, temperature float8 DEFAULT 0,
                         top_k int DEFAULT NULL, top_p float8 DEFAULT NULL, seed float8 DEFAULT NULL,
                         stop text DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT prompt || coalesce(string_agg(g.piece, '' ORDER BY g.step), '')
      FROM generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop) AS g;
END;

-- (rank) -> token, piece, probability: the k most likely next tokens after the prompt
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
