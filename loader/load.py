"""Load a GPT-2 checkpoint into its own PostgreSQL schema, atomically.

Everything happens in one transaction: the schema, its tables, the weights
(streamed with binary COPY) and the SQL functions. A failed or killed load
rolls back and leaves the database as it was; an existing model of the same
name is replaced only at the very end, and only with ``replace=True``.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import psycopg
from psycopg import sql

from .. import __version__
from .source import Checkpoint, CheckpointError, GPT2Config, default_model_name, open_checkpoint, resolve_source
from .tokenizer_tables import bytes_to_unicode, char_class_ranges, read_merges, read_vocab

MODEL_COMMENT = "gpt2sql model"
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
ROWS_PER_BATCH = 4096


class LoadError(RuntimeError):
    """The load was refused or failed; the database is unchanged."""


SQL_FOLDERS = ("tokenizer", "model", "generate", "inspect")  # with kernels/KERNEL: the model's functions


def sql_files(kernel: str) -> list[str]:
    """The SQL files of the model's functions, for a model with ``kernel``, in the order they run
    (after the tables and the weights): the files of SQL_FOLDERS and ``kernels/KERNEL/`` in the order
    of their numbered names, then ``kernels/contract.sql`` (which checks that the kernel provided
    every primitive) and ``settings.sql``. Paths are relative to the package's sql/ folder."""
    root = resources.files("gpt2sql.sql")
    files = [f"{name}/{p.name}" for name in (*SQL_FOLDERS, f"kernels/{kernel}")
             for p in (root / name).iterdir() if p.name.endswith(".sql")]
    return sorted(files, key=lambda f: f.rsplit("/", 1)[1]) + ["kernels/contract.sql", "settings.sql"]


@lru_cache(maxsize=None)
def sql_version(kernel: str) -> str:
    """A digest of the SQL files of a model's functions (``sql_files(kernel)``, names and texts): a model
    whose ``config.sql_version`` differs was made by another gpt2sql and needs ``gpt2sql upgrade``. The
    files are part of the installed package, so it is read once per process (every Client.model asks)."""
    root = resources.files("gpt2sql.sql")
    digest = hashlib.sha256()
    for path in sql_files(kernel):
        digest.update(path.encode() + b"\0" + (root / path).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# the relations tables/*.sql create: the model's data, which an upgrade keeps (with matrices' partitions)
DATA_RELATIONS = ("config", "vocab", "merges", "byte_symbols", "char_classes", "tensors", "vectors", "matrices",
                  "matrix_cells")


def chunk_width(n_embd: int, limit: int = 256) -> int:
    """Weights per row: the largest divisor of n_embd not above ``limit`` (256 for 768/1024/1280, 200 for 1600)."""
    return max(d for d in range(1, min(n_embd, limit) + 1) if n_embd % d == 0)


def check_model_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,52}", name):  # 53 + len("__loading") fits PostgreSQL's 63
        raise LoadError(f"bad model name {name!r}: use at most 53 lower-case letters, digits and _, "
                        "starting with a letter")
    if name.startswith("pg_") or name in ("public", "information_schema"):
        raise LoadError(f"model name {name!r} is reserved by PostgreSQL")
    return name


def model_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is not None


def is_model(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                       (name,)).fetchone()
    return row is not None and (row[0] or "").startswith(MODEL_COMMENT)


def run_sql_file(cur: psycopg.Cursor, path: str) -> None:
    """Run one of the package's SQL files, e.g. ``tables/00_tables.sql``, and give each function,
    aggregate, table and view it creates its header comment as a COMMENT (psql's \\df+, \\dt+)."""
    text = (resources.files("gpt2sql.sql") / path).read_text(encoding="utf-8")
    try:
        cur.execute(text)
        for kind, target, comment in header_comments(text):
            cur.execute(sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), sql.SQL(target), sql.Literal(comment)))
    except psycopg.Error as exc:
        raise LoadError(f"sql/{path} failed: {exc}") from exc


CREATE_LINE = re.compile(r"^\s*'?CREATE (?:OR REPLACE )?(FUNCTION|AGGREGATE|TABLE|VIEW) (\w+)(\(|\s|$)")


