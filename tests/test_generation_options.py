"""Generation options as Hugging Face's generate names them: the logits processors
(repetition_penalty, no_repeat_ngram_size, min_new_tokens), min_p and logprobs, in SQL, against the
NumPy reference written from transformers' rules, on every server and kernel; and the same options
through Python and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import psycopg
import pytest

import gpt2sql
import reference_gpt2 as ref
from conftest import ensure_model
from gpt2sql.loader.checkpoint import demo_model_dir
from reference_tokenizer import encode

PROMPT = "Hello, my name is"
CLI = [sys.executable, "-m", "gpt2sql.cli"]
OPTIONS = [dict(repetition_penalty=1.3), dict(repetition_penalty=0.7), dict(no_repeat_ngram_size=1),
           dict(no_repeat_ngram_size=2), dict(repetition_penalty=1.2, no_repeat_ngram_size=3),
           dict(min_new_tokens=4)]


def test_process_logits_matches_numpy(tiny, tiny_ckpt):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    tokens = encode(PROMPT)
    logits = ref.forward(tokens, cfg, params)[-1]
    history = tokens + [11, 318, 11, 318, 11, 262, 11, 318]        # repeats, so every rule has work
    eos_top = logits.copy()
    eos_top[ref.EOS] = logits.max() + 5
    cases = [(logits, opts, n_new) for opts in OPTIONS for n_new in (0, 3, 8)] + \
            [(eos_top, dict(min_new_tokens=3), 2), (eos_top, dict(min_new_tokens=3), 3)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for row, opts, n_new in cases:
            full = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0, **opts}
            got = conn.execute(f"SELECT {model}.process_logits(%s, %s, %s, %s, %s, %s)",
                               (row.tolist(), history, n_new, full["repetition_penalty"],
                                full["no_repeat_ngram_size"], full["min_new_tokens"])).fetchone()[0]
            want = ref.process_logits(row, history, n_new, **opts)
            assert np.array_equal(np.array(got), want), (opts, n_new)
    # min_new_tokens: <|endoftext|> cannot win before the third new token, and can from it on
    assert ref.process_logits(eos_top, history, 2, min_new_tokens=3)[ref.EOS] == -np.inf
    assert np.argmax(ref.process_logits(eos_top, history, 3, min_new_tokens=3)) == ref.EOS


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_greedy_with_processors_matches_numpy(tiny, tiny_ckpt, opts):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    want = ref.greedy_processed(encode(PROMPT), 10, cfg, params, **opts)
    names = ", ".join(f"{k} => %s" for k in opts)
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 10, {names})",
                           (PROMPT, *opts.values())).fetchone()[0]
        plain = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 10)", (PROMPT,)).fetchone()[0]
    assert got == want
    if "no_repeat_ngram_size" in opts or "repetition_penalty" in opts:
        assert got != plain                   # the random model repeats itself greedily; the processor acts


def test_a_batch_applies_the_processors_to_each_sequence(tiny):
    dsn, model = tiny
    prompts = [PROMPT, "The database said", "SELECT * FROM"]
    q = "repetition_penalty => 1.4, no_repeat_ngram_size => 2"
    with psycopg.connect(dsn, autocommit=True) as conn:
        batch = conn.execute(f"SELECT prompt_index, array_agg(token ORDER BY step) FROM {model}.generate_batch(%s, 8, {q}) "
                             "GROUP BY prompt_index ORDER BY prompt_index", (prompts,)).fetchall()
        alone = [conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 8, {q})", (p,)).fetchone()[0]
                 for p in prompts]
    assert [r[1] for r in batch] == alone


def test_min_p_distribution_matches_numpy(tiny, tiny_ckpt):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    logits = ref.forward(encode(PROMPT), cfg, params)[-1]
    banned = logits.copy()
    banned[np.argsort(-logits)[:3]] = -np.inf                          # a processor banned the top three
    for row, temperature, top_k, top_p, min_p in [(logits, 1.0, None, None, 0.5), (logits, 0.7, 50, None, 0.2),
                                                  (logits, 1.5, None, 0.9, 0.05), (logits, 1.0, None, None, 0.0),
                                                  (logits, 1.0, None, None, 1.0), (banned, 1.0, 20, None, None),
                                                  (banned, 0.5, None, 0.8, 0.1)]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT token, probability FROM {model}.sampling_distribution(%s, %s, %s, %s, %s) "
                                "ORDER BY rank", ([float(x) for x in row], temperature, top_k, top_p, min_p)).fetchall()
        want = ref.sampling_distribution(row, temperature, top_k, top_p, min_p)
        order, p = [t for t, _ in want], [q for _, q in want]
        assert [r[0] for r in rows] == order, (temperature, top_k, top_p, min_p)
        assert np.allclose([r[1] for r in rows], p, rtol=1e-9, atol=1e-15)


def test_seeded_sampling_with_min_p_repeats_and_draws_only_kept_tokens(tiny):
    dsn, model = tiny
    q = f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 8, 1.0, seed => 0.3, min_p => 0.5)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        a, b = (conn.execute(q, (PROMPT,)).fetchone()[0] for _ in range(2))
    assert a == b and len(a) == 8


@pytest.mark.parametrize("args, message", [
    ("repetition_penalty => 0", "repetition_penalty must be a number > 0"),
    ("repetition_penalty => -1.5", "repetition_penalty must be a number > 0"),
    ("repetition_penalty => 'NaN'", "repetition_penalty must be a number > 0"),
    ("repetition_penalty => 'Infinity'", "repetition_penalty must be a number > 0"),
    ("no_repeat_ngram_size => -1", "no_repeat_ngram_size must be >= 0"),
    ("min_new_tokens => -1", "min_new_tokens must be from 0 to max_new_tokens (5)"),
    ("min_new_tokens => 6", "min_new_tokens must be from 0 to max_new_tokens (5)"),
    ("min_p => -0.1", "min_p must be in [0, 1]"),
    ("min_p => 1.5", "min_p must be in [0, 1]"),
    ("min_p => 'NaN'", "min_p must be in [0, 1]"),
])
def test_bad_processor_options_are_refused(tiny, args, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        for fn in ("generate(%s", "generate_batch(ARRAY[%s]"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message.replace("(", r"\(").replace(")", r"\)")
                               .replace("[", r"\[").replace("]", r"\]")):
                conn.execute(f"SELECT * FROM {model}.{fn}, 5, 1.0, {args})", (PROMPT,))


def test_python_and_cli_take_the_options(main_dsn, tiny_ckpt):
    model = ensure_model(main_dsn, tiny_ckpt, "tiny_processors", "sql")
    cfg, params = ref.load(tiny_ckpt)
    want = ref.greedy_processed(encode(PROMPT), 6, cfg, params, repetition_penalty=1.3, no_repeat_ngram_size=2)
    with gpt2sql.Client(main_dsn) as client:
        m = client.model(model)
        steps = m.steps(PROMPT, max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2)
        assert [s.token for s in steps] == want
        assert m.generate(PROMPT, max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2) == \
            client.connection.execute(f"SELECT {model}.detokenize(%s)", (want,)).fetchone()[0]
        with pytest.raises(TypeError, match="no_repeat_ngram_size must be an int"):
            m.generate(PROMPT, no_repeat_ngram_size=1.5)
    run = subprocess.run([*CLI, "generate", PROMPT, "--model", model, "-n", "6", "--repetition-penalty", "1.3",
                          "--no-repeat-ngram-size", "2", "--dsn", main_dsn], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        text = conn.execute(f"SELECT {model}.detokenize(%s)", (want,)).fetchone()[0]
    assert run.stdout.startswith(PROMPT + text)
    bad = subprocess.run([*CLI, "generate", PROMPT, "--model", model, "--min-new-tokens", "50", "-n", "5",
                          "--dsn", main_dsn], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "min_new_tokens must be from 0 to max_new_tokens (5)" in bad.stderr


def test_a_repetition_control_ends_the_demo_models_loop(main_dsn):
    """The demo model's greedy output loops; no_repeat_ngram_size = 3 (the README's example) ends it,
    and its tokens are NumPy's."""
    model = ensure_model(main_dsn, demo_model_dir(), "trained_sql", "sql")
    cfg, params = ref.load(demo_model_dir())
    prompt = "The Python interpreter"
    tokens = encode(prompt)
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        plain = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 24)", (prompt,)).fetchone()[0]
        fixed = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 24, no_repeat_ngram_size => 3)",
                             (prompt,)).fetchone()[0]

    def trigrams(seq):
        return [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]

    assert len(set(trigrams(tokens + plain))) < len(trigrams(tokens + plain))       # the loop
    assert len(set(trigrams(tokens + fixed))) == len(trigrams(tokens + fixed))      # gone
    assert fixed == ref.greedy_processed(tokens, 24, cfg, params, no_repeat_ngram_size=3)


