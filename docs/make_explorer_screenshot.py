"""Make the pictures of the explorer in docs/explorer.md and the README from a real run: the trained
demo model (sql kernel) traced on the walkthrough's prompt, with head 1 of block 3 (its
previous-token head) ablated, opened in headless Chromium; one picture hovers an attention weight,
one shows the what-if. Then the live explorer (gpt2sql explore --serve, started as a learner
would): a prompt typed, one generation step, a value's SQL run.

    python3 docs/make_explorer_screenshot.py [--dsn DSN]

Writes docs/img/explorer.png, docs/img/explorer-what-if.png and docs/img/explorer-live.png."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from gpt2sql import Client, explore, resolve_dsn
from gpt2sql.loader.checkpoint import demo_model_dir
from gpt2sql.loader.load import load_checkpoint

PROMPT = "The module is imported by the"
ABLATE = [(3, 1)]
IMG = Path(__file__).resolve().parent / "img"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dsn", default=None)
    args = ap.parse_args()
    dsn = resolve_dsn(args.dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_checkpoint(conn, str(demo_model_dir()), "demo", replace=True, progress=False, kernel="sql")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp, Client(dsn) as client:
        trace = client.model("demo").trace(PROMPT)
        page = explore.write_page(trace, Path(tmp) / "page.html", ablate=ABLATE)
        options = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                     "--window-size=1400,900", f"--user-data-dir={tmp}/profile"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(page.resolve().as_uri())
            driver.execute_script("document.getElementById('s-layer-3').open = true;")
            cell = driver.find_element(By.CSS_SELECTOR, '.v[data-stage="weight"][data-layer="3"][data-head="1"]'
                                                        '[data-pos="5"][data-key="4"]')
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
            ActionChains(driver).move_to_element(cell).perform()
            IMG.mkdir(exist_ok=True)
            driver.save_screenshot(str(IMG / "explorer.png"))
            cell = driver.find_element(By.CSS_SELECTOR, '.v[data-stage="distance"][data-layer="3"][data-sub="attn"]'
                                                        '[data-pos="5"]')
            driver.execute_script("document.getElementById('s-what-if').scrollIntoView({block: 'start'})")
            ActionChains(driver).move_to_element(cell).perform()
            driver.save_screenshot(str(IMG / "explorer-what-if.png"))
            live_picture(driver, dsn)
        finally:
            driver.quit()
        print(f"wrote {IMG / 'explorer.png'}, {IMG / 'explorer-what-if.png'} (trace {trace.id}, "
              f"{page.stat().st_size / 1e6:.1f} MB page) and {IMG / 'explorer-live.png'}")
    return 0


def live_picture(driver, dsn: str) -> None:
    """The live explorer: type the prompt, take one generation step, run a key's SQL."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = subprocess.Popen([sys.executable, "-m", "gpt2sql.cli", "explore", "--serve", "--model", "demo",
                               "--port", "0", "--dsn", dsn], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", server.stdout.readline())[0]
        driver.get(url)
        status = lambda: driver.find_element(By.ID, "status").text          # noqa: E731
        box = driver.find_element(By.ID, "prompt")
        box.clear()
        box.send_keys(PROMPT)
        driver.find_element(By.ID, "walk-button").click()
        WebDriverWait(driver, 300).until(lambda d: "done in" in status())
        driver.execute_script("document.getElementById('status').textContent = ''")
        driver.find_element(By.ID, "step").click()
        WebDriverWait(driver, 300).until(lambda d: "done in" in status())
        cell = driver.find_element(By.CSS_SELECTOR, "#s-cache .strip.new .v[data-stage='k']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        cell.click()
        driver.find_element(By.ID, "run").click()
        WebDriverWait(driver, 60).until(lambda d: "difference" in d.find_element(By.ID, "run-result").text)
        time.sleep(0.3)
        driver.save_screenshot(str(IMG / "explorer-live.png"))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
