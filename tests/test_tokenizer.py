"""The SQL tokenizer gives the same ids as an independent encoder, on every server, and round-trips."""

from __future__ import annotations

import psycopg
import pytest

from reference_tokenizer import encode

PROSE = ("The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times; "
         "it was the age of wisdom, it was the age of foolishness. ") * 3
CORPUS = {
    "empty": "",
    "prose": PROSE,
    "code": "def f(x):\n    return x**2 + 1  # square\n\tif (a && b) { c->d[i] = \"s\"; }\r\n",
    "numbers": "3.14159 2,718 1e-10 -42 +7 0x1F 1234567890 12:30 2026-11-23",
    "contractions": "I'm you're he's she'd we'll they've can't isn't I'M YOU'RE HE'S WE'LL THEY'VE CAN'T 'tis '''s",
    "apostrophes": "rock 'n' roll, the '90s, o'clock, ''quoted'', don''t, ?'s, x 's, 'll 're 've",
    "spaces": "a  b   c    d\t\te\n\nf \n g  \t h     ",
    "trailing_space": "ends with spaces   ",
    "leading_space": "   starts with spaces",
    "only_spaces": "     ",
    "newlines": "line1\nline2\r\n\r\nline3\n\n\n",
    "emoji": "I love 🙂 and 👍🏽 and 👨‍👩‍👧‍👦 and 🏳️‍🌈 flags 🇫🇷🇯🇵",
    "cjk": "日本語のテキスト、中文文本和한국어 텍스트。",
    "arabic": "مرحبا بالعالم، هذا نص عربي مع تشكيل: كَتَبَ",
    "devanagari": "नमस्ते दुनिया, यह हिन्दी पाठ है।",
    "thai": "สวัสดีชาวโลก ภาษาไทย",
    "hebrew": "שָׁלוֹם עולם",
    "decomposed": "e\u0301cole cafe\u0301 n\u0303 A\u030a",
    "combining": "Z\u0351\u036b\u0343a\u0308\u0301l\u0354go",
    "non_ascii_digits": "٣٤٥ ۱۲۳ १२३ ๑๒๓ ①②③ Ⅻ ½ ²³",
    "unicode_spaces": "a\u00a0b\u2003c\u3000d\u2009e\u202ff\u205fg\u1680h\u2028i\u2029j\u0085k",
    "special_like": "<|endoftext|> <|endoftext|>hello <|im_start|> <| endoftext |>",
    "mixed_classes": "abc123def!!!ghi...456 ——— «quotes» “smart” ‘single’ ¿qué? ¡sí!",
    "greek_cyrillic": "Ελληνικά κείμενο и русский текст Ёё",
    "accents": "naïve façade résumé Ångström Zürich São Paulo",
    "control": "tab\there bell\u0007 esc\u001b del\u007f",
    "long_word": "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "urls": "https://example.com/path?q=1&r=two#frag user@mail.org",
    "math": "∑_{i=1}^{n} x_i² ≤ ∞ → ∀ε>0 ∃δ",
    "repeated": "aaaaaaaaaaaaaaaaaaaa ........ ---------- !!!!!!!!",
    "mississippi": "Mississippilessly",
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_tokens_equal_reference(tiny, case):
    dsn, model = tiny
    text = CORPUS[case]
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute(f"SELECT {model}.tokenize(%s)", (text,)).fetchone()[0]
        back = conn.execute(f"SELECT {model}.detokenize(%s)", (got,)).fetchone()[0]
    assert got == encode(text)
    assert back == text


def test_tokenizer_ignores_session_locale_settings(tiny):
    """lc_ctype / collation of the session do not change the result."""
    dsn, model = tiny
    text = CORPUS["mixed_classes"] + CORPUS["unicode_spaces"] + CORPUS["greek_cyrillic"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lc_messages = 'C'")
        got = conn.execute(f"SELECT {model}.tokenize(%s COLLATE \"C\")", (text,)).fetchone()[0]
    assert got == encode(text)


def test_split_multibyte_detokenizes_whole(tiny):
    dsn, model = tiny
    text = "🙂👨‍👩‍👧"
    ids = encode(text)
    assert len(ids) > 2  # the emoji are split across byte-level tokens
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT {model}.detokenize(%s)", (ids,)).fetchone()[0] == text
        partial = conn.execute(f"SELECT {model}.detokenize_bytes(%s)", (ids[:1],)).fetchone()[0]
        assert bytes(partial) == text.encode()[:len(bytes(partial))]


def test_trace_explains_merges(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT step, symbols, merged_pair, rank, tokens FROM {model}.tokenize_trace('Mississippilessly') "
            "ORDER BY step").fetchall()
        merges = dict(((l, r), i) for i, (l, r) in enumerate(
            conn.execute(f"SELECT left_symbol, right_symbol FROM {model}.merges ORDER BY rank").fetchall()))
    assert rows[0][1] == list("Mississippilessly") and rows[0][2] is None
    assert rows[-1][4] == encode("Mississippilessly")
    ranks = [r[3] for r in rows[1:]]
    assert ranks == sorted(ranks)  # lowest rank first
    for (_, before, _, _, _), (_, after, pair, rank, _) in zip(rows, rows[1:]):
        left, right = pair.split(" + ")
        assert merges[(left, right)] == rank
        # replaying the merge on the previous symbols gives the next ones
        out, i = [], 0
        while i < len(before):
            if i + 1 < len(before) and (before[i], before[i + 1]) == (left, right):
                out.append(left + right)
                i += 2
            else:
                out.append(before[i])
                i += 1
        assert out == after


@pytest.mark.parametrize("sql, message", [
    ("SELECT {m}.tokenize(NULL)", "text is NULL"),
    ("SELECT {m}.tokenize(repeat('a', 100001))", "the limit is 100000"),
    ("SELECT {m}.detokenize(ARRAY[50257])", "outside the vocabulary"),
    ("SELECT {m}.detokenize(ARRAY[-1])", "outside the vocabulary"),
    ("SELECT {m}.detokenize(ARRAY[1, NULL])", "holds a NULL"),
    ("SELECT {m}.detokenize(NULL)", "is NULL"),
    ("SELECT {m}.detokenize(ARRAY[447])", "valid UTF-8"),
])
def test_bad_input_is_refused(tiny, sql, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(sql.format(m=model))


def test_special_token_text_is_ordinary(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = conn.execute(f"SELECT {model}.tokenize('<|endoftext|>')").fetchone()[0]
    assert 50256 not in ids and len(ids) > 1


@pytest.mark.parametrize("char, n", [("a", 100000), ("é", 50000)])
def test_one_long_word_is_tokenized_well_within_a_minute(tiny, char, n):
    """The BPE read a piece's symbols by subscript, quadratic in its length: repeat('a', 16000) took
    a minute, 100,000 characters tens of minutes (bench/: ~1 s now). The timeout only guards a hang."""
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '60s'")
        assert conn.execute(f"SELECT {model}.tokenize(repeat(%s, %s))", (char, n)).fetchone()[0] == encode(char * n)
