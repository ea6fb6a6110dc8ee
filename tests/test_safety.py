"""Robustness: read-only roles, killed loads, cancelled and timed-out generations, concurrency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

import gpt2sql
import gpt2sql.loader.load
from conftest import ensure_model

CLI = [sys.executable, "-m", "gpt2sql.cli"]


def relations(conn) -> int:
    return conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]


def test_reader_role_generates_but_cannot_write(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS gpt2_reader")
        admin.execute("CREATE ROLE gpt2_reader LOGIN")
    res = subprocess.run(CLI + ["grant-reader", "gpt2_reader", "--model", "tiny", "--dsn", main_dsn],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute("SET ROLE gpt2_reader")
        assert conn.execute("SELECT tiny.tokenize('Hello world')").fetchone()[0] == [15496, 995]
        assert len(conn.execute("SELECT * FROM tiny.generate('Hello', 2)").fetchall()) == 2
        assert len(conn.execute("SELECT * FROM tiny.next_token_probs('Hello', 3)").fetchall()) == 3
        for stmt in ("UPDATE tiny.vectors SET value = value",
                     "DELETE FROM tiny.matrices WHERE row = 0",
                     "INSERT INTO tiny.vocab VALUES (99999, 'x', 'x')",
                     "DROP TABLE tiny.merges",
                     "DROP SCHEMA tiny CASCADE",
                     "CREATE TABLE tiny.evil (x int)",
                     "CREATE OR REPLACE FUNCTION tiny.tokenize(input text) RETURNS int[] LANGUAGE sql RETURN '{}'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    bad = subprocess.run(CLI + ["grant-reader", "no_such_role", "--dsn", main_dsn], capture_output=True, text=True)
    assert bad.returncode == 1 and "no role named 'no_such_role'" in bad.stderr


def test_grant_reader_by_a_role_that_does_not_own_the_model_fails_and_says_so(main_dsn, tiny_ckpt):
    """PostgreSQL only warns when a GRANT grants nothing; grant-reader checks what it granted."""
    from psycopg.conninfo import make_conninfo

    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        for role in ("gpt2_not_owner", "gpt2_second_reader"):
            if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                admin.execute(f"DROP OWNED BY {role}")         # its grants, from an earlier run
                admin.execute(f"DROP ROLE {role}")
            admin.execute(f"CREATE ROLE {role} LOGIN")
    assert subprocess.run(CLI + ["grant-reader", "gpt2_not_owner", "--model", "tiny", "--dsn", main_dsn],
                          capture_output=True, text=True).returncode == 0
    res = subprocess.run(CLI + ["grant-reader", "gpt2_second_reader", "--model", "tiny",
                                "--dsn", make_conninfo(main_dsn, user="gpt2_not_owner")],
                         capture_output=True, text=True)
    assert res.returncode == 1, res.stdout
    assert "could not grant 'gpt2_second_reader' read access to model 'tiny'" in res.stderr
    assert "does not own the model" in res.stderr and "may now read" not in res.stdout
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        assert not admin.execute("SELECT has_schema_privilege('gpt2_second_reader', 'tiny', 'USAGE')").fetchone()[0]


def test_functions_pin_their_search_path(main_dsn, tiny_ckpt):
    """A caller's search_path (e.g. a schema with a look-alike 'vocab' table first) changes nothing."""
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS decoy")
        conn.execute("CREATE TABLE IF NOT EXISTS decoy.vocab (token int, piece text, bytes bytea)")
        conn.execute("SET search_path = decoy, public")
        assert conn.execute("SELECT tiny.detokenize(ARRAY[15496, 995])").fetchone()[0] == "Hello world"
        # PL/pgSQL functions must pin search_path; SQL functions either pin it or have a standard-SQL
        # body (BEGIN ATOMIC / RETURN), which is bound to its objects when created; an aggregate
        # (the vector kernel's concat_vectors) has no body: its transition function is stored by OID
        missing = conn.execute("""
            SELECT p.proname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
             WHERE p.pronamespace = 'tiny'::regnamespace AND p.prokind <> 'a'
               AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%')
               AND NOT (l.lanname = 'sql' AND p.prosqlbody IS NOT NULL)""").fetchall()
        conn.execute("DROP SCHEMA decoy CASCADE")
    assert missing == []


def _wait_for_backends_gone(conn, application_name: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (application_name,)).fetchone()[0]:
            return
        time.sleep(0.2)
    raise AssertionError(f"backends of {application_name} still there after {timeout} s")


