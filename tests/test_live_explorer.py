"""The live explorer (gpt2sql explore --serve) as a learner meets it: the real command starts a
real server, headless Chromium types prompts, ticks heads, steps generation and runs SQL; the
numbers are checked against the database and the NumPy reference. And its safety: the token, the
read-only role, the timeout and row limit, Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import psycopg
import pytest

import reference_gpt2 as ref
from conftest import SERVERS, ensure_model
from gpt2sql import serve
from gpt2sql.loader.checkpoint import demo_model_dir, write_random_checkpoint
from pages import check_sample, open_page

CLI = [sys.executable, "-m", "gpt2sql.cli"]
PROMPT = "The module is imported by the"


class Live:
    """A running gpt2sql explore --serve."""

    def __init__(self, dsn: str, model: str, *extra: str):
        self.dsn, self.model = dsn, model
        self.proc = subprocess.Popen([*CLI, "explore", "--serve", "--model", model, "--port", "0", "--dsn", dsn, *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()           # the URL line, printed once it listens
        found = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.proc.stderr.read()!r}")
        self.url, self.base, self.port, self.token = found[0], found[1], int(found[2]), found[3]

    def request(self, path: str, body=None, token: str | None = None, headers: dict | None = None):
        """(status, parsed JSON or text) of one request; POST when there is a body."""
        hdrs = {"content-type": "application/json", "x-gpt2sql-token": self.token if token is None else token}
        hdrs.update(headers or {})
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, raw, kind = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, raw, kind = e.code, e.read(), e.headers.get("content-type", "")
        return status, json.loads(raw) if kind.startswith("application/json") else raw.decode()

    def run(self, query: str):
        return self.request("/api/run", {"sql": query})

    def stop(self) -> int:
        """Ctrl-C, as a learner stops it; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


def traces(dsn: str, model: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f'SELECT count(*) FROM "{model}".traces').fetchone()[0]


@pytest.fixture(scope="module")
def demo(main_dsn):
    """(dsn, model, checkpoint folder): the trained demo model, sql kernel (exact float64 SQL)."""
    return main_dsn, ensure_model(main_dsn, demo_model_dir(), "trained_sql", "sql"), demo_model_dir()


@pytest.fixture(scope="module")
def live(demo):
    dsn, model, _ = demo
    server = Live(dsn, model)
    yield server
    assert server.stop() == 0


def wait_for(browser, predicate, what: str, timeout: float = 120):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, timeout).until(lambda b: predicate(b))
    except TimeoutException as exc:
        status = browser.execute_script("const s = document.getElementById('status'); return s && s.textContent")
        raise AssertionError(f"{what}: timed out (status: {status!r})") from exc


def status(browser) -> str:
    return browser.execute_script("return document.getElementById('status').textContent")


def press(browser, button_id: str, what: str) -> str:
    """Click a control and wait until the page says the work is done (or failed); the status text."""
    browser.execute_script("document.getElementById('status').textContent = ''")
    browser.find_element("id", button_id).click()
    wait_for(browser, lambda b: re.search(r"done in|gpt2sql:", status(b)), what)
    return status(browser)


def walk(browser, prompt: str) -> str:
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element("id", "prompt")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(prompt)
    return press(browser, "walk-button", f"walking {prompt!r}")


def page_trace(browser) -> int:
    return int(re.search(r"\(trace (\d+)", status(browser))[1])


# ---------------------------------------------------------------------------------------------
# The learner's page
# ---------------------------------------------------------------------------------------------

