"""docs/walkthrough.md is generated from a real run and must still match one."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_walkthrough_runs_end_to_end_and_is_up_to_date(main_dsn):
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "make_walkthrough.py"), "--dsn", main_dsn, "--check"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "is up to date" in res.stdout
