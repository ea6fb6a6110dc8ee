"""Write GPT-2 checkpoints with seeded random weights, in exactly the Hugging Face layout.

No genuine GPT-2 weights can be fetched offline, so tests and benchmarks use
these: same tensor names (``h.{i}.attn.c_attn.weight`` …), same shapes, Conv1D
weights stored ``[in, out]``, the causal-mask buffers ``h.{i}.attn.bias``, no
``lm_head.weight`` (tied to ``wte``), plus the genuine tokenizer files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


@dataclass(frozen=True)
class Preset:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    vocab_size: int = 50257


PRESETS: dict[str, Preset] = {
    "tiny": Preset(n_layer=2, n_head=4, n_embd=64, n_positions=128),
    "124M": Preset(n_layer=12, n_head=12, n_embd=768, n_positions=1024),      # gpt2
    "355M": Preset(n_layer=24, n_head=16, n_embd=1024, n_positions=1024),     # gpt2-medium
    "774M": Preset(n_layer=36, n_head=20, n_embd=1280, n_positions=1024),     # gpt2-large
    "1558M": Preset(n_layer=48, n_head=25, n_embd=1600, n_positions=1024),    # gpt2-xl
}


def tokenizer_dir() -> Path:
    """The genuine GPT-2 vocab.json / merges.txt shipped inside the package."""
    return Path(str(resources.files("gpt2sql.loader") / "tokenizer_data"))


def demo_model_dir() -> Path:
    """The small GPT-2 trained for the demo (tools/train_demo_model.py), shipped inside the package."""
    return Path(str(resources.files("gpt2sql") / "demo_model"))


def config_dict(p: Preset) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": p.n_layer,
        "n_head": p.n_head,
        "n_embd": p.n_embd,
        "n_positions": p.n_positions,
        "n_ctx": p.n_positions,
        "n_inner": None,
        "vocab_size": p.vocab_size,
        "layer_norm_epsilon": 1e-05,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": True,
    }


def random_tensors(p: Preset, seed: int, prefix: str = "") -> dict[str, np.ndarray]:
    """name -> float32 array; weights ~ N(0, 0.02) like GPT-2's init.

    Biases and layer-norm parameters get small random values too (GPT-2 starts
    them at 0 and 1): a checkpoint whose biases are all zero could not reveal a
    bias applied to the wrong place.
    """
    rng = np.random.default_rng(seed)
    c, f = p.n_embd, 4 * p.n_embd

    def normal(*shape: int, std: float = 0.02, mean: float = 0.0) -> np.ndarray:
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    t: dict[str, np.ndarray] = {
        "wte.weight": normal(p.vocab_size, c),
        "wpe.weight": normal(p.n_positions, c, std=0.01),
    }
    mask = np.tril(np.ones((p.n_positions, p.n_positions), dtype=np.float32))[None, None]
    for i in range(p.n_layer):
        h = f"h.{i}."
        t[h + "ln_1.weight"] = normal(c, std=0.1, mean=1.0)
        t[h + "ln_1.bias"] = normal(c, std=0.02)
        t[h + "attn.bias"] = mask  # the causal-mask buffer older checkpoints carry
        t[h + "attn.c_attn.weight"] = normal(c, 3 * c)
        t[h + "attn.c_attn.bias"] = normal(3 * c)
        t[h + "attn.c_proj.weight"] = normal(c, c)
        t[h + "attn.c_proj.bias"] = normal(c)
        t[h + "ln_2.weight"] = normal(c, std=0.1, mean=1.0)
        t[h + "ln_2.bias"] = normal(c, std=0.02)
        t[h + "mlp.c_fc.weight"] = normal(c, f)
        t[h + "mlp.c_fc.bias"] = normal(f)
        t[h + "mlp.c_proj.weight"] = normal(f, c)
        t[h + "mlp.c_proj.bias"] = normal(c)
    t["ln_f.weight"] = normal(c, std=0.1, mean=1.0)
    t["ln_f.bias"] = normal(c, std=0.02)
    return {prefix + k: v for k, v in t.items()}


def write_random_checkpoint(outdir: str | Path, preset: str = "tiny", seed: int = 0,
                            prefix: str = "") -> Path:
    """Write config.json, model.safetensors, vocab.json, merges.txt and the tokenizer licence."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config_dict(p), indent=2) + "\n")
    save_file(random_tensors(p, seed, prefix), str(out / "model.safetensors"), metadata={"format": "pt"})
    src = tokenizer_dir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(src / name, out / name)
    shutil.copyfile(src / "LICENSE", out / "TOKENIZER_LICENSE")
    return out
