"""gpt2sql benchmark on the 124M-shaped random checkpoint, for each kernel side by side.

    python bench/bench.py [--dsn DSN] [--kernel vector|sql|both] [--quick] [--profile] [--trace-only]
                          [--numpy-only]

Loads the checkpoint once per kernel (models bench124m_vector and bench124m_sql stay loaded).
Reports, per kernel: first, the same work in NumPy float32 (bench/numpy_gpt2.py, the same
checkpoint) and gpt2sql in the same run, alternating, with their ratio, which is what the goals
name (--numpy-only: just that table); then load time; seconds per matrix-vector product of each GPT-2 124M shape; the
first token of a 7-token prompt; a forward pass over 8 and 64 tokens (prefill); the work for one
new position with the KV cache at context 16, 256 and 1024 (with the backend's peak private
memory); streamed generation tokens/s; tokenizing a 1,000-word paragraph and one long word. --profile adds where the
time of one new token (context 16) and of a 64-token prefill goes, per SQL function
(track_functions + pg_stat_user_functions). --trace-only: a traced forward pass (13 tokens) and its
lenses. Each figure is the best of a few runs (first runs plan queries and warm the caches).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

import gpt2sql
from gpt2sql.loader.checkpoint import demo_model_dir, write_random_checkpoint
from gpt2sql.loader.load import is_model, load_checkpoint
from numpy_gpt2 import GPT2, Cache

MODEL = "bench124m"   # + _vector / _sql
PROMPT7 = [15496, 11, 616, 1438, 318, 1757, 13]                  # "Hello, my name is John."
PROMPT64 = [(i * 7919) % 50257 for i in range(64)]


class PeakPrivateMemory:
    """Samples RssAnon of a server backend while the block runs (needs the server on this machine)."""

    def __init__(self, pid: int):
        self.path, self.peak, self.ok = f"/proc/{pid}/status", 0, True
        self._stop = threading.Event()

    def _read(self) -> int:
        with open(self.path) as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon"))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._read())
            except (OSError, StopIteration):
                self.ok = False
                return
            time.sleep(0.02)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def __str__(self) -> str:
        return f"{self.peak / 1024:.0f} MB" if self.ok and self.peak else "n/a: server not on this machine"


def best_of(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def paragraph(words: int = 1000) -> str:
    base = ("The quick brown fox jumps over the lazy dog while the database engine, patient as ever, "
            "multiplies matrices row by row; it's 2026, and we've learned that SQL can do arithmetic "
            "(slowly) — 3.14159 times faster than you'd think? Perhaps not. ").split()
    return " ".join(base[i % len(base)] for i in range(words))


def bench_checkpoint(ckpt_dir: Path) -> Path:
    """The 124M-shaped random checkpoint (seed 0) in ckpt_dir, written if it is not there."""
    ckpt = ckpt_dir / "124M"
    if not ckpt.exists():
        t0 = time.perf_counter()
        write_random_checkpoint(ckpt, "124M", seed=0)
        print(f"write 124M random checkpoint          {time.perf_counter() - t0:8.2f} s")
    return ckpt


def ensure_bench_model(conn, kernel: str, ckpt_dir: Path) -> str:
    name = f"{MODEL}_{kernel}"
    if is_model(conn, name):
        print(f"[{kernel}] (model {name} already loaded; drop it to time the load)")
        return name
    res = load_checkpoint(conn, str(bench_checkpoint(ckpt_dir)), name, replace=True, progress=False, kernel=kernel)
    print(f"[{kernel}] load 124M ({res.n_params:,} params)    {res.seconds:8.2f} s")
    return name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--kernel", choices=["vector", "sql", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="skip the 64-token prefill, context 1024 and the batch figures")
    ap.add_argument("--profile", action="store_true", help="where the time goes, per SQL function")
    ap.add_argument("--trace-only", action="store_true", help="only the trace and lens figures")
    ap.add_argument("--batch-only", action="store_true", help="only the batch and scoring figures")
    ap.add_argument("--numpy-only", action="store_true", help="only the table of NumPy against gpt2sql")
    ap.add_argument("--explore-only", action="store_true",
                    help="only the explorer page figures (the demo model and the 124M shape; needs chromium)")
    args = ap.parse_args()
    dsn = gpt2sql.resolve_dsn(args.dsn)
    conn = psycopg.connect(dsn, autocommit=True)
    version = conn.execute("SHOW server_version").fetchone()[0]
    settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                 "('jit', 'shared_buffers', 'max_parallel_workers_per_gather', 'work_mem')").fetchall())
    print(f"# gpt2sql bench  {time.strftime('%Y-%m-%d')}  PostgreSQL {version}  "
          f"{platform.machine()} {os.cpu_count()} cores  python {platform.python_version()}")
    print(f"# server settings: {settings}")

    kernels = ["vector", "sql"] if args.kernel == "both" else [args.kernel]
    numpy_runs = not (args.trace_only or args.batch_only or args.explore_only)
    with tempfile.TemporaryDirectory() as tmp:
        models = {k: ensure_bench_model(conn, k, Path(tmp)) for k in kernels}
        reference = GPT2(bench_checkpoint(Path(tmp))) if numpy_runs else None
    for kernel, m in models.items():
        conn.execute(f"SELECT count(*) FROM {m}.next_token_logits(ARRAY[1])")  # warm up caches and plans
        if numpy_runs:
            print(f"## {kernel} kernel ({m}) against NumPy float32")
            numpy_figures(conn, m, reference, args.quick, goals=kernel == "vector")
            if args.numpy_only:
                continue
        if args.trace_only:
            trace_figures(conn, m)
            continue
        if args.batch_only:
            batch_figures(conn, m)
            continue
        if args.explore_only:
            if kernel == kernels[0]:
                explore_figures(dsn, demo_model(conn), "demo model")
            explore_figures(dsn, m, f"124M shape, {kernel} kernel")
            continue
        print(f"## {kernel} kernel ({m})")
        speed(conn, dsn, m, args.quick)
        if not args.quick:
            batch_figures(conn, m)
        if args.profile:
            profile(conn, m)
    return 0


def fake_cache(conn, m: str, positions: int) -> str:
    """SQL reading a KV cache of every layer holding ``positions`` positions, in the model's kernel's
    layout; made once and kept in a temporary table, so the timed query only reads it back."""
    table = f"pg_temp.cache_{m}_{positions}"
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {table} AS
                     SELECT array_agg({m}.kv_append(NULL, array_fill(0.01::float8, ARRAY[{positions}, c.n_embd]),
                                                    array_fill(0.02::float8, ARRAY[{positions}, c.n_embd]))) AS cache
                       FROM {m}.config AS c, generate_series(1, c.n_layer)""")
    return f"(SELECT cache FROM {table})"