def header_comments(text: str) -> list[tuple[str, str, str]]:
    """(kind, object, comment) for each CREATE FUNCTION / AGGREGATE / TABLE / VIEW of an SQL file:
    the comment lines right above it (above the DO block that creates it, for one created by dynamic
    SQL), without their '--'. A function is named by its argument types, e.g. gelu(float8[])."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = CREATE_LINE.match(line)
        if not m:
            continue
        start = i
        if start and not lines[start - 1].startswith("--"):          # inside a DO block: its comment
            start = next((j for j in range(i - 1, -1, -1) if lines[j].startswith("DO $")), i)
        block = []
        for j in range(start - 1, -1, -1):
            if not lines[j].startswith("--"):
                break
            block.insert(0, lines[j][2:].removeprefix(" "))
        if not block:
            continue
        kind, name = m.group(1), m.group(2)
        if kind in ("FUNCTION", "AGGREGATE"):
            name += "(" + ", ".join(_argument_types(_parenthesised(lines, i, line.index("(")))) + ")"
        out.append((kind, name, "\n".join(block)))
    return out


def _parenthesised(lines: list[str], i: int, col: int) -> str:
    """The text between the parenthesis at lines[i][col] and its match (which may be lines later)."""
    text = "\n".join(lines[i:i + 12])[col:]
    depth = 0
    for k, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return text[1:k]
    raise ValueError(f"unbalanced parentheses in {lines[i]!r}")


def _argument_types(arguments: str) -> list[str]:
    """The input argument types of an SQL argument list: 'x float8[], OUT y int, n int DEFAULT 3' -> [float8[], int]."""
    parts, depth, current = [], 0, ""
    for ch in arguments:
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    types = []
    for part in (" ".join(p.split()) for p in parts):
        if not part or part.startswith("OUT "):
            continue
        part = re.split(r" DEFAULT ", part, flags=re.IGNORECASE)[0].removeprefix("IN ")
        words = part.split(" ", 1)
        types.append(words[-1])
    return types


KERNELS = ("auto", "vector", "sql")
PGVECTOR_MIN = (0, 7, 0)  # vector <#> vector, double precision[]::vector, binary COPY of vector; || (0.7)
PGVECTOR_MAX_DIM = 16000  # the most floats a pgvector vector holds


def _matrix_copy_dtype(name: bytes, width: int, kernel: str) -> np.dtype:
    """One binary COPY tuple of matrices(name, row, chunk, weights), big-endian: the weights are
    ``width`` real columns (sql kernel) or one pgvector ``vector`` (its binary form: int16 dim,
    int16 unused = 0, then float4 values)."""
    key = [("nfields", ">i2"), ("name_len", ">i4"), ("name", f"S{len(name)}"),
           ("row_len", ">i4"), ("row", ">i4"), ("chunk_len", ">i4"), ("chunk", ">i4")]
    if kernel == "vector":
        return np.dtype(key + [("w_len", ">i4"), ("w_dim", ">i2"), ("w_unused", ">i2"), ("w", ">f4", (width,))])
    return np.dtype(key + [("w", [("len", ">i4"), ("v", ">f4")], (width,))])


def matrix_copy_rows(name: str, by_row: np.ndarray, width: int,
                kernel: str = "sql") -> tuple[np.dtype, Callable[[int, int], bytes]]:
    """Binary COPY bytes for a matrix given as [row, input]: each row split into chunks of ``width``."""
    n_rows, n_in = by_row.shape
    n_chunks = n_in // width
    key = name.encode()
    dt = _matrix_copy_dtype(key, width, kernel)
    blocks = by_row.reshape(n_rows * n_chunks, width)

    def batch(start: int, stop: int) -> bytes:
        rec = np.empty(stop - start, dtype=dt)
        idx = np.arange(start, stop)
        rec["name_len"] = len(key)
        rec["name"] = key
        rec["row_len"] = 4
        rec["row"] = idx // n_chunks
        rec["chunk_len"] = 4
        rec["chunk"] = idx % n_chunks
        if kernel == "vector":
            rec["nfields"] = 4
            rec["w_len"] = 4 + 4 * width
            rec["w_dim"] = width
            rec["w_unused"] = 0
            rec["w"] = blocks[start:stop]
        else:
            rec["nfields"] = 3 + width
            rec["w"]["len"] = 4
            rec["w"]["v"] = blocks[start:stop]
        return rec.tobytes()

    return dt, batch


def chunk_for(kernel: str, n_embd: int) -> int:
    """Weights per stored row: 256 real columns for the sql kernel; for the vector kernel a whole
    n_embd row (one 8 kB page holds a row of up to ~2,000 floats stored in line)."""
    return chunk_width(n_embd, 256 if kernel == "sql" else 2000)


def pgvector_schema(conn: psycopg.Connection) -> str | None:
    """The schema the pgvector extension is installed in, in this database, or None."""
    row = conn.execute("SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace"
                       " WHERE e.extname = 'vector'").fetchone()
    return row[0] if row else None


def _version_tuple(v: str) -> tuple[int, ...]:
    import re

    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])


def choose_kernel(conn: psycopg.Connection, wanted: str,
                  n_positions: int) -> tuple[str, str | None, str | None]:
    """(kernel, pgvector schema, note) for a load asking for ``wanted`` (auto, vector or sql) of a
    model of ``n_positions`` positions.

    Must run inside the load's transaction: it may CREATE EXTENSION vector (rolled back with a
    failed load). auto takes vector when the extension is installed or can be created, else sql;
    vector without pgvector raises LoadError saying how to get it. ``wanted`` was checked against
    KERNELS by load_checkpoint, before any work.
    """
    if wanted == "sql":
        return "sql", None, None
    problem = None
    schema = None
    if n_positions > PGVECTOR_MAX_DIM:
        problem = (f"the model has {n_positions:,} positions, and the vector kernel keeps the KV cache's values "
                   f"as one pgvector vector per (head, dimension) over the positions, which holds at most "
                   f"{PGVECTOR_MAX_DIM:,} floats")
    else:
        schema = pgvector_schema(conn)
    if problem is None and schema is None:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            problem = ("this PostgreSQL server does not have the pgvector extension (pg_available_extensions has "
                       "no 'vector'); install it on the server (Debian/Ubuntu: apt install postgresql-"
                       f"{conn.info.server_version // 10000}-pgvector; Docker: the pgvector/pgvector image)")
        else:
            try:
                with conn.transaction():  # a savepoint: a refused CREATE EXTENSION leaves the load going
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                schema = pgvector_schema(conn)
            except psycopg.Error as exc:
                problem = (f"pgvector is available on this server but not installed in this database, and this "
                           f"role cannot install it ({exc.diag.message_primary or exc}); ask a superuser to run "
                           "CREATE EXTENSION vector in this database")
    if problem is None:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        if _version_tuple(version) < PGVECTOR_MIN:
            problem = (f"pgvector {version} is too old for the vector kernel (it needs "
                       f"{'.'.join(map(str, PGVECTOR_MIN))} or newer): ALTER EXTENSION vector UPDATE")
    if problem is None:
        return "vector", schema, None
    if wanted == "vector":
        raise LoadError(f"--kernel vector: {problem}; or load with --kernel sql (plain SQL, no extension)")
    return "sql", None, f"using the sql kernel: {problem}"


@dataclass
class LoadResult:
    name: str
    n_params: int
    seconds: float
    replaced: bool
    kernel: str = "sql"
    note: str | None = None   # why auto chose the sql kernel, if it did
    hint: str | None = None   # what would make it faster on this server (cache_hint)


def load_checkpoint(conn: psycopg.Connection, source: str, name: str | None = None, *,
                    replace: bool = False, progress: bool = True, kernel: str = "auto",
                    on_committed: Callable[[LoadResult], None] | None = None) -> LoadResult:
    """Load SOURCE (folder or hub id) as model NAME with KERNEL (auto, vector or sql).
    Atomic; raises CheckpointError/LoadError. on_committed(result) is called as soon as the model is
    committed, before its tables are vacuumed (an interrupted vacuum leaves a working model)."""
    if kernel not in KERNELS:
        raise LoadError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    t0 = time.perf_counter()
    name = check_model_name(name or default_model_name(source))
    folder = resolve_source(source)
    ckpt = open_checkpoint(folder)           # checks config, names, shapes, dtypes, truncation
    cfg = ckpt.config
    vocab = read_vocab(ckpt.vocab_path, cfg.vocab_size)
    merges = read_merges(ckpt.merges_path, {piece for _, piece, _ in vocab})

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise LoadError("the connection is inside a transaction; load needs its own")
    exists = model_exists(conn, name)
    if exists and not is_model(conn, name):
        raise LoadError(f"schema {name!r} exists and is not a gpt2sql model; choose another --model name")
    if exists and not replace:
        raise LoadError(f"model {name!r} is already loaded; pass --replace to replace it, or choose another --model")

    staging = f"{name}__loading" if exists else name
    wanted_kernel = kernel
    total = ckpt.n_params()
    bar = _progress(total, f"loading {name}", progress)
    try:
        with conn.transaction():
            cur = conn.cursor()
            if model_exists(conn, staging):  # never a committed one: staging names exist only inside loads
                raise LoadError(f"schema {staging!r} exists; another load of {name!r} is in progress?")
            kernel, ext_schema, note = choose_kernel(conn, wanted_kernel, cfg.n_positions)
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(staging)))
            _set_search_path(cur, staging, ext_schema)
            run_sql_file(cur, "tables/00_tables.sql")
            width = chunk_for(kernel, cfg.n_embd)
            cur.execute(
                "INSERT INTO config (n_layer, n_head, n_embd, n_positions, vocab_size, layer_norm_epsilon,"
                " kernel, chunk, n_params, source, gpt2sql_version, sql_version)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size, cfg.layer_norm_epsilon,
                 kernel, width, total, str(source), __version__, sql_version(kernel)))
            _copy_tensor_catalog(cur, cfg)
            run_sql_file(cur, "tables/01_matrices.sql")  # one partition per tensor of the catalog
            _copy_tokenizer(cur, vocab, merges)
            _copy_weights(cur, ckpt, width, kernel, bar)
            # statistics for the planner from the start; the weight columns need none
            cur.execute("ANALYZE config, vocab, merges, byte_symbols, char_classes, tensors, vectors")
            cur.execute("ANALYZE matrices (name, row, chunk)")
            if exists:
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
                cur.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(staging), sql.Identifier(name)))
            _set_search_path(cur, name, ext_schema)
            for path in sql_files(kernel):  # the functions capture this search_path (SET search_path FROM CURRENT)
                run_sql_file(cur, path)
            cur.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                sql.Identifier(name), sql.Literal(f"{MODEL_COMMENT} from {source}")))
    except psycopg.Error as exc:
        raise LoadError(f"loading {name!r} failed, nothing was changed: {exc}") from exc
    finally:
        bar.close()
    hint = cache_hint(conn, name)
    if on_committed is not None:
        on_committed(LoadResult(name, total, time.perf_counter() - t0, exists, kernel, note, hint))
    _vacuum(conn, name)
    return LoadResult(name, total, time.perf_counter() - t0, exists, kernel, note, hint)


def model_bytes(conn: psycopg.Connection, name: str) -> int:
    """Bytes the model's schema takes on disk: its tables, their TOAST and indexes."""
    return int(conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c"
        " WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'", (name,)).fetchone()[0])


