-- generate/65_score.sql: how likely a text is, token by token
--
--   logprob(token i) = log softmax(logits after tokens < i)[token i]
--                    = logit[token i] - (max logit + ln sum over v of exp(logit[v] - max logit))
--   rank(token i)    = 1 + the number of vocabulary entries with a higher logit
--   perplexity       = exp(-mean logprob)
--
-- The first token is scored after <|endoftext|> (GPT-2 has no other start token), so every token
-- of the text has a row. One forward pass gives the logits at every position (the LM head runs on
-- every row, score_rows rows at a time to bound memory). A text longer than the context is scored
-- with a sliding window: each window starts half a context after the previous one, and scores the
-- tokens the previous windows did not reach, each with at least half a context before it.

-- positions the LM head runs on at a time while scoring (it bounds the memory the logits take)
CREATE FUNCTION score_rows() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 32;

-- (row) -> token, logprob, rank: rows row_from .. row_to of the residual stream x [T][C], where row r
-- predicts targets[r - row_from + 1]. One pass over each row's logits: its largest is the LM head's
-- best token's.
CREATE FUNCTION score_positions(x float8[], row_from int, row_to int, targets int[])
RETURNS TABLE (r int, token int, logprob float8, rank int)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    head record;            -- (logits [n][V], best [n]): the LM head on rows row_from .. row_to
BEGIN
    head := unembed(x[row_from:row_to][:]);
    RETURN QUERY
    WITH targets AS (           -- (i) -> the token row row_from + i - 1 predicts, its logit, the row's largest
        SELECT i, targets[i] AS token, head.logits[i][targets[i] + 1] AS logit, head.logits[i][head.best[i] + 1] AS m
          FROM generate_series(1, row_to - row_from + 1) AS i
    )
    SELECT row_from + tg.i - 1, tg.token,
           tg.logit - (tg.m + ln(sm.s)),                                            -- log softmax
           (1 + sm.above)::int
      FROM targets AS tg
     CROSS JOIN LATERAL (        -- softmax denominator (shifted by the max), and how many beat the target
           SELECT sum(softmax_exp(u.l - tg.m)) AS s, count(*) FILTER (WHERE u.l > tg.logit) AS above
             FROM unnest(head.logits[tg.i:tg.i][:]) AS u(l)) AS sm
     ORDER BY tg.i;
END
$$;

-- (position) -> token, piece, logprob, rank: every token of txt (a non-empty text of up to 100,000
-- characters; longer than the context, it is scored in sliding windows); logprob is the natural
-- log of the token's probability given the tokens before it (<= 0), rank its place among all
-- candidates (1 = the model's first choice). Each token is at its position in what the
-- model reads: position 0 is the <|endoftext|> the text is scored after, so the text's tokens are
-- at 1, 2, ... (as a trace of '<|endoftext|>' || text would number them)
CREATE FUNCTION score(txt text)
RETURNS TABLE ("position" int, token int, piece text, logprob float8, rank int)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    n_ctx  int := (SELECT c.n_positions FROM config AS c);
    stride int := greatest(1, n_ctx / 2);
    seq    int[];               -- <|endoftext|> and the text's tokens: seq[i + 1] is text token i
    n      int;                 -- tokens in the text
    start  int := 0;            -- the window is seq[start + 1 .. stop]
    stop   int;
    done   int := 0;            -- text tokens scored so far
    x      float8[];
BEGIN
    PERFORM check_text(txt);
    IF txt = '' THEN
        RAISE EXCEPTION 'gpt2sql: the text to score is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    seq := (SELECT v.token FROM vocab AS v WHERE v.piece = '<|endoftext|>') || tokenize(txt);
    n := cardinality(seq) - 1;
    LOOP
        stop := least(start + n_ctx, n + 1);
        x := residual_stream(seq[start + 1:stop]);                                          -- [stop - start][C]
        -- window row j (seq[start + j]) predicts text token start + j; score tokens done + 1 .. stop - 1
        FOR row_from IN done + 1 - start .. stop - 1 - start BY score_rows() LOOP
            RETURN QUERY
            SELECT start + s.r, s.token, (decode_utf8(v.bytes, true)).txt, s.logprob, s.rank
              FROM score_positions(x, row_from, least(row_from + score_rows() - 1, stop - 1 - start),
                                   seq[start + row_from + 1:start + least(row_from + score_rows() - 1, stop - 1 - start) + 1]) AS s
              JOIN vocab AS v ON v.token = s.token
             ORDER BY s.r;
        END LOOP;
        done := stop - 1;
        EXIT WHEN done >= n;
        start := start + stride;
    END LOOP;
END
$$;

-- exp(-mean logprob) over the tokens of txt (as score takes it): >= 1, lower is likelier (Infinity
-- past float8's range, where exp() would raise an overflow error)
CREATE FUNCTION perplexity(txt text)
RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT CASE WHEN m.mean < -709 THEN 'Infinity'::float8 ELSE exp(-m.mean) END
      FROM (SELECT avg(s.logprob) AS mean FROM score(txt) AS s) AS m;
END;