def profile(conn, m: str) -> None:
    """Self time per SQL function (ms) for one new token at context 16 and for a 64-token prefill."""
    cache = fake_cache(conn, m, 15)
    cases = [("one new token, context 16", f"SELECT ({m}.forward_batch(ARRAY[42], ARRAY[1], {cache})).logits[1][1]"),
             ("64-token prefill", f"SELECT ({m}.forward(%s, NULL)).logits[1]")]
    conn.execute("SET track_functions = 'pl'")
    for label, q in cases:
        args = (PROMPT64,) if "%s" in q else ()
        conn.execute(q, args).fetchone()                                   # plans and caches warm
        conn.execute("SELECT pg_stat_force_next_flush()")                  # its counts go out now,
        conn.execute("SELECT pg_stat_reset()")                             # and are reset
        t0 = time.perf_counter()
        conn.execute(q, args).fetchone()
        total = time.perf_counter() - t0
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute("SELECT funcname, calls, self_time FROM pg_stat_user_functions"
                            " WHERE schemaname = %s AND calls > 0 ORDER BY self_time DESC", (m,)).fetchall()
        print(f"  where the time goes: {label}, {total:.2f} s in all (self time per function, ms)")
        for name, calls, ms in rows:
            print(f"    {name:24s} {calls:5d} calls {ms:9.1f} ms")
    conn.execute("RESET track_functions")