def test_type_a_prompt_and_see_its_walk(live, demo, browser, tmp_path):
    dsn, model, folder = demo
    open_page(browser, live.url)
    said = walk(browser, PROMPT)
    assert "done in" in said, said
    tid = page_trace(browser)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tokens = conn.execute(f"SELECT tokens FROM {model}.traces WHERE trace_id = %s", (tid,)).fetchone()[0]
    from reference_tokenizer import encode

    assert tokens == encode(PROMPT)
    shown = browser.execute_script("return Array.from(document.querySelectorAll('.v[data-stage=token]'), e => Number(e.dataset.value))")
    assert shown == tokens
    # the page's top prediction after the last token is NumPy's
    cfg, params = ref.load(folder)
    want = int(np.argmax(ref.forward(tokens, cfg, params)[-1]))
    first = browser.execute_script(f"return document.querySelector('.v[data-stage=logit][data-pos=\"{len(tokens) - 1}\"]').dataset.tok")
    assert int(first) == want
    browser.execute_script("document.getElementById('open-all').click()")
    cells = browser.execute_script("return Array.from(document.querySelectorAll('.v')).map(e => "
                                   "({stage: e.dataset.stage, value: e.dataset.value, sql: e.dataset.sql}))")
    counts = check_sample(dsn, cells, 2, lambda stage, w: 1e-9)
    assert counts["weight"] == 4 * 4 * len(tokens) * (len(tokens) + 1) // 2
    assert browser.save_screenshot(str(tmp_path / "live-walk.png"))


def test_run_on_cells_of_every_stage_returns_the_stored_value(live, browser):
    """"run" on a kept cell executes its SQL as the reader role and shows the result beside the value."""
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, live.url)
    walk(browser, PROMPT)
    browser.execute_script("document.getElementById('open-all').click()")
    stages = browser.execute_script("return Array.from(new Set(Array.from(document.querySelectorAll('.v'), e => e.dataset.stage)))")
    assert {"token", "embedding", "ln_1", "q", "score", "weight", "attn_heads", "mlp_gelu", "residual_mlp",
            "logit", "probability", "lens"} <= set(stages)
    for stage in stages:
        cell = browser.execute_script(f"const all = document.querySelectorAll('.v[data-stage={stage}]'); "
                                      "const e = all[Math.floor(all.length / 2)]; e.scrollIntoView({block: 'center'}); return e")
        ActionChains(browser).move_to_element(cell).click().perform()  # keeps it in the inspector
        browser.find_element("id", "run").click()
        wait_for(browser, lambda b: b.find_element("id", "run-result").text not in ("", "running\u2026"), f"run {stage}")
        result = browser.find_element("id", "run-result").text
        found = re.search(r"difference (\S+)", result)
        assert found and float(found[1]) <= 1e-9, (stage, result)
        assert re.search(r"1 row\(s\) in [\d.]+ ms", result), result
    # edited SQL runs too, and its error is shown, not raised
    edit = browser.find_element("id", "sql-edit")
    edit.clear()
    edit.send_keys("SELECT 6 * 7 AS answer")
    browser.find_element("id", "run").click()
    wait_for(browser, lambda b: "answer" in b.find_element("id", "run-result").text, "edited SQL")
    assert "42" in browser.find_element("id", "run-result").text
    edit.clear()
    edit.send_keys("DELETE FROM matrices")
    browser.find_element("id", "run").click()
    wait_for(browser, lambda b: "gpt2sql:" in b.find_element("id", "run-result").text, "a write")
    assert "read-only query" in browser.find_element("id", "run-result").text


