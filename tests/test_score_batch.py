"""Scoring texts and generating for many prompts at once, against the NumPy reference:
score / perplexity (with the sliding window past the context), forward_batch's rows,
generate_batch = each prompt's own generate, seeded batches, bad input; Python and CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import psycopg
import pytest

import gpt2sql
import reference_gpt2 as ref
from conftest import kernel_of
from reference_tokenizer import encode

EOT = 50256
TEXT = "The quick brown fox jumps over the lazy dog, and the database said: all rows are here."
PROMPTS = ["Hello, my name is", "The database said", "A", "Once upon a time, in a land far away, there lived"]


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    return ref.load(tiny_ckpt)


def log_softmax(z):  # [.., V] -> [.., V]
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference_scores(tokens, cfg, params):
    """(logprob, rank) of every token, each scored with the sliding window written out independently:
    windows of n_ctx tokens of [<|endoftext|>] + tokens start every n_ctx // 2 tokens, and token i
    is scored in the first window that holds it."""
    seq = [EOT] + tokens
    n_ctx, stride = cfg["n_positions"], cfg["n_positions"] // 2
    out = []
    for i in range(1, len(seq)):
        w = 0 if i < n_ctx else -(-(i - n_ctx + 1) // stride)           # first window reaching seq[i]
        logits = ref.forward(seq[w * stride:i], cfg, params)[-1]
        lp = log_softmax(logits)
        out.append((lp[seq[i]], 1 + int((logits > logits[seq[i]]).sum()), logits))
    return out


def near_ties(logits, token, eps):
    return int((np.abs(logits - logits[token]) <= eps).sum()) - 1


def check_scores(rows, tokens, want, tol, kernel):
    assert [r[0] for r in rows] == list(range(1, len(tokens) + 1))
    assert [r[1] for r in rows] == tokens
    got = np.array([r[3] for r in rows])
    assert np.max(np.abs(got - np.array([w[0] for w in want]))) <= tol
    for r, w, t in zip(rows, want, tokens):
        if kernel == "sql":
            assert r[4] == w[1]
        else:  # float32 products: a candidate within rounding of the target may swap places with it
            assert abs(r[4] - w[1]) <= near_ties(w[2], t, 1e-4)


def test_score_equals_numpy(tiny, reference, tol):
    dsn, model = tiny
    cfg, params = reference
    tokens = encode(TEXT)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT "position", token, piece, logprob, rank FROM {model}.score(%s)', (TEXT,)).fetchall()
        ppl = conn.execute(f"SELECT {model}.perplexity(%s)", (TEXT,)).fetchone()[0]
        pieces = conn.execute(f"SELECT string_agg(piece, '' ORDER BY position) FROM {model}.score(%s)",
                              (TEXT,)).fetchone()[0]
    want = reference_scores(tokens, cfg, params)
    check_scores(rows, tokens, want, tol, kernel_of(dsn, model))
    want_ppl = math.exp(-np.mean([w[0] for w in want]))
    assert abs(ppl - want_ppl) / want_ppl <= (1e-6 if kernel_of(dsn, model) == "sql" else 1e-5)
    assert pieces == TEXT


def test_score_slides_a_window_past_the_context(tiny, reference, tol):
    """tiny has 128 positions: 300 tokens take four windows, each starting 64 tokens after the last."""
    dsn, model = tiny
    cfg, params = reference
    text = " ".join(f"row {i} says {i * 7 % 13}." for i in range(60))
    tokens = encode(text)
    assert len(tokens) > 2 * cfg["n_positions"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT "position", token, piece, logprob, rank FROM {model}.score(%s)', (text,)).fetchall()
    check_scores(rows, tokens, reference_scores(tokens, cfg, params), tol, kernel_of(dsn, model))


def test_forward_batch_rows_equal_numpy(tiny, reference, tol):
    """Three prompts of different lengths in one prefill, then one step where the second sits out:
    each row's logits are its own sequence's, and best is each row's argmax (the greedy token)."""
    dsn, model = tiny
    cfg, params = reference
    seqs = [encode(p) for p in PROMPTS[:3]]
    nxt = [11, None, 262]
    with psycopg.connect(dsn, autocommit=True) as conn:
        first, second, best1, best2 = conn.execute(f"""
            WITH s1 AS (SELECT * FROM {model}.forward_batch(%s, %s, NULL)),
                 s2 AS (SELECT f.* FROM s1, {model}.forward_batch(%s, %s, s1.present) AS f)
            SELECT s1.logits, s2.logits, s1.best, s2.best FROM s1, s2""",
            (sum(seqs, []), [len(s) for s in seqs], [t for t in nxt if t is not None],
             [0 if t is None else 1 for t in nxt])).fetchone()
    for got, best, s in zip(first, best1, seqs):
        want = ref.forward(s, cfg, params)[-1]
        assert np.max(np.abs(np.array(got) - want)) <= tol
        assert best == int(np.argmax(want))
    for got, best, s, t in zip(second, best2, [seqs[0], seqs[2]], [nxt[0], nxt[2]]):
        want = ref.forward(s + [t], cfg, params)[-1]
        assert np.max(np.abs(np.array(got) - want)) <= tol
        assert best == int(np.argmax(want))
    assert len(best1) == 3 and len(best2) == 2



