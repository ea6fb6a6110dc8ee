"""gpt2sql upgrade: a model loaded by gpt2sql 0.1 (whose SQL is frozen in
tests/fixtures/gpt2sql-0.1-sql.tar.gz: sql/ as it was before the kernel contract) is refused with the
command to run, upgraded in place keeping its weights and its readers, and then generates NumPy's
tokens; a failed upgrade changes nothing."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import gpt2sql
import reference_gpt2 as ref
from gpt2sql.loader.load import (LoadError, drop_model_sql, load_checkpoint, needs_upgrade, pgvector_schema,
                                 upgrade_model)
from reference_tokenizer import encode

CLI = [sys.executable, "-m", "gpt2sql.cli"]
FIXTURE = Path(__file__).parent / "fixtures" / "gpt2sql-0.1-sql.tar.gz"
PROMPT = "Hello, my name is"


def old_sql_files(kernel: str) -> list[str]:
    """The texts of gpt2sql 0.1's function files, in the order its loader ran them."""
    with tarfile.open(FIXTURE) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".sql")), key=lambda m: m.name)
        names = [m for m in members if not m.name.split("/")[-1].startswith(("00_", "01_"))
                 and ("_kernel_" not in m.name or m.name.endswith(f"_kernel_{kernel}.sql"))]
        return [tar.extractfile(m).read().decode() for m in names]


def load_as_0_1(dsn: str, ckpt: Path, name: str, kernel: str) -> None:
    """Model ``name`` as gpt2sql 0.1 left it: today's tables (unchanged since, but for config.sql_version)
    with 0.1's functions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_checkpoint(conn, str(ckpt), name, replace=True, progress=False, kernel=kernel)
        with conn.transaction():
            drop_model_sql(conn, name)
            conn.execute(sql.SQL("ALTER TABLE {}.config DROP COLUMN sql_version").format(sql.Identifier(name)))
            conn.execute(sql.SQL("UPDATE {}.config SET gpt2sql_version = '0.1.0'").format(sql.Identifier(name)))
            path = [sql.Identifier(name), sql.Identifier("pg_catalog")]
            if kernel == "vector":
                path.append(sql.Identifier(pgvector_schema(conn)))
            conn.execute(sql.SQL("SET LOCAL search_path = {}, pg_temp").format(sql.SQL(", ").join(path)))
            for text in old_sql_files(kernel):
                conn.execute(text)


@pytest.fixture()
def old_model(target, tiny_ckpt):
    dsn, kernel = target
    kernel = "sql" if kernel == "auto" else kernel
    name = f"old_{kernel}"
    load_as_0_1(dsn, tiny_ckpt, name, kernel)
    yield dsn, name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_a_model_of_gpt2sql_0_1_is_upgraded_in_place(old_model, tiny_ckpt):
    dsn, name = old_model
    cfg, params = ref.load(tiny_ckpt)
    want = ref.greedy(encode(PROMPT), 5, cfg, params)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert needs_upgrade(conn, name)
        old = [r[0] for r in conn.execute(f"SELECT token FROM {name}.generate(%s, 5) ORDER BY step", (PROMPT,))]
        assert old == want                                          # 0.1's SQL works as it did
        conn.execute(f"SELECT {name}.trace('Hi')")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'gpt2_upgrade_reader'").fetchone():
            conn.execute("DROP OWNED BY gpt2_upgrade_reader")        # its grants, from an earlier run
            conn.execute("DROP ROLE gpt2_upgrade_reader")
        conn.execute("CREATE ROLE gpt2_upgrade_reader LOGIN")
    assert subprocess.run(CLI + ["grant-reader", "gpt2_upgrade_reader", "--model", name, "--dsn", dsn],
                          capture_output=True, text=True).returncode == 0

    with gpt2sql.Client(dsn) as client:
        with pytest.raises(gpt2sql.ModelNeedsUpgrade, match=f"gpt2sql upgrade --model {name}"):
            client.model(name)
    res = subprocess.run(CLI + ["generate", PROMPT, "--model", name, "--dsn", dsn], capture_output=True, text=True)
    assert res.returncode == 1 and f"gpt2sql upgrade --model {name}" in res.stderr

    listing = subprocess.run(CLI + ["models", "--dsn", dsn], capture_output=True, text=True, check=True).stdout
    assert f"another gpt2sql's SQL: gpt2sql upgrade --model {name}" in listing
    res = subprocess.run(CLI + ["upgrade", "--model", name, "--dsn", dsn], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"upgraded model {name}: SQL of gpt2sql 0.1 -> " in res.stdout and "1 trace(s) dropped" in res.stdout

    with gpt2sql.Client(dsn) as client:
        model = client.model(name)                                  # accepted now
        assert [s.token for s in model.steps(PROMPT, max_new_tokens=5)] == want
        assert model.trace("Hi").tokens == encode("Hi")             # the trace tables are there again
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert not needs_upgrade(conn, name)
        conn.execute("SET ROLE gpt2_upgrade_reader")                # the reader's grants were renewed
        assert len(conn.execute(f"SELECT * FROM {name}.generate('Hi', 2)").fetchall()) == 2
        conn.execute("RESET ROLE")
        conn.execute("DROP OWNED BY gpt2_upgrade_reader")
        conn.execute("DROP ROLE gpt2_upgrade_reader")
    again = subprocess.run(CLI + ["upgrade", "--model", name, "--dsn", dsn], capture_output=True, text=True)
    assert again.returncode == 0 and f"model {name} is up to date" in again.stdout


def test_a_failed_upgrade_changes_nothing(old_model):
    """The upgrade waits for its lock on the model; here it gives up (lock_timeout) while another
    session holds one, and the model is left as 0.1 made it."""
    dsn, name = old_model
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as conn:
        holder.execute(f"LOCK TABLE {name}.config IN ACCESS SHARE MODE")      # a reader's transaction
        conn.execute("SET lock_timeout = '500ms'")
        with pytest.raises(LoadError, match=f"upgrading '{name}' failed, nothing was changed"):
            upgrade_model(conn, name)
        holder.rollback()
        assert needs_upgrade(conn, name)
        assert len(conn.execute(f"SELECT * FROM {name}.generate('Hi', 2)").fetchall()) == 2
        assert conn.execute(f"SELECT count(*) FROM {name}.traces").fetchone()[0] == 0
