"""Pictures of a trace: attention heatmaps (PNG/SVG with matplotlib, or one self-contained HTML
page of every head) and the logit lens (PNG/SVG).

    gpt2sql show attention --model demo --prompt "The database said" --layer 0 --head 1 -o head.png
    gpt2sql show attention --model demo --trace 7 -o heads.html
    gpt2sql show logit-lens --model demo --trace 7 -o lens.svg
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from .client import Trace
from .files import check_writable, write_text

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("pictures in PNG/SVG need matplotlib, gpt2sql's [show] extra: in the checkout, "
                          "python3 -m pip install -e '.[show]' (or write .html, which needs nothing)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\x7f": "␡"}


def _visible(ch: str) -> str:
    if ch in VISIBLE:
        return VISIBLE[ch]
    return chr(0x2400 + ord(ch)) if ch < " " else f"\\u{ord(ch):04x}"


def label(piece: str) -> str:
    """A token's text made visible on an axis, as the explorer shows it: spaces as '␣', newlines as
    '⏎', tabs as '⇥', other control characters as their control pictures (CR as '␍')."""
    return re.sub("[\x00-\x20\x7f-\x9f\u2028\u2029]", lambda m: _visible(m[0]), piece) or "∅"


def attention_image(trace: Trace, layer: int, head: int, out: Path) -> Path:
    """One head's attention weights as a heatmap: query positions down, key positions across."""
    weights = trace.attention_matrix(layer, head)                          # [T, T]
    plt = _pyplot()
    n = len(trace.tokens)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    shown = np.ma.masked_where(np.triu(np.ones_like(weights, dtype=bool), k=1), weights)
    im = ax.imshow(shown, cmap="viridis", vmin=0, vmax=1)
    ticks = [f"{label(p)} ({i})" for i, p in enumerate(trace.pieces)]
    ax.set_xticks(range(n), ticks, rotation=90)
    ax.set_yticks(range(n), ticks)
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position")
    ax.set_title(f"{trace.model.name}: layer {layer}, head {head} (trace {trace.id})")
    if n <= 16:
        for q in range(n):
            for k in range(q + 1):
                ax.text(k, q, f"{weights[q, k]:.2f}", ha="center", va="center",
                        color="white" if weights[q, k] < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="attention weight (softmax of q·k/√D)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def logit_lens_image(trace: Trace, out: Path) -> Path:
    """The logit lens as a grid: layers up, positions across; each cell the top-1 token's text,
    coloured by its probability."""
    rows = trace.logit_lens(1)
    n_layers, n = max(r.layer for r in rows) + 1, len(trace.tokens)
    prob = np.zeros((n_layers, n))
    piece = [[""] * n for _ in range(n_layers)]
    for r in rows:
        prob[r.layer, r.position], piece[r.layer][r.position] = r.probability, r.piece
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(3 + 1.1 * n, 40), min(2 + 0.5 * n_layers, 30)))
    im = ax.imshow(prob, cmap="magma", origin="lower", aspect="auto")
    for layer in range(n_layers):
        for pos in range(n):
            ax.text(pos, layer, label(piece[layer][pos]), ha="center", va="center", fontsize=7,
                    color="white" if prob[layer, pos] < (prob.max() + prob.min()) / 2 else "black")
    ax.set_xticks(range(n), [f"{label(p)} ({i})" for i, p in enumerate(trace.pieces)], rotation=90)
    ax.set_yticks(range(n_layers), ["embeddings"] + [f"after block {i}" for i in range(n_layers - 1)])
    ax.set_xlabel("position (the prediction is for the token after it)")
    ax.set_title(f"{trace.model.name}: logit lens, top-1 token per layer (trace {trace.id})")
    fig.colorbar(im, ax=ax, label="probability of the top-1 token")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _head_svg(trace: Trace, layer: int, head: int, cell: int) -> str:
    """One head's attention matrix as an inline SVG; hovering a cell shows its numbers."""
    n = len(trace.tokens)
    cells = []
    for a in trace.attention(layer, head):
        shade = int(255 * (1 - a.weight))
        tip = (f"layer {layer} head {head}\nquery {a.position} {label(a.query_piece)} → key {a.key_position} "
               f"{label(a.key_piece)}\nweight {a.weight:.6f}\nscore {a.score:.6f}")
        cells.append(f'<rect x="{a.key_position * cell}" y="{a.position * cell}" width="{cell}" height="{cell}" '
                     f'fill="rgb({shade},{shade},255)"><title>{html.escape(tip)}</title></rect>')
    side = n * cell
    return (f'<svg width="{side}" height="{side}" viewBox="0 0 {side} {side}" role="img" '
            f'aria-label="layer {layer} head {head}"><rect width="{side}" height="{side}" fill="#f4f4f4"/>'
            + "".join(cells) + "</svg>")


def attention_html(trace: Trace, out: Path) -> Path:
    """Every head of every layer on one self-contained page (no scripts, no network)."""
    n_layer, n_head = trace.model.query("SELECT n_layer, n_head FROM {m}.config")[0]
    cell = max(4, min(24, 240 // max(1, len(trace.tokens))))
    tokens = " ".join(f"<code>{i}:{html.escape(label(p))}</code>" for i, p in enumerate(trace.pieces))
    grid = []
    for layer in range(n_layer):
        heads = "".join(f'<figure>{_head_svg(trace, layer, head, cell)}<figcaption>head {head}</figcaption></figure>'
                        for head in range(n_head))
        grid.append(f"<h2>layer {layer}</h2><div class=\"heads\">{heads}</div>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(trace.model.name)} attention, trace {trace.id}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
.heads {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} figcaption {{ text-align: center; font-size: 0.85em; }}
rect:hover {{ stroke: #d00; stroke-width: 2; }}
code {{ background: #eee; padding: 0 0.2em; margin-right: 0.3em; }}
</style></head>
<body>
<h1>Attention of {html.escape(trace.model.name)} on {html.escape(repr(trace.prompt))}</h1>
<p>Trace {trace.id}. Each square is one head: row = query position, column = key position (top-left is
position 0); darker = more weight. Hover a cell for its weight and score. Tokens: {tokens}</p>
<p>The same numbers in SQL: <code>SELECT * FROM {html.escape(trace.model.name)}.attention_pattern({trace.id}, layer, head);</code></p>
{"".join(grid)}
</body></html>
"""
    write_text(out, page)
    return out


# picture -> the file suffixes it is drawn in
SUFFIXES = {"attention": (".png", ".svg", ".html"), "logit-lens": (".png", ".svg")}


def check_head(config: dict, layer: int, head: int) -> None:
    """Refuse a (layer, head) the model does not have, naming the ones it has."""
    if not (0 <= layer < config["n_layer"] and 0 <= head < config["n_head"]):
        raise ValueError(f"the model has no layer {layer}, head {head}: its layers are 0..{config['n_layer'] - 1}, "
                         f"its heads 0..{config['n_head'] - 1}")


def check_output(picture: str, out: str | Path) -> Path:
    """The file to write, refused (before any work) unless its suffix is one the picture is drawn in."""
    out = Path(out)
    allowed = SUFFIXES[picture]
    if out.suffix.lower() not in allowed:
        raise ValueError(f"cannot write {out.name}: the file name must end in {', '.join(allowed)}")
    return check_writable(out)
