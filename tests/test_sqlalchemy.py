"""gpt2sql.sqlalchemy with real SQLAlchemy on a real table: each row's completion equals its own
generate(), ranking by perplexity agrees with NumPy, table-valued functions have their columns;
Client accepts an Engine or an SQLAlchemy URL; the ORM example of docs/database.md runs as printed."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

import gpt2sql
import reference_gpt2 as ref
from conftest import ROOT, ensure_model, kernel_of
from gpt2sql.sqlalchemy import functions
from reference_tokenizer import encode, encoding

BODIES = ["The database said", "Hello, my name is", "Zebra crossing", "SELECT * FROM posts;", "A"]


def reference_perplexity(text, cfg, params) -> float:
    tokens = [50256] + encode(text)
    logits = ref.forward(tokens, cfg, params)[:-1]                          # [T, V]
    z = logits - logits.max(-1, keepdims=True)
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return math.exp(-np.mean([lp[i, t] for i, t in enumerate(tokens[1:])]))


def sa_url(dsn: str) -> sa.engine.URL:
    return sa.engine.make_url(dsn).set(drivername="postgresql+psycopg")


@pytest.fixture()
def posts(tiny):
    dsn, _ = tiny
    engine = sa.create_engine(sa_url(dsn))
    meta = sa.MetaData()
    table = sa.Table("sa_posts", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as c:
        c.execute(sa.insert(table), [{"id": i, "body": b} for i, b in enumerate(BODIES, 1)])
    yield engine, table
    meta.drop_all(engine)
    engine.dispose()


def test_complete_per_row_and_rank_by_perplexity(tiny, posts, tiny_ckpt):
    dsn, model = tiny
    engine, table = posts
    cfg, params = ref.load(tiny_ckpt)
    f = functions(model)
    with engine.connect() as c:
        completed = c.execute(sa.select(table.c.id, f.complete(table.c.body, 5)).order_by(table.c.id)).all()
        ranked = c.execute(sa.select(table.c.id).order_by(f.perplexity(table.c.body), table.c.id)).scalars().all()
        perplexities = dict(c.execute(sa.select(table.c.id, f.perplexity(table.c.body))).all())
    with psycopg.connect(dsn, autocommit=True) as conn:
        own = [conn.execute(f"SELECT {model}.complete(%s, 5)", (b,)).fetchone()[0] for b in BODIES]
    assert [t for _, t in completed] == own
    want = {i: reference_perplexity(b, cfg, params) for i, b in enumerate(BODIES, 1)}
    assert ranked == sorted(want, key=lambda i: (want[i], i))
    rel = 1e-6 if kernel_of(dsn, model) == "sql" else 1e-5
    assert all(abs(perplexities[i] - want[i]) / want[i] <= rel for i in want)


def test_table_valued_functions_and_types(tiny, posts):
    dsn, model = tiny
    engine, table = posts
    f = functions(model)
    g = f.generate("Hello, my name is", 4)
    n = f.next_token_probs("Hello", 3)
    s = f.score("Hello world")
    every = sa.select(sa.func.array_agg(aggregate_order_by(table.c.body, table.c.id))).scalar_subquery()
    b = f.generate_batch(every, 2)
    with engine.connect() as c:
        steps = c.execute(sa.select(g.c.step, g.c.token, g.c.piece, g.c.finish).order_by(g.c.step)).all()
        probs = c.execute(sa.select(n.c.rank, n.c.probability).order_by(n.c.rank)).all()
        scored = c.execute(sa.select(s.c.position, s.c.token, s.c.logprob)).all()
        batch = c.execute(sa.select(b.c.prompt_index, b.c.step, b.c.token).order_by(b.c.prompt_index, b.c.step)).all()
        toks, text = c.execute(sa.select(f.tokenize("Hello world"), f.detokenize([15496, 995]))).one()
    with psycopg.connect(dsn, autocommit=True) as conn:
        want = conn.execute(f"SELECT step, token, piece, finish FROM {model}.generate('Hello, my name is', 4)").fetchall()
        own = [[r[0] for r in conn.execute(f"SELECT token FROM {model}.generate(%s, 2)", (body,))] for body in BODIES]
    assert [tuple(r) for r in steps] == want
    assert [r.rank for r in probs] == [1, 2, 3] and probs[0].probability >= probs[2].probability
    assert [r.position for r in scored] == [1, 2] and [r.token for r in scored] == [15496, 995]
    assert [[r.token for r in batch if r.prompt_index == i] for i in range(1, 6)] == own
    assert toks == [15496, 995] and text == "Hello world"
    assert isinstance(f.perplexity("x").type, sa.Float) and isinstance(f.tokenize("x").type, sa.ARRAY)


def test_generation_options_by_name(tiny, posts, tiny_ckpt):
    """The options after stop go by name: beam search's hypotheses (sample = rank) and complete with
    beams equal the NumPy reference's; an option generate does not take is refused."""
    dsn, model = tiny
    engine, _ = posts
    cfg, params = ref.load(tiny_ckpt)
    want = ref.beam_search(encode("Hello, my name is"), 4, cfg, params, num_beams=3, early_stopping=True,
                           num_return_sequences=2)
    f = functions(model)
    g = f.generate("Hello, my name is", 4, num_beams=3, early_stopping=True, num_return_sequences=2,
                   repetition_penalty=1.0)
    with engine.connect() as c:
        rows = c.execute(sa.select(g.c.sample, g.c.token).order_by(g.c.sample, g.c.step)).all()
        completed = c.execute(sa.select(f.complete("Hello, my name is", 4, num_beams=3, early_stopping=True))).scalar()
    assert [[t for s, t in rows if s == k] for k in (1, 2)] == [tokens for tokens, _ in want]
    assert completed == "Hello, my name is" + encoding().decode([t for t in want[0][0] if t != ref.EOS])
    with pytest.raises(TypeError, match=r"complete\(\) takes no logprobs"):
        f.complete("x", 1, logprobs=3)


