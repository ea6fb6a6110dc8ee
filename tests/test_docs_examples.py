"""Every shell, SQL and Python example of the README and docs/ runs as written, in the order a reader
meets them, on a fresh database after the README's first command (gpt2sql demo). The Hugging Face
hub is a local stand-in serving small random checkpoints under GPT-2's names. A block that cannot
run here says why in NOT_RUN; a new block is run unless it is listed there, so none can drift."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from conftest import ROOT
from gpt2sql.loader.checkpoint import write_random_checkpoint
from hub_standin import Hub, repo_files

# in the order a reader follows them (README first); docs/walkthrough.md is made by running its queries
# (docs/make_walkthrough.py) and checked by tests/test_walkthrough.py
FILES = ["README.md", "docs/models.md", "docs/database.md", "docs/explorer.md", "docs/deployment.md"]
RUN = {"sh", "sql", "python"}
NOT_RUN = {   # (file, the block's first line) -> why it is not run here
    ("README.md", "# run: install, start an embedded PostgreSQL, load the small trained demo GPT-2, generate"):
        "the two commands: CI runs the test command (.ci/run) and this test starts with gpt2sql demo",
    ("docs/database.md", "import sqlalchemy as sa"): "run by tests/test_sqlalchemy.py against its own database URL",
    ("docs/deployment.md", "gpt2sql psql -c \"ALTER SYSTEM SET shared_buffers = '8GB'\""):
        "would change the shared test server's memory; tests/test_embedded_settings.py does the same on its own server",
    ("docs/deployment.md", "docker compose up -d"):
        "needs Docker and images from a registry; tests/test_compose.py checks docker-compose.yml",
    ("docs/deployment.md", "# on the standby's machine, as the PostgreSQL OS user (the primary needs no change beyond a"):
        "a template for the reader's own hosts; tests/test_replica.py runs real standbys",
}
# what a reader has before a file's Python fragments (they continue the README's Python example)
PYTHON_PREAMBLE = {"docs/database.md": 'import gpt2sql\nmodel = gpt2sql.Client().model("tiny")\n'}


def blocks() -> list[tuple[str, str, str]]:
    """(file, language, text) of every fenced block, in reading order."""
    found = []
    for name in FILES:
        text = (ROOT / name).read_text(encoding="utf-8")
        for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            found.append((name, lang, body))
    return found


def first_line(body: str) -> str:
    return body.strip().splitlines()[0].strip()


def commands(body: str) -> list[str]:
    """A shell block's commands: one per line, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in body.splitlines():
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            out.append(line)
    return out


@pytest.fixture(scope="module")
def reader(main_dsn, tmp_path_factory):
    """A reader's machine: a fresh database, the hub stand-in, a working folder, what the docs say
    a reader has made (a role to grant, a table of posts, a prompts file, a checkpoint folder)."""
    work = tmp_path_factory.mktemp("reader")
    name = "docs_examples"
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute("DROP ROLE IF EXISTS app_user")
        conn.execute("CREATE ROLE app_user LOGIN")
    dsn = make_conninfo(main_dsn, dbname=name)
    small = write_random_checkpoint(work / "hub" / "gpt2", "tiny", seed=21)
    hub = Hub({f"openai-community/{m}": repo_files(small) for m in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")})
    write_random_checkpoint(work / "my-gpt2-folder", "tiny", seed=22)
    (work / "prompts.txt").write_text("Hello, my name is\nThe database said\n", encoding="utf-8")
    env = dict(os.environ, DATABASE_URL=dsn, HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1", PGCONNECT_TIMEOUT="10")
    run = subprocess.run(["gpt2sql", "demo"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    yield work, dsn, env
    hub.close()
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute("DROP ROLE IF EXISTS app_user")


def run_shell(command: str, work: Path, env: dict) -> str:
    if "--serve" in command:            # a server: it must print its URL; Ctrl-C stops it
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0 and re.search(r"http://127\.0\.0\.1:\d+/\?token=", line), (command, line)
        return line
    run = subprocess.run(["bash", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "Traceback" not in run.stderr, (command, run.stdout[-2000:], run.stderr[-2000:])
    return run.stdout


def test_every_example_runs_as_written(reader):
    work, dsn, env = reader
    ran = []
    for name, lang, body in blocks():
        if lang not in RUN:
            continue
        if (name, first_line(body)) in NOT_RUN:
            continue
        if name == "docs/database.md" and "FROM posts" in body:       # the table the text before it describes
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS posts (id int PRIMARY KEY, body text)")
                conn.execute("INSERT INTO posts VALUES (1, 'The database said'), (2, 'Hello, my name is') "
                             "ON CONFLICT DO NOTHING")
        if lang == "sh":
            for command in commands(body):
                run_shell(command, work, env)
        elif lang == "sql":
            script = work / "example.sql"
            script.write_text(body, encoding="utf-8")
            run_shell(f"gpt2sql psql -- -X -q -v ON_ERROR_STOP=1 -f {script}", work, env)
        else:
            script = work / "example.py"
            script.write_text(PYTHON_PREAMBLE.get(name, "") + body, encoding="utf-8")
            run = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                                 timeout=600)
            assert run.returncode == 0, (name, body, run.stderr[-2000:])
        ran.append((name, lang))
    assert {n for n, _ in ran} >= {"README.md", "docs/models.md", "docs/database.md", "docs/explorer.md"}
    assert len(ran) >= 14
    # what they made is there
    with psycopg.connect(dsn, autocommit=True) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
        assert {"demo", "gpt2", "gpt2_medium", "tiny", "small", "mine_sql"} <= schemas and "mine" not in schemas
    for picture in ("head.png", "lens.png", "page.html", "what-if.html"):
        assert (work / picture).stat().st_size > 1000, picture


def test_the_not_run_list_names_real_blocks():
    """A block renamed or removed takes its NOT_RUN entry with it."""
    present = {(name, first_line(body)) for name, _, body in blocks()}
    assert set(NOT_RUN) <= present