def cache_hint(conn: psycopg.Connection, name: str) -> str | None:
    """A hint when the model takes more than shared_buffers: each token then reads its weights
    through the operating system's cache, 2-2.5x slower for gpt2-medium and gpt2-large than with
    them in PostgreSQL's own (docs/performance.md, "Every GPT-2 size")."""
    size = model_bytes(conn, name)
    buffers = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]
    if size <= buffers:
        return None
    want = math.ceil(size / 2**30 + 0.5)
    gb = lambda b: f"{b / 2**30:.1f} GB" if b >= 2**30 else f"{b / 2**20:.0f} MB"
    return (f"model {name} takes {gb(size)}, more than shared_buffers ({gb(buffers)}): each "
            f"token reads its weights through the operating system's cache, about 2x slower. Raise shared_buffers to "
            f"{want}GB or more (ALTER SYSTEM SET shared_buffers = '{want}GB', then restart the server; "
            f"docs/deployment.md)")


def _set_search_path(cur: psycopg.Cursor, schema: str, ext_schema: str | None) -> None:
    """The search_path every function of the model captures (SET search_path FROM CURRENT): its own
    schema, pg_catalog, then pgvector's schema for the vector kernel (after pg_catalog, so nothing
    there can stand in for a built-in), pg_temp last."""
    parts = [sql.Identifier(schema), sql.Identifier("pg_catalog")]
    if ext_schema:
        parts.append(sql.Identifier(ext_schema))
    parts.append(sql.Identifier("pg_temp"))
    cur.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.SQL(", ").join(parts)))


