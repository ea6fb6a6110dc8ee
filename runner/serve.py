"""The live explorer: the explorer page served from this machine, driven by the database.

    gpt2sql explore --serve --model demo            # prints http://127.0.0.1:8765/?token=...

The learner types a prompt and gets its walk (a trace, as ``gpt2sql explore`` writes it), ticks
heads and sees the what-if, steps generation one token at a time (each layer's cache of keys and
values grows by one row), and runs any value's SQL, or SQL of their own, against the database.

Safe to leave running: the server listens on 127.0.0.1 only and answers only requests that carry
the random token printed in its URL (as Jupyter does). Traces are made by the connection the
explorer was started with; the learner's SQL runs as a separate login role that holds only the
reader grants (``gpt2sql grant-reader``), in a read-only transaction with a statement timeout and a
row limit, so it cannot write, read files or signal other backends.
"""

from __future__ import annotations

import decimal
import html
import math
import re
import secrets
import socket
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import explore
from .client import Client, Model, Trace

READER_ROLE = "gpt2sql_explorer"    # the login role the learner's SQL runs as
RUN_TIMEOUT_MS = 5000               # the learner's SQL: statement timeout
RUN_ROWS = 200                      # and rows returned
TRACE_TIMEOUT_MS = 300_000          # a trace or step made for the page
MAX_TOKENS = 64                     # a live walk's length (every value of every stage goes to the browser)
TOKEN_HEADER = "x-gpt2sql-token"


class ExplorerError(ValueError):
    """Bad input from the page: shown there as it is."""


def reader_login(conn: psycopg.Connection, dsn: str, model: str, role: str = READER_ROLE) -> str:
    """A connection string for ``role``, a login role that may only read ``model``: created if
    missing (or given a new random password), refused if it may do more than read."""
    from .loader.load import grant_reader

    found = conn.execute("SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls, "
                         "       EXISTS (SELECT 1 FROM pg_auth_members WHERE member = r.oid) "
                         "  FROM pg_roles AS r WHERE rolname = %s", (role,)).fetchone()
    if found and any(found):
        raise ExplorerError(f"role {role!r} may do more than read (superuser, CREATEROLE, CREATEDB, replication, "
                            "BYPASSRLS or membership of another role): the explorer runs the learner's SQL as a role "
                            "that only reads; pick another with --reader-role")
    password = secrets.token_urlsafe(24)
    verb = "ALTER" if found else "CREATE"
    try:
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOINHERIT PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        for name, value in (("default_transaction_read_only", "on"), ("statement_timeout", f"{RUN_TIMEOUT_MS}ms")):
            conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(sql.Identifier(role), sql.Identifier(name),
                                                                   sql.Literal(value)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ExplorerError(f"cannot {verb.lower()} the explorer's reader role {role!r} as {conn.info.user!r} "
                            f"({exc.diag.message_primary}): a role with CREATEROLE can, or create it yourself, "
                            f"run gpt2sql grant-reader {role} --model {model}, and pass --reader-dsn") from None
    grant_reader(conn, role, [model])
    return make_conninfo(dsn, user=role, password=password)


def check_reader(reader_dsn: str, model: str) -> None:
    """The reader's connection works, may read the model and is no superuser or owner of it."""
    try:
        with psycopg.connect(reader_dsn, autocommit=True, connect_timeout=10) as conn:
            superuser, owner, usage = conn.execute(
                "SELECT r.rolsuper, pg_has_role(current_user, n.nspowner, 'USAGE'), has_schema_privilege(n.oid, 'USAGE') "
                "  FROM pg_roles AS r, pg_namespace AS n WHERE r.rolname = current_user AND n.nspname = %s",
                (model,)).fetchone()
    except psycopg.OperationalError as exc:
        raise ExplorerError(f"cannot log in as the explorer's reader role ({exc}): allow it in pg_hba.conf, or "
                            "pass --reader-dsn of a role that has the reader grants (gpt2sql grant-reader)") from None
    if superuser or owner:
        raise ExplorerError("the reader role must not be a superuser or own the model: the learner's SQL runs as it")
    if not usage:
        raise ExplorerError(f"the reader role cannot read model {model!r}: run gpt2sql grant-reader ROLE --model {model}")


def _json_value(x):
    """A database value as JSON: numbers stay numbers (non-finite ones as text), the rest as text."""
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, decimal.Decimal):
        return float(x) if x.is_finite() else str(x)
    if isinstance(x, (list, tuple)):
        return [_json_value(v) for v in x]
    return str(x)                   # dates, times, intervals, bytes, JSON, ...


