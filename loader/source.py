"""Read and check a Hugging Face GPT-2 checkpoint: config, tensor names and shapes, tokenizer files."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """The checkpoint is missing, malformed, or not a GPT-2 model."""


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    vocab_size: int
    layer_norm_epsilon: float

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the forward pass needs, by its name without the ``transformer.`` prefix."""
        c, f = self.n_embd, 4 * self.n_embd
        shapes: dict[str, tuple[int, ...]] = {
            "wte.weight": (self.vocab_size, c),
            "wpe.weight": (self.n_positions, c),
            "ln_f.weight": (c,),
            "ln_f.bias": (c,),
        }
        for i in range(self.n_layer):
            h = f"h.{i}."
            shapes.update({
                h + "ln_1.weight": (c,), h + "ln_1.bias": (c,),
                h + "attn.c_attn.weight": (c, 3 * c), h + "attn.c_attn.bias": (3 * c,),
                h + "attn.c_proj.weight": (c, c), h + "attn.c_proj.bias": (c,),
                h + "ln_2.weight": (c,), h + "ln_2.bias": (c,),
                h + "mlp.c_fc.weight": (c, f), h + "mlp.c_fc.bias": (f,),
                h + "mlp.c_proj.weight": (f, c), h + "mlp.c_proj.bias": (c,),
            })
        return shapes


def read_config(path: Path) -> GPT2Config:
    if not path.is_file():
        raise CheckpointError(f"missing config.json in {path.parent}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    if model_type != "gpt2":
        raise CheckpointError(
            f"{path}: model_type is {model_type!r} ({', '.join(archs) or 'no architecture'}); "
            "gpt2sql loads GPT-2 checkpoints only (model_type 'gpt2')")
    act = raw.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{path}: activation_function {act!r} is not GPT-2's tanh GELU (gelu_new)")
    try:
        cfg = GPT2Config(
            n_layer=int(raw["n_layer"]), n_head=int(raw["n_head"]), n_embd=int(raw["n_embd"]),
            n_positions=int(raw.get("n_positions", raw.get("n_ctx"))),
            vocab_size=int(raw["vocab_size"]),
            layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-5)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: missing or bad hyper-parameter: {exc}") from exc
    n_inner = raw.get("n_inner")
    if n_inner not in (None, 4 * cfg.n_embd):
        raise CheckpointError(f"{path}: n_inner={n_inner}; GPT-2's MLP is 4*n_embd={4 * cfg.n_embd} wide")
    if min(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size) <= 0:
        raise CheckpointError(f"{path}: hyper-parameters must be positive: {cfg}")
    if cfg.n_embd % cfg.n_head:
        raise CheckpointError(f"{path}: n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}")
    if cfg.vocab_size != 50257:
        raise CheckpointError(f"{path}: vocab_size={cfg.vocab_size}; GPT-2's byte-level BPE has 50257 tokens")
    return cfg


_SKIP = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_FLOAT_DTYPES = {"F32", "F16", "F64"}


@dataclass
class Checkpoint:
    """A checked local checkpoint folder."""
    folder: Path
    config: GPT2Config
    vocab_path: Path
    merges_path: Path
    # tensor name (no prefix) -> (file, name inside the file)
    locations: dict[str, tuple[Path, str]] = field(default_factory=dict)

    def n_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.config.expected_shapes().values())

    def tensor(self, name: str) -> np.ndarray:
        """Read one tensor as float32, refusing NaN/Inf."""
        from safetensors import safe_open

        file, key = self.locations[name]
        try:
            with safe_open(str(file), framework="np") as f:
                arr = f.get_tensor(key)
        except Exception as exc:
            raise CheckpointError(f"{file.name}: cannot read tensor {key}: {exc}") from exc
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise CheckpointError(f"{file.name}: tensor {key} holds {bad} NaN/Inf value(s)")
        return arr