def _vacuum(conn: psycopg.Connection, name: str) -> None:
    """Set hint bits and the visibility map once, so readers (and replicas) never write. The model is
    committed already: if this is interrupted, the model works, and its first readers set the hint
    bits of the tables not reached (or VACUUM them, or autovacuum does)."""
    prev = conn.autocommit
    conn.autocommit = True
    try:
        tables = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'",
            (name,)).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("VACUUM {}.{}").format(sql.Identifier(name), sql.Identifier(table)))
    finally:
        conn.autocommit = prev


def _copy_tokenizer(cur: psycopg.Cursor, vocab, merges) -> None:
    with cur.copy("COPY vocab (token, piece, bytes) FROM STDIN") as cp:
        for row in vocab:
            cp.write_row(row)
    with cur.copy("COPY merges (rank, left_symbol, right_symbol) FROM STDIN") as cp:
        for row in merges:
            cp.write_row(row)
    with cur.copy("COPY byte_symbols (byte, symbol) FROM STDIN") as cp:
        for b, s in bytes_to_unicode().items():
            cp.write_row((b, s))
    with cur.copy("COPY char_classes (lo, hi, class) FROM STDIN") as cp:
        for row in char_class_ranges():
            cp.write_row(row)


def _copy_tensor_catalog(cur: psycopg.Cursor, cfg: GPT2Config) -> None:
    with cur.copy("COPY tensors (name, layer, shape, stored) FROM STDIN") as cp:
        for tname, shape in cfg.expected_shapes().items():
            layer = int(tname.split(".")[1]) if tname.startswith("h.") else None
            cp.write_row((tname, layer, list(shape), "vectors" if len(shape) == 1 else "matrices"))


