"""Make the pictures of the explorer in docs/explorer.md from a real run: the trained demo model (sql kernel)
traced on the walkthrough's prompt, with head 1 of block 3 (its previous-token head) ablated,
opened in headless Chromium; one picture hovers an attention weight, one shows the what-if.

    python3 docs/make_explorer_screenshot.py [--dsn DSN]

Writes docs/img/explorer.png and docs/img/explorer-what-if.png (and leaves docs/explorer-demo.html
out of the repository: it is made again by this script)."""

from __future__ import annotations

import argparse
import tempfile
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
        finally:
            driver.quit()
        print(f"wrote {IMG / 'explorer.png'} and {IMG / 'explorer-what-if.png'} (trace {trace.id}, {page.stat().st_size / 1e6:.1f} MB page)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
