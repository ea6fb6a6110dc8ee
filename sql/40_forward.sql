-- 40_forward.sql: the whole model, tokens -> logits of the next token
--
--   x = wte[tokens] + wpe[positions]; x = block_l(x) for each layer; logits = layer_norm_f(x_last) @ wte^T
--
-- forward(tokens, cache) runs the new tokens only, reading the keys and values of earlier
-- positions from cache (one kv per layer; NULL for a fresh prompt) and returning the extended
-- cache. The whole prompt goes through each layer in one set of queries (prefill).

CREATE FUNCTION check_tokens(tokens int[], past int) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_positions int := (SELECT c.n_positions FROM config AS c);
BEGIN
    IF tokens IS NULL OR cardinality(tokens) = 0 THEN
        RAISE EXCEPTION 'gpt2sql: the prompt is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM check_token_ids(tokens);
    IF past + cardinality(tokens) > n_positions THEN
        RAISE EXCEPTION 'gpt2sql: % tokens exceed the model''s context of % positions', past + cardinality(tokens), n_positions
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
END
$$;

CREATE FUNCTION forward(tokens int[], cache kv[], OUT logits float8[], OUT present kv[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET jit = off                   -- for every stage below; see 23_linear_kernel_sql.sql
AS $$
DECLARE
    n_layer int := (SELECT c.n_layer FROM config AS c);
    past    int := coalesce(kv_positions(cache[1]), 0);
    t       int := cardinality(tokens);
    x       float8[];
    out     record;
BEGIN
    PERFORM check_tokens(tokens, past);
    x := embed(tokens, past);                                                    -- [T][C]
    present := '{}';
    FOR layer IN 0 .. n_layer - 1 LOOP
        out := block(layer, x, cache[layer + 1]);
        x := out.y;                                                              -- [T][C]
        present[layer + 1] := out.present;                                      -- in place, no copy of earlier layers
    END LOOP;
    x := layer_norm(x[t:t][:], 'ln_f');                                          -- [1][C] last position only
    logits := (linear(x, 'wte.weight', NULL))[1:1][:];                           -- [1][V]
    logits := ARRAY(SELECT unnest(logits));                                      -- [V]
END
$$;

-- (token) -> logit: the scores of every vocabulary entry for the position after the last token
CREATE FUNCTION next_token_logits(tokens int[])
RETURNS TABLE (token int, logit float8)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT (u.k - 1)::int, u.logit
      FROM unnest((forward(tokens, NULL)).logits) WITH ORDINALITY AS u(logit, k);
END;
