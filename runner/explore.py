"""The explorer: one self-contained HTML page with every value of a traced forward pass.

    gpt2sql explore "The module is imported by the" --model demo -o page.html
    gpt2sql explore --trace 7 --model demo --ablate 1.2,3.0 -o what-if.html

The page walks the forward pass in order (text -> BPE -> tokens -> embeddings -> each block ->
ln_f -> logits -> logit lens). Every number on it is a cell carrying ``data-value`` (the value
stored by trace()) and ``data-sql`` (a query that recomputes exactly that value from the model's
tables and the trace, runnable as is in psql). Hovering or focusing a cell shows its formula with
its actual inputs and that query; clicking copies the query. Scripts, styles and data are inline:
the file needs no network.

Python gathers the trace (a few queries, below); the page's script (explore.js beside this file)
builds the cells, their SQL and their formulas from that data.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Sequence

from .client import Trace
from .files import check_writable, write_text

TOP_K = 10      # predictions shown per position


def parse_ablate(text: str | None) -> list[tuple[int, int]]:
    """'0.1,1.3' -> [(0, 1), (1, 3)]: layer.head pairs (ASCII digits), comma-separated."""
    if text is None:
        return []
    pairs = []
    for item in text.split(","):
        found = re.fullmatch(r"\s*([0-9]+)\.([0-9]+)\s*", item)
        if not found:
            raise ValueError(f"--ablate takes layer.head pairs separated by commas, e.g. 0.1,1.3; got {item.strip()!r}")
        pairs.append((int(found[1]), int(found[2])))
    return pairs


def check_output(out: str | Path) -> Path:
    """The page's file, refused (before any work) unless it ends in .html and its folder is writable."""
    out = Path(out)
    if out.suffix.lower() != ".html":
        raise ValueError(f"cannot write {out.name}: the explorer writes one HTML page, so the file name must end in .html")
    return check_writable(out)


def check_top_k(k: object) -> int:
    """The number of predictions shown per position: an int from 1 to 100 (logit_lens' bound)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
        raise ValueError(f"the number of predictions shown per position must be from 1 to 100, got {k!r}")
    return k


def _rows(trace: Trace, template: str, params: Sequence = ()) -> list[tuple]:
    return trace.model.query(template, params)


def collect(trace: Trace, ablated: Trace | None = None, k: int = TOP_K) -> dict:
    """Everything the page shows, read from the trace tables (and the model's small tensors)."""
    model, tid = trace.model, trace.id
    cfg = {c: v for c, v in model.config().items()
           if c in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "layer_norm_epsilon", "kernel")}
    n_layer, n_head, t = cfg["n_layer"], cfg["n_head"], len(trace.tokens)

    vectors = {}        # "stage" or "stage@layer" -> [T][n]
    for stage, layer, value in _rows(trace, "SELECT stage, layer, array_agg(value ORDER BY position) FROM {m}.trace_vectors "
                                            "WHERE trace_id = %s AND stage <> 'logits' GROUP BY stage, layer", (tid,)):
        vectors[stage if layer is None else f"{stage}@{layer}"] = value

    attention = {"score": [[[[None] * t for _ in range(t)] for _ in range(n_head)] for _ in range(n_layer)],
                 "weight": [[[[None] * t for _ in range(t)] for _ in range(n_head)] for _ in range(n_layer)]}
    for layer, head, pos, key, score, weight in _rows(
            trace, "SELECT layer, head, position, key_position, score, weight FROM {m}.trace_attention WHERE trace_id = %s", (tid,)):
        attention["score"][layer][head][pos][key] = score
        attention["weight"][layer][head][pos][key] = weight

    top = [[] for _ in range(t)]   # position -> [token, piece, logit, probability] by rank
    lse = [0.0] * t                # position -> log-sum-exp of its logits
    for pos, _rank, token, piece, logit, prob, z in _rows(trace, """
            SELECT s.position, d.rank, d.token, ({m}.decode_utf8(v.bytes, true)).txt, d.logit, d.probability, {m}.logsumexp(s.value)
              FROM {m}.trace_vectors AS s
             CROSS JOIN LATERAL {m}.top_tokens(s.value, %s) AS d
              JOIN {m}.vocab AS v ON v.token = d.token
             WHERE s.trace_id = %s AND s.stage = 'logits'
             ORDER BY s.position, d.rank""", (k, tid)):
        top[pos].append([token, piece, logit, prob])
        lse[pos] = z

    lens = [[None] * t for _ in range(n_layer + 1)]    # layer (0 = embeddings) -> position -> [token, piece, p]
    for r in trace.logit_lens(1):
        lens[r.layer][r.position] = [r.token, r.piece, r.probability]

    data = {
        "model": model.name,
        "schema": model.quoted(),
        "config": cfg,
        "trace": tid,
        "prompt": trace.prompt,
        "tokens": trace.tokens,
        "pieces": trace.pieces,
        "ablate": [list(p) for p in trace.ablate],
        "bpe": [list(r[:6]) for r in _rows(trace, "SELECT * FROM {m}.tokenize_trace(%s) ORDER BY piece_index, step",
                                           (trace.prompt,))],
        "formulas": dict(_rows(trace, "SELECT stage, formula FROM {m}.trace_stages")),
        "vectors": vectors,
        "params": dict(_rows(trace, "SELECT name, value::float8[] FROM {m}.vectors")),
        "attention": attention,
        "top": top,
        "lse": lse,
        "lens": lens,
        "k": k,
        "compare": None,
        "walkthrough": walkthrough_uri(),
    }
    if ablated is not None:
        data["compare"] = {
            "trace": ablated.id,
            "ablate": [list(p) for p in ablated.ablate],
            "predictions": [[c.position, c.rank, c.piece_a, c.probability_a, c.piece_b, c.probability_b,
                             c.probability_b_of_a] for c in trace.compare(ablated, min(k, 5))],
            "residuals": [[r.layer, r.sublayer, r.position, r.distance, r.norm_a]
                          for r in trace.compare_residuals(ablated)],
        }
    return data


