"""The loader: every tensor lands exactly, bad checkpoints are refused, and failures change nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from safetensors.numpy import load_file, save_file

from gpt2sql.loader.checkpoint import write_random_checkpoint
from gpt2sql.loader.load import LoadError, list_models, load_checkpoint, drop_model
from gpt2sql.loader.source import CheckpointError

from conftest import ensure_model


def schemas(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}


def stored_matrix(conn, model: str, name: str) -> np.ndarray:
    """A weight matrix read back from the matrices table, [row][input], whatever the kernel's layout."""
    kernel = conn.execute(f"SELECT kernel FROM {model}.config").fetchone()[0]
    weights = "w::real[]" if kernel == "vector" else "*"
    rows = conn.execute(f"SELECT row, chunk, {weights} FROM {model}.matrices WHERE name = %s ORDER BY row, chunk",
                        (name,)).fetchall()
    n_rows = rows[-1][0] + 1
    if kernel == "vector":
        return np.array([r[2] for r in rows], dtype=np.float64).reshape(n_rows, -1)
    return np.array([r[2 + 3:] for r in rows], dtype=np.float64).reshape(n_rows, -1)


def test_every_tensor_matches_the_file(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    tensors = load_file(str(tiny_ckpt / "model.safetensors"))
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        cataloged = {r[0] for r in conn.execute("SELECT name FROM tiny.tensors")}
        for name, arr in tensors.items():
            if re.fullmatch(r"h\.\d+\.attn\.bias", name):
                assert name not in cataloged  # the causal-mask buffers are not weights
                continue
            assert name in cataloged
            if arr.ndim == 1:
                got = conn.execute("SELECT value FROM tiny.vectors WHERE name = %s", (name,)).fetchone()[0]
                assert np.array_equal(np.array(got, dtype=np.float32), arr), name
            else:
                got = stored_matrix(conn, "tiny", name)
                want = arr if name in ("wte.weight", "wpe.weight") else arr.T  # Conv1D: [in, out] stored by out
                assert np.array_equal(got.astype(np.float32), want), name
        cfg = conn.execute("SELECT n_layer, n_head, n_embd, n_positions, vocab_size FROM tiny.config").fetchone()
        assert cfg == (2, 4, 64, 128, 50257)
        assert conn.execute("SELECT count(*) FROM tiny.vocab").fetchone()[0] == 50257
        assert conn.execute("SELECT count(*) FROM tiny.merges").fetchone()[0] == 50000


def test_a_load_interrupted_after_its_commit_leaves_a_working_model(main_dsn, tiny_ckpt):
    """The vacuum after the commit is interrupted (here as soon as the load says it committed): the
    model is listed and generates, and the caller was told it was loaded before the vacuum began."""
    from gpt2sql.loader.load import list_models, load_checkpoint

    told = []

    def committed(result):
        told.append(result.name)
        raise KeyboardInterrupt

    with psycopg.connect(main_dsn, autocommit=True) as conn:
        with pytest.raises(KeyboardInterrupt):
            load_checkpoint(conn, str(tiny_ckpt), "vacuum_cut", replace=True, progress=False, kernel="sql",
                            on_committed=committed)
        assert told == ["vacuum_cut"]
        assert "vacuum_cut" in [m["name"] for m in list_models(conn)]
        assert len(conn.execute("SELECT * FROM vacuum_cut.generate('Hello', 2)").fetchall()) == 2
        conn.execute("DROP SCHEMA vacuum_cut CASCADE")


def test_cli_random_checkpoint_load_models_drop(main_dsn, tmp_path):
    exe = [sys.executable, "-m", "gpt2sql.cli"]
    out = tmp_path / "ckpt"
    subprocess.run(exe + ["random-checkpoint", str(out), "--preset", "tiny", "--seed", "7"], check=True)
    res = subprocess.run(exe + ["load", str(out), "--model", "cli_tiny", "--dsn", main_dsn],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "loaded model cli_tiny: 3,324,736 parameters" in res.stdout
    assert "interrupting this is harmless: the model is committed" in res.stderr
    again = subprocess.run(exe + ["load", str(out), "--model", "cli_tiny", "--dsn", main_dsn],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "--replace" in again.stderr
    listing = subprocess.run(exe + ["models", "--dsn", main_dsn], capture_output=True, text=True, check=True).stdout
    assert "cli_tiny" in listing and "3,324,736" in listing
    subprocess.run(exe + ["drop", "cli_tiny", "--dsn", main_dsn], check=True, capture_output=True)
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        assert "cli_tiny" not in schemas(conn)


def _broken(tmp_path: Path, src: Path, how: str) -> Path:
    dst = tmp_path / how
    shutil.copytree(src, dst)
    st = dst / "model.safetensors"
    if how == "truncated":
        data = st.read_bytes()
        st.write_bytes(data[: len(data) - 1000])
    elif how == "missing_merges":
        (dst / "merges.txt").unlink()
    elif how == "missing_weights":
        st.unlink()
    elif how == "wrong_shape":
        cfg = json.loads((dst / "config.json").read_text())
        cfg["n_embd"] = 128
        (dst / "config.json").write_text(json.dumps(cfg))
    elif how == "not_gpt2":
        cfg = json.loads((dst / "config.json").read_text())
        cfg["model_type"] = "llama"
        (dst / "config.json").write_text(json.dumps(cfg))
    elif how in ("nan", "inf", "int_tensor", "missing_tensor"):
        t = load_file(str(st))
        if how == "nan":
            t["h.1.mlp.c_proj.weight"][3, 5] = np.nan
        elif how == "inf":
            t["wpe.weight"][0, 0] = np.inf
        elif how == "int_tensor":
            t["h.0.ln_1.bias"] = t["h.0.ln_1.bias"].astype(np.int32)
        else:
            del t["h.1.attn.c_proj.bias"]
        save_file(t, str(st))
    return dst


@pytest.mark.parametrize("how, message", [
    ("truncated", "truncated"),
    ("missing_merges", "missing merges.txt"),
    ("missing_weights", "missing model.safetensors"),
    ("wrong_shape", "config.json implies"),
    ("not_gpt2", "GPT-2 checkpoints only"),
    ("nan", "NaN/Inf"),
    ("inf", "NaN/Inf"),
    ("int_tensor", "expected a float tensor"),
    ("missing_tensor", "lacks tensor"),
])
def test_bad_checkpoint_is_refused_and_nothing_changes(main_dsn, tiny_ckpt, tmp_path, how, message):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    bad = _broken(tmp_path, tiny_ckpt, how)
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        before = schemas(conn)
        tiny_before = conn.execute("SELECT loaded_at FROM tiny.config").fetchone()
        for name, replace in (("broken", False), ("tiny", True)):  # a new model, and replacing one
            with pytest.raises((CheckpointError, LoadError), match=message):
                load_checkpoint(conn, str(bad), name, replace=replace, progress=False)
        assert schemas(conn) == before
        assert conn.execute("SELECT loaded_at FROM tiny.config").fetchone() == tiny_before
        assert conn.execute("SELECT count(*) FROM tiny.vocab").fetchone()[0] == 50257


def test_prefixed_names_and_tied_lm_head_load_the_same_model(main_dsn, tiny_ckpt, tmp_path):
    alt = write_random_checkpoint(tmp_path / "prefixed", "tiny", seed=1234, prefix="transformer.")
    t = load_file(str(alt / "model.safetensors"))
    t["lm_head.weight"] = t["transformer.wte.weight"].copy()
    save_file(t, str(alt / "model.safetensors"))
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        load_checkpoint(conn, str(alt), "tiny_prefixed", replace=True, progress=False)
        a = conn.execute("SELECT array_agg(logit ORDER BY token) FROM tiny.next_token_logits(ARRAY[1,2,3])").fetchone()
        b = conn.execute("SELECT array_agg(logit ORDER BY token) FROM tiny_prefixed.next_token_logits(ARRAY[1,2,3])").fetchone()
        assert a == b
        drop_model(conn, "tiny_prefixed")


def test_untied_lm_head_is_refused(main_dsn, tiny_ckpt, tmp_path):
    alt = tmp_path / "untied"
    shutil.copytree(tiny_ckpt, alt)
    t = load_file(str(alt / "model.safetensors"))
    t["lm_head.weight"] = t["wte.weight"] * 2
    save_file(t, str(alt / "model.safetensors"))
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        with pytest.raises(CheckpointError, match="differs from wte"):
            load_checkpoint(conn, str(alt), "untied", progress=False)


def test_replace_swaps_only_when_complete(main_dsn, tiny_ckpt, tmp_path):
    other = write_random_checkpoint(tmp_path / "other", "tiny", seed=99)
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        load_checkpoint(conn, str(tiny_ckpt), "swap", replace=True, progress=False)
        with pytest.raises(LoadError, match="already loaded"):
            load_checkpoint(conn, str(other), "swap", progress=False)
        res = load_checkpoint(conn, str(other), "swap", replace=True, progress=False)
        assert res.replaced
        got = stored_matrix(conn, "swap", "wpe.weight")
        assert np.array_equal(got.astype(np.float32), load_file(str(other / "model.safetensors"))["wpe.weight"])
        assert not any(s.startswith("swap__") for s in schemas(conn))
        assert "swap" in [m["name"] for m in list_models(conn)]
        drop_model(conn, "swap")
        with pytest.raises(LoadError, match="no model named"):
            drop_model(conn, "swap")
        with pytest.raises(LoadError, match="not a gpt2sql model"):
            drop_model(conn, "public")


def test_offline_hub_id_gives_clear_error(main_dsn):
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        with pytest.raises(CheckpointError, match="pass a folder|local folder"):
            load_checkpoint(conn, "gpt2-nonexistent-model-xyz/none", "hub", progress=False)


@pytest.mark.parametrize("name", ["Upper", "1abc", "a-b", "x" * 54, "pg_models", "public"])
def test_bad_model_names_are_refused(main_dsn, tiny_ckpt, name):
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        before = schemas(conn)
        with pytest.raises(LoadError, match="model name"):
            load_checkpoint(conn, str(tiny_ckpt), name, progress=False)
        assert schemas(conn) == before
