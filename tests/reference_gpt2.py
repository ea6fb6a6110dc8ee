"""An independent GPT-2 forward pass in NumPy (float64), read straight from the safetensors file.

One function per formula, as in picoGPT's gpt2.py; it shares no code with gpt2sql.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def load(folder: Path) -> tuple[dict, dict]:
    cfg = json.loads((Path(folder) / "config.json").read_text())
    raw = load_file(str(Path(folder) / "model.safetensors"))
    params = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in raw.items()}
    return cfg, params


def gelu(x):  # [n] -> [n], tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):  # [.., n] -> [.., n]
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def layer_norm(x, g, b, eps):  # [T, C] -> [T, C]
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.var(x, axis=-1, keepdims=True)
    return g * (x - mean) / np.sqrt(var + eps) + b


def linear(x, w, b):  # [T, in] @ [in, out] + [out] -> [T, out]
    return x @ w + b


def attention(q, k, v, mask):  # [Tq, D], [Tk, D], [Tk, D], [Tq, Tk] -> [Tq, D]
    return softmax(q @ k.T / np.sqrt(q.shape[-1]) + mask) @ v


def mha(x, p, pre, n_head):  # [T, C] -> [T, C]
    qkv = linear(x, p[pre + "c_attn.weight"], p[pre + "c_attn.bias"])         # [T, 3C]
    q, k, v = np.split(qkv, 3, axis=-1)                                        # 3 x [T, C]
    heads = lambda a: np.split(a, n_head, axis=-1)                             # n_head x [T, D]
    mask = (1 - np.tri(x.shape[0])) * -1e10                                    # [T, T]
    out = [attention(qh, kh, vh, mask) for qh, kh, vh in zip(heads(q), heads(k), heads(v))]
    return linear(np.hstack(out), p[pre + "c_proj.weight"], p[pre + "c_proj.bias"])  # [T, C]


def ffn(x, p, pre):  # [T, C] -> [T, C]
    a = gelu(linear(x, p[pre + "c_fc.weight"], p[pre + "c_fc.bias"]))          # [T, 4C]
    return linear(a, p[pre + "c_proj.weight"], p[pre + "c_proj.bias"])         # [T, C]


def block(x, p, i, n_head, eps):  # [T, C] -> [T, C]
    h = f"h.{i}."
    x = x + mha(layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"], eps), p, h + "attn.", n_head)
    x = x + ffn(layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"], eps), p, h + "mlp.")
    return x


def forward(tokens, cfg, p):  # [T] -> [T, V] logits
    x = p["wte.weight"][tokens] + p["wpe.weight"][range(len(tokens))]          # [T, C]
    for i in range(cfg["n_layer"]):
        x = block(x, p, i, cfg["n_head"], cfg["layer_norm_epsilon"])
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], cfg["layer_norm_epsilon"])
    return x @ p["wte.weight"].T                                               # [T, V]


def greedy(tokens, n, cfg, p):  # [T] -> n new tokens, recomputing everything each step
    out = list(tokens)
    for _ in range(n):
        out.append(int(np.argmax(forward(out, cfg, p)[-1])))
    return out[len(tokens):]


def trace(tokens, cfg, p, ablate=()):  # [T] -> {(stage, layer): array}: forward(), keeping every intermediate;
    # ablate: (layer, head) pairs whose output is replaced by zeros before attn.c_proj
    eps, n_head, T = cfg["layer_norm_epsilon"], cfg["n_head"], len(tokens)
    out = {("token_embedding", None): p["wte.weight"][tokens],                 # [T, C]
           ("position_embedding", None): p["wpe.weight"][range(T)]}            # [T, C]
    x = out["embedding", None] = out["token_embedding", None] + out["position_embedding", None]
    mask = (1 - np.tri(T)) * -1e10                                             # [T, T]
    for i in range(cfg["n_layer"]):
        h, keep = f"h.{i}.", lambda stage, a: out.setdefault((stage, i), a)
        a = keep("ln_1", layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"], eps))          # [T, C]
        qkv = linear(a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"])               # [T, 3C]
        q, k, v = (keep(s, m) for s, m in zip("qkv", np.split(qkv, 3, axis=-1)))              # 3 x [T, C]
        qh, kh, vh = (np.stack(np.split(m, n_head, axis=-1)) for m in (q, k, v))              # 3 x [H, T, D]
        scores = keep("scores", qh @ kh.transpose(0, 2, 1) / np.sqrt(qh.shape[-1]))          # [H, T, T]
        weights = keep("weights", softmax(scores + mask))                                    # [H, T, T]
        out_h = weights @ vh                                                                 # [H, T, D]
        out_h[[h for layer, h in ablate if layer == i]] = 0                                  # ablated heads
        heads = keep("attn_heads", np.hstack(list(out_h)))                                   # [T, C]
        o = keep("attn_out", linear(heads, p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"]))
        x = keep("residual_attn", x + o)                                                     # [T, C]
        a = keep("ln_2", layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"], eps))          # [T, C]
        f = keep("mlp_fc", linear(a, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"]))        # [T, 4C]
        g = keep("mlp_gelu", gelu(f))                                                        # [T, 4C]
        o = keep("mlp_out", linear(g, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"]))  # [T, C]
        x = keep("residual_mlp", x + o)                                                      # [T, C]
    a = out["ln_f", None] = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], eps)           # [T, C]
    out["logits", None] = a @ p["wte.weight"].T                                             # [T, V]
    return out


def logit_lens(tokens, cfg, p):  # [T] -> [n_layer + 1, T, V]: each layer's residual stream through ln_f and wte
    t = trace(tokens, cfg, p)
    xs = [t["embedding", None]] + [t["residual_mlp", i] for i in range(cfg["n_layer"])]
    ln = lambda x: layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], cfg["layer_norm_epsilon"])
    return np.stack([ln(x) @ p["wte.weight"].T for x in xs])


EOS = 50256   # <|endoftext|>


def process_logits(logits, history, n_new, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0):
    """transformers' RepetitionPenalty, NoRepeatNGram and MinNewTokensLength logits processors on one
    sequence's next-token logits [V], written from their documented rules: history is the sequence so
    far (prompt, then n_new generated tokens)."""
    out = np.array(logits, dtype=np.float64)
    if repetition_penalty != 1.0:                  # CTRL: divide a positive logit, multiply a negative one
        seen = np.unique(np.array(history, dtype=np.int64))
        score = out[seen]
        out[seen] = np.where(score < 0, score * repetition_penalty, score / repetition_penalty)
    n = no_repeat_ngram_size
    if n > 0 and len(history) + 1 >= n:            # the n-grams seen, keyed by their first n - 1 tokens
        ngrams: dict[tuple, set] = {}
        for i in range(len(history) - n + 1):
            ngrams.setdefault(tuple(history[i:i + n - 1]), set()).add(history[i + n - 1])
        for t in ngrams.get(tuple(history[len(history) - n + 1:]) if n > 1 else (), ()):
            out[t] = -np.inf
    if n_new < min_new_tokens:
        out[EOS] = -np.inf
    return out


def greedy_processed(tokens, n, cfg, p, **processors):  # [T] -> n new tokens, the processors applied
    out = list(tokens)
    for i in range(n):
        out.append(int(np.argmax(process_logits(forward(out, cfg, p)[-1], out, i, **processors))))
    return out[len(tokens):]


def sampling_distribution(logits, temperature, top_k=None, top_p=None, min_p=None):
    """[(token, probability)], most likely first: what sampling draws from, in transformers' order
    (temperature, top_k, top_p, min_p); ties go to the lower token id; -inf logits are left out."""
    logits = np.asarray(logits, dtype=np.float64)
    order = [i for i in sorted(range(len(logits)), key=lambda i: (-logits[i], i)) if logits[i] > -np.inf]
    order = order[: top_k or len(order)]
    z = logits[order] / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None:                              # the smallest prefix whose mass reaches top_p
        keep = np.concatenate([[0], np.cumsum(p)[:-1]]) < top_p
        order, p = [o for o, k in zip(order, keep) if k], p[keep]
    if min_p is not None:                              # at least min_p times the likeliest
        keep = p >= min_p * p.max()
        order, p = [o for o, k in zip(order, keep) if k], p[keep]
    return list(zip(order, p / p.sum()))


def log_softmax(x):  # [n] -> [n]
    x = np.asarray(x, dtype=np.float64)
    return x - (x.max() + np.log(np.sum(np.exp(x - x.max()))))


def beam_search(tokens, n, cfg, p, num_beams, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1, **processors):
    """transformers' beam search (BeamSearchScorer and BeamHypotheses) for one prompt, written from
    their rules: each step scores every live beam's next tokens as its sum of log-probabilities so
    far plus log_softmax(logits) after the processors, keeps the 2 * num_beams best (ties: lower beam,
    then lower token); among them, in order, an end-of-text within the first num_beams finishes a
    hypothesis (scored sum / generated_length ** length_penalty, the end-of-text counted), any other
    token continues a beam until num_beams are chosen. Stops when the hypotheses are done
    (early_stopping True: num_beams of them; False: no live beam could beat the worst by this step's
    length; 'never': nor by the longest possible length when length_penalty > 0) or after n tokens,
    when the live beams join the hypotheses. -> [(tokens, score)], best first."""
    hyps: list[tuple[float, list[int]]] = []               # (score, generated tokens), at most num_beams

    def add(gen, total, length):
        score = total / length ** length_penalty
        if len(hyps) < num_beams or score > min(h[0] for h in hyps):
            hyps.append((score, gen))
            if len(hyps) > num_beams:
                hyps.remove(min(hyps, key=lambda h: h[0]))  # the first of the lowest

    def done(best_total, length):
        if len(hyps) < num_beams:
            return False
        if early_stopping is True:
            return True
        if early_stopping == "never" and length_penalty > 0:
            length = n
        return min(h[0] for h in hyps) >= best_total / length ** length_penalty

    beams = [([], 0.0)]                                     # (generated tokens, sum of log-probs)
    for step in range(1, n + 1):
        cands = []
        for b, (gen, total) in enumerate(beams):
            scores = process_logits(log_softmax(forward(list(tokens) + gen, cfg, p)[-1]), list(tokens) + gen,
                                    step - 1, **processors)
            cands += [(total + scores[t], b, t) for t in range(len(scores))]
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))
        cands = cands[: 2 * num_beams]
        nxt = []
        for rank, (total, b, t) in enumerate(cands):
            if t == EOS:
                if rank < num_beams:
                    add(beams[b][0] + [t], total, step)
            else:
                nxt.append((beams[b][0] + [t], total))
            if len(nxt) == num_beams:
                break
        beams = nxt
        if done(cands[0][0], step):
            break
    else:
        for gen, total in beams:
            add(gen, total, n)
    ranked = sorted(hyps, key=lambda h: h[0])[::-1]        # equal scores: the later-added first
    return [(gen, score) for score, gen in ranked[:num_return_sequences]]


def stream_uniform(seed, stream, step):
    """The seeded draw generation uses for sequence `stream` at `step`: 52 bits of an md5."""
    import hashlib
    text = f"gpt2sql {seed!r} {stream} {step}"
    return int(hashlib.md5(text.encode()).hexdigest()[:13], 16) / 2.0 ** 52


def sample_seeded(tokens, n, cfg, p, seed, stream, temperature, top_k=None, top_p=None, min_p=None):
    """n tokens sampled as a seeded generation draws sample `stream`: at each step the first token
    (most likely first) whose cumulative probability exceeds that step's draw."""
    out = list(tokens)
    for step in range(1, n + 1):
        dist = sampling_distribution(forward(out, cfg, p)[-1], temperature, top_k, top_p, min_p)
        u = stream_uniform(seed, stream, step)
        cum = np.cumsum([q for _, q in dist])
        out.append(int(dist[min(int(np.searchsorted(cum, u, side="right")), len(dist) - 1)][0]))
    return out[len(tokens):]