def logprob_tolerance(dsn, model) -> float:
    """sql kernel: float64 throughout; vector kernel: pgvector's float32 products (~1e-6 on logits)."""
    from conftest import kernel_of

    return 1e-9 if kernel_of(dsn, model) == "sql" else 1e-4


@pytest.mark.parametrize("options", [dict(), dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
                                     dict(temperature=0.8, top_k=40, top_p=0.9, seed=0.25),
                                     dict(temperature=1.2, min_p=0.3, seed=-0.5)], ids=["greedy", "processed", "top", "min_p"])
def test_logprobs_are_those_of_the_distribution_each_token_was_drawn_from(tiny, tiny_ckpt, options):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    tol = logprob_tolerance(dsn, model)
    names = "".join(f", {k} => %s" for k in options)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT token, logprob, top_tokens, top_logprobs FROM {model}.generate(%s, 6{names}, logprobs => 4) "
                            "ORDER BY step", (PROMPT, *options.values())).fetchall()
        plain = conn.execute(f"SELECT array_agg(token ORDER BY step) FROM {model}.generate(%s, 6{names})",
                             (PROMPT, *options.values())).fetchone()[0]
    assert [r[0] for r in rows] == plain                          # asking for logprobs changes no token
    history = encode(PROMPT)
    processors = {k: v for k, v in options.items() if k in ("repetition_penalty", "no_repeat_ngram_size")}
    for i, (token, logprob, top_tokens, top_logprobs) in enumerate(rows):
        logits = ref.process_logits(ref.forward(history, cfg, params)[-1], history, i, **processors)
        t = options.get("temperature", 0)
        dist = ref.sampling_distribution(logits, t or 1.0, *(None, None, None) if not t else
                                         (options.get("top_k"), options.get("top_p"), options.get("min_p")))
        want = dict(dist)
        assert logprob == pytest.approx(np.log(want[token]), abs=tol)
        assert len(top_tokens) == len(top_logprobs) == 4
        for (wt, wp), gt, gp in zip(dist[:4], top_tokens, top_logprobs):
            assert gp == pytest.approx(np.log(wp), abs=tol) and (gt == wt or abs(np.log(want.get(gt, 0) or 1e-300) - np.log(wp)) <= tol)
        if not t:
            assert token == top_tokens[0]                         # greedy takes the likeliest
        history = history + [token]