def test_tick_heads_and_see_the_what_if(live, demo, browser, tmp_path):
    dsn, model, _ = demo
    open_page(browser, live.url)
    walk(browser, PROMPT)
    browser.execute_script("document.getElementById('s-layer-1').open = true")
    box = browser.find_element("css selector", '.ablate-box input[data-layer="1"][data-head="2"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    assert "1.2" in browser.find_element("id", "ablate-list").text
    said = press(browser, "what-if", "the what-if")
    plain, twin = map(int, re.search(r"\(trace (\d+), what-if trace (\d+)\)", said).groups())
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT ablate FROM {model}.traces WHERE trace_id = %s", (twin,)).fetchone()[0] == [[1, 2]]
        want = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
            f"SELECT position, rank, probability_a, probability_b FROM {model}.compare_traces(%s, %s, 5)", (plain, twin))}
    shown = browser.execute_script("return Array.from(document.querySelectorAll('.v[data-stage=prob_a], .v[data-stage=prob_b]'), "
                                   "e => [e.dataset.stage, Number(e.dataset.pos), Number(e.dataset.rank), Number(e.dataset.value)])")
    assert len(shown) == 2 * len(want)
    for stage, pos, rank, value in shown:
        assert value == want[pos, rank][0 if stage == "prob_a" else 1]
    # the ablated head is marked inside its block; changed predictions are marked
    assert "ablated in the what-if" in browser.find_element("id", "head-1-2").text
    changed = browser.execute_script("return Array.from(document.querySelectorAll('table.preds tr.changed'), r => "
                                     "Array.from(r.querySelectorAll('td.mono'), d => d.textContent))")
    assert all(a != b for a, b in changed)
    assert browser.save_screenshot(str(tmp_path / "live-what-if.png"))


def test_step_generation_and_watch_the_cache_grow(live, demo, browser, tmp_path):
    dsn, model, folder = demo
    cfg, params = ref.load(folder)
    open_page(browser, live.url)
    walk(browser, PROMPT)
    before = page_trace(browser)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tokens = conn.execute(f"SELECT tokens FROM {model}.traces WHERE trace_id = %s", (before,)).fetchone()[0]
    for step in range(2):
        press(browser, "step", f"step {step}")
        tid = page_trace(browser)
        with psycopg.connect(dsn, autocommit=True) as conn:
            now = conn.execute(f"SELECT tokens FROM {model}.traces WHERE trace_id = %s", (tid,)).fetchone()[0]
            k = {layer: np.array(v) for layer, v in conn.execute(
                f"SELECT layer, array_agg(value ORDER BY position) FROM {model}.trace_vectors "
                "WHERE trace_id = %s AND stage = 'k' GROUP BY layer", (tid,))}
        assert now == tokens + ref.greedy(tokens, 1, cfg, params)     # the greedy token, as NumPy picks it
        tokens = now
        t = len(tokens)
        for layer in range(cfg["n_layer"]):
            rows = browser.execute_script(
                f"return Array.from(document.querySelectorAll('#s-cache .rows.cache')[{layer}].querySelectorAll('.strip'), "
                "s => [s.classList.contains('new'), s.querySelector('.v').dataset.stage, "
                "Array.from(s.querySelectorAll('.v'), e => Number(e.dataset.value))])")
            keys = [r for r in rows if r[1] == "k"]
            assert len(keys) == t and len(rows) == 2 * t                       # one more row each step
            assert [r[0] for r in keys] == [False] * (t - 1) + [True]          # the last one is new
            assert np.array_equal(np.array([r[2] for r in keys]), k[layer])   # the trace's keys
            note = browser.execute_script(f"return document.querySelector('.cache-note[data-layer=\"{layer}\"]').textContent")
            diff = re.search(r"largest difference: ([^,)]+)", note)[1]
            assert float(diff) <= 1e-12, note                          # earlier rows reused: unchanged
    assert browser.save_screenshot(str(tmp_path / "live-step.png"))


def test_bad_input_gets_a_clear_message_and_stores_nothing(live, demo, browser):
    dsn, model, _ = demo
    before = traces(dsn, model)
    for body, message in [
        ({"prompt": ""}, "empty"),
        ({"prompt": " x" * 200}, f"up to {serve.MAX_TOKENS} tokens"),
        ({"prompt": "Hello", "ablate": [[9, 0]]}, "cannot ablate layer 9"),
        ({"prompt": "Hello", "ablate": "1.2"}, "[layer, head] pairs"),
        ({"prompt": 7}, "must be text"),
    ]:
        code, got = live.request("/api/walk", body)
        assert code == 400 and message in got["error"] and got["error"].startswith("gpt2sql:"), (body, got)
    assert live.request("/api/step", {"trace": 987654})[1]["error"].startswith("gpt2sql: no trace 987654")
    assert live.request("/api/walk", b"{not json")[0] == 400
    assert live.request("/api/walk", b"{}", headers={"content-type": "text/plain"})[0] == 415
    assert traces(dsn, model) == before
    open_page(browser, live.url)
    said = walk(browser, "")
    assert "gpt2sql:" in said and "empty" in said
    assert "error" in browser.find_element("id", "status").get_attribute("class")


