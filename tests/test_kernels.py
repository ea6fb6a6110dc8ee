"""Choosing the kernel at load time: auto takes pgvector where it is installed or can be created,
--kernel vector without pgvector is refused before anything is written, and a vector model works
wherever the extension lives (any schema, a reader role). Parity of each kernel with NumPy is in
test_forward.py, test_generate.py and test_trace.py, which run on every (server, kernel)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import reference_gpt2 as ref
from conftest import SERVERS, ensure_model
from gpt2sql.loader.load import LoadError, load_checkpoint
from gpt2sql.loader.source import CheckpointError
from reference_tokenizer import encode

CLI = [sys.executable, "-m", "gpt2sql.cli"]
WITH_PGVECTOR = [s for s in SERVERS if s == "pg18"]      # the embedded server ships pgvector
WITHOUT_PGVECTOR = [s for s in SERVERS if s == "pg15"]   # Debian's PostgreSQL 15 here has none


def other_database(dsn: str, name: str) -> str:
    return make_conninfo(**{**conninfo_to_dict(dsn), "dbname": name})


@pytest.fixture()
def fresh_db(request, _server_registry):
    """A new, empty database on the server named by the test's ``server`` parameter; dropped after."""
    admin_dsn = _server_registry(request.node.callspec.params["server"])
    name = f"k_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield other_database(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def schemas(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}


def has_pgvector(conn) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None