def _safetensor_files(folder: Path) -> list[Path]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from exc
        files = sorted({folder / v for v in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names missing shard(s): {', '.join(missing)}")
        return files
    others = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.h5")]
    hint = f" (found {', '.join(others)}; convert it to safetensors)" if others else ""
    raise CheckpointError(f"missing model.safetensors (or model.safetensors.index.json) in {folder}{hint}")


def open_checkpoint(folder: str | Path) -> Checkpoint:
    """Check a local folder in Hugging Face layout without loading the weights."""
    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    cfg = read_config(folder / "config.json")
    for fname in ("vocab.json", "merges.txt"):
        if not (folder / fname).is_file():
            raise CheckpointError(f"missing {fname} in {folder}")
    ckpt = Checkpoint(folder, cfg, folder / "vocab.json", folder / "merges.txt")
    expected = cfg.expected_shapes()
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in _safetensor_files(folder):
        size = file.stat().st_size
        try:
            with safe_open(str(file), framework="np") as f:
                keys = list(f.keys())
                slices = {k: f.get_slice(k) for k in keys}
                info = {k: (tuple(s.get_shape()), s.get_dtype()) for k, s in slices.items()}
        except Exception as exc:
            raise CheckpointError(f"{file.name} is not a readable safetensors file "
                                  f"(truncated or corrupt? {size} bytes): {exc}") from exc
        _check_extent(file, size)
        for key, (shape, dtype) in info.items():
            name = key.removeprefix("transformer.")
            if name == "lm_head.weight":
                continue  # tied to wte below
            if _SKIP.match(name):
                continue
            if name in found or name in ckpt.locations:
                raise CheckpointError(f"tensor {name} appears twice in the checkpoint")
            if name not in expected:
                raise CheckpointError(f"{file.name}: unexpected tensor {key}; not a GPT-2 checkpoint?")
            found[name] = (shape, dtype)
            ckpt.locations[name] = (file, key)
        if "lm_head.weight" in info:
            _check_lm_head(file, info["lm_head.weight"], cfg)
    missing = [n for n in expected if n not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"checkpoint lacks tensor(s) {', '.join(missing[:5])}{more}")
    for name, (shape, dtype) in found.items():
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"tensor {name} has dtype {dtype}; expected a float tensor (F32/F16)")
        if shape != expected[name]:
            raise CheckpointError(
                f"tensor {name} has shape {list(shape)} but config.json implies {list(expected[name])}")
    return ckpt


def _check_extent(file: Path, size: int) -> None:
    """A truncated file may still have an intact header: compare its data extent to the file size."""
    import struct

    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file.name} is truncated ({size} bytes)")
        (hlen,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{file.name} has a corrupt header: {exc}") from exc
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + hlen + end > size:
        raise CheckpointError(
            f"{file.name} is truncated: its header needs {8 + hlen + end} bytes, the file has {size}")


def _check_lm_head(file: Path, info: tuple[tuple[int, ...], str], cfg: GPT2Config) -> None:
    shape, _ = info
    if shape != (cfg.vocab_size, cfg.n_embd):
        raise CheckpointError(f"{file.name}: lm_head.weight has shape {list(shape)}, "
                              f"expected {[cfg.vocab_size, cfg.n_embd]}")
    # GPT-2 ties the LM head to wte; an untied head would be ignored, so refuse it rather than lie.
    from safetensors import safe_open

    with safe_open(str(file), framework="np") as f:
        head = f.get_tensor("lm_head.weight" if "lm_head.weight" in f.keys() else "transformer.lm_head.weight")
        wte_key = "wte.weight" if "wte.weight" in f.keys() else "transformer.wte.weight"
        if wte_key in f.keys() and not np.array_equal(head, f.get_tensor(wte_key)):
            raise CheckpointError(f"{file.name}: lm_head.weight differs from wte.weight; "
                                  "gpt2sql supports GPT-2's tied LM head only")


HUB_ALIASES = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}


def resolve_source(source: str) -> Path:
    """A local folder as is; otherwise a Hugging Face hub id, downloaded when online."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    looks_like_hub = source in HUB_ALIASES or re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None
    if not looks_like_hub:
        raise CheckpointError(f"{source} is neither a folder nor a Hugging Face model id")
    repo = f"openai-community/{source}" if source in HUB_ALIASES else source
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise CheckpointError(
            f"{source} is not a local folder, and huggingface_hub is not installed to fetch {repo}; "
            "install gpt2sql[hub] or pass a folder with config.json, model.safetensors, vocab.json, merges.txt"
        ) from exc
    try:
        return Path(snapshot_download(
            repo, allow_patterns=["config.json", "*.safetensors", "model.safetensors.index.json",
                                  "vocab.json", "merges.txt"]))
    except Exception as exc:
        raise CheckpointError(
            f"could not download {repo} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            "if you are offline, pass a local folder with config.json, model.safetensors, vocab.json, merges.txt"
        ) from exc


def default_model_name(source: str) -> str:
    """gpt2 -> gpt2; openai-community/gpt2-medium -> gpt2_medium; ./ckpt-tiny -> ckpt_tiny."""
    base = source.rstrip("/").split("/")[-1] or "model"
    name = re.sub(r"[^a-z0-9_]", "_", base.lower())
    if not name[0].isalpha() and name[0] != "_":
        name = "m_" + name
    return name[:53]
