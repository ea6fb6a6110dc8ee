-- tokenizer/10_tokenizer.sql: GPT-2's byte-level BPE tokenizer.
--
--   text --pretokenize--> pieces --bytes--> byte symbols --bpe_steps--> symbols --vocab--> token ids
--
-- The pre-tokenizer is GPT-2's regular expression
--   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
-- with its Unicode meaning. PostgreSQL's regex classes follow the server's locale, so instead
-- each character is classified from the char_classes table (L letter, N number, W White_Space,
-- O other), and the places where the regex starts a new piece are found from each character's
-- neighbours alone (window functions), which is exact for this pattern:
--   * a contraction ('s 't 'm 'd 're 've 'll, lower case) starts where a ' is not glued to the
--     previous piece (the previous character is neither "other" nor a space), and the character
--     after it starts a new piece;
--   * a letter/number/other character starts a piece when its class differs from the previous
--     character's, unless the previous character is a space, which then joins it (" ?");
--   * a whitespace character starts a piece at the start of its run, and so does the run's last
--     character when a non-space follows ("\s+(?!\S)" leaves it for " ?\p{L}+" or "\s+").

-- the most characters one text may have (tokenize, generate, score)
CREATE FUNCTION max_text_chars() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 100000;

-- (pos) -> (ch, class): the characters of a text and their Unicode class
CREATE FUNCTION text_chars(input text)
RETURNS TABLE (pos int, ch text, class "char")
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT c.pos::int,
           c.ch,
           coalesce((SELECT CASE WHEN ascii(c.ch) <= cc.hi THEN cc.class END
                       FROM char_classes AS cc             -- the last range starting at or below it
                      WHERE cc.lo <= ascii(c.ch)
                      ORDER BY cc.lo DESC
                      LIMIT 1), 'O')
      FROM string_to_table(input, NULL) WITH ORDINALITY AS c(ch, pos);
END;

-- (piece_index) -> piece: the text split by GPT-2's pre-tokenizer
CREATE FUNCTION pretokenize(input text)
RETURNS TABLE (piece_index int, piece text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH chars AS (             -- (pos) -> ch, class, and the neighbours the regex looks at
        SELECT c.pos, c.ch, c.class,
               lag(c.ch)     OVER w AS prev_ch,
               lag(c.class)  OVER w AS prev_class,
               lead(c.class) OVER w AS next_class,
               lead(c.ch, 1) OVER w AS next1,
               lead(c.ch, 2) OVER w AS next2
          FROM text_chars(input) AS c
        WINDOW w AS (ORDER BY c.pos)
    ),
    contractions AS (           -- (pos) -> length of the contraction starting here, 0 if none
        SELECT c.*,
               CASE WHEN c.ch = '''' AND (c.prev_class IS NULL OR (c.prev_class <> 'O' AND c.prev_ch <> ' '))
                    THEN CASE WHEN c.next1 IN ('s', 't', 'm', 'd') THEN 2
                              WHEN c.next1 || c.next2 IN ('re', 've', 'll') THEN 3
                              ELSE 0 END
                    ELSE 0 END AS con_len
          FROM chars AS c
    ),
    marked AS (                 -- (pos) -> is it inside a contraction, or the character just after one?
        SELECT c.*,
               coalesce(max(CASE WHEN c.con_len > 0 THEN c.pos + c.con_len - 1 END)
                          OVER (ORDER BY c.pos ROWS BETWEEN 2 PRECEDING AND 1 PRECEDING), 0) >= c.pos
                   AS in_contraction,
               coalesce(max(CASE WHEN c.con_len > 0 THEN c.pos + c.con_len END)
                          OVER (ORDER BY c.pos ROWS BETWEEN 3 PRECEDING AND 1 PRECEDING), 0) = c.pos
                   AS after_contraction
          FROM contractions AS c
    ),
    starts AS (                 -- (pos) -> does a new piece start at this character?
        SELECT m.pos, m.ch,
               CASE WHEN m.in_contraction THEN false
                    WHEN m.prev_class IS NULL OR m.after_contraction OR m.con_len > 0 THEN true
                    WHEN m.class = 'W' THEN m.prev_class <> 'W' OR coalesce(m.next_class <> 'W', false)
                    ELSE m.class <> m.prev_class AND m.prev_ch <> ' '
               END AS is_start
          FROM marked AS m
    ),
    numbered AS (               -- (pos) -> piece_index: running count of starts
        SELECT s.pos, s.ch, (count(*) FILTER (WHERE s.is_start) OVER (ORDER BY s.pos))::int AS piece_index
          FROM starts AS s
    )
    SELECT n.piece_index, string_agg(n.ch, '' ORDER BY n.pos)
      FROM numbered AS n
     GROUP BY n.piece_index
     ORDER BY n.piece_index;
END;

-- piece -> symbols[]: a piece's UTF-8 bytes as GPT-2's byte symbols, before any merge
CREATE FUNCTION byte_symbols_of(piece text)
RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT array_agg(bs.symbol ORDER BY k)
      FROM (SELECT convert_to(piece, 'UTF8') AS b OFFSET 0) AS u       -- the bytes, converted once
     CROSS JOIN generate_series(0, length(u.b) - 1) AS k
      JOIN byte_symbols AS bs ON bs.byte = get_byte(u.b, k);
END;

-- (piece, step) -> symbols, and the merge that produced them.
-- BPE on all pieces at once: each step merges, in every piece, the adjacent pair of lowest rank,
-- all its occurrences left to right. A piece's symbols travel as one string ' a  b  c ' (each
-- symbol between two spaces; no symbol contains a space), so merging the pair (a, b) is the
-- plain replace(' a  b ', ' ab '), which scans left to right and never overlaps. The pairs of a
-- step are found by unnesting the symbols once (lead() pairs each with the next) and looking each
-- distinct pair up in merges: a step costs about the piece's length, whatever that is (reading
-- a text[] by subscript walks it from the start, which made a long piece quadratic).
-- The last row of each piece has final = true and holds its finished symbols.
CREATE FUNCTION bpe_steps(pieces text[])
RETURNS TABLE (piece text, step int, symbols text[], left_symbol text, right_symbol text, rank int, final boolean)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH RECURSIVE bpe (piece, step, syms, left_symbol, right_symbol, rank, final) AS (
        SELECT p.piece, 0, ' ' || array_to_string(byte_symbols_of(p.piece), '  ') || ' ',
               NULL::text, NULL::text, NULL::int, false
          FROM unnest(pieces) AS p(piece)
         WHERE p.piece <> ''
        UNION ALL
        SELECT b.piece, b.step + 1,
               CASE WHEN best.rank IS NULL THEN b.syms
                    ELSE replace(b.syms, ' ' || best.l || '  ' || best.r || ' ', ' ' || best.l || best.r || ' ')
               END,
               best.l, best.r, best.rank, best.rank IS NULL
          FROM bpe AS b
          LEFT JOIN LATERAL (   -- the adjacent pair of lowest merge rank in this piece
                SELECT m.rank, m.left_symbol AS l, m.right_symbol AS r
                  FROM (SELECT DISTINCT u.sym AS l, lead(u.sym) OVER (ORDER BY u.k) AS r   -- (l, r): adjacent
                          FROM unnest(string_to_array(btrim(b.syms, ' '), '  ')) WITH ORDINALITY AS u(sym, k)) AS a
                  JOIN merges AS m ON m.left_symbol = a.l AND m.right_symbol = a.r
                 ORDER BY m.rank
                 LIMIT 1
          ) AS best ON true
         WHERE NOT b.final
    )
    SELECT b.piece, b.step, string_to_array(btrim(b.syms, ' '), '  '), b.left_symbol, b.right_symbol, b.rank, b.final
      FROM bpe AS b;
END;

-- the text is not NULL and at most max_text_chars() characters
CREATE FUNCTION check_text(input text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF input IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: text is NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF char_length(input) > max_text_chars() THEN
        RAISE EXCEPTION 'gpt2sql: text has % characters; the limit is %', char_length(input), max_text_chars()
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
END
$$;

-- input text (up to max_text_chars(), 100,000 characters) -> its token ids, as GPT-2's tokenizer
-- gives them. '<|endoftext|>' inside the text is ordinary text, not the special token.
CREATE FUNCTION tokenize(input text)
RETURNS int[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    ids int[];
BEGIN
    PERFORM check_text(input);
    WITH pieces AS (            -- (piece_index) -> piece
        SELECT * FROM pretokenize(input)
    ),
    merged AS MATERIALIZED (    -- (piece_index) -> symbols after the last merge (joined by piece
        SELECT p.piece_index, s.symbols                       -- before the symbols are unnested, so
          FROM pieces AS p                                    -- that no row carries a long piece)
          JOIN bpe_steps(ARRAY(SELECT DISTINCT q.piece FROM pieces AS q)) AS s ON s.piece = p.piece
         WHERE s.final
    )
    SELECT coalesce(array_agg(v.token ORDER BY m.piece_index, u.k), '{}')
      INTO ids
      FROM merged AS m
     CROSS JOIN LATERAL unnest(m.symbols) WITH ORDINALITY AS u(symbol, k)
      JOIN vocab AS v ON v.piece = u.symbol;
    RETURN ids;
END
$$;

-- (piece_index, step) -> how BPE built each piece of input (a text, as tokenize takes it): the
-- symbols after each merge, the pair merged, its rank (lower merges first); piece_index counts from 1
CREATE FUNCTION tokenize_trace(input text)
RETURNS TABLE (piece_index int, piece text, step int, symbols text[], merged_pair text, rank int, tokens int[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM check_text(input);
    RETURN QUERY
    WITH pieces AS (
        SELECT * FROM pretokenize(input)
    )
    SELECT p.piece_index, p.piece, s.step, s.symbols,
           s.left_symbol || ' + ' || s.right_symbol,
           s.rank,
           (SELECT array_agg(v.token ORDER BY u.k)     -- ids of the symbols that are tokens already
              FROM unnest(s.symbols) WITH ORDINALITY AS u(symbol, k)
              LEFT JOIN vocab AS v ON v.piece = u.symbol)
      FROM pieces AS p
      JOIN bpe_steps(ARRAY(SELECT DISTINCT q.piece FROM pieces AS q)) AS s ON s.piece = p.piece
     WHERE NOT s.final
     ORDER BY p.piece_index, s.step;
END
$$;

-- token ids must be non-NULL and inside the vocabulary; raises a clear error otherwise
CREATE FUNCTION check_token_ids(tokens int[]) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    bad int;
    n_vocab int := (SELECT vocab_size FROM config);
BEGIN
    IF tokens IS NULL THEN
        RAISE EXCEPTION 'gpt2sql: token array is NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF EXISTS (SELECT FROM unnest(tokens) AS t WHERE t IS NULL) THEN
        RAISE EXCEPTION 'gpt2sql: token array holds a NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT t INTO bad FROM unnest(tokens) AS t WHERE t < 0 OR t >= n_vocab LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'gpt2sql: token id % is outside the vocabulary (0..%)', bad, n_vocab - 1
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- token ids -> the raw bytes they stand for
CREATE FUNCTION detokenize_bytes(tokens int[])
RETURNS bytea
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    result bytea;
BEGIN
    PERFORM check_token_ids(tokens);
    SELECT coalesce(string_agg(v.bytes, ''::bytea ORDER BY u.k), ''::bytea)
      INTO result
      FROM unnest(tokens) WITH ORDINALITY AS u(token, k)
      JOIN vocab AS v ON v.token = u.token;
    RETURN result;
END
$$;

-- tokens (token ids, 0 to vocab_size - 1) -> text; all tokens' bytes are decoded together, so a
-- character split across tokens comes back whole
CREATE FUNCTION detokenize(tokens int[])
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    raw bytea := detokenize_bytes(tokens);
BEGIN
    RETURN convert_from(raw, 'UTF8');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    RAISE EXCEPTION 'gpt2sql: these tokens do not decode to valid UTF-8 text (a character cut between tokens, or a NUL byte); detokenize_bytes() returns the raw bytes'
        USING ERRCODE = 'character_not_in_repertoire';
END
$$;