def run_sql(reader_dsn: str, text: str, rows: int = RUN_ROWS, timeout_ms: int = RUN_TIMEOUT_MS) -> dict:
    """Run one query as the reader, read-only, bounded in time and rows: its columns, its first
    ``rows`` rows, whether there were more, and the milliseconds it took."""
    if not isinstance(text, str) or not text.strip():
        raise ExplorerError("gpt2sql: there is no SQL to run")
    if "\x00" in text:
        raise ExplorerError("gpt2sql: the SQL contains a NUL character")
    query = text.strip().rstrip(";").rstrip()
    with psycopg.connect(reader_dsn, connect_timeout=10) as conn:
        conn.read_only = True
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{timeout_ms}ms",))
            with conn.cursor(name="learner") as cur:           # a cursor: only the rows shown are fetched
                start = time.perf_counter()
                cur.execute(sql.SQL(query))
                got = cur.fetchmany(rows + 1)
                ms = (time.perf_counter() - start) * 1000
                columns = [c.name for c in cur.description or []]
        except psycopg.errors.QueryCanceled:
            raise ExplorerError(f"gpt2sql: the query ran longer than {timeout_ms / 1000:g} s and was cancelled") from None
        except psycopg.errors.SyntaxError as exc:
            raise ExplorerError(f"{_message(exc)} (the explorer runs one read-only query: "
                                "SELECT, WITH, VALUES or TABLE)") from None
        except psycopg.Error as exc:                                # gpt2sql's own errors carry the prefix already
            raise ExplorerError(_message(exc)) from None
        finally:
            conn.rollback()
    return {"columns": columns, "rows": [[_json_value(v) for v in r] for r in got[:rows]],
            "more": len(got) > rows, "ms": round(ms, 2)}


class LiveExplorer:
    """What the page asks of the database: traces of prompts, one generation step, the learner's SQL."""

    def __init__(self, dsn: str, model: str, reader_dsn: str, k: int = explore.TOP_K):
        self.dsn, self.model_name, self.reader_dsn, self.k = dsn, model, reader_dsn, k

    @contextmanager
    def _model(self) -> Iterator[Model]:
        with Client(self.dsn) as client:
            client.connection.execute(f"SET statement_timeout = {TRACE_TIMEOUT_MS}")
            yield client.model(self.model_name)

    def _walk(self, trace: Trace, ablate: list[tuple[int, int]]) -> dict:
        """The page's data of a trace (its length checked by the caller, before tracing)."""
        twin = explore.ablated_twin(trace, ablate) if ablate else None
        return explore.collect(trace, twin, self.k)

    def walk(self, prompt: object, ablate: object = ()) -> dict:
        """The page's data for ``prompt`` (and, with ``ablate``, its what-if)."""
        if not isinstance(prompt, str):
            raise ExplorerError("gpt2sql: the prompt must be text")
        pairs = _pairs(ablate)
        with self._model() as model:
            if pairs:
                model.query("SELECT {m}.check_ablate(%s::int[])", ([list(p) for p in pairs],))
            n = len(model.tokenize(prompt))
            if n > MAX_TOKENS:
                raise ExplorerError(f"gpt2sql: the live page walks prompts of up to {MAX_TOKENS} tokens (this one "
                                    f"has {n}); write a page of a longer one with gpt2sql explore -o")
            return self._walk(model.trace(prompt), pairs)

    def step(self, trace_id: object) -> dict:
        """One greedy generation step after trace ``trace_id``: the walk of its tokens and the most
        likely next one, with which token was added."""
        if isinstance(trace_id, bool) or not isinstance(trace_id, int):
            raise ExplorerError("gpt2sql: a step needs the trace it continues")
        with self._model() as model:
            before = model.get_trace(trace_id)
            limit = min(MAX_TOKENS, model.config()["n_positions"])
            if len(before.tokens) >= limit:
                raise ExplorerError(f"gpt2sql: the live page steps up to {limit} tokens; this walk has {len(before.tokens)}")
            token = model.query("SELECT (t).token FROM {m}.trace_vectors AS s, {m}.top_tokens(s.value, 1) AS t "
                                "WHERE s.trace_id = %s AND s.stage = 'logits' AND s.position = %s",
                                (trace_id, len(before.tokens) - 1))[0][0]
            data = self._walk(model.trace([*before.tokens, token]), [])
            data["step"] = {"previous": trace_id, "token": token}
            return data


def _pairs(ablate: object) -> list[tuple[int, int]]:
    if not isinstance(ablate, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in p)
            for p in ablate):
        raise ExplorerError("gpt2sql: ablate takes [layer, head] pairs")
    return [(int(a), int(b)) for a, b in ablate]