def test_logprobs_through_python_and_the_cli(main_dsn, tiny_ckpt):
    model = ensure_model(main_dsn, tiny_ckpt, "tiny_processors", "sql")
    with gpt2sql.Client(main_dsn) as client:
        steps = client.model(model).steps(PROMPT, max_new_tokens=3, logprobs=2)
        assert all(s.logprob is not None and len(s.top) == 2 and s.top[0][0] == s.token for s in steps)
        assert client.model(model).steps(PROMPT, max_new_tokens=2)[0].logprob is None
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="logprobs must be from 0"):
            client.model(model).steps(PROMPT, logprobs=101)
    run = subprocess.run([*CLI, "generate", PROMPT, "--model", model, "-n", "3", "--logprobs", "2", "--dsn", main_dsn],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1].split()[:4] == ["step", "token", "piece", "logprob"] and len(lines) == 5
    for s, line in zip(steps, lines[2:]):
        assert line.split()[1] == str(s.token) and f"{s.logprob:.4f}" in line


def test_samples_draw_each_from_its_own_seeded_stream(tiny, tiny_ckpt):
    """num_return_sequences samples: sample s takes, at step i, the first token whose cumulative
    probability exceeds the md5-based draw (seed, s, i), in the reference; the first sample is the
    single run's, and a prompt's samples do not depend on the other prompts of the batch."""
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    seed, opts = 0.3, dict(temperature=1.5, top_k=50)
    want = [ref.sample_seeded(encode(PROMPT), 5, cfg, params, seed, s, **opts) for s in (1, 2, 3)]
    assert len({tuple(w) for w in want}) == 3
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = (f"SELECT sample, array_agg(token ORDER BY step) FROM {model}.generate(%s, 5, %s, %s, seed => %s, "
             f"num_return_sequences => %s) GROUP BY sample ORDER BY sample")
        got = [r[1] for r in conn.execute(q, (PROMPT, opts["temperature"], opts["top_k"], seed, 3)).fetchall()]
        single = [r[1] for r in conn.execute(q, (PROMPT, opts["temperature"], opts["top_k"], seed, 1)).fetchall()]
        batch = conn.execute(f"""SELECT prompt_index, sample, array_agg(token ORDER BY step)
                                   FROM {model}.generate_batch(%s, 5, %s, %s, seed => %s, num_return_sequences => 2)
                                  GROUP BY 1, 2 ORDER BY 1, 2""",
                             (["Other words first", PROMPT], opts["temperature"], opts["top_k"], seed)).fetchall()
    assert got == want
    assert single == want[:1]
    assert [r[2] for r in batch if r[0] == 2] == want[:2]


@pytest.mark.parametrize("args, message", [
    ("temperature => 1, num_return_sequences => 0", "num_return_sequences must be >= 1, got 0"),
    ("num_return_sequences => 2", r"num_return_sequences > 1 needs sampling \(temperature > 0\)"),
    ("temperature => 1, num_return_sequences => 65", "1 prompts x 65 samples in one batch; the limit is 64"),
])
def test_bad_sample_counts_are_refused(tiny, args, message):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="gpt2sql: " + message):
            conn.execute(f"SELECT * FROM {model}.generate(%s, 3, {args})", (PROMPT,))


def test_samples_through_python_and_the_cli(main_dsn, tiny_ckpt):
    model = ensure_model(main_dsn, tiny_ckpt, "tiny_processors", "sql")
    cfg, params = ref.load(tiny_ckpt)
    want = [ref.sample_seeded(encode(PROMPT), 4, cfg, params, -0.5, s, 0.9) for s in (1, 2)]
    with gpt2sql.Client(main_dsn) as client:
        m = client.model(model)
        texts = [m.detokenize(w) for w in want]
        assert m.samples(PROMPT, 2, max_new_tokens=4, temperature=0.9, seed=-0.5) == texts
    run = subprocess.run([*CLI, "generate", PROMPT, "--model", model, "-n", "4", "--temperature", "0.9", "--seed",
                          "-0.5", "--num-return-sequences", "2", "--dsn", main_dsn], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line) for line in run.stdout.splitlines()] == [PROMPT + t for t in texts]
