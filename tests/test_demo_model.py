"""The small GPT-2 trained for the demo (runner/demo_model, made by tools/train_demo_model.py):
it loads on every server and kernel, its logits equal the NumPy reference, its held-out
perplexity (computed here, in SQL) is what its model card reports, and `gpt2sql demo` writes
NumPy's greedy continuation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

import reference_gpt2 as ref
from conftest import ensure_model, kernel_model_name, kernel_of
from gpt2sql.cli import DEMO_PROMPT, DEMO_TOKENS
from gpt2sql.loader.checkpoint import demo_model_dir
from reference_tokenizer import encode

DATA = Path(__file__).resolve().parent / "data"
HELDOUT = DATA / "demo_heldout.txt"   # held-out prose of the corpus, never trained on (its README)


@pytest.fixture(scope="module")
def reference():
    return ref.load(demo_model_dir())


@pytest.fixture(scope="module")
def run_record():
    return json.loads((demo_model_dir() / "run.json").read_text())


@pytest.fixture(scope="module")
def demo(target):
    dsn, kernel = target
    return dsn, ensure_model(dsn, demo_model_dir(), kernel_model_name("trained", kernel), kernel)


def test_shipped_files(run_record):
    folder = demo_model_dir()
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "README.md", "run.json"} <= names
    assert (folder / "model.safetensors").stat().st_size <= 16 * 10**6
    assert run_record["minutes"] <= 60
    card = " ".join((folder / "README.md").read_text().split())
    assert "not OpenAI's GPT-2" in card and "python3.11-doc" in card


def test_logits_equal_numpy(demo, reference):
    dsn, model = demo
    cfg, params = reference
    tol = {"sql": 1e-9, "vector": 1e-4}[kernel_of(dsn, model)]
    for prompt in (DEMO_PROMPT, "Return the number of items in a"):
        tokens = encode(prompt)
        with psycopg.connect(dsn, autocommit=True) as conn:
            got = np.array([r[0] for r in conn.execute(
                f"SELECT logit FROM {model}.next_token_logits(%s) ORDER BY token", (tokens,))])
        want = ref.forward(tokens, cfg, params)[-1]
        assert np.max(np.abs(got - want)) <= tol * max(1.0, np.abs(want).max())
        assert int(np.argmax(got)) == int(np.argmax(want))


def reference_perplexity(text, cfg, params) -> float:
    tokens = [50256] + encode(text)
    assert len(tokens) <= cfg["n_positions"]
    logits = ref.forward(tokens, cfg, params)[:-1]
    z = logits - logits.max(-1, keepdims=True)
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return math.exp(-np.mean([lp[i, t] for i, t in enumerate(tokens[1:])]))


def test_heldout_perplexity(main_dsn, reference, run_record):
    """Held-out prose the model never saw: SQL's perplexity equals NumPy's, is near what training
    measured on the whole held-out split, and is far below the 50,257 of a uniform guess."""
    cfg, params = reference
    model = ensure_model(main_dsn, demo_model_dir(), "trained_vector", "vector")
    paragraphs = [p for p in HELDOUT.read_text().split("\n\n") if p.strip()]
    reported = run_record["final_heldout_perplexity"]["heldout_pydoc"]
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        got = [conn.execute(f"SELECT {model}.perplexity(%s)", (p,)).fetchone()[0] for p in paragraphs]
    want = [reference_perplexity(p, cfg, params) for p in paragraphs]
    assert np.allclose(got, want, rtol=1e-4)
    overall = math.exp(np.mean([math.log(g) for g in got]))     # geometric mean over the paragraphs
    assert overall <= reported * 1.5 and overall < 1000, (overall, reported)


def test_greedy_continuations_are_numpys(demo, reference):
    """A model with real predictions: greedy tokens differ by prompt, and equal NumPy's; a batch of
    the same prompts gives each prompt's own continuation."""
    dsn, model = demo
    cfg, params = reference
    prompts = [DEMO_PROMPT, "This module provides", "If the argument is"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        singles = [[r[0] for r in conn.execute(f"SELECT token FROM {model}.generate(%s, 8)", (p,))] for p in prompts]
        batch = conn.execute(f"SELECT prompt_index, token FROM {model}.generate_batch(%s, 8)", (prompts,)).fetchall()
    for i, (p, single) in enumerate(zip(prompts, singles), 1):
        assert single == ref.greedy(encode(p), 8, cfg, params)
        assert [t for j, t in batch if j == i] == single
    assert len({tuple(s) for s in singles}) == 3 and all(len(set(s)) > 2 for s in singles)


def test_demo_command_writes_numpys_greedy_continuation(main_dsn, reference, tmp_path):
    """`gpt2sql demo` (the README's run command) loads the shipped model and continues greedily."""
    cfg, params = reference
    env = dict(os.environ, GPT2SQL_HOME=str(tmp_path / "home"))
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS demo CASCADE")
    res = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "demo", "--dsn", main_dsn],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    tokens = ref.greedy(encode(DEMO_PROMPT), DEMO_TOKENS, cfg, params)
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        text = conn.execute("SELECT demo.detokenize(%s::int[])", (tokens,)).fetchone()[0]
        assert conn.execute("SELECT kernel FROM demo.config").fetchone()[0] == "sql"
    line = (DEMO_PROMPT + text).split("\n")[0]                     # the demo stops at the end of the line
    assert line in res.stdout.splitlines() and len(line.split()) >= 6
    assert "loading the demo model" in res.stdout
    again = subprocess.run([sys.executable, "-m", "gpt2sql.cli", "demo", "--dsn", main_dsn],
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "loading" not in again.stdout      # loaded once