def _copy_weights(cur: psycopg.Cursor, ckpt: Checkpoint, width: int, kernel: str, bar) -> None:
    cfg: GPT2Config = ckpt.config
    with cur.copy("COPY vectors (name, value) FROM STDIN") as vcp:
        for tname, shape in cfg.expected_shapes().items():
            if len(shape) == 1:
                arr = ckpt.tensor(tname)
                vcp.write_row((tname, arr.tolist()))
                bar.update(arr.size)
    partitions = dict(cur.execute("SELECT name, partition FROM tensors WHERE stored = 'matrices'").fetchall())
    for tname, shape in cfg.expected_shapes().items():
        if len(shape) != 2:
            continue
        with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(partitions[tname]))) as cp:
            cp.write(COPY_HEADER)
            arr = ckpt.tensor(tname)
            # wte/wpe are [row, embd] already; Conv1D weights are [in, out] -> [out, in]
            by_row = arr if tname in ("wte.weight", "wpe.weight") else np.ascontiguousarray(arr.T)
            _, batch = matrix_copy_rows(tname, by_row, width, kernel)
            n = by_row.size // width
            for start in range(0, n, ROWS_PER_BATCH):
                stop = min(n, start + ROWS_PER_BATCH)
                cp.write(batch(start, stop))
                bar.update((stop - start) * width)
            cp.write(COPY_TRAILER)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="param", unit_scale=True, leave=False)


def list_models(conn: psycopg.Connection) -> list[dict]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE %s ORDER BY 1",
        (MODEL_COMMENT + "%",)).fetchall()
    out = []
    for (schema,) in rows:
        r = conn.execute(sql.SQL(
            "SELECT n_layer, n_head, n_embd, n_positions, n_params, loaded_at, source,"
            " coalesce(to_jsonb(c) ->> 'kernel', 'sql')"  # models loaded before kernels existed
            " FROM {}.config AS c").format(sql.Identifier(schema))).fetchone()
        out.append(dict(name=schema, n_layer=r[0], n_head=r[1], n_embd=r[2], n_positions=r[3],
                        n_params=r[4], loaded_at=r[5], source=r[6], kernel=r[7], bytes=model_bytes(conn, schema),
                        needs_upgrade=needs_upgrade(conn, schema)))
    return out