@pytest.mark.parametrize("kill_after", [0.5, 2.0, 5.0])
def test_sigkilled_load_leaves_previous_model_and_no_stray_objects(main_dsn, tiny_ckpt, ckpt_124m, kill_after):
    """A 124M load replacing a loaded model, killed with SIGKILL mid-way (the sql kernel's load, 10-30 s
    here; the vector kernel's takes ~5 s, too short to hit mid-way at 5 s)."""
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        load = gpt2sql.loader.load.load_checkpoint
        load(conn, str(tiny_ckpt), "victim", replace=True, progress=False)
        before_rel = relations(conn)
        before = conn.execute("SELECT loaded_at, n_params FROM victim.config").fetchone()
        env = dict(os.environ, PGAPPNAME="gpt2sql_killed_load")
        proc = subprocess.Popen(CLI + ["load", str(ckpt_124m), "--model", "victim", "--replace", "--quiet",
                                       "--kernel", "sql", "--dsn", main_dsn], env=env)
        time.sleep(kill_after)
        assert proc.poll() is None, "the load finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _wait_for_backends_gone(conn, "gpt2sql_killed_load")
        assert conn.execute("SELECT loaded_at, n_params FROM victim.config").fetchone() == before
        assert conn.execute("SELECT count(*) FROM victim.vocab").fetchone()[0] == 50257
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'victim%%'").fetchone()[0] == 1
        assert relations(conn) == before_rel
        assert len(conn.execute("SELECT * FROM victim.generate('Hi', 2)").fetchall()) == 2
        gpt2sql.loader.load.drop_model(conn, "victim")