def test_schema_is_quoted_and_checked():
    from sqlalchemy.dialects import postgresql

    sql = str(sa.select(functions("order").complete("x", 1)).compile(dialect=postgresql.dialect()))
    assert '"order".complete(' in sql
    with pytest.raises(Exception, match="bad model name"):
        functions('x"; DROP TABLE posts; --')
    with pytest.raises(TypeError, match="model name or a gpt2sql Model"):
        functions(42)


def test_client_accepts_engine_and_sqlalchemy_url(main_dsn, tiny_ckpt):
    model = ensure_model(main_dsn, tiny_ckpt, "tiny")
    url = sa_url(main_dsn)
    engine = sa.create_engine(url)
    expected = gpt2sql.Client(main_dsn).model(model).generate("Hi", max_new_tokens=3)
    for how in (engine, url, url.render_as_string(hide_password=False)):
        with gpt2sql.Client(how) as client:
            assert client.model(model).generate("Hi", max_new_tokens=3) == expected
    with gpt2sql.Client(main_dsn) as client:
        assert functions(client.model(model)).schema == model
    with pytest.raises(gpt2sql.DatabaseError, match="gpt2sql needs PostgreSQL"):
        gpt2sql.Client(sa.engine.make_url("sqlite:///x.db"))
    with pytest.raises(TypeError, match="dsn must be"):
        gpt2sql.Client(3.5)
    engine.dispose()


def docs_orm_example() -> str:
    text = (ROOT / "docs" / "database.md").read_text()
    m = re.search(r"<!-- orm-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/database.md has no ORM example"
    return m.group(1)


def test_the_docs_orm_example_runs(main_dsn, tiny_ckpt, tmp_path):
    model = ensure_model(main_dsn, tiny_ckpt, "tiny")
    cfg, params = ref.load(tiny_ckpt)
    code = docs_orm_example()
    code, n = re.subn(r'sa\.create_engine\("[^"]*"\)', f'sa.create_engine("{sa_url(main_dsn).render_as_string(False)}")',
                      code)
    code, m = re.subn(r'functions\("gpt2"\)', f'functions("{model}")', code)
    assert n == 1 and m == 1
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS posts")
    script = tmp_path / "orm_example.py"
    script.write_text(code)
    try:
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        with psycopg.connect(main_dsn, autocommit=True) as conn:
            bodies = dict(conn.execute("SELECT id, body FROM posts").fetchall())
            completions = {i: conn.execute(f"SELECT {model}.complete(%s, 10)", (b,)).fetchone()[0]
                           for i, b in bodies.items()}
    finally:
        with psycopg.connect(main_dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS posts")
    lines = [line.split(" ", 2) for line in run.stdout.splitlines()]
    want = sorted(bodies, key=lambda i: reference_perplexity(bodies[i], cfg, params))
    assert [int(i) for i, _, _ in lines] == want
    assert all(text == completions[int(i)] for i, _, text in lines)
    assert all(float(p) == pytest.approx(reference_perplexity(bodies[int(i)], cfg, params), rel=1e-3)
               for i, p, _ in lines)
