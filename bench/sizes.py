"""Every GPT-2 size: random checkpoints of the gpt2 (124M), gpt2-medium (355M), gpt2-large (774M)
and gpt2-xl (1558M) shapes, each loaded, measured beside NumPy float32 (bench/numpy_gpt2.py, the
same checkpoint, the same run) and dropped.

    python bench/sizes.py [--dsn DSN] [--kernel vector|sql] [--sizes 124M 355M 774M 1558M] [--keep]

Per size: writing the checkpoint, the load (time; the loader's peak memory), the model's disk
(its tables and indexes), one new token at context 16 and 256 (with the backend's peak private
memory) and a 64-token prefill, each against NumPy's time for the same work.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

import gpt2sql
from bench import PROMPT64, PeakPrivateMemory, one_new_token, side_by_side
from gpt2sql.loader.checkpoint import write_random_checkpoint
from gpt2sql.loader.load import load_checkpoint, model_bytes
from numpy_gpt2 import GPT2, Cache


def measure(conn, size: str, kernel: str, keep: bool) -> None:
    name = f"size{size.lower()}_{kernel}"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ckpt = write_random_checkpoint(Path(tmp) / size, size, seed=0)
        written = time.perf_counter() - t0
        ckpt_bytes = (ckpt / "model.safetensors").stat().st_size
        res = load_checkpoint(conn, str(ckpt), name, replace=True, progress=False, kernel=kernel)
        loader_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024         # MB, so far in this run
        reference = GPT2(ckpt)
    print(f"## {size} ({res.n_params:,} parameters), {kernel} kernel")
    print(f"  checkpoint written {written:.1f} s ({ckpt_bytes / 2**30:.2f} GiB); load {res.seconds:.1f} s "
          f"(this process's peak memory so far {loader_peak:,.0f} MB); disk {model_bytes(conn, name) / 2**30:.2f} GiB")
    conn.execute(f"SELECT count(*) FROM {name}.next_token_logits(ARRAY[1])")          # plans and caches warm
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    print(f"  {'work':34s} {'NumPy':>9s} {'gpt2sql':>9s} {'ratio':>7s}")
    for ctx in (16, 256):
        peak = PeakPrivateMemory(pid)
        with peak:
            a, b = side_by_side(*one_new_token(conn, name, reference, ctx), runs=3)
        print(f"  {f'one new token, context {ctx}':34s} {a:8.3f}s {b:8.3f}s {b / a:6.1f}x  (backend peak {peak})")
    q = f"SELECT count(*) FROM {name}.next_token_logits(%s)"
    a, b = side_by_side(lambda: reference.forward([PROMPT64], [Cache()]),
                        lambda: conn.execute(q, (PROMPT64,)).fetchone(), runs=2)
    print(f"  {'64-token prefill':34s} {a:8.3f}s {b:8.3f}s {b / a:6.1f}x", flush=True)
    if not keep:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--kernel", choices=["vector", "sql"], default="vector")
    ap.add_argument("--sizes", nargs="+", default=["124M", "355M", "774M", "1558M"],
                    choices=["124M", "355M", "774M", "1558M"])
    ap.add_argument("--keep", action="store_true", help="keep the models loaded (size<shape>_<kernel>)")
    args = ap.parse_args()
    conn = psycopg.connect(gpt2sql.resolve_dsn(args.dsn), autocommit=True)
    version = conn.execute("SHOW server_version").fetchone()[0]
    settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                 "('shared_buffers', 'work_mem', 'maintenance_work_mem')").fetchall())
    print(f"# gpt2sql sizes  {time.strftime('%Y-%m-%d')}  PostgreSQL {version}  {platform.machine()} "
          f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB  "
          f"NumPy {np.__version__}  settings {settings}")
    for size in args.sizes:
        measure(conn, size, args.kernel, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