def walkthrough_html() -> str | None:
    """docs/walkthrough.md as a page, each section's heading with an id (its number and words,
    e.g. #6-one-attention-head), or None where the docs are not beside the package."""
    from markdown_it import MarkdownIt

    path = explore.walkthrough_file()
    if path is None:
        return None
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(path.read_text(encoding="utf-8"))

    def anchor(found: re.Match) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", html.unescape(found[2]).lower()).strip("-")
        return f'<h{found[1]} id="{slug}">{found[2]}</h{found[1]}>'

    body = re.sub(r"<h([23])>(.*?)</h\1>", anchor, body)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gpt2sql: walkthrough</title>'
            "<style>body{font-family:system-ui,sans-serif;max-width:52em;margin:1em auto;padding:0 1em;line-height:1.5}"
            "pre{background:#f5f5f2;padding:0.6em;overflow:auto}code{font-size:0.92em}</style></head><body>"
            + body + "</body></html>")


def make_app(live: LiveExplorer, token: str) -> Starlette:
    """The web app: the page at /, its three JSON calls under /api; every request needs ``token``."""

    def page(request: Request) -> Response:
        boot = {"live": {"token": token, "model": live.model_name, "max_tokens": MAX_TOKENS,
                         "run_rows": RUN_ROWS, "run_timeout_ms": RUN_TIMEOUT_MS}}
        return HTMLResponse(explore.render(boot, title=f"{live.model_name}: the live explorer"))

    def walkthrough(request: Request) -> Response:
        page = walkthrough_html()
        if page is None:
            return PlainTextResponse("gpt2sql: docs/walkthrough.md is not installed with this gpt2sql "
                                     "(it is in the project's checkout)\n", status_code=404)
        return HTMLResponse(page)

    async def call(request: Request, work) -> Response:
        from starlette.concurrency import run_in_threadpool

        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "gpt2sql: send JSON"}, status_code=415)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "gpt2sql: the request is not valid JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "gpt2sql: the request must be a JSON object"}, status_code=400)
        try:
            return JSONResponse(await run_in_threadpool(work, body))
        except (ExplorerError, LookupError, TypeError, psycopg.Error) as exc:
            return JSONResponse({"error": _message(exc)}, status_code=400)

    async def walk(request: Request) -> Response:
        return await call(request, lambda b: live.walk(b.get("prompt"), b.get("ablate", [])))

    async def step(request: Request) -> Response:
        return await call(request, lambda b: live.step(b.get("trace")))

    async def run(request: Request) -> Response:
        return await call(request, lambda b: run_sql(live.reader_dsn, b.get("sql")))

    return Starlette(routes=[Route("/", page), Route("/walkthrough", walkthrough), Route("/api/walk", walk, methods=["POST"]),
                             Route("/api/step", step, methods=["POST"]), Route("/api/run", run, methods=["POST"])],
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]),
                                 Middleware(TokenRequired, token=token)])


class TokenRequired:
    """ASGI middleware: a request without the token (in the page's URL; in a header for the JSON
    calls) is refused; every answer is kept out of caches, frames and referrers."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        if request.url.path == "/favicon.ico":                   # browsers ask without the token: no icon
            return await Response(status_code=204)(scope, receive, send)
        given = request.query_params.get("token", "") if request.method == "GET" else request.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(given.encode(), self.token):
            refused = PlainTextResponse("gpt2sql: this explorer answers only requests that carry the token printed "
                                        "when it started (open the URL it printed)\n", status_code=403)
            return await refused(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Cache-Control"] = "no-store"
                headers["Referrer-Policy"] = "no-referrer"             # the token is in the page's URL
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _message(exc: BaseException) -> str:
    text = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag.message_primary else str(exc)
    return text if text.startswith("gpt2sql:") else f"gpt2sql: {text}"


def listen(port: int) -> socket.socket:
    """A socket on 127.0.0.1:``port`` (0: any free port), refused clearly when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ExplorerError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): pick another --port, or 0 for any free one") from None
    sock.listen(128)                # connections wait from now on, before uvicorn starts taking them
    return sock


def serve(dsn: str, model: str, port: int = 8765, reader_dsn: str | None = None,
          reader_role: str = READER_ROLE, k: int = explore.TOP_K, on_ready=print) -> None:
    """Run the live explorer until interrupted (Ctrl-C); ``on_ready`` gets the line with its URL."""
    import uvicorn

    explore.check_top_k(k)
    with Client(dsn) as client:
        client.model(model)                                          # loaded and up to date
        if reader_dsn is None:
            reader_dsn = reader_login(client.connection, client.dsn, model, reader_role)
    check_reader(reader_dsn, model)
    sock = listen(port)
    token = secrets.token_urlsafe(24)
    app = make_app(LiveExplorer(client.dsn, model, reader_dsn, k), token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    host, bound = sock.getsockname()
    try:                            # Ctrl-C is the usual way out (uvicorn shuts down, then raises it again)
        on_ready(f"the live explorer of model {model}: http://{host}:{bound}/?token={token}\n"
                 f"(listening on 127.0.0.1 only; Ctrl-C stops it)")
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        sock.close()
    on_ready("the live explorer stopped")
