"""Files gpt2sql writes (pages, pictures): checked before any work, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable(out: Path) -> Path:
    """``out``, refused with a clear message unless a file can be created there."""
    folder = out.resolve().parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {out}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {out}: the folder {folder} is not writable")
    if out.is_dir():
        raise ValueError(f"cannot write {out}: it is a folder")
    return out


def write_text(out: Path, text: str) -> Path:
    """Write ``text`` to ``out`` through a temporary file beside it: the file appears whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=out.resolve().parent, prefix=f".{out.stem}-", suffix=out.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                               # as an ordinary new file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
