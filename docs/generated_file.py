"""Writing a generated docs file, or checking that it is up to date (the docs scripts' --check)."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path


def write_or_check(path: Path, text: str, check: bool, command: str) -> int:
    """Write ``text`` to ``path``; with ``check``, compare instead: print the difference and how to
    regenerate (``command``) and return 1 if the file differs, else 0."""
    if not check:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old != text:
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(path), "generated"))
        print(f"\n{path} is out of date: run {command}", file=sys.stderr)
        return 1
    print(f"{path} is up to date")
    return 0