@pytest.mark.parametrize("server", WITHOUT_PGVECTOR)
def test_vector_kernel_without_pgvector_is_refused_before_anything_is_written(server, fresh_db, tiny_ckpt):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        before = schemas(conn)
        with pytest.raises(LoadError) as err:
            load_checkpoint(conn, str(tiny_ckpt), "v", kernel="vector", progress=False)
        assert schemas(conn) == before
    message = str(err.value)
    assert "does not have the pgvector extension" in message
    assert "postgresql-15-pgvector" in message and "pgvector/pgvector" in message
    assert "--kernel sql" in message
    # the CLI says the same, with no traceback
    out = subprocess.run(CLI + ["load", str(tiny_ckpt), "--model", "v", "--kernel", "vector", "--dsn", fresh_db],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "pgvector" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("server", WITHOUT_PGVECTOR)
def test_auto_falls_back_to_the_sql_kernel_and_says_why(server, fresh_db, tiny_ckpt):
    out = subprocess.run(CLI + ["load", str(tiny_ckpt), "--model", "a", "--dsn", fresh_db],
                         capture_output=True, text=True, check=True)
    assert "sql kernel" in out.stdout
    assert "using the sql kernel" in out.stderr and "pgvector" in out.stderr
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert conn.execute("SELECT kernel, chunk FROM a.config").fetchone() == ("sql", 64)


@pytest.mark.parametrize("server", WITH_PGVECTOR)
def test_auto_creates_pgvector_and_stores_whole_rows_in_line(server, fresh_db, tiny_ckpt):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert not has_pgvector(conn)
        res = load_checkpoint(conn, str(tiny_ckpt), "a", progress=False)
        assert res.kernel == "vector" and res.note is None and has_pgvector(conn)
        assert conn.execute("SELECT kernel, chunk FROM a.config").fetchone() == ("vector", 64)
        # every partition keeps its vectors in the row (PLAIN), not out of line in TOAST
        storage = conn.execute("""
            SELECT DISTINCT a.attstorage FROM pg_inherits i JOIN pg_attribute a ON a.attrelid = i.inhrelid
             WHERE i.inhparent = 'a.matrices'::regclass AND a.attname = 'w'""").fetchall()
        assert storage == [("p",)]
        # mlp.c_proj has 4 * n_embd inputs: four chunks of n_embd per output unit
        assert conn.execute("SELECT count(*), max(chunk) FROM a.matrices WHERE name = 'h.0.mlp.c_proj.weight'"
                            ).fetchone() == (64 * 4, 3)
    out = subprocess.run(CLI + ["models", "--dsn", fresh_db], capture_output=True, text=True, check=True)
    assert "kernel" in out.stdout.splitlines()[0] and " vector " in out.stdout.splitlines()[1]


@pytest.mark.parametrize("server", WITH_PGVECTOR)
def test_a_failed_load_takes_back_the_extension_it_created(server, fresh_db, tiny_ckpt, tmp_path):
    """NaN weights are found while copying, after CREATE EXTENSION: the rollback takes both back."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["h.1.mlp.c_proj.weight"][3, 5] = np.nan
    save_file(tensors, str(bad / "model.safetensors"))
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises((CheckpointError, LoadError), match="NaN/Inf"):
            load_checkpoint(conn, str(bad), "a", kernel="vector", progress=False)
        assert not has_pgvector(conn) and "a" not in schemas(conn)


@pytest.mark.parametrize("server", WITH_PGVECTOR)
def test_a_context_longer_than_a_pgvector_vector_takes_the_sql_kernel(server, fresh_db, tiny_ckpt, tmp_path):
    """The vector kernel keeps each value column of the KV cache as one vector over the positions,
    and pgvector's vectors hold at most 16,000 floats: a model of 16,001 positions is refused by
    --kernel vector before anything is written, and auto loads it with the sql kernel, saying why."""
    import json
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    long = tmp_path / "long"
    shutil.copytree(tiny_ckpt, long)
    config = json.loads((long / "config.json").read_text())
    config["n_positions"] = config["n_ctx"] = 16001
    (long / "config.json").write_text(json.dumps(config))
    tensors = {k: v for k, v in load_file(str(long / "model.safetensors")).items()
               if not k.endswith(".attn.bias")}                        # the causal-mask buffer: [128, 128]
    tensors["wpe.weight"] = (0.01 * np.random.default_rng(7).standard_normal((16001, 64))).astype(np.float32)
    save_file(tensors, str(long / "model.safetensors"))
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        before = schemas(conn)
        with pytest.raises(LoadError, match=r"16,001 positions.*at most 16,000 floats.*--kernel sql"):
            load_checkpoint(conn, str(long), "v", kernel="vector", progress=False)
        assert schemas(conn) == before and not has_pgvector(conn)
        res = load_checkpoint(conn, str(long), "a", progress=False)
        assert res.kernel == "sql" and "16,001 positions" in res.note
        logits = [r[0] for r in conn.execute("SELECT logit FROM a.next_token_logits(%s) ORDER BY token",
                                             (encode("Hello, my name is"),))]
    cfg, params = ref.load(long)
    np.testing.assert_allclose(logits, ref.forward(encode("Hello, my name is"), cfg, params)[-1], atol=1e-9)


@pytest.mark.parametrize("server", WITH_PGVECTOR)
def test_a_role_that_cannot_create_pgvector(server, fresh_db, tiny_ckpt):
    """pgvector is available but not installed, and the loading role is no superuser: vector is refused
    saying whom to ask, auto falls back to sql; once a superuser installs it, auto takes vector."""
    role = f"loader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CREATE ON DATABASE {conninfo_to_dict(fresh_db)['dbname']} TO {role}")
    as_role = make_conninfo(fresh_db, user=role)
    try:
        with psycopg.connect(as_role, autocommit=True) as conn:
            with pytest.raises(LoadError, match="ask a superuser to run CREATE EXTENSION vector"):
                load_checkpoint(conn, str(tiny_ckpt), "v", kernel="vector", progress=False)
            res = load_checkpoint(conn, str(tiny_ckpt), "a", progress=False)
            assert res.kernel == "sql" and "cannot install it" in res.note
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        with psycopg.connect(as_role, autocommit=True) as conn:
            assert load_checkpoint(conn, str(tiny_ckpt), "v", kernel="vector", progress=False).kernel == "vector"
            tokens = [r[0] for r in conn.execute("SELECT token FROM v.generate('Hello, my name is', 5)")]
        cfg, params = ref.load(tiny_ckpt)
        assert tokens == ref.greedy(encode("Hello, my name is"), 5, cfg, params)
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS a, v CASCADE")
            conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("server", WITH_PGVECTOR)
def test_pgvector_in_its_own_schema_and_a_reader_role(server, fresh_db, tiny_ckpt):
    """The model's functions find pgvector wherever it was installed, whatever the caller's search_path,
    and grant-reader lets a reader role use its type and operators."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vec")
        conn.execute("REVOKE ALL ON SCHEMA vec FROM PUBLIC")
        conn.execute("CREATE EXTENSION vector SCHEMA vec")
        assert load_checkpoint(conn, str(tiny_ckpt), "m", kernel="vector", progress=False).kernel == "vector"
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        subprocess.run(CLI + ["grant-reader", role, "--dsn", fresh_db], check=True, capture_output=True)
        with psycopg.connect(make_conninfo(fresh_db, user=role), autocommit=True) as conn:
            conn.execute("SET search_path = pg_catalog")
            tokens = [r[0] for r in conn.execute("SELECT token FROM m.generate('Hello, my name is', 5)")]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM m.matrices")
        cfg, params = ref.load(tiny_ckpt)
        assert tokens == ref.greedy(encode("Hello, my name is"), 5, cfg, params)
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_unknown_kernel_is_refused(main_dsn, tiny_ckpt):
    with psycopg.connect(main_dsn, autocommit=True) as conn:
        with pytest.raises(LoadError, match="unknown kernel 'gpu'"):
            load_checkpoint(conn, str(tiny_ckpt), "k", kernel="gpu", progress=False)
    out = subprocess.run(CLI + ["load", str(tiny_ckpt), "--kernel", "gpu", "--dsn", main_dsn],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'gpu'" in out.stderr


@pytest.mark.parametrize("server", WITH_PGVECTOR)
def test_both_kernels_side_by_side_give_numpys_greedy_continuation(server, _server_registry, tiny_ckpt):
    dsn = _server_registry(server)
    cfg, params = ref.load(tiny_ckpt)
    want = ref.greedy(encode("The database said"), 12, cfg, params)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for kernel in ("vector", "sql"):
            model = ensure_model(dsn, tiny_ckpt, f"tiny_{kernel}", kernel)
            assert conn.execute(f"SELECT kernel FROM {model}.config").fetchone()[0] == kernel
            got = [r[0] for r in conn.execute(f"SELECT token FROM {model}.generate('The database said', 12)")]
            assert got == want, kernel


# ---------------------------------------------------------------------------------------------
# The kernel contract (sql/kernels/contract.sql) and the fused sub-layers (kernels/*/45_fused.sql)
# ---------------------------------------------------------------------------------------------

def test_a_kernel_without_a_primitive_is_refused(tiny):
    """contract.sql, run last at load time, names the primitive a kernel did not provide."""
    from importlib import resources

    dsn, model = tiny
    contract = (resources.files("gpt2sql.sql") / "kernels" / "contract.sql").read_text(encoding="utf-8")
    with psycopg.connect(dsn) as conn:            # one transaction, rolled back
        conn.execute(f"SET LOCAL search_path = {model}, pg_catalog, public")
        conn.execute(contract)                    # the loaded kernel passes
        conn.execute("DROP FUNCTION kv_positions(kv)")
        with pytest.raises(psycopg.Error, match=r"gpt2sql: the \w+ kernel does not provide kv_positions\(kv\)"):
            conn.execute(contract)
        conn.rollback()


def random_rows(rng, t: int, c: int) -> list[list[float]]:
    return rng.normal(0, 1, (t, c)).tolist()


def test_fused_mlp_equals_the_composition_trace_shows(tiny):
    """mlp(x) (the vector kernel's fused one, the model's own on the sql kernel) gives exactly
    linear(gelu(linear(x, c_fc)), c_proj) + residual, the stages trace() stores."""
    import numpy as np

    dsn, model = tiny
    rng = np.random.default_rng(7)
    x, r = random_rows(rng, 3, 64), random_rows(rng, 3, 64)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {model}, pg_catalog, public")
        got, want = conn.execute(
            """SELECT mlp(%(x)s::float8[], 1, residual => %(r)s::float8[]),
                      linear(linear(%(x)s::float8[], 'h.1.mlp.c_fc.weight', 'h.1.mlp.c_fc.bias', gelu => true),
                             'h.1.mlp.c_proj.weight', 'h.1.mlp.c_proj.bias', residual => %(r)s::float8[])""",
            {"x": x, "r": r}).fetchone()
    assert np.array(got).shape == (3, 64)
    assert got == want


def test_fused_mha_equals_the_composition_trace_shows(tiny):
    """mha over two sequences (one with two cached positions, one fresh) gives exactly, per sequence,
    linear(attention(q, kv_append(past, k, v)), c_proj) + residual with q, k, v the thirds of
    linear(x, c_attn), and the same extended caches."""
    import numpy as np

    dsn, model = tiny
    rng = np.random.default_rng(8)
    past_rows, x, r = random_rows(rng, 2, 64), random_rows(rng, 5, 64), random_rows(rng, 5, 64)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path = {model}, pg_catalog, public")
        y, *caches = conn.execute(
            """SELECT (m).y, (m).present[1]::text, (m).present[2]::text
                 FROM (SELECT mha(%(x)s::float8[], 0, ARRAY[2, 3],
                                  ARRAY[kv_append(NULL, %(p)s::float8[], %(p)s::float8[]), NULL],
                                  residual => %(r)s::float8[]) AS m OFFSET 0) AS s""",
            {"x": x, "r": r, "p": past_rows}).fetchone()
        want_y, want_caches = [], []
        for rows, past in ((slice(0, 2), "kv_append(NULL, %(p)s::float8[], %(p)s::float8[])"), (slice(2, 5), "NULL::kv")):
            part = {"x": x[rows], "r": r[rows], "p": past_rows}
            yb, cache = conn.execute(
                f"""WITH qkv AS (SELECT linear(%(x)s::float8[], 'h.0.attn.c_attn.weight', 'h.0.attn.c_attn.bias') AS h),
                         cache AS (SELECT kv_append({past}, h[:][65:128], h[:][129:192]) AS c FROM qkv)
                    SELECT linear(attention(qkv.h[:][1:64], cache.c), 'h.0.attn.c_proj.weight', 'h.0.attn.c_proj.bias',
                                  residual => %(r)s::float8[]),
                           cache.c::text
                      FROM qkv, cache""", part).fetchone()
            want_y += yb
            want_caches.append(cache)
    assert y == want_y
    assert caches == want_caches
