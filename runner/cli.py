"""The gpt2sql command line."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from . import __version__
from .db import DatabaseError, connect, psql_executable, resolve_dsn, stop_embedded


def _add_dsn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", default=None,
                   help="PostgreSQL connection string (default: $DATABASE_URL, else the embedded server)")


def cmd_db(args) -> int:
    if args.action == "url":
        print(resolve_dsn(args.dsn))
    elif args.action == "stop":
        print("stopped the embedded server" if stop_embedded() else "the embedded server is not running")
    return 0


def cmd_psql(args) -> int:
    return subprocess.call([psql_executable(), resolve_dsn(args.dsn), *args.psql_args])


def cmd_random_checkpoint(args) -> int:
    from .loader.checkpoint import write_random_checkpoint

    out = write_random_checkpoint(args.outdir, args.preset, args.seed,
                                  prefix="transformer." if args.transformer_prefix else "")
    print(f"wrote a random GPT-2 ({args.preset}, seed {args.seed}) checkpoint to {out}")
    return 0


def cmd_load(args) -> int:
    from .loader.load import load_checkpoint

    def committed(res) -> None:
        if res.note:
            print(f"gpt2sql: {res.note}", file=sys.stderr)
        verb = "replaced" if res.replaced else "loaded"
        print(f"{verb} model {res.name}: {res.n_params:,} parameters in {res.seconds:.1f} s, {res.kernel} kernel",
              flush=True)
        if res.hint:
            print(f"gpt2sql: {res.hint}", file=sys.stderr)
        print("gpt2sql: vacuuming its tables (interrupting this is harmless: the model is committed)",
              file=sys.stderr, flush=True)

    with connect(args.dsn) as conn:
        load_checkpoint(conn, args.source, args.model, replace=args.replace,
                        progress=not args.quiet and sys.stderr.isatty(), kernel=args.kernel, on_committed=committed)
    return 0


def cmd_upgrade(args) -> int:
    from .loader.load import list_models, upgrade_model

    with connect(args.dsn) as conn:
        names = args.model or [m["name"] for m in list_models(conn)]
        if not names:
            print("no models loaded (gpt2sql load SOURCE)")
        for name in names:
            res = upgrade_model(conn, name)
            if not res.upgraded:
                print(f"model {name} is up to date (SQL {res.new_version})")
                continue
            print(f"upgraded model {name}: SQL {res.old_version or 'of gpt2sql 0.1'} -> {res.new_version}, weights kept"
                  + (f"; {res.traces_dropped} trace(s) dropped (their tables were re-created)" if res.traces_dropped else ""))
    return 0


def cmd_models(args) -> int:
    from .loader.load import list_models

    with connect(args.dsn) as conn:
        models = list_models(conn)
    if not models:
        print("no models loaded (gpt2sql load SOURCE)")
        return 0
    print(f"{'name':20} {'layers':>6} {'heads':>5} {'embd':>5} {'params':>14} {'size':>9}  {'kernel':6}  loaded")
    for m in models:
        print(f"{m['name']:20} {m['n_layer']:>6} {m['n_head']:>5} {m['n_embd']:>5} {m['n_params']:>14,} "
              f"{m['bytes'] / 2**20:>7.0f}MB  {m['kernel']:6}  {m['loaded_at']:%Y-%m-%d %H:%M}"
              + (f"  (another gpt2sql's SQL: gpt2sql upgrade --model {m['name']})" if m["needs_upgrade"] else ""))
    return 0


def cmd_drop(args) -> int:
    from .loader.load import drop_model

    with connect(args.dsn) as conn:
        drop_model(conn, args.name)
    print(f"dropped model {args.name}")
    return 0


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.n, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                seed=args.seed, stop=args.stop, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                no_repeat_ngram_size=args.no_repeat_ngram_size, min_new_tokens=args.min_new_tokens,
                num_beams=args.num_beams, length_penalty=args.length_penalty,
                early_stopping={"true": True, "false": False}.get(args.early_stopping, args.early_stopping))


def _generate_logprobs(model, args) -> int:
    """The continuation, then a table: each token's log-probability and the likeliest alternatives."""
    steps = model.steps(args.prompt, **_sampling(args), logprobs=args.logprobs)
    print(args.prompt + "".join(s.piece for s in steps))
    pieces = dict(model.query("SELECT v.token, ({m}.decode_utf8(v.bytes, true)).txt FROM {m}.vocab AS v "
                              "WHERE v.token = ANY(%s)", ([t for s in steps for t, _ in s.top] + [s.token for s in steps],)))
    print(f"{'step':>4}  {'token':>6}  {'piece':16} {'logprob':>9}  the {args.logprobs} likeliest (logprob)")
    for s in steps:
        alternatives = ", ".join(f"{pieces[t]!r} {lp:.3f}" for t, lp in s.top)
        print(f"{s.step:>4}  {s.token:>6}  {pieces[s.token]!r:16} {s.logprob:>9.4f}  {alternatives}")
    return 0