def test_walkthrough_links(live, browser):
    code, page = live.request(f"/walkthrough?token={live.token}")
    assert code == 200 and 'id="6-one-attention-head"' in page
    open_page(browser, live.url)
    walk(browser, "Hello")
    links = browser.execute_script("return Array.from(document.querySelectorAll('a.guide'), a => a.href)")
    anchors = set(re.findall(r'<h2 id="([^"]+)"', page))
    assert links and all(link.startswith(live.base + "/walkthrough?token=") for link in links)
    assert {link.split("#")[1] for link in links} <= anchors


# ---------------------------------------------------------------------------------------------
# Safe to leave running
# ---------------------------------------------------------------------------------------------

def test_every_request_needs_the_token(live):
    assert live.request("/")[0] == 403                                  # the page without it
    assert live.request("/?token=wrong")[0] == 403
    assert live.request(f"/?token={live.token}")[0] == 200
    assert live.request(f"/walkthrough?token=x{live.token}")[0] == 403
    for path, body in [("/api/run", {"sql": "SELECT 1"}), ("/api/walk", {"prompt": "Hi"}), ("/api/step", {"trace": 1})]:
        assert live.request(path, body, token="")[0] == 403
        assert live.request(path, body, token=live.token[:-1])[0] == 403
    # another site's name for this address (DNS rebinding) is refused too
    assert live.request(f"/?token={live.token}", headers={"Host": f"evil.example:{live.port}"})[0] == 400
    code, _ = live.request(f"/?token={live.token}")
    with urllib.request.urlopen(live.url, timeout=30) as r:
        assert r.headers["Referrer-Policy"] == "no-referrer" and r.headers["X-Frame-Options"] == "DENY"


def test_listens_on_loopback_only(live):
    with socket.socket() as s:
        s.settimeout(2)
        addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1", "127.0.1.1"}
        for address in addresses:
            assert s.connect_ex((address, live.port)) != 0
    assert f"127.0.0.1:{live.port}" in live.url


def test_the_learners_sql_cannot_write_read_files_or_signal(live, demo):
    dsn, model, _ = demo
    with psycopg.connect(dsn, autocommit=True) as conn:
        owner = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        before = traces(dsn, model)
        who = live.run("SELECT current_user AS who, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS su")[1]
        assert who["rows"] == [["gpt2sql_explorer", False]]
        refused = {
            f"SELECT {model}.trace('x')": "read-only",
            f"INSERT INTO {model}.traces (prompt) VALUES ('x')": "read-only query",
            f"WITH d AS (DELETE FROM {model}.matrices RETURNING 1) SELECT * FROM d": "data-modifying",
            "SELECT pg_read_file('/etc/passwd')": "permission denied",
            "SELECT * FROM pg_ls_dir('.')": "permission denied",
            f"SELECT pg_terminate_backend({owner})": "permission denied",
            f"SELECT pg_cancel_backend({owner})": "permission denied",
            "SELECT set_config('role', 'postgres', false)": "permission denied",
            "SELECT 1; SELECT 2": "one read-only query",
            f"COPY {model}.config TO '/tmp/x'": "read-only query",
        }
        for query, message in refused.items():
            code, got = live.run(query)
            assert code == 400 and got["error"].startswith("gpt2sql:") and message in got["error"], (query, got)
            assert not got["error"].startswith("gpt2sql: gpt2sql:"), got                  # one prefix
        assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (owner,)).fetchone()[0] == 1
        assert traces(dsn, model) == before
        assert conn.execute(f"SELECT count(*) FROM {model}.matrices").fetchone()[0] > 0


