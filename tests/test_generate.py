"""Generation: greedy equals NumPy's greedy loop through SQL, Python and the CLI; the KV cache
changes nothing; seeded sampling repeats; concurrent generations do not interfere."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import psycopg
import pytest

import gpt2sql
import reference_gpt2 as ref
from reference_tokenizer import encode

PROMPT = "Hello, my name is"


@pytest.fixture(scope="module")
def reference_greedy(tiny_ckpt):
    cfg, params = ref.load(tiny_ckpt)
    return ref.greedy(encode(PROMPT), 20, cfg, params)


def test_sql_greedy_equals_numpy(tiny, reference_greedy):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT step, token, piece, finish FROM {model}.generate(%s, 20)", (PROMPT,)).fetchall()
        text = conn.execute(f"SELECT {model}.complete(%s, 20)", (PROMPT,)).fetchone()[0]
        decoded = conn.execute(f"SELECT {model}.detokenize(%s)", ([r[1] for r in rows],)).fetchone()[0]
    assert [r[1] for r in rows] == reference_greedy
    assert [r[0] for r in rows] == list(range(1, 21))
    assert rows[-1][3] == "length" and all(r[3] is None for r in rows[:-1])
    assert text == PROMPT + "".join(r[2] for r in rows) == PROMPT + decoded


def test_cached_generation_equals_recomputing(tiny):
    """generate() runs one position per token with the KV cache; this recomputes the whole prefix each time."""
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        cached = [r[0] for r in conn.execute(f"SELECT token FROM {model}.generate(%s, 8)", (PROMPT,))]
        tokens = conn.execute(f"SELECT {model}.tokenize(%s)", (PROMPT,)).fetchone()[0]
        fresh = []
        for _ in range(8):
            best = conn.execute(f"SELECT token FROM {model}.next_token_logits(%s) ORDER BY logit DESC, token LIMIT 1",
                                (tokens + fresh,)).fetchone()[0]
            fresh.append(best)
    assert cached == fresh


def test_python_client_greedy_and_stream(main_dsn, tiny_ckpt, reference_greedy):
    from conftest import ensure_model

    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with gpt2sql.Client(main_dsn) as client:
        model = client.model("tiny")
        steps = model.steps(PROMPT, max_new_tokens=20)
        assert [s.token for s in steps] == reference_greedy
        assert model.generate(PROMPT, max_new_tokens=20) == "".join(s.piece for s in steps)
        streamed = list(model.stream_steps(PROMPT, max_new_tokens=20))
        assert [s.token for s in streamed] == reference_greedy
        assert "".join(model.stream(PROMPT, max_new_tokens=20)) == "".join(s.piece for s in steps)
        assert model.tokenize(PROMPT) == encode(PROMPT)
        probs = model.next_token_probs(PROMPT, k=3)
        assert [p.rank for p in probs] == [1, 2, 3]
        assert probs[0].token == reference_greedy[0]
        with pytest.raises(gpt2sql.ModelNotFound, match="no model named 'absent'"):
            client.model("absent")


def test_cli_greedy(main_dsn, tiny_ckpt, reference_greedy):
    from conftest import ensure_model

    ensure_model(main_dsn, tiny_ckpt, "tiny")
    res = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "generate", PROMPT, "--model", "tiny", "-n", "20",
                          "--dsn", main_dsn], capture_output=True, text=True, check=True)
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        want = conn.execute("SELECT tiny.detokenize(%s)", (reference_greedy,)).fetchone()[0]
    assert res.stdout == PROMPT + want + "\n"
    assert "tokens/s" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["-n", "99999999999"], "max_new_tokens = 99999999999 is outside PostgreSQL's int range"),
    (["--top-k", "-99999999999", "--temperature", "1"], "top_k = -99999999999 is outside PostgreSQL's int range"),
])
def test_cli_names_an_integer_out_of_range(main_dsn, tiny_ckpt, args, message):
    from conftest import ensure_model

    ensure_model(main_dsn, tiny_ckpt, "tiny")
    res = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "generate", PROMPT, "--model", "tiny", *args,
                          "--dsn", main_dsn], capture_output=True, text=True)
    assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr
    with gpt2sql.Client(main_dsn) as client:
        with pytest.raises(ValueError, match="max_new_tokens = 2147483648 is outside"):
            client.model("tiny").generate(PROMPT, max_new_tokens=2**31)


def test_seeded_sampling_repeats(tiny):
    dsn, model = tiny
    q = f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 10, %s, %s, %s, %s)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        a = conn.execute(q, (PROMPT, 1.0, None, None, 0.42)).fetchone()[0]
        b = conn.execute(q, (PROMPT, 1.0, None, None, 0.42)).fetchone()[0]
        c = conn.execute(q, (PROMPT, 1.0, None, None, -0.7)).fetchone()[0]
        d = conn.execute(q, (PROMPT, 0.7, 50, 0.9, 0.42)).fetchone()[0]
        e = conn.execute(q, (PROMPT, 0.7, 50, 0.9, 0.42)).fetchone()[0]
    assert a == b and d == e
    assert a != c  # 10 draws from ~50k near-uniform tokens: equal only by a miracle
    with gpt2sql.Client(dsn) as client:
        steps = client.model(model).steps(PROMPT, max_new_tokens=10, temperature=1.0, seed=0.42)
    assert [s.token for s in steps] == a


def test_sampling_distribution_matches_numpy(tiny, tiny_ckpt):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    logits = ref.forward(encode(PROMPT), cfg, params)[-1]
    for temperature, top_k, top_p in [(1.0, None, None), (0.5, 40, None), (1.3, None, 0.5), (0.8, 100, 0.3),
                                      (1e-6, None, None), (0.01, None, None), (0.02, None, None), (100, None, None),
                                      (1e-300, 50, None), (1e300, 50, None)]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT token, probability FROM {model}.sampling_distribution(%s, %s, %s, %s) ORDER BY rank",
                                (logits.tolist(), temperature, top_k, top_p)).fetchall()
        want = ref.sampling_distribution(logits, temperature, top_k, top_p)
        order, p = [t for t, _ in want], [q for _, q in want]
        assert [r[0] for r in rows] == order
        assert np.allclose([r[1] for r in rows], p, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("temperature", [1e-6, 0.001, 0.02])
def test_small_temperatures_sample(tiny, temperature):
    """exp() of (logit - max) / temperature underflowed past ~745 and raised an error; now such tokens
    get probability 0, and as the temperature goes to 0 sampling becomes greedy."""
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        greedy = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 5)", (PROMPT,)).fetchone()[0]
        for query, args in ((f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 5, %s, seed => 0.1)",
                             (PROMPT, temperature)),
                            (f"SELECT array_agg(token ORDER BY prompt_index, step) FROM {model}.generate_batch(%s, 5, %s, seed => 0.1)",
                             ([PROMPT], temperature))):
            tokens = conn.execute(query, args).fetchone()[0]
            assert len(tokens) == 5
            if temperature == 1e-6:
                assert tokens == greedy


def test_sample_token_greedy_with_and_without_best(tiny, tiny_ckpt):
    """temperature 0: the first of the highest logits when sample_token has only the logits (ties
    to the lowest id), and the given best when the caller found it with them (generation does)."""
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    logits = ref.forward(encode(PROMPT), cfg, params)[-1]
    top = int(np.argmax(logits))
    other = top + 7 if top + 7 < len(logits) else top - 7
    tied = logits.copy()
    tied[other] = tied[top]                                              # two highest logits
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = f"SELECT {model}.sample_token(%s, 0, NULL, NULL)"
        assert conn.execute(q, (logits.tolist(),)).fetchone()[0] == top
        assert conn.execute(q, (tied.tolist(),)).fetchone()[0] == min(top, other)
        assert conn.execute(f"SELECT {model}.sample_token(%s, 0, NULL, NULL, 5)", (logits.tolist(),)).fetchone()[0] == 5


def test_four_concurrent_generations_equal_sequential(tiny):
    dsn, model = tiny
    jobs = [(PROMPT, 0.0, None), ("The cat", 1.0, 0.1), ("SELECT * FROM", 0.9, -0.3), (PROMPT, 1.2, 0.9)]
    q = f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 6, %s, NULL, NULL, %s)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        sequential = [conn.execute(q, job).fetchone()[0] for job in jobs]
    results: list = [None] * len(jobs)

    def run(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            results[i] = conn.execute(q, jobs[i]).fetchone()[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == sequential


def test_stop_string_and_context_full(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        full = conn.execute(f"SELECT string_agg(piece, '' ORDER BY step) FROM {model}.generate(%s, 6)", (PROMPT,)).fetchone()[0]
        stop = full[len(full) // 2: len(full) // 2 + 3]
        rows = conn.execute(f"SELECT piece, finish FROM {model}.generate(%s, 6, stop => %s)", (PROMPT, stop)).fetchall()
        assert "".join(r[0] for r in rows) == full[: full.index(stop)]
        assert rows[-1][1] == "stop"
        long_prompt = " x" * 125                       # 125 tokens of the 128-position context
        assert len(encode(long_prompt)) == 125
        rows = conn.execute(f"SELECT step, finish FROM {model}.generate(%s, 10)", (long_prompt,)).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4] and rows[-1][1] == "context_full"


@pytest.mark.parametrize("args, message", [
    ("'', 5", "prompt is empty"),
    ("NULL, 5", "the prompt is NULL"),
    ("'Hi', 0", "max_new_tokens must be between 1"),
    ("'Hi', 1000000", "max_new_tokens must be between 1"),
    ("'Hi', 5, -1", "temperature must be"),
    ("'Hi', 5, 'NaN'", "temperature must be"),
    ("'Hi', 5, 1, 0", "top_k must be >= 1"),
    ("'Hi', 5, 1, NULL, 0", "top_p must be in"),
    ("'Hi', 5, 1, NULL, 1.5", "top_p must be in"),
    ("'Hi', 5, 1, NULL, NULL, 2", "seed must be between -1 and 1"),
    ("repeat(' x', 129), 5", "the model's context is 128"),
])
def test_bad_generation_options(tiny, args, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(f"SELECT count(*) FROM {model}.generate({args})")


def test_prompt_is_just_text(tiny):
    dsn, model = tiny
    evil = "'); DROP SCHEMA tiny CASCADE; --"
    with gpt2sql.Client(dsn) as client:
        m = client.model(model)
        assert m.tokenize(evil) == encode(evil)
        assert len(m.steps(evil, max_new_tokens=2)) == 2
        assert model in client.models()
        with pytest.raises(ValueError, match="NUL"):
            m.generate("a\x00b")
