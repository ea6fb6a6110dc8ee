"""The explorer page in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium, and the check that a page's cells recompute their values in the database."""

from __future__ import annotations

import collections
import random
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def start_browser():
    """Headless Chromium through chromedriver (Debian: apt-get install chromium chromium-driver)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"the browser tests need Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
                    "apt-get install chromium chromium-driver", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gpt2sql-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1500,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def stop() -> None:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

    return driver, stop


def open_page(browser, where: Path | str) -> None:
    """Open a page file (a Path) or URL (a str) and wait for its script to finish, with no error."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")                  # what earlier pages logged is theirs
    browser.get(where if isinstance(where, str) else where.resolve().as_uri())
    try:  # a big page's script may still be running when get() returns; 30 s is far above its ~1 s
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return window.explorerReady") is not None)
    except TimeoutException as exc:
        raise AssertionError("the page's script did not finish") from exc
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def all_cells(browser) -> list[dict]:
    browser.execute_script("document.getElementById('open-all').click()")
    return browser.execute_script("return Array.from(document.querySelectorAll('.v')).map(e => "
                                  "({stage: e.dataset.stage, value: e.dataset.value, sql: e.dataset.sql}))")


def check_sample(dsn, cells, per_stage: int, tol_for) -> dict[str, int]:
    """Run the data-sql of a seeded sample of each stage's cells; each must return its data-value."""
    by_stage = collections.defaultdict(list)
    for c in cells:
        by_stage[c["stage"]].append(c)
    rnd = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stage, group in by_stage.items():
            for c in rnd.sample(group, min(per_stage, len(group))):
                got = conn.execute(c["sql"]).fetchone()[0]        # as is: no search_path, schema-qualified
                want = float(c["value"])
                assert abs(float(got) - want) <= tol_for(stage, want), (stage, got, want, c["sql"])
    return {s: len(g) for s, g in by_stage.items()}


