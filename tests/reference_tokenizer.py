"""An independent GPT-2 encoder: tiktoken built offline from OpenAI's original files.

Uses ../shared/gpt2-tokenizer/{vocab.bpe,encoder.json} (OpenAI's layout, checked by
tiktoken's own loader against each other) when present, else the Hugging Face
vocab.json shipped in the package.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import tiktoken
import tiktoken.load

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SHARED = Path(__file__).resolve().parents[2] / "shared" / "gpt2-tokenizer"


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    if (SHARED / "vocab.bpe").exists():
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            str(SHARED / "vocab.bpe"), str(SHARED / "encoder.json"))
    else:
        from gpt2sql.loader.checkpoint import tokenizer_dir
        from gpt2sql.loader.tokenizer_tables import bytes_to_unicode

        decode = {s: b for b, s in bytes_to_unicode().items()}
        vocab = json.loads((tokenizer_dir() / "vocab.json").read_text())
        ranks = {bytes(decode[c] for c in k): v for k, v in vocab.items() if k != "<|endoftext|>"}
    return tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def encode(text: str) -> list[int]:
    """Special tokens in the text are ordinary text."""
    return encoding().encode(text, disallowed_special=())
