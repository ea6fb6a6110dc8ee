"""Generation on a real hot standby: a streaming replica made with pg_basebackup -R of a primary,
for Debian's PostgreSQL 15 (sql kernel) and the embedded PostgreSQL 18 (vector kernel).

The standby answers generate, complete, tokenize and next_token_probs exactly as the primary does,
refuses trace() with its clear error, sees models loaded on the primary once it has replayed
them, and a model dropped on the primary under a standby session's generation cancels that
query the way PostgreSQL resolves recovery conflicts, and nothing else.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import SERVERS
from gpt2sql.loader.load import load_checkpoint
from servers import embedded_bindir, embedded_server, pg_bindir, start_standby, system_server

PROMPT = "Hello, my name is"
PRIMARY_SETTINGS = "-c max_locks_per_transaction=512"  # what the primaries run with (servers.py, db.py)


def caught_up(primary: str, standby: str, timeout: float = 60) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(primary, autocommit=True) as p, psycopg.connect(standby, autocommit=True) as s:
        lsn = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        deadline = time.time() + timeout
        while not s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            if time.time() > deadline:
                raise AssertionError(f"the standby did not replay up to {lsn} in {timeout} s")
            time.sleep(0.1)


@pytest.fixture(scope="module", params=[s for s in SERVERS if s in ("pg15", "pg18")])
def pair(request, tmp_path_factory, tiny_ckpt):
    """(primary dsn, standby dsn, server, kernel): a primary with the tiny model loaded (the kernel auto
    picks there), and its hot standby."""
    root = tmp_path_factory.mktemp(f"replica-{request.param}")
    if request.param == "pg15":
        primary, stop_primary = system_server(15, root)
        bindir = pg_bindir(15)
    else:
        primary, stop_primary = embedded_server(root)
        bindir = embedded_bindir()
    try:
        with psycopg.connect(primary, autocommit=True) as conn:
            kernel = load_checkpoint(conn, str(tiny_ckpt), "tiny", progress=False).kernel
        standby, stop_standby = start_standby(bindir, conninfo_to_dict(primary)["host"], root, PRIMARY_SETTINGS)
        try:
            caught_up(primary, standby)
            yield primary, standby, request.param, kernel
        finally:
            stop_standby()
    finally:
        stop_primary()


def answers(dsn: str, model: str = "tiny") -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = lambda sql, *args: conn.execute(sql.format(m=model), args).fetchall()
        return {
            "recovery": q("SELECT pg_is_in_recovery()")[0][0],
            "greedy": q("SELECT step, token, piece, finish FROM {m}.generate(%s, 12)", PROMPT),
            "seeded": q("SELECT token FROM {m}.generate(%s, 12, temperature => 0.9, top_k => 50, seed => 0.25)",
                        PROMPT),
            "complete": q("SELECT {m}.complete(%s, 8, temperature => 0.7, seed => -0.5)", PROMPT),
            "tokenize": q("SELECT {m}.tokenize(%s)", PROMPT),
            "probs": q("SELECT rank, token, piece, probability FROM {m}.next_token_probs(%s, 5)", PROMPT),
        }


def test_the_standby_generates_what_the_primary_generates(pair):
    primary, standby, server, kernel = pair
    assert kernel == {"pg15": "sql", "pg18": "vector"}[server]
    want, got = answers(primary), answers(standby)
    assert want.pop("recovery") is False and got.pop("recovery") is True
    assert got == want


def test_trace_is_refused_on_the_standby(pair):
    _, standby, *_ = pair
    with psycopg.connect(standby, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="this session is read-only"):
            conn.execute("SELECT tiny.trace(%s)", (PROMPT,))
        # reading is fine: the model's tables and views answer
        assert conn.execute("SELECT count(*) FROM tiny.vocab").fetchone()[0] == 50257


def test_a_model_loaded_on_the_primary_is_used_on_the_standby_after_replay(pair, tiny_ckpt, tmp_path):
    from gpt2sql.loader.checkpoint import write_random_checkpoint

    primary, standby, *_ = pair
    other = write_random_checkpoint(tmp_path / "other", "tiny", seed=99)
    with psycopg.connect(primary, autocommit=True) as conn:
        load_checkpoint(conn, str(other), "fresh", replace=True, progress=False)
    caught_up(primary, standby)
    assert answers(standby, "fresh")["greedy"] == answers(primary, "fresh")["greedy"]
    # replaced on the primary: the standby follows the new weights
    with psycopg.connect(primary, autocommit=True) as conn:
        load_checkpoint(conn, str(tiny_ckpt), "fresh", replace=True, progress=False)
    caught_up(primary, standby)
    assert answers(standby, "fresh")["greedy"] == answers(primary, "tiny")["greedy"]


def test_dropping_a_model_under_a_standby_generation_cancels_only_that_query(pair, tiny_ckpt):
    primary, standby, *_ = pair
    with psycopg.connect(primary, autocommit=True) as conn:
        load_checkpoint(conn, str(tiny_ckpt), "victim", replace=True, progress=False)
    caught_up(primary, standby)

    outcome: dict = {}

    def generate_slowly() -> None:  # the statement holds the model's locks for ~20 s after generating
        try:
            with psycopg.connect(standby, autocommit=True, application_name="standby_gen") as conn:
                conn.execute("SELECT count(*) FROM (SELECT pg_sleep(0.2) FROM victim.generate(%s, 100)) AS s",
                             (PROMPT,)).fetchone()
            outcome["finished"] = True
        except psycopg.Error as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=generate_slowly)
    worker.start()
    with psycopg.connect(standby, autocommit=True) as watch:
        deadline = time.time() + 30
        while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'standby_gen'"
                                " AND state = 'active'").fetchone()[0]:
            assert time.time() < deadline, "the standby generation did not start"
            time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.time()
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("DROP SCHEMA victim CASCADE")
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert "finished" not in outcome, "the standby query outlived the replayed DROP"
    assert "conflict with recovery" in str(outcome["error"])
    assert time.time() - t0 < 15  # max_standby_streaming_delay is 1 s on this standby
    caught_up(primary, standby)
    with psycopg.connect(standby, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'victim'").fetchone()[0] == 0
    assert answers(standby)["greedy"] == answers(primary)["greedy"]  # the other model is untouched
