"""Rows for the tokenizer tables: byte<->symbol map, vocabulary, merge ranks, Unicode classes."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from .source import CheckpointError

# Unicode White_Space (PropList.txt); the regex class \s of GPT-2's pre-tokenizer.
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
               (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
               (0x3000, 0x3000)]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable symbols."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_vocab(path: Path, vocab_size: int) -> list[tuple[int, str, bytes]]:
    """(token id, symbol string, raw bytes) for every vocabulary entry."""
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if len(vocab) != vocab_size:
        raise CheckpointError(f"{path} has {len(vocab)} entries but config.json says vocab_size={vocab_size}")
    decode = {s: b for b, s in bytes_to_unicode().items()}
    rows = []
    for piece, token in vocab.items():
        if piece == "<|endoftext|>":
            raw = piece.encode()
        else:
            try:
                raw = bytes(decode[ch] for ch in piece)
            except KeyError as exc:
                raise CheckpointError(f"{path}: entry {piece!r} uses a symbol outside GPT-2's byte alphabet") from exc
        rows.append((int(token), piece, raw))
    ids = sorted(r[0] for r in rows)
    if ids != list(range(vocab_size)):
        raise CheckpointError(f"{path}: token ids are not exactly 0..{vocab_size - 1}")
    return sorted(rows)


def read_merges(path: Path, vocab: set[str]) -> list[tuple[int, str, str]]:
    """(rank, left symbol, right symbol); rank 0 merges first."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    for lineno, line in enumerate(lines, 1):
        if lineno == 1 and line.startswith("#version"):
            continue
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or parts[0] + parts[1] not in vocab:
            raise CheckpointError(f"{path}:{lineno}: bad merge line {line!r}")
        rows.append((len(rows), parts[0], parts[1]))
    if not rows:
        raise CheckpointError(f"{path} holds no merges")
    return rows


def char_class_ranges() -> list[tuple[int, int, str]]:
    """(first code point, last code point, class) with class L (letter), N (number) or W (White_Space).

    Built from Python's unicodedata so the SQL pre-tokenizer does not depend on the
    server's locale or collation. Code points in no range are "other".
    """
    ws = {cp for lo, hi in WHITE_SPACE for cp in range(lo, hi + 1)}
    ranges: list[list] = []
    for cp in range(0x110000):
        if cp in ws:
            cls = "W"
        else:
            cat = unicodedata.category(chr(cp))
            cls = "L" if cat[0] == "L" else "N" if cat[0] == "N" else None
        if cls is None:
            continue
        if ranges and ranges[-1][2] == cls and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp, cls])
    return [tuple(r) for r in ranges]