def cmd_generate(args) -> int:
    import time

    from .client import Client

    if (args.prompt is None) == (args.file is None):
        raise SystemExit("gpt2sql generate: give a PROMPT or --file FILE (one prompt per line), not both")
    if args.file is not None:
        if args.logprobs or args.num_return_sequences > 1:
            raise SystemExit("gpt2sql generate: --file prints one continuation per prompt; it does not go with "
                             + ("--logprobs" if args.logprobs else "--num-return-sequences"))
        return _generate_file(args)
    if args.num_beams > 1:
        return _generate_beams(args)
    if args.num_return_sequences > 1:
        return _generate_samples(args)
    with Client(args.dsn) as client:
        model = client.model(args.model)
        if args.logprobs:
            return _generate_logprobs(model, args)
        start, n, finish = time.perf_counter(), 0, None
        try:
            for step in model.stream_steps(args.prompt, **_sampling(args)):
                if n == 0:
                    print(args.prompt, end="", flush=True)  # once the options have been accepted
                print(step.piece, end="", flush=True)
                n, finish = step.step, step.finish
        finally:
            seconds = time.perf_counter() - start
            if n:
                print()
                why = {"length": "max tokens", "endoftext": "<|endoftext|>", "stop": "stop string",
                       "context_full": "context full"}.get(finish or "", "interrupted")
                print(f"[{n} tokens in {seconds:.1f} s, {n / seconds:.2f} tokens/s; stopped: {why}]", file=sys.stderr)
    return 0


def _generate_beams(args) -> int:
    """Beam search (SQL beam_search): prompt + each returned hypothesis, best first, one line each
    when there are several, then its score."""
    from .client import Client

    sampling = [flag for flag, value, off in (("--temperature", args.temperature, 0.0), ("--top-k", args.top_k, None),
                                             ("--top-p", args.top_p, None), ("--seed", args.seed, None),
                                             ("--stop", args.stop, None), ("--min-p", args.min_p, None),
                                             ("--logprobs", args.logprobs, 0))
                if value != off]
    if sampling:
        raise SystemExit(f"gpt2sql generate: beam search (--num-beams) is deterministic; "
                         f"it does not go with {', '.join(sampling)}")
    options = {k: v for k, v in _sampling(args).items() if k not in ("temperature", "top_k", "top_p", "seed", "stop",
                                                                      "min_p")}
    with Client(args.dsn) as client:
        hyps = client.model(args.model).beam_search(args.prompt, num_return_sequences=args.num_return_sequences,
                                                    **options)
    for h in hyps:
        print(args.prompt + h.text if len(hyps) == 1 else json.dumps(args.prompt + h.text, ensure_ascii=False))
        print(f"[{h.rank}: {len(h.tokens)} tokens, score {h.score:.4f}, stopped: "
              f"{'<|endoftext|>' if h.finish == 'endoftext' else h.finish.replace('_', ' ')}]", file=sys.stderr)
    return 0


def _generate_samples(args) -> int:
    """Several samples of one prompt (SQL generate's num_return_sequences): prompt + each, one JSON
    string per line."""
    from .client import Client

    if args.file is not None or args.logprobs:
        raise SystemExit("gpt2sql generate: --num-return-sequences samples one prompt; it does not go with "
                         + ("--file" if args.file is not None else "--logprobs"))
    with Client(args.dsn) as client:
        for text in client.model(args.model).samples(args.prompt, args.num_return_sequences, **_sampling(args)):
            print(json.dumps(args.prompt + text, ensure_ascii=False))
    return 0


