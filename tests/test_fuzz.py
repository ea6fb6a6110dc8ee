"""Property-based tests (Hypothesis), a bounded number of examples each, on every (server, kernel):
- tokenize of generated text equals tiktoken's GPT-2 encoding, and detokenize gives the text back;
- every SQL entry point, given generated arguments (NULLs, extremes, NaN, +-Infinity, empty and
  2-D arrays), returns a result or raises an error whose message starts with "gpt2sql:", never
  another error, and a refused call leaves no trace behind;
- the CLI, given generated options, exits with a one-line message, never a traceback.
Examples that once found a bug are kept below as explicit cases (@example)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reference_tokenizer import encode

FUZZ = settings(max_examples=int(os.environ.get("GPT2SQL_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# text PostgreSQL can hold (no NUL), of assigned code points (Unicode classes of characters newer
# than the loader's Python may differ from tiktoken's: README, "Limits and safety")
CHARS = st.characters(exclude_categories=("Cs", "Cn", "Co"), exclude_characters="\x00")
TEXT = st.one_of(
    st.text(CHARS, max_size=60),
    st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u3000'sStTmMdDlLvVrReE0123456789aé中😀\u0301-.,!?"), max_size=60),
    st.builds(lambda s, n: s * n, st.text(CHARS, min_size=1, max_size=3), st.integers(1, 400)),
    st.builds("".join, st.lists(st.sampled_from(["<|endoftext|>", "<|endo", "ftext|>", "<|", "|>", " ", "x"]),
                                max_size=8)),
)


@pytest.fixture(scope="module")
def db(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {model}, pg_catalog, public")
        conn.execute("SET statement_timeout = '60s'")
        yield conn, model


@FUZZ
@given(text=TEXT)
@example(text="a" * 3000)                       # one long word: the BPE was quadratic in its length
@example(text="é" * 2000)
@example(text="\ufeffBOM and\u000bvertical\u001ctab")
def test_tokenize_equals_tiktoken_and_round_trips(db, text):
    conn, _ = db
    tokens = conn.execute("SELECT tokenize(%s)", (text,)).fetchone()[0]
    assert tokens == encode(text)
    assert conn.execute("SELECT detokenize(%s)", (tokens,)).fetchone()[0] == text


def refused_cleanly(conn, query: str, args: tuple) -> None:
    """Run the query; it either returns or raises a gpt2sql error. Traces made meanwhile are dropped."""
    before = conn.execute("SELECT coalesce(max(trace_id), 0) FROM traces").fetchone()[0]
    try:
        conn.execute(query, args).fetchall()
    except psycopg.errors.QueryCanceled as exc:
        raise AssertionError(f"ran past the statement timeout: {query} {args!r}") from exc
    except psycopg.Error as exc:
        message = exc.diag.message_primary or ""
        assert message.startswith("gpt2sql: "), f"{query} {args!r} -> {exc.sqlstate}: {message}"
        assert conn.execute("SELECT coalesce(max(trace_id), 0) FROM traces").fetchone()[0] == before
    finally:
        conn.execute("DELETE FROM traces WHERE trace_id > %s", (before,))


NULL = st.none()
INT = st.one_of(NULL, st.integers(-2**31, 2**31 - 1), st.sampled_from([0, 1, -1, 2, 5, 127, 128, 129, 50256, 50257]))
SMALL = st.one_of(NULL, st.integers(-3, 140))
N_TOKENS = st.one_of(NULL, st.integers(-3, 4), st.sampled_from([100000, 100001, 2**31 - 1, -2**31]))
FLOAT = st.one_of(NULL, st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([0.0, -0.0, 1e-300, 1e-6, 0.02, 0.5, 1.0, 1.5, 100.0, 1e300]))
PROMPT = st.one_of(NULL, st.just(""), st.text(CHARS, max_size=30), st.just(" x" * 126))


@FUZZ
@given(prompt=PROMPT, n=N_TOKENS, temperature=FLOAT, top_k=INT, top_p=FLOAT, seed=FLOAT,
       stop=st.one_of(NULL, st.text(CHARS, max_size=3)))
@example(prompt="The module", n=3, temperature=0.02, top_k=None, top_p=None, seed=0.1, stop=None)
@example(prompt="Hi", n=3, temperature=1e-300, top_k=None, top_p=None, seed=0.1, stop=None)
def test_generate_with_any_arguments(db, prompt, n, temperature, top_k, top_p, seed, stop):
    conn, _ = db
    refused_cleanly(conn, "SELECT * FROM generate(%s::text, %s::int, %s::float8, %s::int, %s::float8, %s::float8, %s::text)",
                    (prompt, n, temperature, top_k, top_p, seed, stop))


@FUZZ
@given(prompts=st.one_of(NULL, st.lists(st.one_of(NULL, st.text(CHARS, max_size=12)), max_size=4),
                         st.lists(st.lists(st.text(CHARS, max_size=4), min_size=2, max_size=2), min_size=1, max_size=2)),
       n=N_TOKENS, temperature=FLOAT, seed=FLOAT)
def test_generate_batch_with_any_arguments(db, prompts, n, temperature, seed):
    conn, _ = db
    refused_cleanly(conn, "SELECT * FROM generate_batch(%s::text[], %s::int, %s::float8, NULL, NULL, %s::float8)",
                    (prompts, n, temperature, seed))


@FUZZ
@given(text=st.one_of(NULL, st.just(""), st.text(CHARS, max_size=12)), k=INT)   # scoring reads every logit per token
@example(text=" x" * 126, k=5)                  # near the context's end, once (scoring it reads every logit)
def test_text_functions_with_any_arguments(db, text, k):
    conn, _ = db
    for query, args in (("SELECT tokenize(%s::text)", (text,)),
                        ("SELECT * FROM score(%s::text)", (text,)),
                        ("SELECT perplexity(%s::text)", (text,)),
                        ("SELECT * FROM next_token_probs(%s::text, %s::int)", (text, k)),
                        ("SELECT complete(%s::text, 2)", (text,))):
        refused_cleanly(conn, query, args)


ABLATE = st.one_of(NULL, st.lists(st.one_of(NULL, st.integers(-2, 5)), max_size=5),
                   st.lists(st.lists(st.one_of(NULL, st.integers(-2, 5)), min_size=2, max_size=2), max_size=3),
                   st.lists(st.lists(st.integers(0, 1), min_size=3, max_size=3), min_size=1, max_size=2))


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(ablate=ABLATE, lower=st.integers(-3, 3))
@example(ablate=[0, 1], lower=3)                 # '[3:4]={0,1}': named the pair "layer NULL, head NULL"
def test_trace_with_any_ablation(db, ablate, lower):
    conn, _ = db
    literal = None
    if ablate is not None and ablate and not isinstance(ablate[0], list):
        # a 1-D array that does not count from 1, as a literal '[lo:hi]={...}'
        items = ",".join("NULL" if v is None else str(v) for v in ablate)
        literal = f"[{lower}:{lower + len(ablate) - 1}]={{{items}}}"
    refused_cleanly(conn, "SELECT trace('Hi there', ablate => %s::int[])", (literal if literal else ablate,))


@pytest.fixture(scope="module")
def traced(db):
    conn, _ = db
    a = conn.execute("SELECT trace('The cat sat')").fetchone()[0]
    b = conn.execute("SELECT trace('The cat sat', ablate => ARRAY[[0, 1]])").fetchone()[0]
    yield conn, a, b
    conn.execute("SELECT drop_trace(%s), drop_trace(%s)", (a, b))


@FUZZ
@given(layer=SMALL, head=SMALL, pos=SMALL, k=INT, token=INT, which=st.integers(0, 2))
@example(layer=0, head=0, pos=0, k=101, token=0, which=0)     # k past the lenses' bound: refused at once
def test_lenses_with_any_arguments(traced, layer, head, pos, k, token, which):
    conn, a, b = traced
    t = [a, b, -1][which]
    for query, args in (("SELECT * FROM attention_pattern(%s::bigint, %s::int, %s::int)", (t, layer, head)),
                        ("SELECT * FROM top_predictions(%s::bigint, %s::int, %s::int)", (t, pos, k)),
                        ("SELECT * FROM token_probability(%s::bigint, %s::int)", (t, token)),
                        ("SELECT * FROM logit_lens(%s::bigint, %s::int, %s::int)", (t, k, pos)),
                        ("SELECT * FROM compare_traces(%s::bigint, %s::bigint, %s::int)", (a, t, k)),
                        ("SELECT * FROM compare_residuals(%s::bigint, %s::bigint)", (t, b))):
        refused_cleanly(conn, query, args)


CLI_OPTION = st.sampled_from(["-n", "--temperature", "--top-k", "--top-p", "--seed", "--stop"])
CLI_VALUE = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats().map(str),
                      st.sampled_from(["", "nan", "inf", "-inf", "x", "1e400", "0x10", "--", "1,5"]))


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(st.tuples(CLI_OPTION, CLI_VALUE), max_size=3))
@example(options=[("-n", "99999999999")])       # "function generate(unknown, bigint, ...) does not exist"
def test_cli_generate_with_any_options(main_dsn, tiny_ckpt, options):
    from conftest import ensure_model

    ensure_model(main_dsn, tiny_ckpt, "tiny")
    argv = [a for pair in options for a in (pair[0], pair[1])]
    res = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "generate", "Hi", "--model", "tiny", "--dsn", main_dsn,
                          "-n", "2", *argv], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    if res.returncode != 0:
        assert res.returncode in (1, 2) and res.stderr.strip().splitlines()[-1].startswith(("gpt2sql", "usage:"))
