"""Beam search as Hugging Face's generate does it (num_beams, length_penalty, early_stopping,
num_return_sequences, with the processors), in SQL against the NumPy reference written from
transformers' rules, on every server and kernel; bad options refused; Python and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache

import numpy as np
import psycopg
import pytest
from safetensors.numpy import load_file, save_file

import gpt2sql
import reference_gpt2 as ref
from conftest import ensure_model, kernel_model_name, kernel_of
from reference_tokenizer import encoding, encode

PROMPT = "Hello, my name is"
N_NEW = 6
SCORE_TOL = {"sql": 1e-9, "vector": 1e-4}
CLI = [sys.executable, "-m", "gpt2sql.cli"]

# each case: options of beam_search; on the model below, <|endoftext|> is often among the likeliest
# tokens, so hypotheses finish early and each early_stopping mode ends differently
CASES = [dict(num_beams=2),
         dict(num_beams=3, num_return_sequences=3),
         dict(num_beams=3, early_stopping="true", num_return_sequences=3),
         dict(num_beams=3, early_stopping="never", length_penalty=1.5, num_return_sequences=3),
         dict(num_beams=4, length_penalty=-1.0, num_return_sequences=2),
         dict(num_beams=5, length_penalty=0.5, num_return_sequences=5),
         dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=2, num_return_sequences=2),
         dict(num_beams=3, min_new_tokens=4, num_return_sequences=3)]


@pytest.fixture(scope="session")
def eos_ckpt(tiny_ckpt, tmp_path_factory):
    """The tiny random checkpoint with ln_f's bias moved along <|endoftext|>'s embedding, so that the
    (tied) LM head often ranks <|endoftext|> first: a model whose beams finish at different times."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny_eos"
    shutil.copytree(tiny_ckpt, out)
    tensors = load_file(str(out / "model.safetensors"))
    w = tensors["wte.weight"][ref.EOS].astype(np.float64)
    tensors["ln_f.bias"] = (tensors["ln_f.bias"] + 0.8 * w / (w @ w)).astype(np.float32)
    save_file(tensors, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="session")
def eos_model(target, eos_ckpt):
    dsn, kernel = target
    return dsn, ensure_model(dsn, eos_ckpt, kernel_model_name("tiny_eos", kernel), kernel)


@lru_cache(maxsize=None)
def reference(ckpt, case: int):
    cfg, params = ref.load(ckpt)
    return ref.beam_search(encode(PROMPT), N_NEW, cfg, params, **{**CASES[case], "early_stopping": {
        "true": True, "false": False, "never": "never"}[CASES[case].get("early_stopping", "false")]})


def sql_beams(conn, model, **opts):
    names = ", ".join(f"{k} => %s" for k in opts)
    return conn.execute(f"SELECT rank, tokens, text, score, finish FROM {model}.beam_search(%s, max_new_tokens => {N_NEW}"
                        f"{', ' if opts else ''}{names}) ORDER BY rank", (PROMPT, *opts.values())).fetchall()


@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: ",".join(f"{k}={v}" for k, v in CASES[i].items()))
def test_beam_search_matches_numpy(eos_model, eos_ckpt, case):
    dsn, model = eos_model
    want = reference(eos_ckpt, case)
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = sql_beams(conn, model, **CASES[case])
    tol = SCORE_TOL[kernel_of(dsn, model)]
    assert [r[0] for r in got] == list(range(1, len(want) + 1))
    for (rank, tokens, text, score, finish), (w_tokens, w_score) in zip(got, want):
        assert tokens == w_tokens, rank
        assert abs(score - w_score) <= tol, (rank, score, w_score)
        ended = w_tokens[-1] == ref.EOS
        assert finish == ("endoftext" if ended else "length")
        assert text == encoding().decode([t for t in w_tokens if t != ref.EOS])


def test_the_cases_cover_every_way_a_search_ends(eos_ckpt):
    """The reference results differ between the modes and include hypotheses that ended with
    <|endoftext|> early and ones that ran to the end (else the test above would check less)."""
    results = [reference(eos_ckpt, i) for i in range(len(CASES))]
    lengths = {len(t) for r in results for t, _ in r}
    assert any(t[-1] == ref.EOS for r in results for t, _ in r) and N_NEW in lengths and min(lengths) < N_NEW
    assert results[1] != results[2] != results[3]


