"""Train the small GPT-2 that `gpt2sql demo` ships: from scratch, on the CPU, reproducibly.

    python3 -m pip install -e '.[train]'            # PyTorch (CPU) and tiktoken, for this script only
    python3 tools/train_demo_model.py corpus         # fetch the Debian package, extract its prose
    python3 tools/train_demo_model.py train --steps 2400 --out runner/demo_model

The corpus is the prose of the Python 3.11 documentation as Debian ships it in
`python3.11-doc` (PSF License): the reStructuredText sources under
html/_sources, reduced to paragraphs of running text (code, tables, directives
and titles dropped; inline markup unwrapped). `corpus --source kjv` extracts
the King James Bible from Debian's `bible-kjv-text` (public domain) instead, for
comparison. Documents are split into train and held-out by a hash of their name.

The model is exactly the architecture gpt2sql runs (tanh GELU, pre-norm blocks,
learned positions, LM head tied to the token embedding) with the genuine GPT-2
tokenizer; the checkpoint is written in the Hugging Face layout, float16:
config.json, model.safetensors, vocab.json, merges.txt, plus run.json (the
hyper-parameters, steps, minutes, losses) and loss.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "train"                  # downloaded packages, corpora, trial runs
EOT = 50256                                      # <|endoftext|>: separates documents

PACKAGES = {  # source -> Debian package holding its text, and its licence
    "pydoc": ("python3.11-doc", "PSF-2.0 (Python Software Foundation License)"),
    "kjv": ("bible-kjv-text", "public domain"),
}


# ---------------------------------------------------------------- corpus

def fetch_package(package: str) -> tuple[Path, dict]:
    """apt-get download PACKAGE into WORK/debs and unpack it -> (folder, provenance)."""
    debs = WORK / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1]
    tree = debs / deb.stem
    if not tree.exists():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree, {"package": package, "version": deb.stem.split("_")[1], "file": deb.name,
                  "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}


ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)(?:\s*<[^`>]*>)?`")       # :func:`~os.path.join` -> os.path.join
LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")                           # `text <url>`_ -> text
REF = re.compile(r"`([^`]+)`_{1,2}")                                      # `text`_ -> text
LITERAL = re.compile(r"``([^`]+)``")                                      # ``x`` -> x
EMPHASIS = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")                        # *x*, **x** -> x
TITLE_LINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")                # ===== under or over a title
BULLET = re.compile(r"^(?:[*\-+]|\d+\.|#\.)\s+")


def unwrap_markup(text: str) -> str:
    text = ROLE.sub(lambda m: m.group(1).split(".")[-1] if m.group(0).find("~") > 0 else m.group(1), text)
    text = LINK.sub(r"\1", text)
    text = REF.sub(r"\1", text)
    text = LITERAL.sub(r"\1", text)
    text = EMPHASIS.sub(r"\1", text)
    text = text.replace("\\", "")
    return re.sub(r"::$", ":", text).strip()


def prose_paragraphs(rst: str) -> list[str]:
    """The paragraphs of running text in one reStructuredText document.

    Indented blocks are kept (the library reference's prose sits inside its
    directives) unless they hold code: after a paragraph ending in '::' or a
    code directive. Titles, tables, field lists and comments are dropped.
    """
    out = []
    code_follows = False
    for block in re.split(r"\n\s*\n", rst):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        indented = lines[0][0] in " \t"
        first = lines[0].strip()
        was_code, code_follows = code_follows, False
        if first.startswith(".."):                    # a directive: code inside it is not prose
            code_follows = bool(re.match(r"\.\. (code-block|sourcecode|doctest|testcode|testoutput|"
                                         r"productionlist|highlight|literalinclude)", first))
            continue
        if indented and was_code:
            code_follows = True                      # more of the same code block
            continue
        code_follows = first.endswith("::") or lines[-1].rstrip().endswith("::")
        if first.startswith((">>>", "|", "+", ":", "=", "$", "%")) or any(TITLE_LINE.match(x.strip()) for x in lines):
            continue                                 # doctests, tables, field lists, titles
        para = BULLET.sub("", " ".join(line.strip() for line in lines))
        para = unwrap_markup(para)
        words = para.split()
        letters = sum(ch.isalpha() or ch == " " for ch in para)
        if len(words) >= 8 and letters >= 0.85 * len(para):
            out.append(" ".join(words))
    return out


def pydoc_documents(tree: Path) -> dict[str, str]:
    """document name -> its prose, from the Python documentation's reST sources."""
    sources = tree / "usr/share/doc/python3.11/html/_sources"
    docs = {}
    for f in sorted(sources.rglob("*.rst.txt")):
        paras = prose_paragraphs(f.read_text(encoding="utf-8", errors="replace"))
        if paras:
            docs[str(f.relative_to(sources))] = "\n\n".join(paras)
    return docs


