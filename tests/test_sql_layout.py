"""What sql/ promises a reader: every query written by a function (where a query's shape depends on
the model or the call) is the example its header comment shows; both kernels have the same files;
no comment carries a timing (measurements live in docs/performance.md)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

SQL = Path(__file__).resolve().parent.parent / "sql"


def header_example(path: Path, function: str) -> str:
    """The first run of '--   ' lines in the comment block right above CREATE FUNCTION <function>,
    as one line with its white space folded."""
    lines = path.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"CREATE FUNCTION {function}("))
    start = at
    while start > 0 and lines[start - 1].startswith("--"):
        start -= 1
    block = lines[start:at]
    first = next(i for i, line in enumerate(block) if line.startswith("--   "))
    run = []
    for line in block[first:]:
        if not line.startswith("--   "):
            break
        run.append(line[5:])
    return " ".join(" ".join(run).split())


def folded(text: str) -> str:
    return " ".join(text.split())


WRITERS = [  # (kernel, file, function, call)
    ("sql", "kernels/sql/21_linear.sql", "input_chunks_query", "input_chunks_query(chunk => 2)"),
    ("sql", "kernels/sql/21_linear.sql", "linear_rows_query", "linear_rows_query(chunk => 2)"),
    ("sql", "kernels/sql/21_linear.sql", "embedding_rows_query", "embedding_rows_query(chunk => 2)"),
    ("vector", "kernels/vector/21_linear.sql", "product_query",
     "product_query(n => 2, n_chunks => 1, has_bias => true, has_residual => false, gelu => false, result => 'floats')"),
]


@pytest.mark.parametrize("kernel, file, function, call", WRITERS, ids=[w[2] for w in WRITERS])
def test_a_written_query_is_the_example_in_its_header(tiny, kernel, file, function, call):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute(f"SELECT kernel FROM {model}.config").fetchone()[0] != kernel:  # the other kernel's
            assert conn.execute("SELECT to_regproc(%s)", (f"{model}.{function}",)).fetchone()[0] is None
            return
        got = conn.execute(f"SELECT {model}.{call}").fetchone()[0]
    assert folded(got) == header_example(SQL / file, function)


def test_attention_query_holds_the_fragments_its_header_shows(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute(f"SELECT kernel FROM {model}.config").fetchone()[0] != "sql":          # the other kernel's
            assert conn.execute("SELECT to_regproc(%s)", (f"{model}.attention_query",)).fetchone()[0] is None
            return
        got = folded(conn.execute(f"SELECT {model}.attention_query(d => 2, n_head => 4)").fetchone()[0])
    fragments = re.findall(r"^--   \w+: +(.*)$", (SQL / "kernels/sql/22_attention.sql").read_text(), re.M)
    fragments[0] += " " + re.search(r"^--             (FROM generate_series.*)$",
                                    (SQL / "kernels/sql/22_attention.sql").read_text(), re.M).group(1)
    assert len(fragments) == 3
    for fragment in fragments:
        assert folded(fragment) in got


def test_both_kernels_have_the_same_files():
    names = {k: sorted(p.name for p in (SQL / "kernels" / k).glob("*.sql")) for k in ("sql", "vector")}
    assert names["sql"] == names["vector"]


TIMING = re.compile(r"\d(\.\d+)? ?(ms|s|µs|ns)\b|\d+(\.\d+)?x (faster|slower)|\d+(\.\d+)? -> \d")


def test_no_comment_in_sql_carries_a_timing():
    found = []
    for path in sorted(SQL.rglob("*.sql")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            comment = line.split("--", 1)[1] if "--" in line else ""
            if TIMING.search(comment):
                found.append(f"{path.relative_to(SQL)}:{n}: {line.strip()}")
    assert found == []


def test_every_function_table_and_view_is_described_for_psql(tiny):
    """The loader gives each its header comment as a COMMENT, so \\df+, \\dt+ and \\dv+ describe them."""
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        functions = conn.execute("SELECT p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc') FROM pg_proc AS p"
                                 " WHERE p.pronamespace = %s::regnamespace", (model,)).fetchall()
        relations = conn.execute("SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class AS c"
                                 " WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p', 'v')"
                                 " AND NOT c.relispartition", (model,)).fetchall()
        generate = conn.execute("SELECT obj_description(%s::regprocedure, 'pg_proc')",
                                (f"{model}.generate(text, int, float8, int, float8, float8, text, float8, float8, int, int, int, int, int, float8, text)",)).fetchone()[0]
    assert len(functions) > 50 and [f for f, d in functions if not d] == []
    assert {r for r, _ in relations} >= {"config", "matrices", "traces", "trace_values"}
    assert [r for r, d in relations if not d] == []
    assert generate.startswith("prompt -> (step) -> token, piece, finish")


# what people call: each one's description names every argument it takes
USER_API = ["generate", "generate_batch", "complete", "next_token_probs", "score", "perplexity", "tokenize",
            "tokenize_trace", "detokenize", "next_token_logits", "trace", "drop_trace", "drop_traces",
            "attention_pattern", "top_predictions", "token_probability", "logit_lens", "compare_traces",
            "compare_residuals"]


def test_the_functions_people_call_describe_every_argument(tiny):
    dsn, model = tiny
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT p.proname, p.proargnames, p.proargmodes, obj_description(p.oid, 'pg_proc') "
                            "  FROM pg_proc AS p WHERE p.pronamespace = %s::regnamespace AND p.proname = ANY(%s)",
                            (model, USER_API)).fetchall()
    assert {r[0] for r in rows} == set(USER_API)
    missing = []
    for name, args, modes, text in rows:
        inputs = [a for a, m in zip(args or [], modes or ["i"] * len(args or [])) if m in ("i", "b", "v")]
        missing += [f"{name}: {a}" for a in inputs if not re.search(rf"\b{re.escape(a)}\b", text)]
    assert missing == []


def test_the_sql_reference_is_up_to_date():
    """docs/sql.md is generated from the same comments the loader stores (docs/make_sql_reference.py)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(SQL.parent / "docs" / "make_sql_reference.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
