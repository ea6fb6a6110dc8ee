"""The SQL forward pass equals an independent NumPy GPT-2 (float64), on every server."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest

import reference_gpt2 as ref
from conftest import KERNEL_TOL, ensure_model, kernel_model_name, kernel_of

PROMPTS = {1: [15496], 7: [15496, 11, 616, 1438, 318, 1757, 13], 64: [(i * 7919) % 50257 for i in range(64)]}


def sql_logits(dsn: str, model: str, tokens: list[int]) -> np.ndarray:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT token, logit FROM {model}.next_token_logits(%s) ORDER BY token",
                            (tokens,)).fetchall()
    assert [r[0] for r in rows] == list(range(50257))
    return np.array([r[1] for r in rows])


@pytest.mark.parametrize("n", sorted(PROMPTS))
def test_tiny_logits_match_numpy(tiny, tiny_ckpt, tol, n):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    want = ref.forward(PROMPTS[n], cfg, params)[-1]
    got = sql_logits(dsn, model, PROMPTS[n])
    assert np.max(np.abs(got - want)) <= tol
    assert int(np.argmax(got)) == int(np.argmax(want))


@pytest.mark.skipif(os.environ.get("GPT2SQL_TEST_124M", "1") == "0",
                    reason="GPT2SQL_TEST_124M=0 set: the 124M-shaped parity test was deselected on purpose")
@pytest.mark.parametrize("n", sorted(PROMPTS))
def test_124m_logits_match_numpy(target, ckpt_124m, n):
    dsn, kernel = target
    model = ensure_model(dsn, ckpt_124m, kernel_model_name("m124_test", kernel), kernel)
    cfg, params = ref.load(ckpt_124m)
    want = ref.forward(PROMPTS[n], cfg, params)[-1]
    got = sql_logits(dsn, model, PROMPTS[n])
    assert np.max(np.abs(got - want)) <= KERNEL_TOL[kernel_of(dsn, model)]
    assert int(np.argmax(got)) == int(np.argmax(want))


@pytest.mark.parametrize("tokens, message", [
    ([], "prompt is empty"),
    ([50257], "outside the vocabulary"),
    ([-3], "outside the vocabulary"),
    (list(range(129)), "exceed the model's context of 128"),
])
def test_bad_prompts_are_refused(tiny, tokens, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match=message):
            conn.execute(f"SELECT count(*) FROM {model}.next_token_logits(%s::int[])", (tokens,))


def test_a_full_context_is_accepted(tiny, tiny_ckpt, tol):
    dsn, model = tiny
    tokens = [(i * 31) % 50257 for i in range(128)]
    cfg, params = ref.load(tiny_ckpt)
    got = sql_logits(dsn, model, tokens)
    assert np.max(np.abs(got - ref.forward(tokens, cfg, params)[-1])) <= tol


@pytest.mark.parametrize("weight, bias, n_in", [
    ("h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias", 64),
    ("h.1.mlp.c_proj.weight", "h.1.mlp.c_proj.bias", 256),
    ("wte.weight", None, 64),
])
def test_fast_product_equals_the_plain_one(tiny, tiny_ckpt, weight, bias, n_in):
    """linear (the model's kernel) = linear_plain (sum over matrix_cells) = NumPy: exactly (float64) for
    the sql kernel and the plain product, to float32 rounding (relative 1e-6) for pgvector's."""
    from safetensors.numpy import load_file

    dsn, model = tiny
    x = np.random.default_rng(5).standard_normal((3, n_in))
    with psycopg.connect(dsn, autocommit=True) as conn:
        fast = np.array(conn.execute(f"SELECT {model}.linear(%s, %s, %s)", (x.tolist(), weight, bias)).fetchone()[0])
        plain = np.array(conn.execute(f"SELECT {model}.linear_plain(%s, %s, %s)", (x.tolist(), weight, bias)).fetchone()[0])
        cell = conn.execute(f"SELECT value FROM {model}.matrix_cells WHERE name = %s AND row = 5 AND col = 3",
                            (weight,)).fetchone()[0]
    t = load_file(str(tiny_ckpt / "model.safetensors"))
    w = t[weight].astype(np.float64)
    want = x @ (w.T if weight == "wte.weight" else w) + (t[bias] if bias else 0)
    fast_tol = 1e-12 if kernel_of(dsn, model) == "sql" else 1e-6 * np.max(np.abs(x)) * np.sqrt(n_in)
    assert np.max(np.abs(fast - want)) < fast_tol
    assert np.max(np.abs(plain - want)) < 1e-12
    assert cell == (w[5, 3] if weight == "wte.weight" else w[3, 5])


VECTOR_TARGETS = [t for t in __import__("conftest").TARGETS if t[1] == "vector"]


@pytest.mark.skipif(os.environ.get("GPT2SQL_TEST_124M", "1") == "0",
                    reason="GPT2SQL_TEST_124M=0 set: the 124M-shaped parity test was deselected on purpose")
@pytest.mark.parametrize("server", sorted({s for s, _ in VECTOR_TARGETS}))
def test_124m_vector_kernel_greedy_continuation_equals_numpy(server, _server_registry, ckpt_124m):
    """float32 inner products change no greedy choice on the 124M shape: generate() with the KV cache
    gives the tokens NumPy's float64 loop gives (the sql kernel's equality is exact; see test_generate)."""
    dsn = _server_registry(server)
    model = ensure_model(dsn, ckpt_124m, kernel_model_name("m124_test", "vector"), "vector")
    cfg, params = ref.load(ckpt_124m)
    prompt = PROMPTS[7]
    want = ref.greedy(prompt, 6, cfg, params)
    with psycopg.connect(dsn, autocommit=True) as conn:
        text = conn.execute(f"SELECT {model}.detokenize(%s)", (prompt,)).fetchone()[0]
        assert conn.execute(f"SELECT {model}.tokenize(%s)", (text,)).fetchone()[0] == prompt
        got = [r[0] for r in conn.execute(f"SELECT token FROM {model}.generate(%s, 6)", (text,))]
    assert got == want