def test_the_learners_sql_is_bounded_in_time_and_rows(live):
    start = time.monotonic()
    code, got = live.run("SELECT pg_sleep(60)")
    assert code == 400 and "longer than 5 s and was cancelled" in got["error"]
    assert time.monotonic() - start < 20
    # a set-returning function in the select list streams: the cursor stops after the rows shown
    # (in FROM, PostgreSQL would materialise all 10^8 rows first, and the timeout would end it)
    code, got = live.run("SELECT generate_series(1, 100000000) AS g")
    assert code == 200 and len(got["rows"]) == serve.RUN_ROWS and got["more"] is True
    assert got["rows"][:3] == [[1], [2], [3]]
    code, got = live.run("SELECT 'x' AS a, 1.5::float8 AS b, 'NaN'::float8 AS c, ARRAY[1, 2] AS d, now() IS NOT NULL AS e;")
    assert code == 200 and got["rows"] == [["x", 1.5, "nan", [1, 2], True]] and got["more"] is False


@pytest.mark.parametrize("server", SERVERS)
def test_reader_role_on_every_server(server, _server_registry, tmp_path):
    """The reader role made for the live page, on each server: reads the model, writes nothing,
    and a role that may do more than read is refused as the learner's role."""
    dsn = _server_registry(server)
    ckpt = write_random_checkpoint(tmp_path / "ckpt", "tiny", seed=3)
    model = ensure_model(dsn, ckpt, "live_reader", "sql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        reader = serve.reader_login(conn, dsn, model)
        serve.check_reader(reader, model)
        tid = conn.execute(f"SELECT {model}.trace('Hello')").fetchone()[0]
        got = serve.run_sql(reader, f"SELECT count(*) FROM {model}.trace_vectors WHERE trace_id = {tid}")
        assert got["rows"][0][0] > 0
        with pytest.raises(serve.ExplorerError, match="read-only"):
            serve.run_sql(reader, f"SELECT {model}.drop_trace({tid})")
        assert conn.execute(f"SELECT count(*) FROM {model}.traces WHERE trace_id = %s", (tid,)).fetchone()[0] == 1
        superuser = conn.execute("SELECT current_user").fetchone()[0]
        with pytest.raises(serve.ExplorerError, match="may do more than read"):
            serve.reader_login(conn, dsn, model, role=superuser)


def test_serve_refuses_bad_options_before_starting(main_dsn, demo):
    _, model, _ = demo
    for args, message in [(["--port", "70000"], "--port must be from 0 to 65535"),
                          (["--reader-role", "postgres"], "may do more than read"),
                          (["--model", "no_such_model"], "no_such_model"),
                          (["-o", "x.html"], "drop -o"),
                          (["--top-k", "0"], "from 1 to 100")]:
        r = subprocess.run([*CLI, "explore", "--serve", "--model", model, *args, "--dsn", main_dsn],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_ctrl_c_leaves_nothing_running(demo):
    dsn, model, _ = demo
    server = Live(dsn, model)
    assert server.run("SELECT 1 AS one")[1]["rows"] == [[1]]
    port = server.port
    # a query still running when the learner presses Ctrl-C
    import threading

    slow = threading.Thread(target=lambda: server.run("SELECT pg_sleep(4)"))
    slow.start()
    time.sleep(1)
    assert server.stop() == 0
    slow.join(timeout=30)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0                  # nothing listens
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 15
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'gpt2sql_explorer'").fetchone()[0]:
            assert time.monotonic() < deadline, "the reader's backends outlived the server"
            time.sleep(0.5)
