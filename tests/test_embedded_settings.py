"""gpt2sql's settings for its embedded server are defaults: a setting the user changed with ALTER
SYSTEM (a larger shared_buffers for a larger model) survives the next start, and takes effect."""

from __future__ import annotations

import psycopg

from servers import embedded_server


def test_a_users_alter_system_survives_the_next_start(tmp_path):
    dsn, stop = embedded_server(tmp_path)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "1GB"
            conn.execute("ALTER SYSTEM SET shared_buffers = '256MB'")
        dsn, stop = embedded_server(tmp_path)                    # gpt2sql connects again: a restart applies it
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "256MB"
            assert conn.execute("SHOW max_locks_per_transaction").fetchone()[0] == "512"
    finally:
        stop()


def test_a_load_larger_than_shared_buffers_says_how_to_raise_them(tmp_path, tiny_ckpt):
    """The load says when the model takes more than shared_buffers (each token would read its
    weights through the OS cache) and how much to set; the model loads and works either way."""
    from gpt2sql.loader.load import load_checkpoint, model_bytes

    dsn, stop = embedded_server(tmp_path)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_buffers = '16MB'")
        dsn, stop = embedded_server(tmp_path)
        with psycopg.connect(dsn, autocommit=True) as conn:
            res = load_checkpoint(conn, str(tiny_ckpt), "tiny_cache", progress=False, kernel="sql")
            size = model_bytes(conn, "tiny_cache")
            assert size > 16 * 2**20
            assert res.hint and "more than shared_buffers (16 MB)" in res.hint
            assert "ALTER SYSTEM SET shared_buffers" in res.hint
            assert conn.execute("SELECT tiny_cache.complete('Hi', 2)").fetchone()[0].startswith("Hi")
            conn.execute("ALTER SYSTEM RESET shared_buffers")
        dsn, stop = embedded_server(tmp_path)                    # back to gpt2sql's 1GB: no hint
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert load_checkpoint(conn, str(tiny_ckpt), "tiny_cache", replace=True, progress=False,
                                   kernel="sql").hint is None
    finally:
        stop()
