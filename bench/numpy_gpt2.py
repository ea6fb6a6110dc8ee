"""GPT-2's forward pass in NumPy float32 with a KV cache: the yardstick bench.py measures gpt2sql
against (the same Hugging Face checkpoint, the same work, in the same run, on the same cores).

Written for speed, not for checking: the tests' float64 reference is tests/reference_gpt2.py.
Several sequences run as one batch the way gpt2sql's forward_batch runs them: their new positions
go through each product together, attention is per sequence over its own cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


@dataclass
class Cache:
    """One sequence's keys and values so far, per layer: [S][C] each."""
    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.k[0].shape[0] if self.k else 0


def layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)                                   # [T][1]
    var = x.var(-1, keepdims=True)                                     # [T][1]
    return (x - mean) / np.sqrt(var + eps) * g + b                     # [T][C]


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x ** 3)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class GPT2:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        t = {k.removeprefix("transformer."): v.astype(np.float32)
             for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.n_head, self.n_layer = cfg["n_head"], cfg["n_layer"]
        self.wte, self.wpe = t["wte.weight"], t["wpe.weight"]                       # [V][C], [P][C]
        self.wte_t = np.ascontiguousarray(self.wte.T)                                # [C][V]: the LM head
        self.ln_f = (t["ln_f.weight"], t["ln_f.bias"])
        self.blocks = [{name: t[f"h.{i}.{name}"] for name in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
            "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
            "mlp.c_proj.weight", "mlp.c_proj.bias")} for i in range(self.n_layer)]

    def attention(self, q, k, v, start: int):
        """One sequence's causal attention: q [T][C] at positions start.., k and v [S][C]."""
        T, C = q.shape
        S, H, D = k.shape[0], self.n_head, C // self.n_head
        qh, kh, vh = (a.reshape(-1, H, D).transpose(1, 0, 2) for a in (q, k, v))  # [H][T|S][D]
        scores = qh @ kh.transpose(0, 2, 1) / np.float32(np.sqrt(D))                # [H][T][S]
        future = np.arange(S)[None, :] > (start + np.arange(T))[:, None]            # [T][S]
        scores[:, future] = -np.inf
        return (softmax(scores) @ vh).transpose(1, 0, 2).reshape(T, C)               # [T][C]

    def forward(self, tokens: list[list[int]], caches: list[Cache], all_logits: bool = False) -> np.ndarray:
        """New tokens of each sequence (their caches grow in place) -> the logits of each sequence's
        last new position [B][V] (all_logits: of every new position, [N][V])."""
        lengths = [len(t) for t in tokens]
        starts = [c.length for c in caches]
        rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
        x = self.wte[np.concatenate(tokens)] + self.wpe[rows]                        # [N][C]
        cuts = np.cumsum([0] + lengths)
        for i, b in enumerate(self.blocks):
            h = layer_norm(x, b["ln_1.weight"], b["ln_1.bias"])
            q, k, v = np.split(h @ b["attn.c_attn.weight"] + b["attn.c_attn.bias"], 3, axis=-1)  # [N][C] each
            out = []
            for j, c in enumerate(caches):
                lo, hi = cuts[j], cuts[j + 1]
                if len(c.k) <= i:
                    c.k.append(k[lo:hi]), c.v.append(v[lo:hi])
                else:
                    c.k[i] = np.concatenate([c.k[i], k[lo:hi]])
                    c.v[i] = np.concatenate([c.v[i], v[lo:hi]])
                out.append(self.attention(q[lo:hi], c.k[i], c.v[i], starts[j]))
            x = x + np.concatenate(out) @ b["attn.c_proj.weight"] + b["attn.c_proj.bias"]
            h = layer_norm(x, b["ln_2.weight"], b["ln_2.bias"])
            x = x + gelu(h @ b["mlp.c_fc.weight"] + b["mlp.c_fc.bias"]) @ b["mlp.c_proj.weight"] + b["mlp.c_proj.bias"]
        x = x if all_logits else x[cuts[1:] - 1]
        return layer_norm(x, *self.ln_f) @ self.wte_t

    def filled_cache(self, positions: int, key: float = 0.01, value: float = 0.02) -> Cache:
        """A cache of every layer holding ``positions`` positions of constant keys and values (as
        bench.py's fake_cache makes gpt2sql's)."""
        C = self.wte.shape[1]
        return Cache([np.full((positions, C), key, np.float32) for _ in range(self.n_layer)],
                     [np.full((positions, C), value, np.float32) for _ in range(self.n_layer)])

    def perplexity(self, tokens: list[int], eos: int = 50256) -> float:
        """exp(-mean log-probability of each token given those before it, the first after eos)."""
        logits = self.forward([[eos] + tokens[:-1]], [Cache()], all_logits=True)     # [T][V]
        z = logits - logits.max(-1, keepdims=True)
        logprobs = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(np.exp(-logprobs[np.arange(len(tokens)), tokens].mean()))

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        """Greedy: n new tokens for each prompt, all advancing together."""
        caches = [Cache() for _ in prompts]
        logits = self.forward(prompts, caches)
        out = [[] for _ in prompts]
        for step in range(n):
            nxt = logits.argmax(-1)
            for o, t in zip(out, nxt):
                o.append(int(t))
            if step < n - 1:
                logits = self.forward([[int(t)] for t in nxt], caches)
        return out
