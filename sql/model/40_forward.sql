-- model/40_forward.sql: the whole model, tokens -> logits of the next token
--
--   x = wte[tokens] + wpe[positions]            embed
--   x = block_l(x) for each layer l             block
--   logits = layer_norm_f(x) @ wte^T            unembed
--
-- forward(tokens, cache) runs the new tokens only, reading the keys and values of earlier
-- positions from cache (one kv per layer; NULL for a fresh prompt) and returning the extended
-- cache. The whole prompt goes through each layer in one set of queries (prefill).
-- forward_batch does the same for several sequences at once (forward is its one-sequence case);
-- residual_stream() stops before the final layer norm and keeps every position (for scoring).

-- the prompt's tokens are not NULL or empty
CREATE FUNCTION check_not_empty(tokens int[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF tokens IS NULL OR cardinality(tokens) = 0 THEN
        RAISE EXCEPTION 'gpt2sql: the prompt is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- the tokens are a prompt: not empty, every id in the vocabulary, and within the context after past positions
CREATE FUNCTION check_tokens(tokens int[], past int) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_positions int := (SELECT c.n_positions FROM config AS c);
BEGIN
    PERFORM check_not_empty(tokens);
    PERFORM check_token_ids(tokens);
    IF past + cardinality(tokens) > n_positions THEN
        RAISE EXCEPTION 'gpt2sql: % tokens exceed the model''s context of % positions', past + cardinality(tokens), n_positions
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
END
$$;

-- logits [T][V] = layer_norm_f(x) @ wte^T: the next token's logits after each row of the residual
-- stream x [T][C], and best [T] the first of each row's highest logits (the kernel's lm_head)
CREATE FUNCTION unembed(x float8[], OUT logits float8[], OUT best int[])
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT (h.out).logits, (h.out).best
      FROM (SELECT lm_head(layer_norm(x, 'ln_f')) AS out OFFSET 0) AS h;   -- one call, not one per field
END;

-- logits [B'][V] of the position after the last new row of each advancing sequence (B' of them,
-- in order), best [B'] the first of each row's highest logits (the greedy choice), and the
-- extended caches. tokens holds lengths[seq] new tokens of sequence seq after one
-- another (0 for a sequence that sits this step out); cache holds one kv per (layer, sequence) at
-- cache[layer * B + seq] (B = cardinality(lengths); one sequence: cache[layer + 1]), NULL for fresh
-- prompts. Each sequence's positions continue after its own cache.
CREATE FUNCTION forward_batch(tokens int[], lengths int[], cache kv[], OUT logits float8[], OUT present kv[],
                              OUT best int[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_layer   int := (SELECT c.n_layer FROM config AS c);
    n_seq     int := cardinality(lengths);
    positions int[] := '{}';    -- [T] the position of each new row in its own sequence
    past      int;
    s         record;           -- rows s.first_row .. s.last_row are sequence s.seq's
    x         float8[];
    last      float8[] := '{}'; -- [B'][C] the last new row of each advancing sequence
    caches    kv[];             -- [B] one layer's caches
    out       record;
BEGIN
    PERFORM check_not_empty(tokens);
    IF (SELECT coalesce(sum(n), 0) <> cardinality(tokens) OR bool_or(n IS NULL OR n < 0) FROM unnest(lengths) AS n) THEN
        RAISE EXCEPTION 'gpt2sql: lengths % do not cut the % tokens into sequences', lengths, cardinality(tokens)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR s IN SELECT * FROM sequence_rows(lengths) LOOP
        past := kv_positions(cache[s.seq]);                                          -- layer 0's cache of sequence seq
        PERFORM check_tokens(tokens[s.first_row:s.last_row], past);
        positions := positions || ARRAY(SELECT generate_series(past, past + s.last_row - s.first_row));
    END LOOP;
    x := embed(tokens, positions);                                                  -- [T][C]
    present := '{}';
    FOR layer IN 0 .. n_layer - 1 LOOP
        FOR seq IN 1 .. n_seq LOOP                                                    -- element by element: no copy
            caches[seq] := cache[layer * n_seq + seq];                                  -- of the other layers' caches
        END LOOP;
        out := block(layer, x, lengths, caches);
        x := out.y;                                                                 -- [T][C]
        FOR seq IN 1 .. n_seq LOOP
            present[layer * n_seq + seq] := out.present[seq];                           -- in place
        END LOOP;
    END LOOP;
    FOR s IN SELECT * FROM sequence_rows(lengths) LOOP
        last := array_cat(last, x[s.last_row:s.last_row][:]);
    END LOOP;
    out := unembed(last);
    logits := out.logits;                                                           -- [B'][V]
    best := out.best;                                                               -- [B']
END
$$;

-- The KV caches of sequences picks[1], picks[2], ... of a batch of n_seq sequences (cache[layer *
-- n_seq + seq], as forward_batch takes and returns them), each copied to its new place j:
-- [layer * m + j], m = cardinality(picks). Beams that extend one parent, samples of one prompt.
CREATE FUNCTION pick_caches(cache kv[], n_seq int, picks int[]) RETURNS kv[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(cache[l.layer * n_seq + p.seq] ORDER BY l.layer, p.j)
      FROM generate_series(0, cardinality(cache) / n_seq - 1) AS l(layer)
     CROSS JOIN unnest(picks) WITH ORDINALITY AS p(seq, j);
END;

-- the residual stream after the last block, [T][C], for every position of a fresh sequence (scoring)
CREATE FUNCTION residual_stream(tokens int[])
RETURNS float8[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_layer int := (SELECT c.n_layer FROM config AS c);
    x       float8[];
BEGIN
    PERFORM check_tokens(tokens, 0);
    x := embed(tokens, ARRAY(SELECT generate_series(0, cardinality(tokens) - 1)));  -- [T][C]
    FOR layer IN 0 .. n_layer - 1 LOOP
        x := (block(layer, x, ARRAY[cardinality(tokens)], NULL)).y;                 -- [T][C]
    END LOOP;
    RETURN x;
END
$$;

-- one sequence: logits [V] of the position after the last token, and the extended cache
CREATE FUNCTION forward(tokens int[], cache kv[], OUT logits float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    out record;
BEGIN
    out := forward_batch(tokens, ARRAY[coalesce(cardinality(tokens), 0)], cache);
    logits := ARRAY(SELECT unnest(out.logits));                                     -- [V]
    present := out.present;
END
$$;

-- (token) -> logit: the scores of every vocabulary entry for the position after the last of
-- tokens (1 to n_positions token ids); softmax of them is the next token's distribution
CREATE FUNCTION next_token_logits(tokens int[])
RETURNS TABLE (token int, logit float8)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT (u.k - 1)::int, u.logit
      FROM unnest((forward(tokens, NULL)).logits) WITH ORDINALITY AS u(logit, k);
END;
