"""Traces and lenses: every stored intermediate, view and lens equals the NumPy reference's own
intermediates (tests/reference_gpt2.py), on every server."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import psycopg
import pytest

import gpt2sql
import reference_gpt2 as ref
from conftest import ensure_model
from gpt2sql.loader.load import grant_reader

PROMPT = "Hello, my name is John. I like SQL"
TOL = 1e-4
CLI = [sys.executable, "-m", "gpt2sql.cli"]


@pytest.fixture(scope="module")
def traced(tiny, tiny_ckpt):
    """(conn, trace id, tokens, reference intermediates, cfg, params) for PROMPT on each server."""
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {model}")
        trace_id = conn.execute("SELECT trace(%s)", (PROMPT,)).fetchone()[0]
        tokens = conn.execute("SELECT tokens FROM traces WHERE trace_id = %s", (trace_id,)).fetchone()[0]
        yield conn, trace_id, tokens, ref.trace(tokens, cfg, params), cfg, params


def rows(conn, query, *params):
    return conn.execute(query, params).fetchall()


def grid(conn, query, shape, *params) -> np.ndarray:
    """Rows (i, j, ..., value) into an array of the given shape; every cell must be filled once."""
    out = np.full(shape, np.nan)
    got = rows(conn, query, *params)
    assert len(got) == np.prod(shape)
    for *index, value in got:
        out[tuple(index)] = value
    return out


def close(got, want):
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOL


def test_trace_tokens_are_the_prompts(traced, tiny):
    conn, tid, tokens, *_ = traced
    assert tokens == rows(conn, "SELECT tokenize(%s)", PROMPT)[0][0]
    pieces = rows(conn, "SELECT position, token, piece FROM trace_tokens WHERE trace_id = %s ORDER BY position", tid)
    assert [(p, t) for p, t, _ in pieces] == list(enumerate(tokens))
    assert "".join(p for *_, p in pieces) == PROMPT


def test_every_stored_stage_matches_numpy(traced):
    conn, tid, tokens, want, cfg, _ = traced
    stages = rows(conn, "SELECT stage, per FROM trace_stages ORDER BY ord")
    assert {s for s, _ in stages} == {k for k, _ in want} - {"scores", "weights"}
    for stage, per in stages:
        for layer in (range(cfg["n_layer"]) if per == "layer" else [None]):
            vectors = rows(conn, "SELECT position, value FROM trace_vectors WHERE trace_id = %s AND stage = %s "
                                 "AND layer IS NOT DISTINCT FROM %s ORDER BY position", tid, stage, layer)
            assert [p for p, _ in vectors] == list(range(len(tokens))), (stage, layer)
            close(np.array([v for _, v in vectors]), want[stage, layer])


def test_embedding_view(traced):
    conn, tid, tokens, want, cfg, _ = traced
    q = "SELECT position, dimension, {} FROM trace_embeddings WHERE trace_id = %s"
    shape = (len(tokens), cfg["n_embd"])
    close(grid(conn, q.format("token_value"), shape, tid), want["token_embedding", None])
    close(grid(conn, q.format("position_value"), shape, tid), want["position_embedding", None])
    close(grid(conn, q.format("value"), shape, tid), want["embedding", None])


def test_layer_norm_view(traced):
    conn, tid, tokens, want, cfg, _ = traced
    shape = (len(tokens), cfg["n_embd"])
    q = "SELECT position, dimension, value FROM trace_layer_norm WHERE trace_id = %s AND norm = %s AND layer IS NOT DISTINCT FROM %s"
    for layer in range(cfg["n_layer"]):
        for norm in ("ln_1", "ln_2"):
            close(grid(conn, q, shape, tid, norm, layer), want[norm, layer])
    close(grid(conn, q, shape, tid, "ln_f", None), want["ln_f", None])


def heads(a, n_head):  # [T, C] -> [H, T, D]
    return np.stack(np.split(a, n_head, axis=-1))


def test_qkv_and_attention_output_views_per_head(traced):
    conn, tid, tokens, want, cfg, _ = traced
    h, d = cfg["n_head"], cfg["n_embd"] // cfg["n_head"]
    shape = (h, len(tokens), d)
    for layer in range(cfg["n_layer"]):
        for col in "qkv":
            close(grid(conn, f"SELECT head, position, dimension, {col} FROM trace_qkv WHERE trace_id = %s AND layer = %s",
                       shape, tid, layer), heads(want[col, layer], h))
        close(grid(conn, "SELECT head, position, dimension, value FROM trace_attention_output "
                         "WHERE trace_id = %s AND layer = %s", shape, tid, layer), heads(want["attn_heads", layer], h))


def test_attention_scores_and_weights_are_the_causal_matrices(traced):
    conn, tid, tokens, want, cfg, _ = traced
    t, h = len(tokens), cfg["n_head"]
    for layer in range(cfg["n_layer"]):
        got = rows(conn, "SELECT head, position, key_position, score, weight FROM trace_attention "
                         "WHERE trace_id = %s AND layer = %s", tid, layer)
        assert len(got) == h * t * (t + 1) // 2                      # the causal triangle, nothing above it
        assert all(k <= p for _, p, k, _, _ in got)
        for head, p, k, score, weight in got:
            assert abs(score - want["scores", layer][head, p, k]) <= TOL
            assert abs(weight - want["weights", layer][head, p, k]) <= TOL


def test_attention_lens(traced):
    conn, tid, tokens, want, cfg, _ = traced
    pieces = [r[0] for r in rows(conn, "SELECT piece FROM trace_tokens WHERE trace_id = %s ORDER BY position", tid)]
    layer, head = cfg["n_layer"] - 1, cfg["n_head"] - 1
    got = rows(conn, "SELECT * FROM attention_pattern(%s::bigint, %s, %s)", tid, layer, head)
    assert [(p, k) for p, k, *_ in got] == [(p, k) for p in range(len(tokens)) for k in range(p + 1)]
    for p, k, query_piece, key_piece, score, weight in got:
        assert (query_piece, key_piece) == (pieces[p], pieces[k])
        assert abs(score - want["scores", layer][head, p, k]) <= TOL
        assert abs(weight - want["weights", layer][head, p, k]) <= TOL


def test_mlp_and_residual_views(traced):
    conn, tid, tokens, want, cfg, _ = traced
    t, c = len(tokens), cfg["n_embd"]
    for layer in range(cfg["n_layer"]):
        q = "SELECT position, unit, {} FROM trace_mlp WHERE trace_id = %s AND layer = %s"
        close(grid(conn, q.format("pre_activation"), (t, 4 * c), tid, layer), want["mlp_fc", layer])
        close(grid(conn, q.format("activation"), (t, 4 * c), tid, layer), want["mlp_gelu", layer])
        for sublayer, added, stage in (("attn", "attn_out", "residual_attn"), ("mlp", "mlp_out", "residual_mlp")):
            q = "SELECT position, dimension, {} FROM trace_residual WHERE trace_id = %s AND layer = %s AND sublayer = %s"
            close(grid(conn, q.format("added"), (t, c), tid, layer, sublayer), want[added, layer])
            close(grid(conn, q.format("value"), (t, c), tid, layer, sublayer), want[stage, layer])


def test_logits_view_and_final_position_equal_forward(traced, tiny):
    conn, tid, tokens, want, *_ = traced
    logits = want["logits", None]
    q = "SELECT position, token, {} FROM trace_logits WHERE trace_id = %s"
    close(grid(conn, q.format("logit"), logits.shape, tid), logits)
    close(grid(conn, q.format("probability"), logits.shape, tid), ref.softmax(logits))
    forward = rows(conn, "SELECT logit FROM next_token_logits(%s) ORDER BY token", tokens)
    close(np.array([r[0] for r in forward]), logits[-1])


def test_top_predictions(traced):
    conn, tid, tokens, want, *_ = traced
    for pos in (0, len(tokens) - 1):
        logits = want["logits", None][pos]
        probs = ref.softmax(logits)
        order = np.argsort(-logits, kind="stable")[:7]
        got = rows(conn, "SELECT rank, token, piece, logit, probability FROM top_predictions(%s, %s, 7)", tid, pos)
        assert [r[0] for r in got] == list(range(1, 8))
        assert [r[1] for r in got] == [int(i) for i in order]
        pieces = rows(conn, "SELECT detokenize(ARRAY[t]) FROM unnest(%s::int[]) AS t", [r[1] for r in got])
        assert [r[2] for r in got] == [p[0] for p in pieces]
        close(np.array([r[3] for r in got]), logits[order])
        close(np.array([r[4] for r in got]), probs[order])


def test_token_probability_by_id_and_text(traced):
    conn, tid, tokens, want, *_ = traced
    token = rows(conn, "SELECT tokenize(' the')")[0][0][0]
    logits = want["logits", None]
    probs = ref.softmax(logits)[:, token]
    ranks = 1 + (logits > logits[:, [token]]).sum(axis=1)
    by_id = rows(conn, "SELECT * FROM token_probability(%s, %s::int)", tid, token)
    by_text = rows(conn, "SELECT * FROM token_probability(%s, %s::text)", tid, " the")
    assert by_id == by_text
    assert [r[0] for r in by_id] == list(range(len(tokens)))
    assert {r[2] for r in by_id} == {" the"}
    close(np.array([r[3] for r in by_id]), probs)
    assert [r[4] for r in by_id] == [int(r) for r in ranks]


def test_logit_lens(traced):
    conn, tid, tokens, want, cfg, params = traced
    lens = ref.logit_lens(tokens, cfg, params)                          # [n_layer + 1, T, V]
    probs = ref.softmax(lens)
    got = rows(conn, "SELECT layer, position, rank, token, probability FROM logit_lens(%s, 3)", tid)
    assert len(got) == (cfg["n_layer"] + 1) * len(tokens) * 3
    for layer, pos, rank, token, probability in got:
        assert token == int(np.argsort(-lens[layer, pos], kind="stable")[rank - 1])
        assert abs(probability - probs[layer, pos, token]) <= TOL
    one = rows(conn, "SELECT layer, position, rank, token, probability FROM logit_lens(%s, 3, %s)", tid, 4)
    assert one == [r for r in got if r[1] == 4]
    # the top layer is the model's own prediction
    top = rows(conn, "SELECT token, probability FROM top_predictions(%s, %s, 3)", tid, len(tokens) - 1)
    assert [(t, p) for layer, pos, _, t, p in got if layer == cfg["n_layer"] and pos == len(tokens) - 1] == top


@pytest.mark.parametrize("query, message", [
    ("SELECT * FROM attention_pattern(999999::bigint, 0, 0)", "no trace 999999"),
    ("SELECT * FROM attention_pattern({t}::bigint, 2, 0)", r"layer 2 is outside the model \(0..1\)"),
    ("SELECT * FROM attention_pattern({t}::bigint, 0, -1)", r"head -1 is outside the model \(0..3\)"),
    ("SELECT * FROM top_predictions({t}, 99, 3)", "position 99 is outside trace"),
    ("SELECT * FROM top_predictions({t}, 0, 0)", "k must be >= 1"),
    ("SELECT * FROM logit_lens({t}, 0)", "k must be between 1 and 100, got 0"),
    ("SELECT * FROM logit_lens({t}, 50257)", "k must be between 1 and 100, got 50257"),
    ("SELECT * FROM compare_traces({t}, {t}, 5000)", "k must be between 1 and 100, got 5000"),
    ("SELECT * FROM logit_lens({t}, 1, 12)", "position 12 is outside trace"),
    ("SELECT * FROM token_probability({t}, 'hello world'::text)", "is 2 tokens, not one"),
    ("SELECT * FROM token_probability({t}, 50257)", "outside the vocabulary"),
    ("SELECT trace('x', '-1 hour')", "keep must be a positive interval"),
    ("SELECT trace(ARRAY[]::int[])", "prompt is empty"),
    ("SELECT trace(ARRAY[1, 50300])", "outside the vocabulary"),
])
def test_bad_questions_are_clear_errors(traced, query, message):
    conn, tid, *_ = traced
    before = rows(conn, "SELECT count(*) FROM traces")[0][0]
    with pytest.raises(psycopg.Error, match=message):
        conn.execute(query.format(t=tid))
    assert rows(conn, "SELECT count(*) FROM traces")[0][0] == before     # a refused trace leaves nothing


def test_traces_are_dropped_on_request_and_when_expired(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {model}")
        a, b, c = (rows(conn, "SELECT trace('Hi there')")[0][0] for _ in range(3))
        stored = lambda t: rows(conn, "SELECT (SELECT count(*) FROM trace_vectors WHERE trace_id = %s)"
                                      " + (SELECT count(*) FROM trace_attention WHERE trace_id = %s)", t, t)[0][0]
        assert stored(a) > 0
        assert rows(conn, "SELECT drop_trace(%s)", a)[0][0] is True
        assert rows(conn, "SELECT drop_trace(%s)", a)[0][0] is False
        assert stored(a) == 0
        conn.execute("UPDATE traces SET expires_at = now() - interval '1 minute' WHERE trace_id = %s", (b,))
        assert rows(conn, "SELECT drop_traces(expired_only => true)")[0][0] == 1
        assert stored(b) == 0 and stored(c) > 0
        conn.execute("UPDATE traces SET expires_at = now() - interval '1 minute' WHERE trace_id = %s", (c,))
        d = rows(conn, "SELECT trace('Hi', interval '5 minutes')")[0][0]      # a new trace clears expired ones
        assert stored(c) == 0
        left = rows(conn, "SELECT expires_at - created_at FROM traces WHERE trace_id = %s", d)[0][0]
        assert left.total_seconds() == 300


def test_read_only_sessions_and_reader_roles_cannot_trace_but_can_read(main_dsn, tiny_ckpt):
    model = ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        tid = admin.execute(f"SELECT {model}.trace('Hello world')").fetchone()[0]
        admin.execute("DROP ROLE IF EXISTS gpt2_trace_reader")
        admin.execute("CREATE ROLE gpt2_trace_reader LOGIN")
        admin.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="session is read-only"):
            admin.execute(f"SELECT {model}.trace('Hello')")
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        grant_reader(admin, "gpt2_trace_reader", [model])
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute("SET ROLE gpt2_trace_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not write traces"):
            conn.execute(f"SELECT {model}.trace('Hello')")
        assert len(conn.execute(f"SELECT * FROM {model}.attention_pattern(%s::bigint, 0, 0)", (tid,)).fetchall()) == 3
        assert len(conn.execute(f"SELECT * FROM {model}.top_predictions(%s, 1, 2)", (tid,)).fetchall()) == 2
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT {model}.drop_traces()")


def test_client_trace(tiny, tiny_ckpt):
    dsn, model = tiny
    cfg, params = ref.load(tiny_ckpt)
    with gpt2sql.Client(dsn) as client:
        trace = client.model(model).trace(PROMPT, keep="10 minutes")
        want = ref.trace(trace.tokens, cfg, params)
        assert "".join(trace.pieces) == PROMPT
        close(trace.stage("mlp_gelu", 1), want["mlp_gelu", 1])
        close(trace.attention_matrix(1, 2), np.tril(want["weights", 1][2]))
        assert trace.top_predictions(k=3) == trace.top_predictions(len(trace.tokens) - 1, 3)
        assert [p.token for p in trace.top_predictions(k=3)] == list(np.argsort(-want["logits", None][-1], kind="stable")[:3])
        assert len(trace.logit_lens(2)) == (cfg["n_layer"] + 1) * len(trace.tokens) * 2
        assert [c.rank for c in trace.token_probability(" the")] == [c.rank for c in trace.token_probability(262)]
        again = client.model(model).get_trace(trace.id)
        assert again.tokens == trace.tokens
        assert trace.drop() is True
        with pytest.raises(LookupError, match=f"no trace {trace.id}"):
            client.model(model).get_trace(trace.id)
        with pytest.raises(ValueError, match="has no stage 'nope'"):
            again.stage("nope")


def test_cli_trace_and_pictures(main_dsn, tiny_ckpt, tmp_path):
    import xml.etree.ElementTree as ET

    import matplotlib.image

    model = ensure_model(main_dsn, tiny_ckpt, "tiny")
    cli = lambda *a: subprocess.run(CLI + list(a) + ["--dsn", main_dsn], capture_output=True, text=True)
    res = cli("trace", "The database said", "--model", model)
    assert res.returncode == 0, res.stderr
    tid = int(res.stdout.split()[1])
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        want = rows(conn, f"SELECT position, key_position, weight FROM {model}.attention_pattern(%s::bigint, 1, 2)", tid)
        n_layer, n_head = rows(conn, f"SELECT n_layer, n_head FROM {model}.config")[0]

    res = cli("show", "attention", "--model", model, "--trace", str(tid), "--layer", "1", "--head", "2",
              "-o", str(tmp_path / "a.png"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(tmp_path / "a.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    res = cli("show", "attention", "--model", model, "--prompt", "Hello world", "-o", str(tmp_path / "a.svg"))
    assert res.returncode == 0, res.stderr
    assert ET.parse(tmp_path / "a.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"

    res = cli("show", "attention", "--model", model, "--trace", str(tid), "-o", str(tmp_path / "all.html"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "all.html").read_text()
    assert "<script" not in page and "http://" not in page.replace('http://www.w3.org', '')
    tips = [t for t in page.split("<title>")[2:]]                       # the first <title> is the page's
    assert len(tips) == n_layer * n_head * 6                             # 3 tokens: 3 * 4 / 2 cells per head
    for p, k, w in want:
        assert f"layer 1 head 2\nquery {p} " in page and f"weight {w:.6f}" in page

    res = cli("show", "logit-lens", "--model", model, "--trace", str(tid), "-o", str(tmp_path / "lens.svg"))
    assert res.returncode == 0, res.stderr
    assert ET.parse(tmp_path / "lens.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"

    for args, message in [(("--trace", "999999"), "no trace 999999"),
                          (("--trace", str(tid), "--head", "7"), r"no layer 0, head 7: its layers are 0..1, its heads 0..3"),
                          (("--trace", str(tid), "-o", str(tmp_path / "a.jpg")), "must end in .png, .svg")]:
        res = cli("show", "attention", "--model", model, *args)
        assert res.returncode == 1 and re.search(message, res.stderr), res.stderr
    assert not (tmp_path / "a.jpg").exists()
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        count = lambda: rows(conn, f"SELECT count(*) FROM {model}.traces")[0][0]
        before = count()
        res = cli("show", "logit-lens", "--model", model, "--prompt", "Hello", "-o", str(tmp_path / "lens.html"))
        assert res.returncode == 1 and "must end in .png, .svg" in res.stderr, res.stderr
        assert count() == before                                        # refused before tracing anything

    # without matplotlib: PNG/SVG is a clear error naming the fix, HTML still works
    no_mpl = ("import sys; sys.modules['matplotlib'] = None; from gpt2sql.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    for out, code, message in [("x.png", 1, r"need matplotlib, gpt2sql's \[show\] extra: in the checkout, "
                                            r"python3 -m pip install -e '\.\[show\]'"),
                               ("x.html", 0, "wrote")]:
        res = subprocess.run([sys.executable, "-c", no_mpl, "show", "attention", "--model", model, "--trace",
                              str(tid), "-o", str(tmp_path / out), "--dsn", main_dsn], capture_output=True, text=True)
        assert res.returncode == code and re.search(message, res.stderr + res.stdout), res.stderr


def test_psql_passes_options_through(main_dsn):
    res = subprocess.run(CLI + ["psql", "--dsn", main_dsn, "-X", "-A", "-t", "-c", "SELECT 6 * 7"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "42"
    res = subprocess.run(CLI + ["psql", "--dsn", main_dsn, "--", "-X", "-A", "-t", "-c", "SELECT 6 * 8"],
                         capture_output=True, text=True)                    # everything after -- is psql's
    assert res.returncode == 0 and res.stdout.strip() == "48", res.stderr