def trace_figures(conn, m: str) -> None:
    """trace() of a 13-token prompt, the lenses over it, and the space the trace takes."""
    prompt = "The quick brown fox jumps over the lazy dog and keeps on running"  # 13 tokens
    size = lambda: conn.execute(f"SELECT pg_total_relation_size('{m}.trace_vectors') + "
                                f"pg_total_relation_size('{m}.trace_attention')").fetchone()[0]
    before = size()
    t0 = time.perf_counter()
    tid = conn.execute(f"SELECT {m}.trace(%s)", (prompt,)).fetchone()[0]
    t = time.perf_counter() - t0
    print(f"trace, 13-token prompt (every stage stored) {t:8.2f} s   ({(size() - before) / 2**20:.0f} MB stored)")
    lenses = [("attention_pattern(trace, 5, 3)", f"SELECT count(*) FROM {m}.attention_pattern({tid}, 5, 3)"),
              ("top_predictions(trace, 12, 10)", f"SELECT count(*) FROM {m}.top_predictions({tid}, 12, 10)"),
              ("token_probability(trace, ' the')", f"SELECT count(*) FROM {m}.token_probability({tid}, ' the')"),
              ("logit_lens(trace, 5, pos => 12)", f"SELECT count(*) FROM {m}.logit_lens({tid}, 5, 12)")]
    for label, q in lenses:
        t = best_of(lambda: conn.execute(q).fetchone(), 2)
        print(f"  {label:38s} {t:8.2f} s")
    conn.execute(f"SELECT {m}.drop_trace({tid})")


def demo_model(conn) -> str:
    """The trained demo model, loaded with the sql kernel as `gpt2sql demo` does."""
    if not is_model(conn, "demo"):
        load_checkpoint(conn, str(demo_model_dir()), "demo", replace=True, progress=False, kernel="sql")
    return "demo"


def explore_figures(dsn: str, m: str, label: str) -> None:
    """`gpt2sql explore` of a 6-token prompt: making the page, its size, and opening it in headless
    Chromium (load event; the page's own script: parse the data and build the open sections; then
    every section opened)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from gpt2sql import explore

    prompt = "The module is imported by the"                                          # 6 tokens
    with tempfile.TemporaryDirectory() as tmp, gpt2sql.Client(dsn) as client:
        t0 = time.perf_counter()
        trace = client.model(m).trace(prompt)
        t_trace = time.perf_counter() - t0
        page = explore.write_page(trace, Path(tmp) / "page.html")
        t_page = time.perf_counter() - t0 - t_trace
        size = page.stat().st_size
        options = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1500,1000",
                     f"--user-data-dir={tmp}/profile"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            t0 = time.perf_counter()
            driver.get(page.resolve().as_uri())                    # returns after the load event
            t_load = time.perf_counter() - t0
            ready = driver.execute_script("return window.explorerReady") / 1000
            t0 = time.perf_counter()
            cells = driver.execute_script("document.getElementById('open-all').click(); "
                                          "return document.querySelectorAll('.v').length")
            t_all = time.perf_counter() - t0
        finally:
            driver.quit()
        trace.drop()
    print(f"explore [{label}]: trace {t_trace:.2f} s, page made {t_page:.2f} s, {size / 1e6:.1f} MB; in Chromium: "
          f"opens in {t_load:.2f} s (script {ready:.2f} s), every section opened {t_all:.2f} s ({cells:,} cells)")


BATCH_PROMPTS = ["The quick brown fox", "Hello, my name is", "The database said", "Once upon a time",
                 "In the beginning", "SELECT * FROM", "It was a dark and stormy night", "My favourite colour is"]


def batch_figures(conn, m: str) -> None:
    """8 prompts x 16 new tokens in one generate_batch, against 1 prompt x 16 and against one
    complete() per row of a table; beam search (4 beams x 20 tokens) against greedy; scoring a text."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS bench_posts (id int PRIMARY KEY, body text)")
    conn.execute("TRUNCATE bench_posts")
    for i, p in enumerate(BATCH_PROMPTS, 1):
        conn.execute("INSERT INTO bench_posts VALUES (%s, %s)", (i, p))
    # one prompt and the batch alternate, three times each, and each keeps its best run: the ratio
    # compares runs made under the same conditions (this machine's speed drifts by 10-30% over minutes)
    ones, batches = [], []
    for _ in range(3):
        ones.append(best_of(lambda: conn.execute(f"SELECT count(*) FROM {m}.generate(%s, 16)",
                                                 (BATCH_PROMPTS[0],)).fetchone(), 1))
        batches.append(best_of(lambda: conn.execute(f"SELECT count(*) FROM {m}.generate_batch(%s, 16)",
                                                    (BATCH_PROMPTS,)).fetchone(), 1))
    one, batch = min(ones), min(batches)
    print(f"generate: 1 prompt x 16 new tokens       {one:8.2f} s   (runs: {' '.join(f'{t:.2f}' for t in ones)})")
    print(f"generate_batch: 8 prompts x 16 new tokens {batch:7.2f} s   ({batch / one:.2f}x one prompt; target <= 3x; "
          f"runs: {' '.join(f'{t:.2f}' for t in batches)})")
    # beam search: 4 beams x 20 new tokens against greedy x 20, alternating the same way
    greedy, beams = [], []
    for _ in range(3):
        greedy.append(best_of(lambda: conn.execute(f"SELECT count(*) FROM {m}.generate(%s, 20)",
                                                   (BATCH_PROMPTS[0],)).fetchone(), 1))
        beams.append(best_of(lambda: conn.execute(f"SELECT count(*) FROM {m}.beam_search(%s, num_beams => 4, "
                                                  "max_new_tokens => 20)", (BATCH_PROMPTS[0],)).fetchone(), 1))
    print(f"generate: greedy, 20 new tokens           {min(greedy):8.2f} s")
    print(f"beam_search: 4 beams x 20 new tokens      {min(beams):8.2f} s   ({min(beams) / min(greedy):.2f}x greedy; "
          f"target <= 2.5x; runs: {' '.join(f'{t:.2f}' for t in beams)})")
    t0 = time.perf_counter()
    conn.execute(f"SELECT id, {m}.complete(body, 16) FROM bench_posts").fetchall()
    rows = time.perf_counter() - t0
    print(f"complete() per row, 8 rows x 16 tokens   {rows:8.2f} s   (one batch is {rows / batch:.1f}x faster)")
    for words in (50, 400):
        text = paragraph(words)
        n = len(conn.execute(f"SELECT {m}.tokenize(%s)", (text,)).fetchone()[0])
        t = best_of(lambda: conn.execute(f"SELECT {m}.perplexity(%s)", (text,)).fetchone(), 1)
        print(f"perplexity of a {n:3d}-token text             {t:8.2f} s   ({t / n:.3f} s per token)")