@pytest.mark.parametrize("lengths", [[2, 2], [3, 3], [6, -1], [5, None]])
def test_forward_batch_refuses_lengths_that_do_not_cut_the_tokens(tiny, lengths):
    """lengths must be whole rows per sequence adding up to the tokens (5 here), none negative."""
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"gpt2sql: lengths .* do not cut the 5 tokens"):
            conn.execute(f"SELECT {model}.forward_batch(%s, %s::int[], NULL)", ([11, 12, 13, 14, 15], lengths))

def test_generate_batch_equals_each_generate(tiny, reference):
    dsn, model = tiny
    cfg, params = reference
    stop_prompt = PROMPTS[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        batch = conn.execute(f"SELECT prompt_index, step, token, piece, finish FROM {model}.generate_batch(%s, 6)",
                             (PROMPTS,)).fetchall()
        singles = [conn.execute(f"SELECT step, token, piece, finish FROM {model}.generate(%s, 6)", (p,)).fetchall()
                   for p in PROMPTS]
        # a stop string that ends one sequence early while the others go on
        first_piece = singles[1][0][2]
        stopped = conn.execute(f"SELECT prompt_index, step, piece, finish FROM {model}.generate_batch(%s, 4, stop => %s)",
                               ([stop_prompt, PROMPTS[0]], first_piece)).fetchall()
    for i, single in enumerate(singles, 1):
        assert [r[1:] for r in batch if r[0] == i] == single
        assert [r[1] for r in single] == ref.greedy(encode(PROMPTS[i - 1]), 6, cfg, params)
    assert [r[1] for r in batch] == sorted(r[1] for r in batch)                  # step by step
    assert [r for r in stopped if r[0] == 1] == [(1, 1, "", "stop")]
    assert [r[1] for r in stopped if r[0] == 2] == [1, 2, 3, 4]


def test_generate_batch_seeded_repeats_and_stops_each_sequence(tiny):
    dsn, model = tiny
    query = f"SELECT prompt_index, step, token, finish FROM {model}.generate_batch(%s, 5, 1.0, NULL, NULL, 0.25)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        one = conn.execute(query, (PROMPTS,)).fetchall()
        two = conn.execute(query, (PROMPTS,)).fetchall()
        other = conn.execute(query.replace("0.25", "-0.5"), (PROMPTS,)).fetchall()
        n_pos = conn.execute(f"SELECT n_positions FROM {model}.config").fetchone()[0]
        # one prompt two tokens short of the context: it stops with context_full, the other goes on
        long_prompt = " a" * (n_pos - 2)
        assert len(encode(long_prompt)) == n_pos - 2
        full = conn.execute(f"SELECT prompt_index, step, finish FROM {model}.generate_batch(%s, 5)",
                            ([long_prompt, "Hi"],)).fetchall()
    assert one == two and one != other
    assert {r[0] for r in one} == {1, 2, 3, 4} and all(r[3] == "length" for r in one if r[1] == 5)
    assert [r for r in full if r[0] == 1] == [(1, 1, None), (1, 2, None), (1, 3, "context_full")]
    assert [r[2] for r in full if r[0] == 2] == [None] * 4 + ["length"]


@pytest.mark.parametrize("prompts, message", [
    ([], "prompts is an empty array"),
    (["a", None], "prompt 2 is NULL"),
    (["a", "b", ""], "prompt 3 is empty"),
    (["x"] * 65, "65 prompts in one batch; the limit is 64"),
    (["ok", "word " * 199 + "word"], "prompt 2 is 200 tokens; the model's context is 128 positions"),
])
def test_generate_batch_bad_input(main_dsn, tiny_ckpt, prompts, message):
    from conftest import ensure_model

    model = ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match=message.replace("(", r"\(")):
            conn.execute(f"SELECT * FROM {model}.generate_batch(%s::text[], 3)", (prompts,))
        with pytest.raises(psycopg.Error, match="max_new_tokens must be between"):
            conn.execute(f"SELECT * FROM {model}.generate_batch(ARRAY['a'], 0)")
        with pytest.raises(psycopg.Error, match="the text to score is empty"):
            conn.execute(f"SELECT * FROM {model}.score('')")


