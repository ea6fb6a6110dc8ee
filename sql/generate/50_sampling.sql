-- generate/50_sampling.sql: from logits to the next token
--
--   greedy (temperature 0): argmax
--   otherwise: p = softmax(logits / temperature), computed as exp((logit - max) / temperature) so
--   that every temperature > 0 works, keep the top_k most likely, then the smallest
--   set whose probability reaches top_p (nucleus), then those at least min_p times as likely as
--   the likeliest, renormalise and draw: the first token whose cumulative probability exceeds a
--   uniform number (the sequence's seeded stream_uniform, or random()). The order is transformers' (temperature,
--   top_k, top_p, min_p); the logits processors (55_processors.sql) come before all of them.
--   Ties are broken by token id, so the order (and a seeded draw) is reproducible.

-- the sampling options are in range: temperature >= 0 (0 = greedy), top_k >= 1, top_p in (0, 1],
-- min_p in [0, 1]
CREATE FUNCTION check_sampling(temperature float8, top_k int, top_p float8, min_p float8 DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF temperature IS NULL OR temperature < 0 OR temperature = 'NaN'::float8 OR temperature = 'Infinity'::float8 THEN
        RAISE EXCEPTION 'gpt2sql: temperature must be a number >= 0 (0 = greedy), got %', temperature
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF top_k IS NOT NULL AND top_k < 1 THEN
        RAISE EXCEPTION 'gpt2sql: top_k must be >= 1 (or NULL for no limit), got %', top_k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF top_p IS NOT NULL AND NOT (top_p > 0 AND top_p <= 1) THEN
        RAISE EXCEPTION 'gpt2sql: top_p must be in (0, 1] (or NULL for no limit), got %', top_p
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF min_p IS NOT NULL AND NOT (min_p >= 0 AND min_p <= 1) THEN
        RAISE EXCEPTION 'gpt2sql: min_p must be in [0, 1] (or NULL for no limit), got %', min_p
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- exp((logit - top) / temperature) for a logit at most the highest, top: a softmax numerator at any
-- temperature > 0. Where the quotient would overflow or underflow (PostgreSQL raises an error, not
-- infinity or 0) its size is compared in logs: beyond 700 the numerator is 0 (below 1e-304), below
-- 1e-304 it is 1.
CREATE FUNCTION scaled_exp(logit float8, top float8, temperature float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN logit = top THEN 1
            WHEN ln(top - logit) - ln(temperature) > ln(700) THEN 0
            WHEN ln(top - logit) - ln(temperature) < -700 THEN 1
            ELSE exp((logit - top) / temperature) END;

-- (rank) -> token, probability: the distribution sampling draws from, most likely first. As the
-- temperature goes to 0 it becomes greedy: all the probability on the highest logit (shared
-- equally where several tie for it). Tokens whose logit is -Infinity (a processor banned them)
-- are left out.
CREATE FUNCTION sampling_distribution(logits float8[], temperature float8, top_k int, top_p float8,
                                      min_p float8 DEFAULT NULL)
RETURNS TABLE (rank int, token int, probability float8)
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    WITH ranked AS (            -- (rank) -> token, logit: best first, top_k kept
        SELECT (row_number() OVER (ORDER BY u.logit DESC, u.k))::int AS rank,
               (u.k - 1)::int AS token,
               u.logit
          FROM unnest(logits) WITH ORDINALITY AS u(logit, k)
         WHERE u.logit > '-Infinity'::float8
         ORDER BY u.logit DESC, u.k
         LIMIT top_k
    ),
    exps AS (                   -- (rank) -> exp((logit - top logit) / temperature): softmax numerators
        SELECT r.rank, r.token, scaled_exp(r.logit, first_value(r.logit) OVER (ORDER BY r.rank), temperature) AS e
          FROM ranked AS r
    ),
    probs AS (                  -- (rank) -> softmax(logits / temperature); e: as a fraction of the top one's
        SELECT e.rank, e.token, e.e, e.e / sum(e.e) OVER () AS p
          FROM exps AS e
    ),
    nucleus AS (                -- (rank) -> p, for the smallest prefix whose mass reaches top_p
                                -- (a token is kept while the mass before it is below top_p)
        SELECT p.rank, p.token, p.e, p.p
          FROM (SELECT probs.*, coalesce(sum(probs.p) OVER (ORDER BY probs.rank ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                  FROM probs) AS p
         WHERE top_p IS NULL OR p.before < top_p
    ),
    kept AS (                   -- (rank) -> p, for the tokens at least min_p times as likely as the top one
        SELECT n.rank, n.token, n.p
          FROM nucleus AS n
         WHERE min_p IS NULL OR n.e >= min_p
    )
    SELECT k.rank, k.token, k.p / sum(k.p) OVER () FROM kept AS k ORDER BY k.rank;
END;

-- A seeded stream of uniform numbers in [0, 1): draw `step` of stream `stream` for seed, read from the
-- md5 of the three (52 bits of it). Each sequence of a generation draws from its own stream, so what
-- one sample draws does not depend on how many others there are or on the session's random().
CREATE FUNCTION stream_uniform(seed float8, stream int, step int) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ('x' || left(md5(format('gpt2sql %s %s %s', seed, stream, step)), 13))::bit(52)::bigint / 2.0::float8 ^ 52;

-- logits -> token id, unless temperature = 0 drawn with the uniform number u in [0, 1) (NULL:
-- random()). best: the greedy token when the caller already has it (lm_head finds it with the
-- logits, and generation passes it on), so that greedy decoding does not go through the logits again.
CREATE FUNCTION sample_token(logits float8[], temperature float8, top_k int, top_p float8, best int DEFAULT NULL,
                             min_p float8 DEFAULT NULL, u float8 DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path FROM CURRENT
AS $$
DECLARE
    chosen int;
BEGIN
    IF temperature = 0 AND best IS NOT NULL THEN
        RETURN best;
    ELSIF temperature = 0 THEN  -- greedy: the first of the highest logits
        SELECT (k - 1)::int INTO chosen
          FROM unnest(logits) WITH ORDINALITY AS x(logit, k)
         ORDER BY logit DESC, k
         LIMIT 1;
        RETURN chosen;
    END IF;
    u := coalesce(u, random());
    SELECT d.token INTO chosen  -- the first token whose cumulative probability exceeds u
      FROM (SELECT s.rank, s.token, sum(s.probability) OVER (ORDER BY s.rank) AS cum
              FROM sampling_distribution(logits, temperature, top_k, top_p, min_p) AS s) AS d
     WHERE d.cum > u
     ORDER BY d.rank
     LIMIT 1;
    IF chosen IS NULL THEN      -- u above the last cumulative sum by rounding: the least likely kept token
        SELECT s.token INTO chosen FROM sampling_distribution(logits, temperature, top_k, top_p, min_p) AS s
         WHERE s.probability > 0
         ORDER BY s.rank DESC LIMIT 1;
    END IF;
    RETURN chosen;
END
$$;

-- (logprob, top_tokens, top_logprobs): the natural log of token's probability under the distribution
-- it was drawn from, and the n likeliest tokens of that distribution with theirs. Greedy
-- (temperature 0) draws from the model's own distribution, softmax(logits); sampling from
-- sampling_distribution's. A token outside the distribution has logprob -Infinity.
CREATE FUNCTION token_logprobs(logits float8[], token int, n int, temperature float8, top_k int, top_p float8,
                               min_p float8, OUT logprob float8, OUT top_tokens int[], OUT top_logprobs float8[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    WITH d AS (                 -- (rank) -> token, log probability
        SELECT s.rank, s.token, CASE WHEN s.probability > 0 THEN ln(s.probability) ELSE '-Infinity'::float8 END AS lp
          FROM sampling_distribution(logits, CASE WHEN temperature = 0 THEN 1 ELSE temperature END,
                                     CASE WHEN temperature = 0 THEN NULL ELSE top_k END,
                                     CASE WHEN temperature = 0 THEN NULL ELSE top_p END,
                                     CASE WHEN temperature = 0 THEN NULL ELSE min_p END) AS s
    )
    SELECT coalesce((SELECT d.lp FROM d WHERE d.token = token_logprobs.token), '-Infinity'::float8),
           ARRAY(SELECT d.token FROM d WHERE d.rank <= n ORDER BY d.rank),
           ARRAY(SELECT d.lp FROM d WHERE d.rank <= n ORDER BY d.rank)
      INTO logprob, top_tokens, top_logprobs;
END
$$;