def _read_prompts(path: str) -> list[str]:
    """One prompt per line of the file ("-" = standard input), lines ending in LF or CR LF (any
    other control character stays in its prompt); a leading byte-order mark is dropped and blank
    lines are skipped."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"gpt2sql generate: cannot read prompts from {path}: {exc}")
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise SystemExit(f"gpt2sql generate: {path} holds no prompts (one per line)")
    return prompts


def _generate_file(args) -> int:
    """Every prompt of the file in one batch (SQL generate_batch); prints prompt + continuation per line."""
    import time

    from .client import Client

    prompts = _read_prompts(args.file)
    with Client(args.dsn) as client:
        model = client.model(args.model)
        start, out, tokens = time.perf_counter(), [""] * len(prompts), 0
        for s in model.stream_batch(prompts, **_sampling(args)):
            out[s.prompt_index - 1] += s.piece
            tokens += 1
            if sys.stderr.isatty():
                print(f"\r[step {s.step}: {tokens} tokens]", end="", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - start
        print(file=sys.stderr)
        for prompt, continuation in zip(prompts, out):
            print(json.dumps(prompt + continuation, ensure_ascii=False) if args.json else
                  (prompt + continuation).replace("\n", " "))
        print(f"[{len(prompts)} prompts, {tokens} tokens in {seconds:.1f} s, {tokens / seconds:.2f} tokens/s]",
              file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    import math

    from .client import Client

    with Client(args.dsn) as client:
        rows = client.model(args.model).score(args.text)
        print(f"{'pos':>5}  {'token':>6}  {'piece':20} {'logprob':>9}  {'prob':>8}  {'rank':>6}")
        for r in rows:
            print(f"{r.position:>5}  {r.token:>6}  {r.piece!r:20} {r.logprob:>9.4f}  {math.exp(r.logprob):>8.4f}  "
                  f"{r.rank:>6}")
        mean = sum(r.logprob for r in rows) / len(rows)
        print(f"{len(rows)} tokens, mean logprob {mean:.4f}, perplexity {math.exp(-mean):.2f}")
    return 0


def cmd_tokenize(args) -> int:
    from .client import Client

    with Client(args.dsn) as client:
        print(client.model(args.model).tokenize(args.text))
    return 0


def _is_shipped_demo(conn, folder) -> bool:
    """Whether the loaded model 'demo' is the shipped one (and not, say, an older demo model):
    its final layer norm's gains equal the checkpoint's."""
    import numpy as np
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        want = f.get_tensor("ln_f.weight").astype(np.float32)
    got = conn.execute("SELECT value FROM demo.vectors WHERE name = 'ln_f.weight'").fetchone()
    return got is not None and len(got[0]) == len(want) and np.array_equal(np.array(got[0], dtype=np.float32), want)


DEMO_PROMPT = "The Python interpreter"
DEMO_TOKENS = 30


def cmd_demo(args) -> int:
    """Everything on a fresh machine: the small trained GPT-2 shipped in the package, loaded and generating."""
    from .client import Client
    from .loader.checkpoint import demo_model_dir
    from .loader.load import is_model, load_checkpoint, needs_upgrade, upgrade_model
    from .loader.source import read_config

    folder = demo_model_dir()
    shipped = read_config(folder / "config.json")
    with Client(args.dsn) as client:
        conn = client.connection
        present = is_model(conn, "demo")
        if not (present and _is_shipped_demo(conn, folder)):
            print(f"loading the demo model (a small GPT-2 trained for gpt2sql, not OpenAI's; see {folder / 'README.md'})"
                  f"\n  {shipped.n_layer} layers, {shipped.n_head} heads, {shipped.n_embd} wide, "
                  f"{shipped.n_positions} positions, as model 'demo' ...")
            # the sql kernel: exact float64 products, the same numbers as docs/walkthrough.md
            load_checkpoint(conn, str(folder), "demo", replace=present, progress=False, kernel="sql")
        elif needs_upgrade(conn, "demo"):
            print("the demo model was loaded by another gpt2sql: re-creating its SQL functions (gpt2sql upgrade)")
            upgrade_model(conn, "demo")
        model = client.model("demo")
        prompt = DEMO_PROMPT
        print(f"tokens of {prompt!r}: {model.tokenize(prompt)}")
        print("most likely next tokens:")
        for p in model.next_token_probs(prompt, 5):
            print(f"  {p.rank}. {p.piece!r:>16}  p={p.probability:.4f}")
        print("greedy continuation, to the end of the line:")
        print(prompt, end="", flush=True)
        for piece in model.stream(prompt, max_new_tokens=DEMO_TOKENS, stop="\n"):
            print(piece, end="", flush=True)
        print()
        print(f"the same from psql:  SELECT demo.complete('{prompt}', {DEMO_TOKENS}, stop => E'\\n');")
        print(f"look inside:         gpt2sql trace '{prompt}' --model demo   (then docs/walkthrough.md)")
        print("OpenAI's GPT-2, where the Hugging Face hub is reachable:  gpt2sql load gpt2")
    return 0


def _trace(model, args):
    if args.trace is not None:
        return model.get_trace(args.trace)
    return model.trace(args.prompt)


def cmd_trace(args) -> int:
    from .client import Client

    with Client(args.dsn) as client:
        model = client.model(args.model)
        trace = model.trace(args.prompt, keep=args.keep)
        m, t = model.quoted(), trace.id
        print(f"trace {t} of model {model.name}: {len(trace.tokens)} tokens, kept until {trace.expires_at:%Y-%m-%d %H:%M %Z}")
        print("  " + " ".join(f"{i}:{p!r}" for i, p in enumerate(trace.pieces)))
        print("most likely next tokens:")
        for p in trace.top_predictions(-1, 5):
            print(f"  {p.rank}. {p.piece!r:>16}  p={p.probability:.6f}")
        print(f"""look inside (gpt2sql psql), e.g.:
  SELECT * FROM {m}.trace_tokens WHERE trace_id = {t};
  SELECT * FROM {m}.attention_pattern({t}, 0, 0);
  SELECT * FROM {m}.logit_lens({t});
  gpt2sql show attention --model {shlex.quote(model.name)} --trace {t} -o attention.html    (every head; .png needs the [show] extra)
  gpt2sql explore --model {shlex.quote(model.name)} --trace {t} -o page.html                 (every value, its formula and SQL)""")
    return 0


def cmd_show(args) -> int:
    from . import show
    from .client import Client

    default = f"attention-L{args.layer}-H{args.head}.png" if args.picture == "attention" else "logit-lens.png"
    out = show.check_output(args.picture, args.output or default)      # before any work: a bad name costs no trace
    with Client(args.dsn) as client:
        model = client.model(args.model)
        if args.picture == "attention":                                 # before any work, as the file name
            show.check_head(model.config(), args.layer, args.head)
        trace = _trace(model, args)
        if args.picture == "logit-lens":
            written = show.logit_lens_image(trace, out)
        elif out.suffix.lower() == ".html":
            written = show.attention_html(trace, out)
        else:
            written = show.attention_image(trace, args.layer, args.head, out)
    print(f"wrote {written} (trace {trace.id})")
    return 0


def cmd_explore(args) -> int:
    from . import explore
    from .client import Client

    explore.check_top_k(args.top_k)
    if args.serve:
        return _serve(args)
    if args.output is None:
        raise ValueError("explore writes a page: give its file with -o PAGE.html (or use --serve for a live page)")
    out = explore.check_output(args.output)                 # before any work: a bad name costs no trace
    pairs = explore.parse_ablate(args.ablate)
    with Client(args.dsn) as client:
        model = client.model(args.model)
        if pairs:                                           # checked before anything is traced
            model.query("SELECT {m}.check_ablate(%s::int[])", ([list(p) for p in pairs],))
        trace = model.get_trace(args.trace) if args.trace is not None else model.trace(args.prompt)
        written = explore.write_page(trace, out, ablate=pairs, k=args.top_k)
    size = written.stat().st_size
    print(f"wrote {written} ({size / 1e6:.1f} MB): trace {trace.id} of model {model.name}"
          + (f", beside an ablated twin ({args.ablate})" if pairs else ""))
    return 0


def _serve(args) -> int:
    from . import serve

    if args.output is not None or args.ablate is not None:
        raise ValueError("--serve makes a live page: choose heads to ablate in it, and drop -o")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}")
    serve.serve(resolve_dsn(args.dsn), args.model, port=args.port, reader_dsn=args.reader_dsn,
                reader_role=args.reader_role, k=args.top_k, on_ready=lambda line: print(line, flush=True))
    return 0


def cmd_grant_reader(args) -> int:
    from .loader.load import grant_reader

    with connect(args.dsn) as conn:
        names = grant_reader(conn, args.role, args.model or None)
    print(f"role {args.role} may now read and generate with: {', '.join(names) or '(no models loaded)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2sql", description="GPT-2 running inside PostgreSQL")
    parser.add_argument("--version", action="version", version=f"gpt2sql {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="the database in use")
    p.add_argument("action", choices=["url", "stop"], help="url: print the DSN; stop: stop the embedded server")
    _add_dsn(p)
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("psql", help="open psql on the database")
    _add_dsn(p)
    p.add_argument("psql_args", nargs=argparse.REMAINDER, help="arguments for psql, e.g. -c 'SELECT ...'")
    p.set_defaults(func=cmd_psql)

    p = sub.add_parser("random-checkpoint", help="write a GPT-2 checkpoint with seeded random weights")
    p.add_argument("outdir")
    p.add_argument("--preset", choices=["tiny", "124M", "355M", "774M", "1558M"], default="tiny",
                   help="the shape: tiny, or gpt2's (124M), gpt2-medium's (355M), gpt2-large's (774M), gpt2-xl's (1558M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transformer-prefix", action="store_true",
                   help="name tensors transformer.h.0... as newer Hugging Face exports do")
    p.set_defaults(func=cmd_random_checkpoint)

    p = sub.add_parser("load", help="load a GPT-2 checkpoint (folder or Hugging Face id) into the database")
    p.add_argument("source", help="folder with config.json, model.safetensors, vocab.json, merges.txt; or gpt2, gpt2-medium, ...")
    p.add_argument("--model", help="model (schema) name; default from the source")
    p.add_argument("--replace", action="store_true", help="replace a loaded model of the same name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--kernel", choices=["auto", "vector", "sql"], default="auto",
                   help="how matrix products are computed: vector = pgvector's inner product (fast), sql = plain "
                        "SQL on any PostgreSQL; auto (default) = vector where the pgvector extension is installed "
                        "or can be created, else sql")
    _add_dsn(p)
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("generate", help="generate text, streaming it as it comes (or a file of prompts at once)")
    p.add_argument("prompt", nargs="?")
    p.add_argument("--file", help="one prompt per line ('-' = stdin): all generated together in one batch, "
                                   "printed as prompt + continuation, one line each")
    p.add_argument("--json", action="store_true", help="with --file: print each line as a JSON string")
    p.add_argument("--model", default="gpt2", help="model name (default gpt2)")
    p.add_argument("-n", "--max-new-tokens", dest="n", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=float, default=None, help="in [-1, 1]; same seed, same tokens")
    p.add_argument("--stop", default=None, help="stop when this text appears")
    p.add_argument("--min-p", type=float, default=None,
                   help="sample among tokens at least this fraction as likely as the likeliest, in [0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 makes tokens already in the text less likely (transformers' rule; 1 = off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0,
                   help="never repeat an n-gram of this size (0 = off)")
    p.add_argument("--min-new-tokens", type=int, default=0, help="no <|endoftext|> before this many new tokens")
    p.add_argument("--logprobs", type=int, default=0, metavar="N",
                   help="after the text, each token's log-probability and the N likeliest alternatives (1..100)")
    p.add_argument("--num-beams", type=int, default=1,
                   help="beam search with this many beams (1..16; 1 = greedy): the best hypothesis is printed "
                        "(with --file, each prompt's)")
    p.add_argument("--num-return-sequences", type=int, default=1,
                   help="print this many answers, one JSON string per line: with --num-beams the best hypotheses, "
                        "best first; with --temperature > 0 samples, each from its own seeded stream")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="with --num-beams: a hypothesis scores its log-probability / length ** this (default 1)")
    p.add_argument("--early-stopping", choices=["true", "false", "never"], default="false",
                   help="with --num-beams: when the search stops, as transformers defines it (default false)")
    _add_dsn(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("score", help="how likely a text is: log-probability and rank of each token, perplexity")
    p.add_argument("text")
    p.add_argument("--model", default="gpt2")
    _add_dsn(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("tokenize", help="token ids of a text (computed in SQL)")
    p.add_argument("text")
    p.add_argument("--model", default="gpt2")
    _add_dsn(p)
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("demo", help="load the small trained GPT-2 shipped with gpt2sql and generate (no download)")
    _add_dsn(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("trace", help="one forward pass whose every intermediate value is kept, to query")
    p.add_argument("prompt")
    p.add_argument("--model", default="gpt2")
    p.add_argument("--keep", default=None, help="how long to keep it, as a PostgreSQL interval (default '1 day')")
    _add_dsn(p)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("show", help="draw a trace: attention heatmaps (PNG, SVG, HTML) or the logit lens")
    p.add_argument("picture", choices=["attention", "logit-lens"])
    p.add_argument("--model", default="gpt2")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trace", type=int, help="a trace id (from gpt2sql trace or SELECT MODEL.trace(...))")
    which.add_argument("--prompt", help="trace this prompt first")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--head", type=int, default=0)
    p.add_argument("-o", "--output", help="file to write: .png or .svg; for attention also .html (every head, "
                                          "hover for values); default attention-L0-H0.png / logit-lens.png")
    _add_dsn(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("explore", help="one self-contained HTML page with every value of a forward pass, "
                                       "its formula and the SQL that recomputes it")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("prompt", nargs="?", help="trace this prompt")
    which.add_argument("--trace", type=int, help="an existing trace id")
    which.add_argument("--serve", action="store_true",
                       help="a live page instead: type prompts, ablate heads, step generation, run the SQL "
                            "(a local web server on 127.0.0.1; its URL carries a token)")
    p.add_argument("--model", default="gpt2")
    p.add_argument("--ablate", help="what-if: layer.head pairs whose output is zeroed, e.g. 0.1,1.3; "
                                    "the page shows the changed model beside the original")
    p.add_argument("--top-k", type=int, default=10, help="next-token predictions shown per position (default 10)")
    p.add_argument("-o", "--output", help="the page to write (.html); required unless --serve")
    p.add_argument("--port", type=int, default=8765, help="with --serve: the port on 127.0.0.1 (0: any free one)")
    p.add_argument("--reader-role", default="gpt2sql_explorer",
                   help="with --serve: the login role the learner's SQL runs as, created with only the "
                        "reader grants if missing (default gpt2sql_explorer)")
    p.add_argument("--reader-dsn", help="with --serve: connect as this role for the learner's SQL instead "
                                        "(it needs the reader grants: gpt2sql grant-reader)")
    _add_dsn(p)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("grant-reader", help="let a role generate, tokenize and read traces, but change nothing")
    p.add_argument("role")
    p.add_argument("--model", action="append", help="a model to grant (repeatable; default: all loaded)")
    _add_dsn(p)
    p.set_defaults(func=cmd_grant_reader)

    p = sub.add_parser("upgrade", help="re-create loaded models' SQL functions for this gpt2sql, keeping their weights")
    p.add_argument("--model", action="append", help="the model to upgrade (repeatable); default: every loaded model")
    _add_dsn(p)
    p.set_defaults(func=cmd_upgrade)

    p = sub.add_parser("models", help="list loaded models")
    _add_dsn(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("drop", help="remove a loaded model")
    p.add_argument("name")
    _add_dsn(p)
    p.set_defaults(func=cmd_drop)
    return parser


def _psql_args(argv: list[str]) -> argparse.Namespace:
    """``gpt2sql psql [--dsn DSN] ARGS...``: everything after the optional --dsn goes to psql as is."""
    dsn, rest = None, list(argv)
    if rest and rest[0] == "--dsn" and len(rest) > 1:
        dsn, rest = rest[1], rest[2:]
    elif rest and rest[0].startswith("--dsn="):
        dsn, rest = rest[0].split("=", 1)[1], rest[1:]
    if rest and rest[0] == "--":            # gpt2sql psql -- -X -f file: the rest is psql's
        rest = rest[1:]
    return argparse.Namespace(command="psql", dsn=dsn, psql_args=rest, func=cmd_psql)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "psql":
        args = _psql_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    import psycopg

    from .loader.load import LoadError
    from .loader.source import CheckpointError

    try:
        return args.func(args) or 0
    # LookupError: no such model (ModelNotFound) or trace; ImportError: matplotlib missing for show
    except (DatabaseError, LoadError, CheckpointError, ValueError, LookupError, ImportError) as exc:
        print(f"gpt2sql: error: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        message = (exc.diag.message_primary or str(exc)).removeprefix("gpt2sql: ")
        print(f"gpt2sql: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpt2sql: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