def test_one_beam_is_greedy_search(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        beam = sql_beams(conn, model, num_beams=1)
        greedy = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, {N_NEW})",
                              (PROMPT,)).fetchone()[0]
    assert beam[0][1] == greedy


@pytest.mark.parametrize("opts, message", [
    (dict(num_beams=0), "num_beams must be from 1 to 16, got 0"),
    (dict(num_beams=17), "num_beams must be from 1 to 16, got 17"),
    (dict(num_beams=None), "num_beams must be from 1 to 16"),
    (dict(length_penalty=float("nan")), "length_penalty must be a finite number"),
    (dict(early_stopping="maybe"), "early_stopping must be true, false or never, got maybe"),
    (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences must be from 1 to num_beams \(2\), got 3"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be a number > 0"),
    (dict(min_new_tokens=7), r"min_new_tokens must be from 0 to max_new_tokens \(6\), got 7"),
])
def test_bad_beam_options_are_refused(tiny, opts, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="gpt2sql: " + message):
            sql_beams(conn, model, **opts)


def test_a_prompt_that_fills_the_context_is_refused(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = conn.execute(f"SELECT n_positions FROM {model}.config").fetchone()[0]
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="gpt2sql: the prompt is"):
            conn.execute(f"SELECT * FROM {model}.beam_search(%s)", (" a" * (n + 1),))


def test_python_and_cli_take_the_beam_options(main_dsn, eos_ckpt, tmp_path):
    model = ensure_model(main_dsn, eos_ckpt, "tiny_eos_cli", "sql")
    case = 3                                    # 3 beams, early_stopping 'never', length_penalty 1.5, 3 back
    want = reference(eos_ckpt, case)
    texts = [encoding().decode([t for t in tokens if t != ref.EOS]) for tokens, _ in want]
    with gpt2sql.Client(main_dsn) as client:
        m = client.model(model)
        hyps = m.beam_search(PROMPT, num_beams=3, max_new_tokens=N_NEW, early_stopping="never", length_penalty=1.5,
                             num_return_sequences=3)
        assert [(h.rank, h.tokens) for h in hyps] == [(i + 1, t) for i, (t, _) in enumerate(want)]
        assert all(abs(h.score - s) <= 1e-9 for h, (_, s) in zip(hyps, want))
        beam_options = dict(num_beams=3, max_new_tokens=N_NEW, early_stopping="never", length_penalty=1.5)
        assert m.generate(PROMPT, **beam_options) == texts[0]
        assert m.samples(PROMPT, 3, **beam_options) == texts
        assert m.generate_batch([PROMPT, "The"], **beam_options)[0] == texts[0]
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="beam search .* is deterministic"):
            m.generate(PROMPT, num_beams=3, temperature=0.7)
        with pytest.raises(ValueError, match="early_stopping must be True, False or 'never'"):
            m.beam_search(PROMPT, early_stopping="sometimes")
    run = subprocess.run([*CLI, "generate", PROMPT, "--model", model, "-n", str(N_NEW), "--num-beams", "3",
                          "--early-stopping", "never", "--length-penalty", "1.5", "--num-return-sequences", "3",
                          "--dsn", main_dsn], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line) for line in run.stdout.splitlines()] == [PROMPT + t for t in texts]
    assert run.stderr.splitlines()[0].startswith(f"[1: {len(want[0][0])} tokens, score {want[0][1]:.4f}")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\nThe\n")
    batch = subprocess.run([*CLI, "generate", "--file", str(prompts), "--json", "--model", model, "-n", str(N_NEW),
                            "--num-beams", "3", "--early-stopping", "never", "--length-penalty", "1.5", "--dsn", main_dsn],
                           capture_output=True, text=True, timeout=300)
    assert batch.returncode == 0, batch.stderr
    assert json.loads(batch.stdout.splitlines()[0]) == PROMPT + texts[0]
    bad = subprocess.run([*CLI, "generate", PROMPT, "--model", model, "--num-beams", "3", "--temperature", "0.7",
                          "--dsn", main_dsn], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "beam search (--num-beams) is deterministic" in bad.stderr


def test_complete_takes_num_beams(eos_model, eos_ckpt):
    dsn, model = eos_model
    best = reference(eos_ckpt, 3)[0][0]          # 3 beams, early_stopping 'never', length_penalty 1.5
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute(f"SELECT {model}.complete(%s, {N_NEW}, num_beams => 3, early_stopping => 'never', "
                           "length_penalty => 1.5)", (PROMPT,)).fetchone()[0]
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="gpt2sql: beam search .* is deterministic"):
            conn.execute(f"SELECT {model}.complete(%s, 5, temperature => 0.8, num_beams => 2)", (PROMPT,))
    assert got == PROMPT + encoding().decode([t for t in best if t != ref.EOS])