def test_loading_while_another_model_generates(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    result: dict = {}

    def generate() -> None:
        with psycopg.connect(main_dsn, autocommit=True) as conn:
            result["rows"] = conn.execute("SELECT * FROM tiny.generate('Hello', 12)").fetchall()

    worker = threading.Thread(target=generate)
    worker.start()
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        gpt2sql.loader.load.load_checkpoint(conn, str(tiny_ckpt), "second", replace=True, progress=False)
        assert conn.execute("SELECT count(*) FROM second.vocab").fetchone()[0] == 50257
    worker.join()
    assert len(result["rows"]) == 12
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        gpt2sql.loader.load.drop_model(conn, "second")


def test_load_without_privileges_is_a_clear_error(main_dsn, tiny_ckpt):
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS gpt2_nocreate")
        admin.execute("CREATE ROLE gpt2_nocreate LOGIN")
        admin.execute("REVOKE CREATE ON DATABASE postgres FROM PUBLIC")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute("SET ROLE gpt2_nocreate")
        with pytest.raises(gpt2sql.loader.load.LoadError, match="nothing was changed: permission denied"):
            gpt2sql.loader.load.load_checkpoint(conn, str(tiny_ckpt), "noperm", progress=False)
    with psycopg.connect(main_dsn, autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'noperm'").fetchone()[0] == 0


def test_cancel_and_statement_timeout_stop_a_generation(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        before = relations(conn)
        timer = threading.Timer(1.0, conn.cancel_safe)
        timer.start()
        t0 = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT * FROM tiny.generate('Hello', 500)").fetchall()
        assert time.time() - t0 < 10
        conn.execute("SET statement_timeout = '800ms'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT * FROM tiny.generate('Hello', 500)").fetchall()
        conn.execute("RESET statement_timeout")
        assert len(conn.execute("SELECT * FROM tiny.generate('Hello', 2)").fetchall()) == 2  # still usable
        assert relations(conn) == before


def _kill_client_once_active(conn, dsn: str, code: str, application_name: str) -> None:
    """Run ``code`` (given the DSN as argv[1]) in a Python process, and SIGKILL it a second after its
    query is under way."""
    env = dict(os.environ, PGAPPNAME=application_name)
    proc = subprocess.Popen([sys.executable, "-c", code, dsn], env=env)
    deadline = time.time() + 20
    while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
                           (application_name,)).fetchone()[0]:
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_client_leaves_nothing(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    code = ("import psycopg, sys; c = psycopg.connect(sys.argv[1], autocommit=True); "
            "c.execute(\"SELECT * FROM tiny.generate('Hello', 500)\")")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        before = relations(conn)
        _kill_client_once_active(conn, main_dsn, code, "gpt2sql_killed_client")
        # the server notices the dead client when it next sends it a NOTICE (one per token)
        _wait_for_backends_gone(conn, "gpt2sql_killed_client")
        assert relations(conn) == before


def test_a_query_that_sends_nothing_stops_soon_after_its_client_is_killed(main_dsn, tiny_ckpt):
    """tokenize and score send nothing while they work; gpt2sql's connections check every 2 s
    (client_connection_check_interval) that their client is still there."""
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    code = ("import sys, gpt2sql.db; c = gpt2sql.db.connect(sys.argv[1]); "
            "c.execute(\"SELECT count(tiny.tokenize(md5(i::text) || repeat(' word', 2000))) "
            "FROM generate_series(1, 100000) AS i\")")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        _kill_client_once_active(conn, main_dsn, code, "gpt2sql_silent_client")
        killed = time.time()
        try:
            _wait_for_backends_gone(conn, "gpt2sql_silent_client", timeout=15)
        finally:  # a backend still working would slow every test after this one
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                         ("gpt2sql_silent_client",))
        assert time.time() - killed < 10


def test_ctrl_c_in_the_cli_stops_cleanly(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    env = dict(os.environ, PGAPPNAME="gpt2sql_cli_interrupt")
    proc = subprocess.Popen(CLI + ["generate", "Hello", "--model", "tiny", "-n", "500", "--dsn", main_dsn],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.read(5) == "Hello"      # printed once generation is under way
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        _wait_for_backends_gone(conn, "gpt2sql_cli_interrupt")


def test_eight_concurrent_sessions_equal_their_single_session_result(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    jobs = [("Hello", 0.0, None), ("The cat", 1.0, 0.1), ("SELECT 1", 0.9, -0.3), ("Hello", 1.2, 0.9),
            ("Once upon", 0.0, None), ("Once upon", 0.7, 0.5), ("日本語", 1.0, -1.0), ("x = 1", 0.5, 1.0)]
    q = "SELECT array_agg(token ORDER BY step) FROM tiny.generate(%s, 5, %s, NULL, NULL, %s)"
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        alone = [conn.execute(q, job).fetchone()[0] for job in jobs]
        before = relations(conn)
    results: list = [None] * len(jobs)
    errors: list = []

    def run(i: int) -> None:
        try:
            with psycopg.connect(main_dsn, autocommit=True) as c:
                results[i] = c.execute(q, jobs[i]).fetchone()[0]
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert results == alone
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        assert relations(conn) == before


@pytest.mark.parametrize("prompt", ["a\x00b", "bad \udcff surrogate"])
def test_client_refuses_text_postgres_cannot_hold(main_dsn, tiny_ckpt, prompt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with gpt2sql.Client(main_dsn) as client:
        model = client.model("tiny")
        for call in (model.generate, model.tokenize, lambda p: list(model.stream(p))):
            with pytest.raises(ValueError, match="NUL|not valid Unicode"):
                call(prompt)


def test_cli_reports_unknown_model_and_bad_options(main_dsn, tiny_ckpt):
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    for args, message in [(["--model", "nope"], "no model named 'nope'"),
                          (["--model", "tiny", "--temperature", "-1"], "temperature must be"),
                          (["--model", "tiny", "-n", "0"], "max_new_tokens must be"),
                          (["--model", "tiny", "--seed", "5"], "seed must be between -1 and 1")]:
        res = subprocess.run(CLI + ["generate", "Hi", *args, "--dsn", main_dsn], capture_output=True, text=True)
        assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr
        assert res.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the small file system for the disk-full test needs root")
def test_disk_full_load_is_a_clear_error_and_changes_nothing(main_dsn, tiny_ckpt, tmp_path):
    """The tiny model (~37 MB) into a tablespace on an 8 MB file system."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(mnt)], check=True)
    try:
        with psycopg.connect(main_dsn, autocommit=True) as conn:
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]
            owner = os.stat(data_dir)
            os.chown(mnt, owner.st_uid, owner.st_gid)
            os.chmod(tmp_path, 0o755)
            conn.execute(f"CREATE TABLESPACE small_disk LOCATION '{mnt}'")
            try:
                before = conn.execute("SELECT count(*) FROM pg_namespace").fetchone()[0]
                conn.execute("SET default_tablespace = small_disk")
                with pytest.raises(gpt2sql.loader.load.LoadError,
                                   match="nothing was changed: .*(No space left on device|could not extend)"):
                    gpt2sql.loader.load.load_checkpoint(conn, str(tiny_ckpt), "full_disk", progress=False)
                conn.execute("RESET default_tablespace")
                assert conn.execute("SELECT count(*) FROM pg_namespace").fetchone()[0] == before
            finally:
                conn.execute("DROP TABLESPACE small_disk")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _private_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:  # the server runs on this machine in the tests
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon"))


def test_memory_stays_bounded_through_a_long_generation(main_dsn, tiny_ckpt):
    """Generate up to the tiny model's full context (128); the backend's private memory stays small
    and does not grow with each token (the cache is replaced, not accumulated)."""
    ensure_model(main_dsn, tiny_ckpt, "tiny")
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.time(), _private_kb(pid)))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        rows = conn.execute("SELECT step, finish FROM tiny.generate(%s, 200)", (" x" * 20,)).fetchall()
        done.set()
        sampler.join()
    assert rows[-1][1] == "context_full" and len(rows) == 109  # 20 + 108 positions, then one more prediction
    peak = max(kb for _, kb in samples)
    half = len(samples) // 2
    first, second = max(kb for _, kb in samples[:half]), max(kb for _, kb in samples[half:])
    assert peak < 256 * 1024, f"peak private memory {peak / 1024:.0f} MB"
    assert second < first * 1.5 + 16 * 1024, f"memory grew from {first / 1024:.0f} to {second / 1024:.0f} MB"
