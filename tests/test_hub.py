"""`gpt2sql load gpt2` end to end, against a local stand-in for the Hugging Face hub (no network
here): the aliases resolve to OpenAI's repositories, only the files gpt2sql needs are downloaded
(with a progress bar), a second load uses the cache, the model loads and generates; an
unreachable hub is a clear error saying how to load a local folder instead."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

import reference_gpt2 as ref
from gpt2sql.loader.checkpoint import write_random_checkpoint
from hub_standin import NEEDED, Hub, repo_files
from reference_tokenizer import encode

CLI = [sys.executable, "-m", "gpt2sql.cli"]
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    small = write_random_checkpoint(root / "gpt2", "tiny", seed=11)     # weights include the attn.bias buffers
    medium = write_random_checkpoint(root / "gpt2-medium", "tiny", seed=12)
    h = Hub({"openai-community/gpt2": repo_files(small), "openai-community/gpt2-medium": repo_files(medium),
             "openai-community/gpt2-large": repo_files(small), "openai-community/gpt2-xl": repo_files(small)})
    yield h, {"gpt2": small, "gpt2-medium": medium}
    h.close()


def run(args, env):
    return subprocess.run(CLI + args, capture_output=True, text=True, env=env, timeout=300)


def test_load_gpt2_from_the_hub_downloads_only_what_it_needs_and_caches_it(hub, main_dsn, tmp_path):
    h, folders = hub
    env = dict(os.environ, HF_ENDPOINT=h.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    h.log.clear()
    out = run(["load", "gpt2", "--replace", "--dsn", main_dsn], env)
    assert out.returncode == 0, out.stderr
    assert "loaded model gpt2" in out.stdout or "replaced model gpt2" in out.stdout
    assert "Fetching 4 files" in out.stderr                                  # huggingface_hub's progress bar
    fetched = h.downloads()
    assert {p.split("/")[-1] for p in fetched} == NEEDED and len(fetched) == 4
    assert all(p.startswith("/openai-community/gpt2/resolve/") for p in fetched)

    h.log.clear()                                                           # a second load: from the cache
    assert run(["load", "gpt2", "--model", "gpt2_again", "--replace", "--dsn", main_dsn], env).returncode == 0
    assert h.downloads() == []

    h.log.clear()                                                           # another alias, another repository
    assert run(["load", "gpt2-medium", "--replace", "--dsn", main_dsn], env).returncode == 0
    assert {p.split("/")[2] for p in h.downloads()} == {"gpt2-medium"} and len(h.downloads()) == 4

    for model, folder in (("gpt2", folders["gpt2"]), ("gpt2_medium", folders["gpt2-medium"])):
        cfg, params = ref.load(folder)
        with psycopg.connect(main_dsn, autocommit=True) as conn:
            got = [r[0] for r in conn.execute(f"SELECT token FROM {model}.generate('Hello, my name is', 6)")]
            conn.execute(f"DROP SCHEMA IF EXISTS gpt2_again CASCADE")
        assert got == ref.greedy(encode("Hello, my name is"), 6, cfg, params), model


def test_an_unreachable_hub_is_a_clear_error(main_dsn, tmp_path):
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    out = run(["load", "gpt2", "--model", "nohub", "--dsn", main_dsn], env)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "could not download openai-community/gpt2 from the Hugging Face hub" in out.stderr
    assert "pass a local folder" in out.stderr
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'nohub'").fetchone()[0] == 0


@pytest.mark.parametrize("alias", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "openai-community/gpt2-large"])
def test_every_alias_fetches_its_own_repository(hub, alias, tmp_path, monkeypatch):
    from gpt2sql.loader.source import resolve_source

    h, _ = hub
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub.constants as c  # read once at import: point this process at the stand-in too
    monkeypatch.setattr(c, "ENDPOINT", h.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", h.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    h.log.clear()
    folder = resolve_source(alias)
    repo = alias if "/" in alias else f"openai-community/{alias}"
    assert {p.name for p in folder.iterdir()} == NEEDED
    assert sorted(p.split("/resolve/")[0] for p in h.downloads()) == [f"/{repo}"] * 4