def test_python_client_and_cli(main_dsn, tiny_ckpt, reference, tmp_path):
    from conftest import ensure_model

    cfg, params = reference
    model_name = ensure_model(main_dsn, tiny_ckpt, "tiny")
    with gpt2sql.Client(main_dsn) as client:
        model = client.model(model_name)
        texts = model.generate_batch(PROMPTS, max_new_tokens=4)
        streamed = list(model.stream_batch(PROMPTS[:2], max_new_tokens=3))
        scores = model.score(TEXT)
        ppl = model.perplexity(TEXT)
        with pytest.raises(TypeError, match="prompts must be a list of str"):
            model.generate_batch("one prompt")
        with pytest.raises(ValueError, match="prompt 2 contains a NUL"):
            model.generate_batch(["a", "b\x00"])
        want = [model.detokenize(ref.greedy(encode(p), 4, cfg, params)) for p in PROMPTS]
    assert texts == want
    assert [(s.prompt_index, s.step) for s in streamed] == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]
    assert [s.token for s in scores] == encode(TEXT)
    assert ppl == pytest.approx(math.exp(-np.mean([s.logprob for s in scores])), rel=1e-12)

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS[:2]) + "\n\n")
    env = {**os.environ, "DATABASE_URL": main_dsn}
    out = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "generate", "--file", str(prompts_file), "--model",
                          model_name, "-n", "4", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    import json
    assert [json.loads(line) for line in out.stdout.splitlines()] == [p + t for p, t in zip(PROMPTS[:2], texts[:2])]
    assert "2 prompts, 8 tokens" in out.stderr
    out = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "score", TEXT, "--model", model_name],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"perplexity {ppl:.2f}" in out.stdout and len(out.stdout.splitlines()) == len(scores) + 2


def test_prompt_files_split_on_line_ends_only(main_dsn, tiny_ckpt, tmp_path):
    """A vertical tab or file separator stays inside its prompt, CR LF ends a line like LF, and a
    leading byte-order mark is not part of the first prompt."""
    import json

    from conftest import ensure_model

    model_name = ensure_model(main_dsn, tiny_ckpt, "tiny")
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_bytes("\ufeffone\x0btwo\r\nthree\x1cfour\n\r\n".encode("utf-8"))
    env = {**os.environ, "DATABASE_URL": main_dsn}
    out = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "generate", "--file", str(prompts_file), "--model",
                          model_name, "-n", "1", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 2 and "2 prompts" in out.stderr
    assert lines[0].startswith("one\x0btwo") and lines[1].startswith("three\x1cfour")