def kjv_documents(tree: Path) -> dict[str, str]:
    """book -> its text, through the `bible` program of Debian's bible-kjv (verse numbers dropped)."""
    prog, _ = fetch_package("bible-kjv")
    books = ("Ge Ex Le Nu De Jos Jud Ru 1Sa 2Sa 1Ki 2Ki 1Ch 2Ch Ezr Ne Es Job Ps Pr Ec So Isa Jer La Eze Da "
             "Ho Joe Am Ob Jon Mic Na Hab Zep Hag Zec Mal Mt Mr Lu Joh Ac Ro 1Co 2Co Ga Eph Php Col 1Th 2Th "
             "1Ti 2Ti Tit Phm Heb Jas 1Pe 2Pe 1Jo 2Jo 3Jo Jude Re").split()
    docs = {}
    for book in books:
        text = subprocess.run([str(prog / "usr/bin/bible"), "-p", str(tree / "usr/lib"), "-f", f"{book}1:1-{book}150:200"],
                              capture_output=True, text=True, check=True).stdout
        verses = [re.sub(r"^.*?\d+:\d+\s+", "", v).strip() for v in text.split("\n") if v.strip()]
        docs[book] = " ".join(verses)
    return docs


def held_out(name: str) -> bool:
    """About one document in twelve is held out, by a hash of its name (stable across runs)."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 12 == 0


def encode_documents(docs: dict[str, str]) -> np.ndarray:
    """Documents -> one stream of GPT-2 tokens, each document followed by <|endoftext|>."""
    enc = encoding()
    out: list[int] = []
    for name in sorted(docs):
        out += enc.encode(docs[name], disallowed_special=()) + [EOT]
    return np.array(out, dtype=np.uint16)


def encoding():
    """The genuine GPT-2 BPE (the package's vocab.json), through tiktoken."""
    import tiktoken
    sys.path.insert(0, str(ROOT / "tests"))
    from reference_tokenizer import encoding as gpt2_encoding  # builds it offline from the shipped files
    assert isinstance(gpt2_encoding(), tiktoken.Encoding)
    return gpt2_encoding()


def cmd_corpus(args) -> None:
    package, licence = PACKAGES[args.source]
    tree, provenance = fetch_package(package)
    docs = pydoc_documents(tree) if args.source == "pydoc" else kjv_documents(tree)
    out = WORK / "corpus" / args.source
    out.mkdir(parents=True, exist_ok=True)
    split = {"train": {k: v for k, v in docs.items() if not held_out(k)},
             "heldout": {k: v for k, v in docs.items() if held_out(k)}}
    manifest = {"source": args.source, "licence": licence, **provenance, "documents": {}}
    for part, ds in split.items():
        text = "\n\n<|endoftext|>\n\n".join(ds[k] for k in sorted(ds))
        (out / f"{part}.txt").write_text(text)
        tokens = encode_documents(ds)
        tokens.tofile(out / f"{part}.u16")
        manifest["documents"][part] = {"count": len(ds), "words": len(text.split()), "tokens": int(len(tokens)),
                                       "text_sha256": hashlib.sha256(text.encode()).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


# ---------------------------------------------------------------- model (PyTorch, the layout gpt2sql loads)

def build_model(n_layer: int, n_head: int, n_embd: int, n_positions: int, vocab: int = 50257):
    import torch
    from torch import nn

    def param(*shape, std=0.02):                                   # GPT-2's init
        return nn.Parameter(torch.randn(*shape) * std)

    class GPT2(nn.Module):
        """Weights named and laid out as in Hugging Face's GPT-2 (Conv1D: x @ W + b)."""

        def __init__(self):
            super().__init__()
            c, f = n_embd, 4 * n_embd
            self.wte = param(vocab, c)                             # [V, C], also the LM head
            self.wpe = param(n_positions, c, std=0.01)             # [P, C]
            proj_std = 0.02 / math.sqrt(2 * n_layer)               # GPT-2's scaled residual init
            self.h = nn.ModuleList()
            for _ in range(n_layer):
                b = nn.ParameterDict({
                    "ln_1_w": nn.Parameter(torch.ones(c)), "ln_1_b": nn.Parameter(torch.zeros(c)),
                    "c_attn_w": param(c, 3 * c), "c_attn_b": nn.Parameter(torch.zeros(3 * c)),
                    "c_proj_w": param(c, c, std=proj_std), "c_proj_b": nn.Parameter(torch.zeros(c)),
                    "ln_2_w": nn.Parameter(torch.ones(c)), "ln_2_b": nn.Parameter(torch.zeros(c)),
                    "fc_w": param(c, f), "fc_b": nn.Parameter(torch.zeros(f)),
                    "proj_w": param(f, c, std=proj_std), "proj_b": nn.Parameter(torch.zeros(c)),
                })
                self.h.append(b)
            self.ln_f_w = nn.Parameter(torch.ones(c))
            self.ln_f_b = nn.Parameter(torch.zeros(c))

        def forward(self, idx):                                    # [B, T] -> [B, T, V] logits
            F = nn.functional
            B, T = idx.shape
            c = n_embd
            x = self.wte[idx] + self.wpe[:T]                       # [B, T, C]
            for b in self.h:
                a = F.layer_norm(x, (c,), b["ln_1_w"], b["ln_1_b"], 1e-5)               # [B, T, C]
                q, k, v = (a @ b["c_attn_w"] + b["c_attn_b"]).split(c, dim=-1)       # 3 x [B, T, C]
                q, k, v = (t.view(B, T, n_head, c // n_head).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)          # [B, H, T, D]
                y = y.transpose(1, 2).reshape(B, T, c)                               # [B, T, C]
                x = x + y @ b["c_proj_w"] + b["c_proj_b"]                            # [B, T, C]
                m = F.layer_norm(x, (c,), b["ln_2_w"], b["ln_2_b"], 1e-5)               # [B, T, C]
                m = F.gelu(m @ b["fc_w"] + b["fc_b"], approximate="tanh")            # [B, T, 4C]
                x = x + m @ b["proj_w"] + b["proj_b"]                                # [B, T, C]
            x = F.layer_norm(x, (c,), self.ln_f_w, self.ln_f_b, 1e-5)                   # [B, T, C]
            return x @ self.wte.T                                                    # [B, T, V]

        def hf_tensors(self) -> dict:
            """name -> float16 numpy array, in the Hugging Face GPT-2 layout."""
            def h(t):
                return t.detach().to(torch.float16).contiguous().numpy()
            out = {"wte.weight": h(self.wte), "wpe.weight": h(self.wpe),
                   "ln_f.weight": h(self.ln_f_w), "ln_f.bias": h(self.ln_f_b)}
            names = {"ln_1_w": "ln_1.weight", "ln_1_b": "ln_1.bias",
                     "c_attn_w": "attn.c_attn.weight", "c_attn_b": "attn.c_attn.bias",
                     "c_proj_w": "attn.c_proj.weight", "c_proj_b": "attn.c_proj.bias",
                     "ln_2_w": "ln_2.weight", "ln_2_b": "ln_2.bias",
                     "fc_w": "mlp.c_fc.weight", "fc_b": "mlp.c_fc.bias",
                     "proj_w": "mlp.c_proj.weight", "proj_b": "mlp.c_proj.bias"}
            for i, b in enumerate(self.h):
                out.update({f"h.{i}.{hf}": h(b[k]) for k, hf in names.items()})
            return out

    return GPT2()


# ---------------------------------------------------------------- training

def batches(tokens: np.ndarray, batch: int, ctx: int, rng: np.random.Generator):
    """Endless random windows of ctx + 1 tokens -> (inputs [B, T], targets [B, T])."""
    import torch
    while True:
        starts = rng.integers(0, len(tokens) - ctx - 1, size=batch)
        w = np.stack([tokens[s:s + ctx + 1] for s in starts]).astype(np.int64)    # [B, T + 1]
        yield torch.from_numpy(w[:, :-1]), torch.from_numpy(w[:, 1:])


def evaluate(model, tokens: np.ndarray, ctx: int, limit: int = 200_000) -> float:
    """Mean next-token cross-entropy (nats) over consecutive windows of a held-out stream."""
    import torch
    F = torch.nn.functional
    tokens = tokens[:limit]
    n = (len(tokens) - 1) // ctx
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, 16):
            rows = range(i, min(n, i + 16))
            x = torch.from_numpy(np.stack([tokens[r * ctx:r * ctx + ctx] for r in rows]).astype(np.int64))
            y = torch.from_numpy(np.stack([tokens[r * ctx + 1:r * ctx + ctx + 1] for r in rows]).astype(np.int64))
            logits = model(x)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def probe_tokens() -> np.ndarray:
    """Plain modern English outside every corpus: the GNU GPL v3 text every Debian system has."""
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    return np.array(encoding().encode(text, disallowed_special=()), dtype=np.uint16)


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def cmd_train(args) -> None:
    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    corpora = [WORK / "corpus" / s for s in args.source.split("+")]
    for c in corpora:
        if not (c / "train.u16").exists():
            sys.exit(f"no corpus in {c}: run `{sys.argv[0]} corpus --source {c.name}` first")
    train = np.concatenate([np.fromfile(c / "train.u16", dtype=np.uint16) for c in corpora])
    heldouts = {c.name: np.fromfile(c / "heldout.u16", dtype=np.uint16) for c in corpora}
    if args.eval_on:
        heldouts = {s: np.fromfile(WORK / "corpus" / s / "heldout.u16", dtype=np.uint16) for s in args.eval_on.split(",")}
    heldouts["gpl3"] = probe_tokens()
    model = build_model(args.layers, args.heads, args.width, args.positions)
    params = [p for p in model.parameters()]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(args.seed)
    data = batches(train, args.batch, args.ctx, rng)
    curve = []
    t0 = time.time()
    stopped_early = None
    for step in range(args.steps):
        if args.max_minutes and (time.time() - t0) / 60 > args.max_minutes:
            stopped_early = step                 # the time limit, not the schedule, ended the run
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x, y = next(data)
        logits = model(x)                                                        # [B, T, V]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "train_loss": round(loss.item(), 4)}
            if step % args.eval_every == 0 or step == args.steps - 1:
                row.update({f"heldout_{k}": round(evaluate(model, v, args.ctx, args.eval_tokens), 4)
                            for k, v in heldouts.items()})
            curve.append(row)
            print(json.dumps(row), flush=True)
    minutes = (time.time() - t0) / 60
    if stopped_early is not None:
        print(f"stopped by --max-minutes {args.max_minutes} at step {stopped_early} of {args.steps}", flush=True)
        args.steps = stopped_early
    final = {f"heldout_{k}": evaluate(model, v, args.ctx, 10**9) for k, v in heldouts.items()}
    write_checkpoint(model, args, curve, final, minutes, corpora, stopped_early)


def write_checkpoint(model, args, curve, final, minutes, corpora, stopped_early=None) -> None:
    from safetensors.numpy import save_file
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
           "n_layer": args.layers, "n_head": args.heads, "n_embd": args.width, "n_positions": args.positions,
           "n_ctx": args.positions, "n_inner": None, "vocab_size": 50257, "layer_norm_epsilon": 1e-05,
           "bos_token_id": EOT, "eos_token_id": EOT, "tie_word_embeddings": True, "torch_dtype": "float16"}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(model.hf_tensors(), str(out / "model.safetensors"), metadata={"format": "pt"})
    tok = ROOT / "loader" / "tokenizer_data"
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tok / name, out / name)
    shutil.copyfile(tok / "LICENSE", out / "TOKENIZER_LICENSE")
    run = {"hyper_parameters": {k: v for k, v in vars(args).items() if k not in ("func", "out")},
           "corpus": [json.loads((c / "manifest.json").read_text()) for c in corpora],
           "steps": args.steps, "tokens_seen": args.steps * args.batch * args.ctx,
           "minutes": round(minutes, 1), "stopped_by_time_limit": stopped_early is not None,
           "final_train_loss": curve[-1]["train_loss"],
           "final_heldout_loss": {k: round(v, 4) for k, v in final.items()},
           "final_heldout_perplexity": {k: round(math.exp(v), 2) for k, v in final.items()},
           "torch": __import__("torch").__version__, "curve": curve}
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    plot_curve(curve, out / "loss.png")
    (out / "README.md").write_text(model_card(run, cfg, out))
    print(json.dumps({k: run[k] for k in ("minutes", "final_heldout_loss", "final_heldout_perplexity")}))


def model_card(run: dict, cfg: dict, out: Path) -> str:
    """The checkpoint's README: what it is, its data and licence, how good it is, how to remake it."""
    hp = run["hyper_parameters"]
    corpus = run["corpus"][0]
    docs = corpus["documents"]
    n_params = _n_params(out)
    loss = run["final_heldout_loss"]
    ppl = run["final_heldout_perplexity"]
    args = (f"--source {hp['source']} --layers {hp['layers']} --heads {hp['heads']} --width {hp['width']} "
            f"--positions {hp['positions']} --ctx {hp['ctx']} --batch {hp['batch']} --steps {hp['steps']} "
            f"--lr {hp['lr']} --warmup {hp['warmup']} --seed {hp['seed']}")
    return f"""# gpt2sql demo model

A small GPT-2 trained from scratch for gpt2sql's demo, walkthrough and pictures. **It is not
OpenAI's GPT-2**: same architecture (pre-norm blocks, tanh GELU, learned positions, LM head tied
to the token embedding) and the genuine GPT-2 tokenizer (50,257 tokens), but {cfg['n_layer']} layers,
{cfg['n_head']} heads, a {cfg['n_embd']}-wide residual stream and {cfg['n_positions']} positions
({n_params:,} parameters, float16), trained for {run['minutes']:.0f} minutes on 2 CPU cores. It writes
English in the style of the Python documentation; do not expect facts or long-range coherence.
For OpenAI's weights: `gpt2sql load gpt2` (needs the Hugging Face hub).

## Data

The prose of the Python 3.11 documentation as Debian ships it: package `{corpus['package']}`
{corpus['version']} (`{corpus['file']}`, sha256 `{corpus['sha256']}`), the reStructuredText
sources under `/usr/share/doc/python3.11/html/_sources`, reduced to paragraphs of running text
(code, tables, titles and directives dropped, inline markup unwrapped; `tools/train_demo_model.py`,
`prose_paragraphs`). Licence: {corpus['licence']}, © Python Software Foundation.
Documents are split by a hash of their name: {docs['train']['count']} documents for training
({docs['train']['words']:,} words, {docs['train']['tokens']:,} tokens, text sha256
`{docs['train']['text_sha256']}`), {docs['heldout']['count']} held out ({docs['heldout']['words']:,} words,
{docs['heldout']['tokens']:,} tokens, sha256 `{docs['heldout']['text_sha256']}`).

## Quality

| held-out text | loss (nats/token) | perplexity |
|---|---|---|
| Python documentation, held-out documents | {loss['heldout_pydoc']:.3f} | {ppl['heldout_pydoc']:.1f} |
| GNU GPL v3 (`/usr/share/common-licenses/GPL-3`, plain modern English outside the corpus) | {loss['heldout_gpl3']:.3f} | {ppl['heldout_gpl3']:.1f} |

A uniform guess over the vocabulary has perplexity 50,257. Final training loss (one batch):
{run['final_train_loss']:.3f}. {run['steps']:,} steps of {hp['batch']} x {hp['ctx']} tokens
({run['tokens_seen']:,} tokens seen, about {run['tokens_seen'] / docs['train']['tokens']:.1f} passes over the
training text), AdamW (lr {hp['lr']}, warm-up {hp['warmup']} steps, cosine decay to a tenth, weight decay 0.1,
gradient clip 1.0), seed {hp['seed']}, PyTorch {run['torch']}. The curve is `loss.png`; every figure is in
`run.json`.

## Remake it

```sh
python3 -m pip install -e '.[train]'      # PyTorch 2.13.0 (CPU) and tiktoken, for training only
python3 tools/train_demo_model.py corpus   # apt-get download {corpus['package']}, extract the prose
python3 tools/train_demo_model.py train {args} --out runner/demo_model
```

Same seed, same data and the same PyTorch build give the same batches and initial weights; the
floating-point sums of a multi-threaded CPU run are not bit-for-bit repeatable, so the weights
of a rerun differ in the last digits and its losses by about ±0.01.
"""


def _n_params(out: Path) -> int:
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), framework="np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def plot_curve(curve: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in curve], [r["train_loss"] for r in curve], label="train (one batch)", lw=1)
    for key in sorted({k for r in curve for k in r if k.startswith("heldout_")}):
        pts = [(r["step"], r[key]) for r in curve if key in r]
        ax.plot(*zip(*pts), marker="o", ms=3, label=key.replace("heldout_", "held-out: "))
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("corpus", help="download the Debian package and extract the text")
    p.add_argument("--source", choices=sorted(PACKAGES), default="pydoc")
    p.set_defaults(func=cmd_corpus)
    p = sub.add_parser("train", help="train and write the checkpoint")
    p.add_argument("--source", default="pydoc", help="corpus, or corpora joined by + (e.g. pydoc+kjv)")
    p.add_argument("--eval-on", default="", help="held-out sets to report (default: those of --source)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--positions", type=int, default=256)
    p.add_argument("--ctx", type=int, default=256, help="training window (<= positions)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-tokens", type=int, default=60_000)
    p.add_argument("--max-minutes", type=float, default=0, help="stop there even if steps remain (0: no limit)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