def side_by_side(numpy_fn, sql_fn, runs: int) -> tuple[float, float]:
    """Each side's best time over runs, the two alternating run by run (this machine's speed drifts
    by 10-30% over minutes, so only runs made side by side compare)."""
    times = [(best_of(numpy_fn, 1), best_of(sql_fn, 1)) for _ in range(runs)]
    return min(t for t, _ in times), min(t for _, t in times)


def one_new_token(conn, m: str, reference: GPT2, ctx: int):
    """(NumPy's, gpt2sql's) work for one new token at context ctx: its position after ctx - 1 cached
    ones of constant keys and values (GPT2.filled_cache, fake_cache)."""
    base = reference.filled_cache(ctx - 1)
    q = f"SELECT cardinality(({m}.forward_batch(ARRAY[42], ARRAY[1], {fake_cache(conn, m, ctx - 1)})).logits)"
    return (lambda: reference.forward([[42]], [Cache(list(base.k), list(base.v))]),
            lambda: conn.execute(q).fetchone())


def numpy_figures(conn, m: str, reference: GPT2, quick: bool, goals: bool) -> None:
    """The same work in NumPy float32 and in gpt2sql (side_by_side), and their ratio (and, with goals,
    the ratio the vector kernel aims at; the sql kernel's aim is not to get slower)."""
    logits = np.array([r[0] for r in conn.execute(f"SELECT logit FROM {m}.next_token_logits(%s) ORDER BY token",
                                                  (PROMPT7,))])
    same = float(np.abs(logits - reference.forward([PROMPT7], [Cache()])[0]).max())
    print(f"  the same checkpoint: max |logit difference| {same:.1e} over a 7-token prompt; NumPy {np.__version__} "
          f"on {os.cpu_count()} cores (its BLAS's own threads)")
    cases = []
    for ctx in (16, 256) if quick else (16, 256, 1024):
        cases.append((f"one new token, context {ctx}", *one_new_token(conn, m, reference, ctx),
                      3 if ctx < 1024 else 2, {16: 1.2, 1024: 2}.get(ctx)))
    for n in (7,) if quick else (7, 64):
        toks = PROMPT7 if n == 7 else PROMPT64
        cases.append((f"{n}-token prefill (logits of its last position)",
                      lambda toks=toks: reference.forward([toks], [Cache()]),
                      lambda toks=toks: conn.execute(f"SELECT count(*) FROM {m}.next_token_logits(%s)", (toks,)).fetchone(),
                      3 if n < 64 else 2, 2 if n == 64 else None))
    for words in (50,) if quick else (50, 400):
        text = paragraph(words)
        toks = conn.execute(f"SELECT {m}.tokenize(%s)", (text,)).fetchone()[0]
        cases.append((f"perplexity of a {len(toks)}-token text",
                      lambda toks=toks: reference.perplexity(toks),
                      lambda text=text: conn.execute(f"SELECT {m}.perplexity(%s)", (text,)).fetchone(),
                      2 if words < 400 else 1, 4 if words == 400 else None))
    if not quick:
        prompts = [conn.execute(f"SELECT {m}.tokenize(%s)", (p,)).fetchone()[0] for p in BATCH_PROMPTS]
        cases.append(("generate_batch: 8 prompts x 16 new tokens",
                      lambda: reference.generate(prompts, 16),
                      lambda: conn.execute(f"SELECT count(*) FROM {m}.generate_batch(%s, 16)",
                                           (BATCH_PROMPTS,)).fetchone(), 1, None))
    print(f"  {'work (124M shape)':48s} {'NumPy':>9s} {'gpt2sql':>9s} {'ratio':>7s}  goal")
    for label, numpy_fn, sql_fn, runs, goal in cases:
        numpy_fn()                                                      # warm: first calls allocate
        a, b = side_by_side(numpy_fn, sql_fn, runs)
        print(f"  {label:48s} {a:8.3f}s {b:8.3f}s {b / a:6.1f}x  {f'<= {goal}x' if goal and goals else ''}")