def drop_model(conn: psycopg.Connection, name: str) -> None:
    if not model_exists(conn, name):
        raise LoadError(f"no model named {name!r} is loaded")
    if not is_model(conn, name):
        raise LoadError(f"schema {name!r} is not a gpt2sql model; refusing to drop it")
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def grant_reader(conn: psycopg.Connection, role: str, models: list[str] | None = None) -> list[str]:
    """Let ``role`` tokenize, generate and read traces of the models (all loaded ones by default), but
    change nothing: USAGE on each model schema, SELECT on its tables, EXECUTE on its functions.
    Writes stay refused because the role owns nothing there and is granted no write privilege."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        raise LoadError(f"no role named {role!r}; create it first (CREATE ROLE {role} LOGIN PASSWORD ...)")
    names = models or [m["name"] for m in list_models(conn)]
    for name in names:
        if not is_model(conn, name):
            raise LoadError(f"no model named {name!r} is loaded")
    vector_models = [n for n in names if conn.execute(
        sql.SQL("SELECT kernel = 'vector' FROM {}.config").format(sql.Identifier(n))).fetchone()[0]]
    ext_schema = pgvector_schema(conn) if vector_models else None
    with conn.transaction():
        for name in names:
            for stmt in ("GRANT USAGE ON SCHEMA {s} TO {r}",
                         "GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}",
                         "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}"):
                conn.execute(sql.SQL(stmt).format(s=sql.Identifier(name), r=sql.Identifier(role)))
        if ext_schema:  # pgvector's type and operators (its functions are executable by PUBLIC)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {s} TO {r}").format(
                s=sql.Identifier(ext_schema), r=sql.Identifier(role)))
        for name in names:  # PostgreSQL only warns when a GRANT grants nothing: check what it did
            missing = _missing_reader_privileges(conn, role, name)
            if missing:
                owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s",
                                     (name,)).fetchone()[0]
                raise LoadError(f"could not grant {role!r} read access to model {name!r}: {missing} "
                                f"(role {conn.info.user!r} does not own the model; its owner is {owner}): run "
                                "grant-reader as the model's owner or a superuser; nothing was granted")
    return names


def _missing_reader_privileges(conn: psycopg.Connection, role: str, name: str) -> str | None:
    """What ``role`` still lacks of a reader's privileges on model ``name``, in words, or None."""
    usage, tables, functions = conn.execute(
        "SELECT has_schema_privilege(%(r)s, n.oid, 'USAGE'),"
        "       (SELECT count(*) FROM pg_class AS c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v')"
        "           AND NOT has_table_privilege(%(r)s, c.oid, 'SELECT')),"
        "       (SELECT count(*) FROM pg_proc AS p WHERE p.pronamespace = n.oid"
        "           AND NOT has_function_privilege(%(r)s, p.oid, 'EXECUTE'))"
        "  FROM pg_namespace AS n WHERE n.nspname = %(s)s", {"r": role, "s": name}).fetchone()
    if not usage:
        return "USAGE on the schema was not granted"
    if tables:
        return f"SELECT on {tables} table(s) was not granted"
    if functions:
        return f"EXECUTE on {functions} function(s) was not granted"
    return None


def model_sql(conn: psycopg.Connection, name: str) -> tuple[str, str | None]:
    """(kernel, sql_version) of a loaded model; sql_version None for a model of gpt2sql 0.1."""
    return conn.execute(sql.SQL("SELECT coalesce(to_jsonb(c) ->> 'kernel', 'sql'), to_jsonb(c) ->> 'sql_version'"
                                " FROM {}.config AS c").format(sql.Identifier(name))).fetchone()


def needs_upgrade(conn: psycopg.Connection, name: str) -> bool:
    """Whether the model's functions were made by SQL other than this gpt2sql's."""
    kernel, version = model_sql(conn, name)
    return version != sql_version(kernel)


