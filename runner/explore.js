// The explorer page's script (explore.py inlines it). It reads the JSON in #data: a trace's data
// (a written page) or the live explorer's settings (gpt2sql explore --serve), and builds the walk:
// every value is a cell (class "v") carrying data-value (the value stored by trace()) and data-sql
// (a query recomputing it from the model's tables and the trace). Sections are built when first
// opened, so a big model's page stays quick to open.
"use strict";
(function () {
  const t0 = performance.now();
  const BOOT = JSON.parse(document.getElementById("data").textContent);
  const LIVE = BOOT.live || null;                        // the live explorer's settings, or null

  // ---- small helpers ---------------------------------------------------------------------
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  // a token's text with every space and control character made visible (and none left raw, so a
  // label can sit in an SQL comment): space \u2423, newline \u23ce, tab \u21e5, others as control pictures
  const VISIBLE = { " ": "\u2423", "\n": "\u23ce", "\t": "\u21e5", "\x7f": "\u2421" };
  const vis = (p) => (p || "").replace(/[\x00-\x20\x7f-\x9f\u2028\u2029]/g, (ch) => VISIBLE[ch] ||
    (ch < " " ? String.fromCharCode(0x2400 + ch.charCodeAt(0)) : "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0"))) || "\u2205";
  const fmt = (x) => (x === null || x === undefined) ? "\u2014" : (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(4) : x.toFixed(5));
  const fp = (x) => (x < 0 ? `(${fmt(x)})` : fmt(x));          // a number after an operator
  const short = (x) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));
  // colours: signed values on a diverging scale centred on 0 (blue < 0 < red), weights and
  // probabilities (0..1) on a sequential green one
  function diverging(x, scale) {
    const a = Math.min(1, Math.abs(x) / (scale || 1)), lo = Math.round(255 * (1 - a));
    return (x >= 0 ? `background:rgb(255,${lo},${lo})` : `background:rgb(${lo},${lo},255)`) + (a > 0.6 ? ";color:#fff" : "");
  }
  const heat = (w) => `background:rgba(0,110,70,${Math.max(0, Math.min(1, w)).toFixed(3)})` + (w > 0.55 ? ";color:#fff" : "");
  function scaleOf(rows, from, to) {
    let m = 0;
    for (const r of rows) for (let j = from; j < to; j++) m = Math.max(m, Math.abs(r[j]));
    return m;
  }
  // the sections of docs/walkthrough.md that explain each part of the page
  const GUIDE = {
    text: ["1-tokenization", "1. Tokenization"], embeddings: ["3-embeddings", "3. Embeddings"],
    ln: ["4-layer-norm", "4. Layer norm"], qkv: ["5-queries-keys-and-values", "5. Queries, keys and values"],
    attention: ["6-one-attention-head", "6. One attention head"], residual: ["7-the-residual-stream", "7. The residual stream"],
    mlp: ["8-the-mlp", "8. The MLP"], logits: ["9-logits-and-probabilities", "9. Logits and probabilities"],
    lens: ["10-the-logit-lens", "10. The logit lens"], cache: ["11-sampling", "11. Sampling"],
    whatif: ["12-which-head-does-what", "12. Which head does what"],
  };
  function guide(part) {
    const [anchor, title] = GUIDE[part];
    if (LIVE) return ` <a class="guide" href="walkthrough?token=${encodeURIComponent(LIVE.token)}#${anchor}" target="_blank">walkthrough \u00a7${esc(title)}</a>`;
    if (BOOT.walkthrough) return ` <a class="guide" href="${esc(BOOT.walkthrough)}">walkthrough \u00a7${esc(title)}</a>`;
    return ` <span class="guide">docs/walkthrough.md \u00a7${esc(title)}</span>`;
  }
  const teach = (part, text) => `<p class="teach">${text}${guide(part)}</p>`;

  // ---- one walk: the page of one trace (D), built into #walk-body --------------------------
  // prev: the walk of the step before (live generation), or null; keep: ids of sections to open
  function renderWalk(D, prev, keep) {
  const cfg = D.config, S = D.schema, TID = D.trace;
  const T = D.tokens.length, C = cfg.n_embd, NH = cfg.n_head, HD = C / NH, NL = cfg.n_layer;
  const EPS = cfg.layer_norm_epsilon;
  const ABL = D.ablate.length > 0;                       // this trace zeroed some heads
  const CMP = D.compare;                                 // an ablated twin, or null
  const key = (stage, layer) => (layer === null ? stage : stage + "@" + layer);
  const vec = (stage, layer) => D.vectors[key(stage, layer)];                 // [T][n]
  const param = (name) => D.params[name];                                     // [n]
  const ablated = (layer, head) => D.ablate.some((p) => p[0] === layer && p[1] === head);
  const tokLabel = (p) => `${p} ${vis(D.pieces[p])}`;
  const lq = (layer) => (layer === null ? "IS NULL" : "= " + layer);
  const at = (a, stage, layer, pos) =>
    `${a}.trace_id = ${TID} AND ${a}.stage = '${stage}' AND ${a}.layer ${lq(layer)} AND ${a}.position = ${pos}`;

  // where each stage's inputs come from
  const before = (l) => (l === 0 ? ["embedding", null] : ["residual_mlp", l - 1]);   // the stream entering block l
  const LN = {                                            // norm -> [input, parameter prefix]
    ln_1: (l) => [before(l), `h.${l}.ln_1`],
    ln_2: (l) => [["residual_attn", l], `h.${l}.ln_2`],
    ln_f: () => [["residual_mlp", NL - 1], "ln_f"],
  };
  const PRODUCT = {                                       // stage -> [input, weight prefix, first output row]
    q: (l) => [["ln_1", l], `h.${l}.attn.c_attn`, 0],
    k: (l) => [["ln_1", l], `h.${l}.attn.c_attn`, C],
    v: (l) => [["ln_1", l], `h.${l}.attn.c_attn`, 2 * C],
    attn_out: (l) => [["attn_heads", l], `h.${l}.attn.c_proj`, 0],
    mlp_fc: (l) => [["ln_2", l], `h.${l}.mlp.c_fc`, 0],
    mlp_out: (l) => [["mlp_gelu", l], `h.${l}.mlp.c_proj`, 0],
  };
  const RESIDUAL = {                                      // stage -> [stream before, what the sub-layer added]
    residual_attn: (l) => [before(l), ["attn_out", l]],
    residual_mlp: (l) => [["residual_attn", l], ["mlp_out", l]],
  };
  const NAMES = {
    token: "token id", token_embedding: "token embedding", position_embedding: "position embedding",
    embedding: "embedding x", ln_1: "ln_1", ln_2: "ln_2", ln_f: "ln_f", q: "query q", k: "key k", v: "value v",
    score: "attention score", weight: "attention weight", attn_heads: "head output", attn_out: "attn.c_proj output",
    residual_attn: "residual stream after attention", mlp_fc: "MLP pre-activation", mlp_gelu: "MLP activation (GELU)",
    mlp_out: "mlp.c_proj output", residual_mlp: "residual stream after the MLP", logit: "logit",
    probability: "probability", lens: "logit lens", distance: "residual change", prob_a: "probability (original)",
    prob_b: "probability (ablated)",
  };

  // a cell's coordinates, kept in its data-* attributes
  function coords(el) {
    const d = el.dataset, n = (x) => (x === undefined || x === "" ? null : Number(x));
    return { s: d.stage, l: n(d.layer), p: n(d.pos), i: n(d.dim), h: n(d.head), k: n(d.key), tok: n(d.tok),
             sub: d.sub || null, rank: n(d.rank), value: Number(d.value) };
  }

  function describe(c) {
    const parts = [];
    if (c.s === "lens") parts.push(c.l === 0 ? "embeddings" : `after block ${c.l - 1}`);
    else if (c.l !== null) parts.push(`block ${c.l}`);
    parts.push(NAMES[c.s] || c.s);
    if (c.sub) parts.push(c.sub);
    if (c.h !== null) parts.push(`head ${c.h}`);
    if (c.p !== null) parts.push(`position ${tokLabel(c.p)}`);
    if (c.k !== null) parts.push(`key ${tokLabel(c.k)}`);
    if (c.i !== null) parts.push(`dimension ${c.i}`);
    if (c.tok !== null) parts.push(`token ${c.tok}`);
    if (c.rank !== null) parts.push(`rank ${c.rank}`);
    return parts.join(" \u00b7 ");
  }

  // ---- the SQL that recomputes a cell ----------------------------------------------------
  function sqlBody(c) {
    const l = c.l, p = c.p, i = c.i;
    switch (c.s) {
      case "token":
        return `SELECT (${S}.tokenize(prompt))[${p + 1}] AS token\n  FROM ${S}.traces WHERE trace_id = ${TID};`;
      case "token_embedding":
        return `SELECT value FROM ${S}.matrix_cells\n WHERE name = 'wte.weight' AND col = ${i}\n` +
               `   AND row = (SELECT tokens[${p + 1}] FROM ${S}.traces WHERE trace_id = ${TID});`;
      case "position_embedding":
        return `SELECT value FROM ${S}.matrix_cells\n WHERE name = 'wpe.weight' AND row = ${p} AND col = ${i};`;
      case "embedding":
        return `SELECT te.value + pe.value AS value\n  FROM ${S}.matrix_cells AS te, ${S}.matrix_cells AS pe\n` +
               ` WHERE te.name = 'wte.weight' AND te.col = ${i}\n` +
               `   AND te.row = (SELECT tokens[${p + 1}] FROM ${S}.traces WHERE trace_id = ${TID})\n` +
               `   AND pe.name = 'wpe.weight' AND pe.row = ${p} AND pe.col = ${i};`;
      case "ln_1": case "ln_2": case "ln_f": {
        const [[is, il], g] = LN[c.s](l);
        return `SELECT (x.value[${i + 1}] - avg(u.e)) / sqrt(var_pop(u.e) + c.layer_norm_epsilon)\n` +
               `       * g.value[${i + 1}] + b.value[${i + 1}] AS value\n` +
               `  FROM ${S}.trace_vectors AS x\n CROSS JOIN LATERAL unnest(x.value) AS u(e)\n CROSS JOIN ${S}.config AS c\n` +
               `  JOIN ${S}.vectors AS g ON g.name = '${g}.weight'\n  JOIN ${S}.vectors AS b ON b.name = '${g}.bias'\n` +
               ` WHERE ${at("x", is, il, p)}\n GROUP BY x.value, g.value, b.value, c.layer_norm_epsilon;`;
      }
      case "q": case "k": case "v": case "attn_out": case "mlp_fc": case "mlp_out": {
        const [[is, il], w, off] = PRODUCT[c.s](l), j = off + i;
        return `SELECT sum(x.e * w.value) + b.value[${j + 1}] AS value\n  FROM ${S}.trace_vectors AS s\n` +
               ` CROSS JOIN LATERAL unnest(s.value) WITH ORDINALITY AS x(e, i)\n` +
               `  JOIN ${S}.matrix_cells AS w ON w.name = '${w}.weight' AND w.row = ${j} AND w.col = x.i - 1\n` +
               `  JOIN ${S}.vectors AS b ON b.name = '${w}.bias'\n WHERE ${at("s", is, il, p)}\n GROUP BY b.value;`;
      }
      case "score":
        return `SELECT sum(q.q * k.k) / sqrt(${HD}) AS score\n  FROM ${S}.trace_qkv AS q\n` +
               `  JOIN ${S}.trace_qkv AS k USING (trace_id, layer, head, dimension)\n` +
               ` WHERE q.trace_id = ${TID} AND q.layer = ${l} AND q.head = ${c.h} AND q.position = ${p} AND k.position = ${c.k};`;
      case "weight":
        return `WITH scores AS (SELECT key_position, score FROM ${S}.trace_attention\n` +
               `                 WHERE trace_id = ${TID} AND layer = ${l} AND head = ${c.h} AND position = ${p})\n` +
               `SELECT exp(r.score - m.top) / (SELECT sum(exp(o.score - m.top)) FROM scores AS o) AS weight\n` +
               `  FROM scores AS r, (SELECT max(score) AS top FROM scores) AS m\n WHERE r.key_position = ${c.k};`;
      case "attn_heads": {
        const h = Math.floor(i / HD), d = i % HD;
        const sum = ABL ? `CASE WHEN ${S}.trace_ablated(${TID}, ${l}, ${h}) THEN 0 ELSE sum(a.weight * v.v) END` : "sum(a.weight * v.v)";
        return `SELECT ${sum} AS value\n  FROM ${S}.trace_attention AS a\n` +
               `  JOIN ${S}.trace_qkv AS v ON v.trace_id = a.trace_id AND v.layer = a.layer AND v.head = a.head\n` +
               `                          AND v.position = a.key_position\n` +
               ` WHERE a.trace_id = ${TID} AND a.layer = ${l} AND a.head = ${h} AND a.position = ${p} AND v.dimension = ${d};`;
      }
      case "residual_attn": case "residual_mlp": {
        const [[xs, xl], [os, ol]] = RESIDUAL[c.s](l);
        return `SELECT x.value[${i + 1}] + o.value[${i + 1}] AS value\n  FROM ${S}.trace_vectors AS x, ${S}.trace_vectors AS o\n` +
               ` WHERE ${at("x", xs, xl, p)}\n   AND ${at("o", os, ol, p)};`;
      }
      case "mlp_gelu":
        return `SELECT 0.5 * f.x * (1 + tanh(sqrt(2 / pi()) * (f.x + 0.044715 * f.x * f.x * f.x))) AS value\n` +
               `  FROM (SELECT s.value[${i + 1}] AS x FROM ${S}.trace_vectors AS s\n         WHERE ${at("s", "mlp_fc", l, p)}) AS f;`;
      case "logit":
        return `SELECT sum(x.e * w.value) AS logit\n  FROM ${S}.trace_vectors AS s\n` +
               ` CROSS JOIN LATERAL unnest(s.value) WITH ORDINALITY AS x(e, i)\n` +
               `  JOIN ${S}.matrix_cells AS w ON w.name = 'wte.weight' AND w.row = ${c.tok} AND w.col = x.i - 1\n` +
               ` WHERE ${at("s", "ln_f", null, p)};`;
      case "probability":
        return `SELECT exp(s.value[${c.tok + 1}] - ${S}.logsumexp(s.value)) AS probability\n` +
               `  FROM ${S}.trace_vectors AS s\n WHERE ${at("s", "logits", null, p)};`;
      case "lens":
        return `SELECT probability FROM ${S}.logit_lens(${TID}, 1, ${p}) WHERE layer = ${l};`;
      case "distance":
        return `SELECT distance FROM ${S}.compare_residuals(${TID}, ${CMP.trace})\n` +
               ` WHERE layer = ${l} AND sublayer = '${c.sub}' AND position = ${p};`;
      case "prob_a": case "prob_b":
        return `SELECT probability_${c.s.slice(-1)} FROM ${S}.compare_traces(${TID}, ${CMP.trace}, 5)\n` +
               ` WHERE position = ${p} AND rank = ${c.rank};`;
    }
    throw new Error("no SQL for stage " + c.s);
  }
  // where a query indexes a PostgreSQL array (counted from 1) or a lens layer, the SQL says so
  function indexNote(c, body) {
    const seen = new Set(), said = [];
    for (const [, name, n] of body.matchAll(/\b(tokens|value)\[(\d+)\]/g)) {
      if (seen.has(name + n)) continue;
      seen.add(name + n);
      said.push(`${name}[${n}] is ${name === "tokens" ? "position" : "element"} ${n - 1}`);
    }
    let note = said.length ? `-- PostgreSQL arrays count from 1: ${said.join(", ")}\n` : "";
    if (c.s === "lens")
      note += `-- logit_lens counts from the embeddings (layer 0), so ${c.l === 0 ? "the embeddings are" : "after block " + (c.l - 1) + " is"} layer ${c.l}\n`;
    return note;
  }
  function sqlFor(c) {
    const body = sqlBody(c);
    return `-- ${describe(c)}\n${indexNote(c, body)}${body}`;
  }

  // ---- the formula of a cell, with its actual inputs --------------------------------------
  function meanVar(row) {
    let m = 0; for (const x of row) m += x; m /= row.length;
    let v = 0; for (const x of row) v += (x - m) * (x - m); v /= row.length;
    return [m, v];
  }
  function formulaFor(c) {
    const l = c.l, p = c.p, i = c.i, v = c.value;
    switch (c.s) {
      case "token":
        return `The BPE merges above turn the piece <code>${esc(vis(D.pieces[p]))}</code> into token ${v}, ` +
               `its id in the vocabulary (table <code>vocab</code>).`;
      case "token_embedding":
        return `wte[${D.tokens[p]}][${i}]: row ${D.tokens[p]} (the token) of the token embedding matrix wte = ${fmt(v)}`;
      case "position_embedding":
        return `wpe[${p}][${i}]: row ${p} (the position) of the position embedding matrix wpe = ${fmt(v)}`;
      case "embedding": {
        const a = vec("token_embedding", null)[p][i], b = vec("position_embedding", null)[p][i];
        return `x = wte[token][${i}] + wpe[${p}][${i}] = ${fmt(a)} + ${fp(b)} = ${fmt(v)}`;
      }
      case "ln_1": case "ln_2": case "ln_f": {
        const [[is, il], g] = LN[c.s](l), row = vec(is, il)[p], [m, s2] = meanVar(row);
        const gain = param(g + ".weight")[i], shift = param(g + ".bias")[i];
        return `(x[${i}] \u2212 \u03bc) / \u221a(\u03c3\u00b2 + \u03b5) \u00b7 g[${i}] + b[${i}]<br>` +
               `= (${fmt(row[i])} \u2212 ${fp(m)}) / \u221a(${fmt(s2)} + ${EPS}) \u00b7 ${fp(gain)} + ${fp(shift)} = ${fmt(v)}<br>` +
               `x = ${is}${il === null ? "" : " of block " + il} at position ${p}; \u03bc, \u03c3\u00b2 = mean and variance of its ${row.length} values; ` +
               `g, b = ${g}.weight, ${g}.bias`;
      }
      case "q": case "k": case "v": case "attn_out": case "mlp_fc": case "mlp_out": {
        const [[is, il], w, off] = PRODUCT[c.s](l), j = off + i, b = param(w + ".bias")[j];
        const n = vec(is, il)[p].length;
        const which = c.s.length === 1 ? ` (head ${Math.floor(i / HD)}, its dimension ${i % HD})` : "";
        return `\u03a3<sub>i&lt;${n}</sub> ${is}[${p}][i] \u00b7 W[i][${j}] + b[${j}]${which}<br>` +
               `= ${fmt(v - b)} + ${fp(b)} = ${fmt(v)}<br>W = ${w}.weight (its column ${j}: ${n} weights, ` +
               `rows of <code>matrix_cells</code> with row = ${j}), b = ${w}.bias`;
      }
      case "score": {
        const q = vec("q", l)[p], k = vec("k", l)[c.k];
        let dot = 0; for (let d = 0; d < HD; d++) dot += q[c.h * HD + d] * k[c.h * HD + d];
        return `q[${p}] \u00b7 k[${c.k}] / \u221aD over the ${HD} dimensions of head ${c.h}<br>` +
               `= ${fmt(dot)} / \u221a${HD} = ${fmt(v)}`;
      }
      case "weight": {
        const row = D.attention.score[l][c.h][p].slice(0, p + 1), top = Math.max(...row);
        let z = 0; for (const s of row) z += Math.exp(s - top);
        return `softmax over the keys 0..${p} of the scores: exp(score \u2212 max) / \u03a3 exp(score \u2212 max)<br>` +
               `= exp(${fmt(row[c.k])} \u2212 ${fp(top)}) / ${fmt(z)} = ${fmt(v)}<br>` +
               `keys after position ${p} are masked out (causal attention)`;
      }
      case "attn_heads": {
        const h = Math.floor(i / HD), d = i % HD;
        if (ablated(l, h)) return `head ${h} of block ${l} is ablated in this trace: its output is set to 0`;
        const w = D.attention.weight[l][h][p], vs = vec("v", l);
        const terms = [];
        for (let s = 0; s <= p; s++) terms.push(`${fmt(w[s])}\u00b7${fp(vs[s][i])}`);
        return `\u03a3<sub>s\u2264${p}</sub> weight[${p}][s] \u00b7 v[s][${d}] (head ${h})<br>= ` +
               (terms.length > 8 ? terms.slice(0, 8).join(" + ") + ` + \u2026 (${terms.length} terms)` : terms.join(" + ")) +
               ` = ${fmt(v)}`;
      }
      case "residual_attn": case "residual_mlp": {
        const [[xs, xl], [os, ol]] = RESIDUAL[c.s](l);
        return `x + ${os}: the stream before (${xs}${xl === null ? "" : " of block " + xl}) plus what the sub-layer added<br>` +
               `= ${fmt(vec(xs, xl)[p][i])} + ${fp(vec(os, ol)[p][i])} = ${fmt(v)}`;
      }
      case "mlp_gelu": {
        const x = vec("mlp_fc", l)[p][i];
        return `gelu(x) = 0.5\u00b7x\u00b7(1 + tanh(\u221a(2/\u03c0)\u00b7(x + 0.044715\u00b7x\u00b3))) with x = ${fmt(x)}<br>= ${fmt(v)}`;
      }
      case "logit":
        return `ln_f[${p}] \u00b7 wte[${c.tok}]: the LM head is the token embedding matrix, so the logit of token ` +
               `${c.tok} is the dot product of the ${C} values of ln_f with its embedding = ${fmt(v)}`;
      case "probability": {
        const logit = D.top[p].find((r) => r[0] === c.tok)[2];
        return `softmax: exp(logit \u2212 logsumexp(all ${cfg.vocab_size} logits))<br>= exp(${fmt(logit)} \u2212 ${fp(D.lse[p])}) = ${fmt(v)}`;
      }
      case "lens":
        return `the residual stream ${l === 0 ? "of the embeddings" : "after block " + (l - 1)} at position ${p}, put through ln_f ` +
               `and the LM head as if it were the last layer: the top token <code>${esc(vis(D.lens[l][p][1]))}</code> ` +
               `has probability ${fmt(v)}`;
      case "distance":
        return `\u2016x<sub>ablated</sub> \u2212 x<sub>original</sub>\u2016 after block ${l}'s ${c.sub} sub-layer at position ${p} = ${fmt(v)}, ` +
               `against \u2016x<sub>original</sub>\u2016 = ${fmt(CMP.residuals.find((r) => r[0] === l && r[1] === c.sub && r[2] === p)[4])}`;
      case "prob_a": case "prob_b":
        return `probability of the rank-${c.rank} next token after position ${p} in the ${c.s === "prob_a" ? "original" : "ablated"} trace = ${fmt(v)}`;
    }
    return "";
  }

  // ---- cells -----------------------------------------------------------------------------
  const attr = (c) => {
    let a = `data-stage="${c.s}"`;
    for (const [name, v] of [["layer", c.l], ["pos", c.p], ["dim", c.i], ["head", c.h], ["key", c.k], ["tok", c.tok],
                             ["sub", c.sub], ["rank", c.rank]]) {
      if (v !== null && v !== undefined) a += ` data-${name}="${esc(v)}"`;
    }
    return a;
  };
  function cell(tag, c, value, style, text, cls) {
    const full = Object.assign({ l: null, p: null, i: null, h: null, k: null, tok: null, sub: null, rank: null }, c);
    return `<${tag} class="v${cls ? " " + cls : ""}" tabindex="0" ${attr(full)} data-value="${value}" ` +
           `data-sql="${esc(sqlFor(Object.assign(full, { value })))}"${style ? ` style="${style}"` : ""}>${text || ""}</${tag}>`;
  }
  // one row of cells: dimensions from..to-1 of stage (layer) at position p
  function strip(stage, layer, p, row, from, to, scale, headStarts, cls) {
    let out = `<div class="strip${cls ? " " + cls : ""}" style="--n:${to - from}">`;
    for (let j = from; j < to; j++) {
      const hs = headStarts && j > from && j % HD === 0 ? "hs" : "";
      out += cell("span", { s: stage, l: layer, p, i: j }, row[j], diverging(row[j], scale), "", hs);
    }
    return out + "</div>";
  }
  // the colour scale of a stage, with its actual range
  function legend(rows) {
    let lo = Infinity, hi = -Infinity;
    for (const r of rows) for (const x of r) { if (x < lo) lo = x; if (x > hi) hi = x; }
    const scale = Math.max(Math.abs(lo), Math.abs(hi));
    return `<span class="legend">min ${fmt(lo)} <span class="swatch"></span> max ${fmt(hi)} ` +
           `(white = 0; full colour at |value| = ${fmt(scale)})</span>`;
  }
  function stageRows(stage, layer, opts) {
    const rows = vec(stage, layer), scale = scaleOf(rows, 0, rows[0].length);
    let out = `<h3>${esc(NAMES[stage] || stage)} <span class="mono">[${T}][${rows[0].length}]</span> ${legend(rows)}</h3>`;
    if (D.formulas[stage]) out += `<p class="formula-line"><code>${esc(D.formulas[stage])}</code></p>`;
    if (opts && opts.note) out += opts.note;
    out += `<div class="rows">`;
    for (let p = 0; p < T; p++)
      out += `<span class="tok" title="${esc(D.pieces[p])}">${esc(tokLabel(p))}</span>` +
             strip(stage, layer, p, rows[p], 0, rows[p].length, scale, opts && opts.heads);
    return out + "</div>";
  }

  // ---- sections --------------------------------------------------------------------------
  // the first row of a grid whose columns are positions: an empty corner, then each token, written
  // upwards in a header tall enough for the longest label (labels past 16 characters are cut)
  function tokenColumns(cls, corner) {
    const labels = D.pieces.map((_, p) => { const t = tokLabel(p); return t.length > 16 ? t.slice(0, 15) + "\u2026" : t; });
    const tall = Math.min(16, Math.max(...labels.map((t) => t.length))) * 0.62 + 1;
    let out = `<table class="${cls}"><tr style="height:${tall.toFixed(1)}em"><th class="corner">${corner || ""}</th>`;
    labels.forEach((t, p) => { out += `<th class="col" title="${esc(tokLabel(p))}"><span>${esc(t)}</span></th>`; });
    return out + "</tr>";
  }
  function textSection() {
    let bpe = `<table class="bpe"><tr><th>piece</th><th>step</th><th>symbols</th><th>merged</th><th>rank</th></tr>`;
    for (const [pi, piece, step, symbols, pair, rank] of D.bpe)
      bpe += `<tr><td>${pi}: ${esc(vis(piece))}</td><td>${step}</td><td>${esc(symbols.join(" "))}</td>` +
             `<td>${esc(pair || "")}</td><td>${rank === null ? "" : rank}</td></tr>`;
    bpe += "</table>";
    let toks = `<div class="tokens">`;
    for (let p = 0; p < T; p++) toks += cell("span", { s: "token", p }, D.tokens[p], "", `${p}: ${esc(vis(D.pieces[p]))} = ${D.tokens[p]}`);
    toks += "</div>";
    return teach("text", `A model reads integers, not letters. The text is cut into pieces (words with their leading
      space, numbers, punctuation), and each piece's bytes are merged pair by pair, the lowest-ranked merge of the
      <code>merges</code> table first, until no pair merges: common words end as one token, rare ones as several.`) +
      `<p class="note">In the table, <code>\u0120</code> is how GPT-2's byte alphabet writes a space (the <code>merges</code>
      table spells it so); everywhere else on this page a space shows as <code>\u2423</code>. In SQL:
      <code>SELECT * FROM ${esc(S)}.tokenize_trace(prompt)</code>.</p>${bpe}<h3>tokens: position: piece = id</h3>${toks}`;
  }
  function embeddingSection() {
    return teach("embeddings", `Each token id picks its row of wte: ${C} learned numbers that stand for the token. Each
      position picks its row of wpe, which is how the model knows word order. Their sum is the residual stream x:
      a [${T}][${C}] table, one row per token, that every block reads and adds to.`) +
      stageRows("token_embedding", null) + stageRows("position_embedding", null) + stageRows("embedding", null);
  }
  // the heads of block l that are zeroed in this trace, or in its what-if twin
  const whatIf = (l, h) => CMP !== null && CMP.ablate.some((p) => p[0] === l && p[1] === h);
  function headMark(l, h) {
    if (ablated(l, h)) return ' <span class="abl">ablated: output zeroed</span>';
    if (whatIf(l, h)) return ` <span class="abl">ablated in the what-if (trace ${CMP.trace})</span>`;
    return "";
  }
  function headGrid(stage, l, h) {
    const m = D.attention[stage][l][h], numbers = T <= 12;
    let scale = 0;
    if (stage === "score") for (let p = 0; p < T; p++) for (let k = 0; k <= p; k++) scale = Math.max(scale, Math.abs(m[p][k]));
    let out = tokenColumns("grid" + (numbers ? " numbers" : ""), stage === "score" ? "query \u2193 key \u2192" : "");
    for (let p = 0; p < T; p++) {
      out += `<tr><th>${esc(tokLabel(p))}</th>`;
      for (let k = 0; k < T; k++) {
        if (k > p) { out += `<td class="empty" title="masked: a position cannot see later ones"></td>`; continue; }
        const x = m[p][k];
        out += cell("td", { s: stage, l, h, p, k }, x, stage === "weight" ? heat(x) : diverging(x, scale), numbers ? short(x) : "");
      }
      out += "</tr>";
    }
    return out + "</table>";
  }
  // every head of block l at a glance: small weight maps; a click opens that head
  function headOverview(l) {
    let out = `<div class="overview">`;
    for (let h = 0; h < NH; h++) {
      const w = D.attention.weight[l][h], px = Math.max(2, Math.min(8, Math.floor(64 / T)));
      let mini = `<table class="mini">`;
      for (let p = 0; p < T; p++) {
        mini += "<tr>";
        for (let k = 0; k < T; k++)
          mini += `<td style="width:${px}px;height:${px}px;${k > p ? "background:#eee" : heat(w[p][k])}"></td>`;
        mini += "</tr>";
      }
      const marked = ablated(l, h) || whatIf(l, h);
      out += `<div class="thumb${marked ? " ablated" : ""}"><button type="button" class="open-head" data-layer="${l}" data-head="${h}" ` +
             `title="open head ${h} of block ${l}">${mini}</table><span>head ${h}</span></button>` +
             (LIVE ? `<label class="ablate-box"><input type="checkbox" data-layer="${l}" data-head="${h}"${
               liveAblate.has(`${l}.${h}`) ? " checked" : ""}> ablate</label>` : "") +
             (marked ? `<span class="abl">${ablated(l, h) ? "ablated" : "what-if"}</span>` : "") + "</div>";
    }
    return out + "</div>";
  }
  function layerSection(l) {
    let out = `<p class="note">Block ${l}: x = x + attn(ln_1(x)); then x = x + mlp(ln_2(x)).</p>`;
    out += teach("ln", `Layer norm rescales each position's row to mean 0 and variance 1, then applies a learned gain and
      shift, so every sub-layer gets inputs on the same scale whatever the stream holds. Hover a value: its formula
      shows the row's mean \u03bc and variance \u03c3\u00b2.`);
    out += stageRows("ln_1", l);
    out += `<h3>queries, keys and values per head <span class="mono">[${NH} heads][${T}][${HD}]</span></h3>` +
           teach("qkv", `One product with W_attn gives each position a query (what it looks for), a key (what it offers
             to the positions after it) and a value (what it passes on when attended to), each cut into ${NH} heads of
             D = ${HD} dimensions that attend independently.`) +
           `<p class="formula-line"><code>${esc(D.formulas.q)}</code>; k and v likewise from the second and last thirds</p><div class="heads">`;
    const q = vec("q", l), k = vec("k", l), v = vec("v", l);
    for (let h = 0; h < NH; h++) {
      const from = h * HD, to = from + HD;
      const sq = scaleOf(q, from, to), sk = scaleOf(k, from, to), sv = scaleOf(v, from, to);
      out += `<div class="head"><b>head ${h}</b><div class="rows"><span></span><span class="colhead">q</span>` +
             `<span class="colhead">k</span><span class="colhead">v</span>`;
      for (let p = 0; p < T; p++)
        out += `<span class="tok">${esc(tokLabel(p))}</span>` + strip("q", l, p, q[p], from, to, sq) +
               strip("k", l, p, k[p], from, to, sk) + strip("v", l, p, v[p], from, to, sv);
      out += "</div></div>";
    }
    out += `</div><h3>attention: every head of block ${l}</h3>` +
      teach("attention", `Each head scores every position's key against the query (q\u00b7k/\u221aD, a dot product: large
        when they point the same way), then softmax turns each row of scores into weights that are positive and sum to
        1, a smooth, differentiable version of picking the highest score. Cells right of the diagonal are masked: a
        position may not look at later ones, since it is trained to predict them (causal attention). Rows are query
        positions, columns key positions. Click a head to open it${LIVE ? "; tick heads and press \u201cwhat if\u201d to ablate them" : ""}.`) +
      headOverview(l) + `<div class="heads wide">`;
    const openHeads = NH * T * T <= 4096;
    for (let h = 0; h < NH; h++) {
      out += `<details class="head head-detail${ablated(l, h) || whatIf(l, h) ? " ablated" : ""}" id="head-${l}-${h}"${openHeads ? " open" : ""}>` +
             `<summary><b>head ${h}</b>${headMark(l, h)}</summary><div class="pair">` +
             `<figure><figcaption>scores q\u00b7k/\u221a${HD} <span class="legend">(blue &lt; 0 &lt; red)</span></figcaption>${headGrid("score", l, h)}</figure>` +
             `<figure><figcaption>weights (softmax of each row) <span class="legend">(white 0 \u2192 green 1)</span></figcaption>${headGrid("weight", l, h)}</figure>` +
             `</div></details>`;
    }
    out += "</div>";
    out += stageRows("attn_heads", l, { heads: true, note: teach("attention", `Each head's output is the weighted average of
      the values of the positions it attends to; the ${NH} heads sit side by side (a dark line between heads).`) })
      .replace("</h3>", " (heads side by side)</h3>");
    out += stageRows("attn_out", l, { note: teach("attention", "c_proj mixes the heads' outputs back into the stream's dimensions.") });
    out += stageRows("residual_attn", l, { note: teach("residual", `The block adds what attention found to the stream
      instead of replacing it, so what earlier blocks wrote stays available to later ones.`) });
    out += stageRows("ln_2", l);
    out += stageRows("mlp_fc", l, { note: teach("mlp", `The MLP works on each position alone: it widens the row to
      ${4 * C} units, applies GELU (like ReLU, but smooth: negative inputs end near 0), and projects back to ${C}.
      Most of the model's weights are here.`) });
    for (const s of ["mlp_gelu", "mlp_out", "residual_mlp"]) out += stageRows(s, l);
    return out;
  }
  function outputSection() {
    let out = teach("logits", `A last layer norm, then a dot product with every row of wte (the matrix that embedded the
      tokens) gives one logit per vocabulary entry; softmax turns them into probabilities. Every position predicts the
      token after it, which is why one pass trains on every position at once; generation reads only the last row.`);
    out += stageRows("ln_f", null);
    out += `<h3>logits: the top ${D.k} of ${cfg.vocab_size} next tokens after each position</h3>` +
           `<p class="formula-line"><code>${esc(D.formulas.logits)}</code>; probability = softmax of the logits</p>`;
    for (let p = 0; p < T; p++) {
      out += `<table class="preds"><caption>after ${esc(tokLabel(p))}</caption>` +
             `<tr><th>rank</th><th>token</th><th>id</th><th>logit</th><th>probability</th></tr>`;
      D.top[p].forEach(([tok, piece, logit, prob], r) => {
        out += `<tr><td>${r + 1}</td><td class="mono">${esc(vis(piece))}</td><td class="mono">${tok}</td>` +
               cell("td", { s: "logit", p, tok }, logit, "", fmt(logit)) +
               cell("td", { s: "probability", p, tok }, prob, heat(prob * 0.5), fmt(prob)) + "</tr>";
      });
      out += "</table>";
    }
    return out;
  }
  function lensSection() {
    let out = teach("lens", `The logit lens reads the residual stream after each block through ln_f and the LM head, as if
      the model ended there: watch at which block the final prediction first appears. Each cell: the top token and its
      probability.`) + `<p class="note">SQL: <code>SELECT * FROM ${esc(S)}.logit_lens(${TID})</code>; its layer 0 is the
      embeddings, so "after block b" is its layer b + 1.</p>` + tokenColumns("grid lens");
    for (let l = NL; l >= 0; l--) {
      out += `<tr><th>${l === 0 ? "embeddings" : "after block " + (l - 1)}</th>`;
      for (let p = 0; p < T; p++) {
        const [, piece, prob] = D.lens[l][p];
        out += cell("td", { s: "lens", l, p }, prob, heat(prob), `${esc(vis(piece))}<small>${(100 * prob).toFixed(prob < 0.1 ? 1 : 0)}%</small>`);
      }
      out += "</tr>";
    }
    return out + "</table>";
  }
  function compareSection() {
    const heads = CMP.ablate.map(([l, h]) => `${l}.${h}`).join(", ");
    let out = teach("whatif", `What if: trace ${CMP.trace} is the same prompt with the output of head(s) <b>${heads}</b>
      (block.head) set to 0. Nothing before those blocks changes; the distances show how far the change spreads
      through the stream, beside the stream's own size, and the table which predictions it changes.`) +
      `<p class="note">SQL: <code>SELECT * FROM ${esc(S)}.compare_traces(${TID}, ${CMP.trace})</code> and
      <code>SELECT * FROM ${esc(S)}.compare_residuals(${TID}, ${CMP.trace})</code>.</p>`;
    out += `<h3>how far the residual stream moved: \u2016x<sub>ablated</sub> \u2212 x<sub>original</sub>\u2016, of \u2016x<sub>original</sub>\u2016</h3>` +
           tokenColumns("grid lens");
    let top = 0;
    for (const r of CMP.residuals) top = Math.max(top, r[3] / (r[4] || 1));
    let row = null;
    for (const [l, sub, p, dist, norm] of CMP.residuals) {
      if (row !== `${l}.${sub}`) { out += (row ? "</tr>" : "") + `<tr><th>block ${l} ${sub}</th>`; row = `${l}.${sub}`; }
      out += cell("td", { s: "distance", l, sub, p }, dist, heat((dist / (norm || 1)) / (top || 1)),
                  `${short(dist)}<small>of ${short(norm)}</small>`);
    }
    out += "</tr></table><h3>top predictions, original \u2192 ablated (changed rows marked)</h3>";
    let pos = -1;
    for (const [p, rank, pa, prA, pb, prB] of CMP.predictions) {
      if (p !== pos) {
        out += (pos >= 0 ? "</table>" : "") + `<table class="preds"><caption>after ${esc(tokLabel(p))}</caption>` +
               `<tr><th>rank</th><th>original</th><th>probability</th><th>ablated</th><th>probability</th></tr>`;
        pos = p;
      }
      out += `<tr${pa !== pb ? ' class="changed"' : ""}><td>${rank}</td><td class="mono">${esc(vis(pa))}</td>` +
             cell("td", { s: "prob_a", p, rank }, prA, "", fmt(prA)) +
             `<td class="mono">${esc(vis(pb))}</td>` + cell("td", { s: "prob_b", p, rank }, prB, "", fmt(prB)) + "</tr>";
    }
    return out + "</table>";
  }
  // generation, one step: each block's keys and values, the step before's rows reused
  function cacheSection() {
    const n = T - 1;
    let out = teach("cache", `To generate, the model runs on the prompt and appends the most likely token (greedy), then
      again. The next token's query needs every earlier position's key and value, and those rows never change, because
      a position only looks backwards. So the generating function keeps them (the KV cache) and computes one new row per
      block per step instead of redoing the whole prompt. This step added <b>${esc(vis(D.pieces[n]))}</b> (token
      ${D.tokens[n]}) at position ${n}.`);
    for (let l = 0; l < NL; l++) {
      let diff = 0;
      for (const s of ["k", "v"]) {
        const now = vec(s, l), before = prev.vectors[`${s}@${l}`];
        for (let p = 0; p < n; p++) for (let i = 0; i < C; i++) diff = Math.max(diff, Math.abs(now[p][i] - before[p][i]));
      }
      out += `<h3>block ${l}: the cache of keys and values <span class="mono">[${T}][${C}]</span> each</h3>` +
             `<p class="note cache-note" data-layer="${l}">rows 0..${n - 1} are the previous step's (largest difference: ` +
             `${diff === 0 ? "0, equal" : fmt(diff) + ", float rounding of sums taken in another order"}); row ${n} is new</p>` +
             `<div class="rows cache">` +
             `<span></span><span class="colhead">keys k</span><span class="colhead">values v</span>`;
      const k = vec("k", l), v = vec("v", l), sk = scaleOf(k, 0, C), sv = scaleOf(v, 0, C);
      for (let p = 0; p < T; p++)
        out += `<span class="tok${p === n ? " new" : ""}">${esc(tokLabel(p))}${p === n ? " (new)" : ""}</span>` +
               strip("k", l, p, k[p], 0, C, sk, true, p === n ? "new" : "") +
               strip("v", l, p, v[p], 0, C, sv, true, p === n ? "new" : "");
      out += "</div>";
    }
    return out;
  }

  // ---- the page --------------------------------------------------------------------------
  const body = document.getElementById("walk-body");
  const sections = [
    ["text", "1. Text \u2192 BPE \u2192 tokens", `${T} tokens`, textSection, true],
    ["embeddings", "2. Embeddings", `[${T}][${C}]`, embeddingSection, true],
  ];
  for (let l = 0; l < NL; l++)
    sections.push([`layer-${l}`, `${3 + l}. Block ${l}`, `ln_1 \u2192 q, k, v \u2192 attention \u2192 c_proj \u2192 + \u2192 ln_2 \u2192 MLP \u2192 +` +
                   (D.ablate.some((p) => p[0] === l) ? " (ablated heads)" : "") +
                   (CMP && CMP.ablate.some((p) => p[0] === l) ? " (heads ablated in the what-if)" : ""),
                   () => layerSection(l), l === 0 && T * C <= 2048]);   // a big block waits to be opened
  sections.push(["output", `${3 + NL}. ln_f \u2192 logits`, `top ${D.k} per position`, outputSection, true]);
  sections.push(["lens", `${4 + NL}. Logit lens`, "what the stream predicts after each block", lensSection, true]);
  if (CMP) sections.push(["what-if", `${5 + NL}. What if: ablated heads`, `trace ${TID} vs trace ${CMP.trace}`, compareSection, true]);
  if (prev) sections.push(["cache", `${sections.length + 1}. Generation: the KV cache`, `step to ${T} tokens`, cacheSection, true]);

  const info = `${esc(D.model)} \u00b7 ${NL} blocks, ${NH} heads, ${C} wide, ${cfg.kernel} kernel \u00b7 trace ${TID}` +
               (ABL ? ` \u00b7 <span class="abl">heads ${D.ablate.map((p) => p.join(".")).join(", ")} ablated</span>` : "");
  const hn = LIVE ? "h2" : "h1";
  let head = `<${hn}>Inside ${esc(D.model)}: ${esc(JSON.stringify(D.prompt))}</${hn}><p class="note">${info}. Every number below is a
    row in the database, stored by <code>trace()</code>. Hover or focus a value for its formula with its inputs and the SQL
    that recomputes it from the stage before; click it to keep it in the panel and copy the SQL (it runs as is in psql
    against this database while the trace is kept)${LIVE ? ", or run it there" : ""}. Positions, blocks, heads and
    dimensions count from 0, as in the trace tables; PostgreSQL arrays count from 1, so the SQL reads dimension i as
    <code>value[i + 1]</code>. Arrow keys move along a row; for a wide row, the panel shows the value's neighbours, wide enough to pick.</p>`;
  if (cfg.kernel === "vector")
    head += `<p class="note">This model uses the vector kernel: its matrix products and attention's weighted sums were
      computed by pgvector in float32, so their SQL here (written in float64) agrees with the stored value to about 1e-6,
      not exactly. Load the model with the sql kernel for exact agreement.</p>`;
  head += `<p class="toolbar"><button type="button" id="open-all">open every section</button>` +
          `<button type="button" id="close-all">close every section</button></p>`;
  let html = head;
  for (const [id, title, sub] of sections)
    html += `<details class="section" id="s-${id}"><summary>${esc(title)}<span class="sub">${esc(sub)}</span></summary><div class="content"></div></details>`;
  body.innerHTML = html;

  const built = new Set();
  function build(id) {
    if (built.has(id)) return;
    built.add(id);
    const s = sections.find((x) => x[0] === id);
    document.querySelector(`#s-${id} > .content`).innerHTML = s[3]();
  }
  for (const [id, , , , open] of sections) {
    const el = document.getElementById("s-" + id);
    el.addEventListener("toggle", () => { if (el.open) build(id); });
    if (open || (keep && keep.includes(id))) { build(id); el.open = true; }
  }
  document.getElementById("open-all").addEventListener("click", () => {
    for (const [id] of sections) { build(id); document.getElementById("s-" + id).open = true; }
  });
  document.getElementById("close-all").addEventListener("click", () => {
    for (const [id] of sections) document.getElementById("s-" + id).open = false;
  });
  return { D, coords, describe, formulaFor };
  }

  // ---- the inspector ---------------------------------------------------------------------
  const walkEl = document.getElementById("walk");
  const inspector = document.getElementById("inspector");
  let current = null;               // the walk on the page (renderWalk's result)
  let pinned = null;                // the cell kept in the inspector (clicked), or null
  function show(el) {
    const c = current.coords(el);
    inspector.innerHTML = `<div class="where">${esc(current.describe(c))}${el === pinned ? ' <span class="pin">kept (Esc releases)</span>' : ""}</div>` +
      `<div class="value">${esc(el.dataset.value)}</div>${zoom(el)}<div class="formula">${current.formulaFor(c)}</div>` +
      (LIVE ? `<div class="hint">SQL (edit it if you like, then run it as the explorer's read-only role):</div>` +
              `<textarea id="sql-edit" spellcheck="false" rows="${el.dataset.sql.split("\n").length + 1}">${esc(el.dataset.sql)}</textarea>` +
              `<p><button type="button" id="run">run</button> <span class="hint">up to ${LIVE.run_rows} rows, ` +
              `${LIVE.run_timeout_ms / 1000} s</span></p><div id="run-result" role="status"></div>`
            : `<div class="hint">SQL (click the value to copy):</div><pre class="sql">${esc(el.dataset.sql)}</pre>`);
    inspector.dataset.value = el.dataset.value;
  }
  function copy(text) {
    const done = () => { const h = inspector.querySelector(".hint"); if (h) { h.textContent = "copied"; h.className = "hint copied"; } };
    const fallback = () => {
      const ta = document.createElement("textarea");
      ta.value = text; ta.style.position = "fixed"; ta.style.opacity = "0";
      document.body.appendChild(ta); ta.select();
      try { if (document.execCommand("copy")) done(); } catch (e) { /* no clipboard: the SQL stays on screen */ }
      ta.remove();
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }
  // a wide row's cells are a pixel or two wide: the inspector shows the 17 around the one shown,
  // wide enough to hit (click a value first to keep it, then pick its neighbours there)
  let zoomCells = [];
  function zoom(el) {
    const strip = el.parentElement;
    if (!strip.classList.contains("strip") || strip.getBoundingClientRect().width / strip.children.length >= 8) return "";
    const all = Array.from(strip.children), at = all.indexOf(el);
    const from = Math.max(0, Math.min(at - 8, all.length - 17));
    zoomCells = all.slice(from, from + 17);
    return `<div class="hint">its neighbours in the row (click one):</div><div class="zoom">` +
      zoomCells.map((c, j) => `<span class="zv${c === el ? " here" : ""}" data-j="${j}" title="${esc(c.dataset.value)}" ` +
                              `style="${c.getAttribute("style") || ""}">${c.dataset.dim}</span>`).join("") + "</div>";
  }
  inspector.addEventListener("click", (e) => {
    const zv = e.target.closest(".zv");
    if (!zv) return;
    const el = zoomCells[Number(zv.dataset.j)];
    pinned = el; show(el);
    el.focus({ preventScroll: true });
  });
  walkEl.addEventListener("click", (e) => {               // a head of the overview opens its detail
    const b = e.target.closest(".open-head");
    if (!b) return;
    const d = document.getElementById(`head-${b.dataset.layer}-${b.dataset.head}`);
    d.open = true;
    d.scrollIntoView({ block: "start" });
    const first = d.querySelector(".v");
    if (first) first.focus({ preventScroll: true });
  });
  // the value drawn under the pointer: in a strip of one-pixel cells the browser's hit test can
  // disagree by one with what it painted (cells start at fractions of a pixel), so a strip's cell
  // is found from the pointer's pixel column instead
  function cellAt(e) {
    const strip = e.target.closest(".strip");
    if (!strip) return e.target.closest(".v");
    const first = strip.firstElementChild.getBoundingClientRect();
    const i = Math.floor((e.clientX - Math.round(first.left)) / first.width);
    return strip.children[Math.max(0, Math.min(strip.children.length - 1, i))];
  }
  walkEl.addEventListener("mouseover", (e) => {
    const el = cellAt(e);
    if (!el) return;
    if (!pinned) show(el);
  });
  walkEl.addEventListener("focusin", (e) => {
    const el = e.target.closest(".v");
    if (el) { if (pinned) pinned = el; show(el); }
  });
  walkEl.addEventListener("click", (e) => {
    const el = cellAt(e);
    if (el) { pinned = el; show(el); copy(el.dataset.sql); }
  });
  // the arrow keys move along a row (left, right) and between rows (up, down)
  function neighbour(el, key) {
    if (key === "ArrowLeft" || key === "ArrowRight") {
      let n = key === "ArrowLeft" ? el.previousElementSibling : el.nextElementSibling;
      while (n && !n.classList.contains("v")) n = key === "ArrowLeft" ? n.previousElementSibling : n.nextElementSibling;
      return n;
    }
    const row = el.parentElement, index = Array.from(row.children).indexOf(el);
    let other = key === "ArrowUp" ? row.previousElementSibling : row.nextElementSibling;
    while (other && (other.tagName !== row.tagName || other.className !== row.className))
      other = key === "ArrowUp" ? other.previousElementSibling : other.nextElementSibling;
    const n = other && other.children[index];
    return n && n.classList.contains("v") ? n : null;
  }
  walkEl.addEventListener("keydown", (e) => {
    const el = e.target.closest && e.target.closest(".v");
    if (!el) return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pinned = el; show(el); copy(el.dataset.sql); }
    else if (e.key.startsWith("Arrow")) {
      const n = neighbour(el, e.key);
      if (n) { e.preventDefault(); n.focus(); }
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && pinned) { const el = pinned; pinned = null; show(el); }
  });

  // ---- the live explorer: prompts, ablations, steps and SQL through the local server ------
  const liveAblate = new Set();     // "block.head" ticked for the next what-if
  function liveSetup() {
    const controls = document.getElementById("controls");
    controls.innerHTML = `<h1>The live explorer: ${esc(LIVE.model)}</h1>
      <form id="live-form"><label>Prompt <input id="prompt" type="text" size="50" value="The Python interpreter is"></label>
      <button type="submit" id="walk-button">walk</button>
      <button type="button" id="step" disabled title="append the most likely next token and walk again">next token \u2192</button>
      <button type="button" id="what-if" disabled>what if</button> <span id="ablate-list"></span>
      <button type="button" id="clear-ablate" disabled>clear</button></form>
      <p id="status" role="status" class="note"></p>
      <p class="note">Type a prompt and press <b>walk</b>: the server runs <code>trace()</code> on it in the database and
      this page shows every stored value, one row each in the trace tables. Each value's SQL recomputes it from the
      stage before, exactly as the model did; <b>run</b> it, or your own SQL, beside the stored value. Tick heads in a
      block's attention overview and press <b>what if</b> to zero their output; press <b>next token</b> to generate one
      token and watch each block's cache of keys and values grow by one row. Prompts of up to ${LIVE.max_tokens} tokens.</p>`;
    const status = document.getElementById("status");
    let busy = false;
    function refresh() {
      const list = Array.from(liveAblate).sort();
      document.getElementById("ablate-list").textContent = list.length ? `heads to ablate: ${list.join(", ")}` : "";
      document.getElementById("step").disabled = busy || !current;
      document.getElementById("what-if").disabled = busy || !current || list.length === 0;
      document.getElementById("clear-ablate").disabled = busy || list.length === 0;
      document.getElementById("walk-button").disabled = busy;
    }
    async function api(path, body) {
      const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json", "x-gpt2sql-token": LIVE.token },
                                    body: JSON.stringify(body) });
      let data;
      try { data = await r.json(); } catch (e) { throw new Error(`gpt2sql: the server answered ${r.status}`); }
      if (!r.ok) throw new Error(data.error || `gpt2sql: the server answered ${r.status}`);
      return data;
    }
    const opened = () => Array.from(walkEl.querySelectorAll("details.section[open]"), (d) => d.id.slice(2));
    async function work(what, path, body, after) {
      busy = true; refresh();
      status.className = "note"; status.textContent = what + "\u2026";
      const start = performance.now();
      try {
        const data = await api(path, body);
        after(data);
        status.textContent = `${what}: done in ${((performance.now() - start) / 1000).toFixed(1)} s (trace ${data.trace}` +
                             (data.compare ? `, what-if trace ${data.compare.trace}` : "") + ")";
      } catch (e) {
        status.className = "note error"; status.textContent = e.message;
      } finally {
        busy = false; refresh();
      }
    }
    const prompt = document.getElementById("prompt");
    document.getElementById("live-form").addEventListener("submit", (e) => {
      e.preventDefault();
      liveAblate.clear();
      work("walking the prompt", "api/walk", { prompt: prompt.value, ablate: [] }, (data) => { pinned = null; current = renderWalk(data, null); });
    });
    document.getElementById("what-if").addEventListener("click", () => {
      const pairs = Array.from(liveAblate).map((x) => x.split(".").map(Number));
      work("the what-if", "api/walk", { prompt: current.D.prompt, ablate: pairs }, (data) => { pinned = null; current = renderWalk(data, null, opened()); });
    });
    document.getElementById("step").addEventListener("click", () => {
      const before = current.D;
      work("one generation step", "api/step", { trace: before.trace }, (data) => {
        pinned = null; current = renderWalk(data, before, opened()); prompt.value = data.prompt;
        document.getElementById("s-cache").scrollIntoView({ block: "start" });
      });
    });
    document.getElementById("clear-ablate").addEventListener("click", () => {
      liveAblate.clear();
      for (const box of walkEl.querySelectorAll(".ablate-box input")) box.checked = false;
      refresh();
    });
    walkEl.addEventListener("change", (e) => {
      const box = e.target.closest(".ablate-box input");
      if (!box) return;
      const name = `${box.dataset.layer}.${box.dataset.head}`;
      if (box.checked) liveAblate.add(name); else liveAblate.delete(name);
      refresh();
    });
    inspector.addEventListener("click", async (e) => {
      if (e.target.id !== "run") return;
      const out = document.getElementById("run-result"), stored = inspector.dataset.value;
      out.className = ""; out.textContent = "running\u2026";
      try {
        const r = await api("api/run", { sql: document.getElementById("sql-edit").value });
        let text = `<p>${r.rows.length}${r.more ? "+" : ""} row(s) in ${r.ms} ms</p><table class="result"><tr>` +
                   r.columns.map((c) => `<th>${esc(c)}</th>`).join("") + "</tr>";
        for (const row of r.rows) text += "<tr>" + row.map((v) => `<td>${esc(typeof v === "object" && v !== null ? JSON.stringify(v) : v)}</td>`).join("") + "</tr>";
        text += "</table>";
        if (r.rows.length === 1 && r.columns.length === 1 && typeof r.rows[0][0] === "number" && stored !== undefined)
          text += `<p class="agree">stored value ${esc(stored)}; difference ${((d) => (d === 0 ? "0 (equal)" : fmt(d)))(Math.abs(r.rows[0][0] - Number(stored)))}</p>`;
        if (r.more) text += `<p class="hint">more rows than the ${LIVE.run_rows} shown</p>`;
        out.innerHTML = text;
      } catch (err) {
        out.className = "error"; out.textContent = err.message;
      }
    });
    refresh();
  }

  if (LIVE) liveSetup();
  else current = renderWalk(BOOT, null);
  window.explorerReady = performance.now() - t0;   // ms to parse the data and build the open sections
})();