def walkthrough_file() -> Path | None:
    """docs/walkthrough.md of the checkout gpt2sql runs from (an editable install), if there is one."""
    path = Path(__file__).resolve().parent.parent / "docs" / "walkthrough.md"
    return path if path.is_file() else None


def walkthrough_uri() -> str | None:
    path = walkthrough_file()
    return path.as_uri() if path else None


def json_for_script(data: dict) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' at all, so neither '</script' nor '<!--' can
    change how the HTML parser reads the element (JSON.parse reads the \\u escapes back)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(data: dict, title: str | None = None) -> str:
    """The page: its style, script and ``data`` inline."""
    here = Path(__file__).resolve().parent
    title = title or f"{data['model']}: inside the forward pass of {data['prompt']!r}"
    return (PAGE.replace("{title}", html.escape(title))
                .replace("{style}", (here / "explore.css").read_text(encoding="utf-8"))
                .replace("{script}", (here / "explore.js").read_text(encoding="utf-8"))
                .replace("{data}", json_for_script(data)))


def ablated_twin(trace: Trace, ablate: Sequence[tuple[int, int]]) -> Trace:
    """A trace of the same tokens with the output of the (layer, head) pairs in ``ablate`` zeroed."""
    return trace.model.trace(trace.tokens, ablate=ablate)


def write_page(trace: Trace, out: str | Path, ablate: Sequence[tuple[int, int]] = (), k: int = TOP_K) -> Path:
    """Write the explorer page of ``trace`` to ``out`` (.html). With ``ablate`` ((layer, head)
    pairs), a trace of the same tokens with those heads zeroed is made and shown beside it.
    The file is written whole or not at all."""
    out = check_output(out)
    check_top_k(k)
    ablated = ablated_twin(trace, ablate) if ablate else None
    return write_text(out, render(collect(trace, ablated, k)))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{style}
</style></head>
<body>
<div id="page"><main id="walk"><div id="controls"></div><div id="walk-body"></div></main>
<aside id="inspector" aria-live="polite"><p class="hint">Hover or focus any value to see how it was
computed and the SQL that recomputes it; click it to keep it here and copy that SQL.</p></aside></div>
<script type="application/json" id="data">{data}</script>
<script>
{script}
</script>
</body></html>
"""
