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