def drop_model_sql(conn: psycopg.Connection, name: str) -> int:
    """Drop every object of model ``name`` that the SQL files of its functions made (functions,
    aggregates, types, views, the trace tables), keeping its data (DATA_RELATIONS). Run inside a
    transaction; returns how many traces were dropped with them."""
    schema = sql.Identifier(name)
    has_traces = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{name}.traces",)).fetchone()[0]
    traces = conn.execute(sql.SQL("SELECT count(*) FROM {}.traces").format(schema)).fetchone()[0] if has_traces else 0
    relations = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class AS c WHERE c.relnamespace = %s::regnamespace"
        " AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition AND c.relname <> ALL(%s)",
        (name, list(DATA_RELATIONS))).fetchall()
    for rel, kind in relations:
        what = sql.SQL("VIEW" if kind == "v" else "MATERIALIZED VIEW" if kind == "m" else "TABLE")
        conn.execute(sql.SQL("DROP {} IF EXISTS {}.{} CASCADE").format(what, schema, sql.Identifier(rel)))
    routines = conn.execute("SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc AS p"
                            " WHERE p.pronamespace = %s::regnamespace", (name,)).fetchall()
    for signature, kind in routines:
        what = "AGGREGATE" if kind == "a" else "PROCEDURE" if kind == "p" else "FUNCTION"
        conn.execute(sql.SQL(f"DROP {what} IF EXISTS {{}} CASCADE").format(sql.SQL(signature)))
    types = conn.execute("SELECT t.oid::regtype::text FROM pg_type AS t JOIN pg_class AS c ON c.oid = t.typrelid"
                         " WHERE t.typnamespace = %s::regnamespace AND c.relkind = 'c'", (name,)).fetchall()
    for (signature,) in types:
        conn.execute(sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(sql.SQL(signature)))
    return traces


@dataclass
class UpgradeResult:
    name: str
    upgraded: bool              # False: it was up to date
    old_version: str | None     # None: loaded by gpt2sql 0.1
    new_version: str
    traces_dropped: int = 0


def upgrade_model(conn: psycopg.Connection, name: str) -> UpgradeResult:
    """Re-create model ``name``'s functions, types, views and trace tables with this gpt2sql's SQL, in one
    transaction, keeping its weights and tokenizer tables (their layout is unchanged since 0.1) and the
    grants of its reader roles. Traces are dropped (their tables are re-created). Raises LoadError; a
    failed upgrade changes nothing."""
    if not is_model(conn, name):
        raise LoadError(f"no model named {name!r} is loaded")
    kernel, old = model_sql(conn, name)
    new = sql_version(kernel)
    if old == new:
        return UpgradeResult(name, False, old, new)
    owner = conn.execute("SELECT nspowner::regrole::text, pg_has_role(current_user, nspowner, 'USAGE')"
                         " FROM pg_namespace WHERE nspname = %s", (name,)).fetchone()
    if not owner[1]:
        raise LoadError(f"role {conn.info.user!r} cannot upgrade model {name!r}: its owner is {owner[0]}; run "
                        "gpt2sql upgrade as the owner or a superuser")
    ext_schema = None
    if kernel == "vector":
        ext_schema = pgvector_schema(conn)
        if ext_schema is None:
            raise LoadError(f"model {name!r} uses the vector kernel, but pgvector is not installed in this database")
    readers = [r for (r,) in conn.execute(
        "SELECT DISTINCT a.grantee::regrole::text FROM pg_namespace AS n, aclexplode(n.nspacl) AS a"
        " WHERE n.nspname = %s AND a.privilege_type = 'USAGE' AND a.grantee NOT IN (0, n.nspowner)",
        (name,)).fetchall()]
    try:
        with conn.transaction():
            conn.execute(sql.SQL("LOCK TABLE {}.config IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(name)))
            traces = drop_model_sql(conn, name)
            conn.execute(sql.SQL("ALTER TABLE {}.config ADD COLUMN IF NOT EXISTS sql_version text").format(
                sql.Identifier(name)))
            cur = conn.cursor()
            _set_search_path(cur, name, ext_schema)
            for path in sql_files(kernel):
                run_sql_file(cur, path)
            cur.execute("UPDATE config SET sql_version = %s, gpt2sql_version = %s", (new, __version__))
            cur.execute("RESET search_path")
            for role in readers:
                grant_reader(conn, role, [name])
    except psycopg.Error as exc:
        raise LoadError(f"upgrading {name!r} failed, nothing was changed: {exc}") from exc
    return UpgradeResult(name, True, old, new, traces)