BATCH = [PROMPT, "The", "In 1999,"]         # with 3 beams and early_stopping, each search ends at another step


@lru_cache(maxsize=None)
def batch_reference(ckpt, prompt: str):
    cfg, params = ref.load(ckpt)
    return ref.beam_search(encode(prompt), N_NEW, cfg, params, num_beams=3, early_stopping=True,
                           num_return_sequences=3)


def test_a_batch_of_beam_searches_is_each_prompts_own(eos_model, eos_ckpt):
    """beam_search_batch advances several prompts' beams together, and generate_batch with
    num_beams returns their hypotheses as rows: each prompt's equal to its own reference search."""
    dsn, model = eos_model
    want = [batch_reference(eos_ckpt, p) for p in BATCH]
    assert len({max(len(t) for t, _ in w) for w in want}) == len(BATCH)     # prompts leave the batch at different steps
    tol = SCORE_TOL[kernel_of(dsn, model)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute(f"SELECT prompt_index, rank, tokens, score, finish FROM {model}.beam_search_batch(%s, 3, "
                           f"{N_NEW}, early_stopping => 'true', num_return_sequences => 3) ORDER BY prompt_index, rank", (BATCH,)).fetchall()
        rows = conn.execute(f"SELECT prompt_index, sample, step, token, piece, finish FROM {model}.generate_batch(%s, "
                            f"{N_NEW}, num_beams => 3, early_stopping => 'true', num_return_sequences => 2)", (BATCH,)).fetchall()
    for p, w in enumerate(want, 1):
        mine = [r for r in got if r[0] == p]
        assert [r[1] for r in mine] == list(range(1, len(w) + 1))
        for (_, rank, tokens, score, finish), (w_tokens, w_score) in zip(mine, w):
            assert tokens == w_tokens and abs(score - w_score) <= tol, (p, rank)
            assert finish == ("endoftext" if w_tokens[-1] == ref.EOS else "length")
        for rank, (w_tokens, _) in enumerate(w[:2], 1):           # generate_batch: the best two, as rows
            seq = sorted(r[2:] for r in rows if r[:2] == (p, rank))
            assert [s[0] for s in seq] == list(range(1, len(w_tokens) + 1))
            assert [s[1] for s in seq] == w_tokens
            assert "".join(s[2] for s in seq) == encoding().decode([t for t in w_tokens if t != ref.EOS])
            assert [s[3] for s in seq] == [None] * (len(seq) - 1) + ["endoftext" if w_tokens[-1] == ref.EOS
                                                                      else "length"]


@pytest.mark.parametrize("call, error, message", [
    ("generate(%s, 5, num_beams => 2, logprobs => 3)", psycopg.errors.InvalidParameterValue,
     "beam search .* is deterministic: .*logprobs"),
    ("generate(%s, 5, num_beams => 2, stop => '.')", psycopg.errors.InvalidParameterValue,
     "beam search .* is deterministic: .*stop"),
    ("generate_batch(array_fill(%s::text, ARRAY[17]), 5, num_beams => 4)", psycopg.errors.ProgramLimitExceeded,
     r"17 prompts x 4 beams in one batch; the limit is 64 sequences"),
    ("beam_search_batch(ARRAY[%s, ''])", psycopg.errors.InvalidParameterValue, "prompt 2 is empty"),
])
def test_bad_beam_batches_are_refused(tiny, call, error, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(error, match="gpt2sql: " + message):
            conn.execute(f"SELECT * FROM {model}.{call}", (PROMPT,))