def speed(conn, dsn: str, m: str, quick: bool) -> None:

    shapes = [("768x2304  attn.c_attn", "h.0.attn.c_attn.weight", 768),
              ("768x768   attn.c_proj", "h.0.attn.c_proj.weight", 768),
              ("768x3072  mlp.c_fc", "h.0.mlp.c_fc.weight", 768),
              ("3072x768  mlp.c_proj", "h.0.mlp.c_proj.weight", 3072),
              ("50257x768 lm head (wte)", "wte.weight", 768)]
    for label, weight, n_in in shapes:
        q = f"SELECT cardinality({m}.linear(array_fill(0.01::float8, ARRAY[1, {n_in}]), %s, NULL))"
        t = best_of(lambda: conn.execute(q, (weight,)).fetchone(), 3)
        print(f"matvec {label:28s} {t:8.3f} s")

    prompts = {7: PROMPT7, 8: list(range(1000, 1008)), 64: PROMPT64}
    for n, toks in prompts.items():
        if n == 64 and quick:
            continue
        t = best_of(lambda: conn.execute(f"SELECT count(*) FROM {m}.next_token_logits(%s)", (toks,)).fetchone(),
                    2 if n < 64 else 1)
        print(f"forward pass, {n:2d}-token prompt (prefill)  {t:8.2f} s   ({t / n:.3f} s per prompt token)")

    # one new position at context S: forward_batch(ARRAY[token], ARRAY[1], cache) with a cache of S-1
    # positions, as generate() runs it for each new token;
    # the backend's peak private memory is sampled from /proc when the server runs on this machine
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    for ctx in (16, 256) if quick else (16, 256, 1024):
        q = f"SELECT cardinality(({m}.forward_batch(ARRAY[42], ARRAY[1], {fake_cache(conn, m, ctx - 1)})).logits)"
        peak = PeakPrivateMemory(pid)
        with peak:
            t = best_of(lambda: conn.execute(q).fetchone(), 3 if ctx < 1024 else 1)
        print(f"one new token with KV cache, context {ctx:4d} {t:7.2f} s   (backend peak private memory {peak})")

    with gpt2sql.Client(dsn) as client:
        model = client.model(m)
        prompt = "The quick brown fox jumps over the lazy dog and keeps on running"  # 13 tokens
        stamps = []
        for _ in model.stream_steps(prompt, max_new_tokens=6):
            stamps.append(time.perf_counter())
        per_token = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
        print(f"streamed generation, context ~16         {per_token:8.2f} s/token ({1 / per_token:.2f} tokens/s)")

        text = paragraph(1000)
        model.tokenize(text)
        t = best_of(lambda: model.tokenize(text), 3)
        print(f"tokenize 1,000 words ({len(text):,} chars)      {t:8.2f} s")
        for word, n in (("a", 100000), ("é", 50000)):                   # one long word: the BPE's worst case
            t = best_of(lambda: model.tokenize(word * n), 1)
            print(f"tokenize repeat({word!r}, {n:,})          {t:8.2f} s")


if __name__ == "__main__":
    sys.exit(main())
