// The explorer page's script (explore.py inlines it). It reads the trace from the JSON in
// #data and builds the walk: every value is a cell (class "v") carrying data-value (the value
// stored by trace()) and data-sql (a query recomputing it from the model's tables and the trace).
// Sections are built when first opened, so a big model's page stays quick to open.
"use strict";
(function () {
  const t0 = performance.now();
  const D = JSON.parse(document.getElementById("data").textContent);
  const cfg = D.config, S = D.schema, TID = D.trace;
  const T = D.tokens.length, C = cfg.n_embd, NH = cfg.n_head, HD = C / NH, NL = cfg.n_layer;
  const EPS = cfg.layer_norm_epsilon;
  const ABL = D.ablate.length > 0;                       // this trace zeroed some heads
  const CMP = D.compare;                                 // an ablated twin, or null

  // ---- small helpers ---------------------------------------------------------------------
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  // a token's text with every space and control character made visible (and none left raw, so a
  // label can sit in an SQL comment): space \u2423, newline \u23ce, tab \u21e5, others as control pictures
  const VISIBLE = { " ": "\u2423", "\n": "\u23ce", "\t": "\u21e5", "\x7f": "\u2421" };
  const vis = (p) => (p || "").replace(/[\x00-\x20\x7f-\x9f\u2028\u2029]/g, (ch) => VISIBLE[ch] ||
    (ch < " " ? String.fromCharCode(0x2400 + ch.charCodeAt(0)) : "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0"))) || "\u2205";
  const fmt = (x) => (x === null || x === undefined) ? "\u2014" : (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(4) : x.toFixed(5));
  const fp = (x) => (x < 0 ? `(${fmt(x)})` : fmt(x));          // a number after an operator
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
    else if (c.l !== null) parts.push(`layer ${c.l}`);
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
  const sqlFor = (c) => `-- ${describe(c)}\n${sqlBody(c)}`;

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
               `x = ${is}${il === null ? "" : " of layer " + il} at position ${p}; \u03bc, \u03c3\u00b2 = mean and variance of its ${row.length} values; ` +
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
        if (ablated(l, h)) return `head ${h} of layer ${l} is ablated in this trace: its output is set to 0`;
        const w = D.attention.weight[l][h][p], vs = vec("v", l);
        const terms = [];
        for (let s = 0; s <= p; s++) terms.push(`${fmt(w[s])}\u00b7${fp(vs[s][i])}`);
        return `\u03a3<sub>s\u2264${p}</sub> weight[${p}][s] \u00b7 v[s][${d}] (head ${h})<br>= ` +
               (terms.length > 8 ? terms.slice(0, 8).join(" + ") + ` + \u2026 (${terms.length} terms)` : terms.join(" + ")) +
               ` = ${fmt(v)}`;
      }
      case "residual_attn": case "residual_mlp": {
        const [[xs, xl], [os, ol]] = RESIDUAL[c.s](l);
        return `x + ${os}: the stream before (${xs}${xl === null ? "" : " of layer " + xl}) plus what the sub-layer added<br>` +
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
        return `\u2016x<sub>ablated</sub> \u2212 x<sub>original</sub>\u2016 after layer ${l}'s ${c.sub} sub-layer at position ${p} = ${fmt(v)}`;
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
  function diverging(x, scale) {
    const a = Math.min(1, Math.abs(x) / (scale || 1)), lo = Math.round(255 * (1 - a));
    return x >= 0 ? `background:rgb(255,${lo},${lo})` : `background:rgb(${lo},${lo},255)`;
  }
  const heat = (w) => `background:rgba(20,60,200,${Math.max(0, Math.min(1, w)).toFixed(3)})` + (w > 0.55 ? ";color:#fff" : "");
  function scaleOf(rows, from, to) {
    let m = 0;
    for (const r of rows) for (let j = from; j < to; j++) m = Math.max(m, Math.abs(r[j]));
    return m;
  }
  // one row of cells: dimensions from..to-1 of stage (layer) at position p
  function strip(stage, layer, p, row, from, to, scale, headStarts) {
    let out = `<div class="strip">`;
    for (let j = from; j < to; j++) {
      const hs = headStarts && j > from && j % HD === 0 ? "hs" : "";
      out += cell("span", { s: stage, l: layer, p, i: j }, row[j], diverging(row[j], scale), "", hs);
    }
    return out + "</div>";
  }
  function stageRows(stage, layer, opts) {
    const rows = vec(stage, layer), scale = scaleOf(rows, 0, rows[0].length);
    let out = `<h3>${esc(NAMES[stage] || stage)} <span class="mono">[${T}][${rows[0].length}]</span></h3>`;
    if (D.formulas[stage]) out += `<p class="formula-line"><code>${esc(D.formulas[stage])}</code></p>`;
    out += `<div class="rows">`;
    for (let p = 0; p < T; p++)
      out += `<span class="tok" title="${esc(D.pieces[p])}">${esc(tokLabel(p))}</span>` +
             strip(stage, layer, p, rows[p], 0, rows[p].length, scale, opts && opts.heads);
    return out + "</div>";
  }

  // ---- sections --------------------------------------------------------------------------
  // the first row of a grid whose columns are positions: an empty corner, then each token
  function tokenColumns(cls) {
    let out = `<table class="${cls}"><tr><th></th>`;
    for (let p = 0; p < T; p++) out += `<th class="col">${esc(tokLabel(p))}</th>`;
    return out + "</tr>";
  }
  function textSection() {
    let bpe = `<table class="bpe"><tr><td>piece</td><td>step</td><td>symbols</td><td>merged</td><td>rank</td></tr>`;
    for (const [pi, piece, step, symbols, pair, rank] of D.bpe)
      bpe += `<tr><td>${pi}: ${esc(vis(piece))}</td><td>${step}</td><td>${esc(symbols.join(" "))}</td>` +
             `<td>${esc(pair || "")}</td><td>${rank === null ? "" : rank}</td></tr>`;
    bpe += "</table>";
    let toks = `<div class="tokens">`;
    for (let p = 0; p < T; p++) toks += cell("span", { s: "token", p }, D.tokens[p], "", `${p}: ${esc(vis(D.pieces[p]))} = ${D.tokens[p]}`);
    toks += "</div>";
    return `<p class="note">The text is cut into pieces (words with their leading space, numbers, punctuation), each
      piece is spelled in GPT-2's byte alphabet (\u0120 = a space), and the merges of the <code>merges</code> table are
      applied lowest rank first until no pair merges: each final symbol is one token. In SQL:
      <code>SELECT * FROM ${esc(S)}.tokenize_trace(prompt)</code>.</p>${bpe}<h3>tokens</h3>${toks}`;
  }
  function embeddingSection() {
    return `<p class="note">Each token's row of wte plus its position's row of wpe: the residual stream x entering block 0.
      Colours: <span class="swatch"></span> negative \u2192 0 \u2192 positive, scaled to each stage's largest |value|.</p>` +
      stageRows("token_embedding", null) + stageRows("position_embedding", null) + stageRows("embedding", null);
  }
  function headGrid(stage, l, h) {
    const m = D.attention[stage][l][h];
    let scale = 0;
    if (stage === "score") for (let p = 0; p < T; p++) for (let k = 0; k <= p; k++) scale = Math.max(scale, Math.abs(m[p][k]));
    let out = tokenColumns("grid");
    for (let p = 0; p < T; p++) {
      out += `<tr><th>${esc(tokLabel(p))}</th>`;
      for (let k = 0; k < T; k++) {
        if (k > p) { out += `<td class="empty"></td>`; continue; }
        const x = m[p][k];
        out += cell("td", { s: stage, l, h, p, k }, x, stage === "weight" ? heat(x) : diverging(x, scale));
      }
      out += "</tr>";
    }
    return out + "</table>";
  }
  function layerSection(l) {
    let out = `<p class="note">Block ${l}: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)).</p>`;
    out += stageRows("ln_1", l);
    out += `<h3>queries, keys and values per head <span class="mono">[${NH} heads][${T}][${HD}]</span></h3>` +
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
    out += `</div><h3>attention pattern of every head</h3><p class="formula-line">score = q\u00b7k/\u221aD (left),
      weight = softmax of the scores over the keys at or before the query (right); rows are queries, columns keys.</p><div class="heads wide">`;
    for (let h = 0; h < NH; h++)
      out += `<div class="head${ablated(l, h) ? " ablated" : ""}"><b>head ${h}</b>${ablated(l, h) ? ' <span class="abl">ablated: output zeroed</span>' : ""}` +
             `<div style="display:flex;gap:0.6em;flex-wrap:wrap">${headGrid("score", l, h)}${headGrid("weight", l, h)}</div></div>`;
    out += "</div>";
    out += stageRows("attn_heads", l, { heads: true }).replace("</h3>", " (heads side by side)</h3>");
    for (const s of ["attn_out", "residual_attn", "ln_2", "mlp_fc", "mlp_gelu", "mlp_out", "residual_mlp"]) out += stageRows(s, l);
    return out;
  }
  function outputSection() {
    let out = stageRows("ln_f", null);
    out += `<h3>logits: the top ${D.k} of ${cfg.vocab_size} next tokens after each position</h3>` +
           `<p class="formula-line"><code>${esc(D.formulas.logits)}</code>; probability = softmax of the logits</p>`;
    for (let p = 0; p < T; p++) {
      out += `<table class="preds"><tr><th colspan="4">after ${esc(tokLabel(p))}</th></tr>`;
      D.top[p].forEach(([tok, piece, logit, prob], r) => {
        out += `<tr><td>${r + 1}</td><td class="mono">${esc(vis(piece))} (${tok})</td>` +
               cell("td", { s: "logit", p, tok }, logit, "", fmt(logit)) +
               cell("td", { s: "probability", p, tok }, prob, heat(prob * 0.5), fmt(prob)) + "</tr>";
      });
      out += "</table>";
    }
    return out;
  }
  function lensSection() {
    let out = `<p class="note">The logit lens: the residual stream after each block, put through ln_f and the LM head as if
      it were the last layer. Each cell: the top token and its probability. SQL: <code>SELECT * FROM ${esc(S)}.logit_lens(${TID})</code>.</p>` +
      tokenColumns("grid lens");
    for (let l = NL; l >= 0; l--) {
      out += `<tr><th>${l === 0 ? "embeddings" : "after block " + (l - 1)}</th>`;
      for (let p = 0; p < T; p++) {
        const [, piece, prob] = D.lens[l][p];
        out += cell("td", { s: "lens", l, p }, prob, heat(prob), esc(vis(piece)));
      }
      out += "</tr>";
    }
    return out + "</table>";
  }
  function compareSection() {
    const heads = CMP.ablate.map(([l, h]) => `${l}.${h}`).join(", ");
    let out = `<p class="note">What if: trace ${CMP.trace} is the same prompt with the output of head(s) <b>${heads}</b>
      (layer.head) zeroed. SQL: <code>SELECT * FROM ${esc(S)}.compare_traces(${TID}, ${CMP.trace})</code> and
      <code>SELECT * FROM ${esc(S)}.compare_residuals(${TID}, ${CMP.trace})</code>.</p>`;
    out += `<h3>how far the residual stream moved: \u2016x<sub>ablated</sub> \u2212 x<sub>original</sub>\u2016</h3>` +
           tokenColumns("grid lens");
    let top = 0;
    for (const r of CMP.residuals) top = Math.max(top, r[3] / (r[4] || 1));
    let row = null;
    for (const [l, sub, p, dist, norm] of CMP.residuals) {
      if (row !== `${l}.${sub}`) { out += (row ? "</tr>" : "") + `<tr><th>layer ${l} ${sub}</th>`; row = `${l}.${sub}`; }
      out += cell("td", { s: "distance", l, sub, p }, dist, heat((dist / (norm || 1)) / (top || 1)), fmt(dist));
    }
    out += "</tr></table><h3>top predictions, original \u2192 ablated</h3>";
    let pos = -1;
    for (const [p, rank, pa, prA, pb, prB] of CMP.predictions) {
      if (p !== pos) {
        out += (pos >= 0 ? "</table>" : "") + `<table class="preds"><tr><th colspan="5">after ${esc(tokLabel(p))}</th></tr>` +
               `<tr><td></td><td colspan="2">original</td><td colspan="2">ablated</td></tr>`;
        pos = p;
      }
      out += `<tr><td>${rank}</td><td class="mono">${esc(vis(pa))}</td>` + cell("td", { s: "prob_a", p, rank }, prA, "", fmt(prA)) +
             `<td class="mono">${esc(vis(pb))}</td>` + cell("td", { s: "prob_b", p, rank }, prB, "", fmt(prB)) + "</tr>";
    }
    return out + "</table>";
  }

  // ---- the page --------------------------------------------------------------------------
  const walk = document.getElementById("walk");
  const sections = [
    ["text", "1. Text \u2192 BPE \u2192 tokens", `${T} tokens`, textSection, true],
    ["embeddings", "2. Embeddings", `[${T}][${C}]`, embeddingSection, true],
  ];
  for (let l = 0; l < NL; l++)
    sections.push([`layer-${l}`, `${3 + l}. Block ${l}`, `ln_1 \u2192 q, k, v \u2192 attention \u2192 c_proj \u2192 + \u2192 ln_2 \u2192 MLP \u2192 +` +
                   (D.ablate.some((p) => p[0] === l) ? " (ablated heads)" : ""), () => layerSection(l), l === 0 && T * C <= 2048]);   // a big block waits to be opened
  sections.push(["output", `${3 + NL}. ln_f \u2192 logits`, `top ${D.k} per position`, outputSection, true]);
  sections.push(["lens", `${4 + NL}. Logit lens`, "what the stream predicts after each block", lensSection, true]);
  if (CMP) sections.push(["what-if", `${5 + NL}. What if: ablated heads`, `trace ${TID} vs trace ${CMP.trace}`, compareSection, true]);

  const info = `${esc(D.model)} \u00b7 ${NL} layers, ${NH} heads, ${C} wide, ${cfg.kernel} kernel \u00b7 trace ${TID}` +
               (ABL ? ` \u00b7 <span class="abl">heads ${D.ablate.map((p) => p.join(".")).join(", ")} ablated</span>` : "");
  let head = `<h1>Inside ${esc(D.model)}: ${esc(JSON.stringify(D.prompt))}</h1><p class="note">${info}. Every number below is a row
    in the database. Hover or focus a value for its formula with its inputs and the SQL that recomputes it; click to copy
    the SQL (it runs as is in psql against this database while the trace is kept).</p>`;
  if (cfg.kernel === "vector")
    head += `<p class="note">This model uses the vector kernel: its matrix products and attention's weighted sums were
      computed by pgvector in float32, so their SQL here (written in float64) agrees with the stored value to about 1e-6,
      not exactly. Load the model with the sql kernel for exact agreement.</p>`;
  head += `<p class="toolbar"><button type="button" id="open-all">open every section</button>` +
          `<button type="button" id="close-all">close every section</button></p>`;
  let body = head;
  for (const [id, title, sub] of sections)
    body += `<details class="section" id="s-${id}"><summary>${esc(title)}<span class="sub">${esc(sub)}</span></summary><div class="content"></div></details>`;
  walk.innerHTML = body;

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
    if (open) { build(id); el.open = true; }
  }
  document.getElementById("open-all").addEventListener("click", () => {
    for (const [id] of sections) { build(id); document.getElementById("s-" + id).open = true; }
  });
  document.getElementById("close-all").addEventListener("click", () => {
    for (const [id] of sections) document.getElementById("s-" + id).open = false;
  });

  // ---- the inspector ---------------------------------------------------------------------
  const inspector = document.getElementById("inspector");
  function show(el) {
    const c = coords(el);
    inspector.innerHTML = `<div class="where">${esc(describe(c))}</div><div class="value">${esc(el.dataset.value)}</div>` +
      `<div class="formula">${formulaFor(c)}</div><div class="hint">SQL (click the value to copy):</div>` +
      `<pre class="sql">${esc(el.dataset.sql)}</pre>`;
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
  walk.addEventListener("mouseover", (e) => { const el = e.target.closest(".v"); if (el) show(el); });
  walk.addEventListener("focusin", (e) => { const el = e.target.closest(".v"); if (el) show(el); });
  walk.addEventListener("click", (e) => { const el = e.target.closest(".v"); if (el) { show(el); copy(el.dataset.sql); } });
  walk.addEventListener("keydown", (e) => {
    const el = e.target.closest && e.target.closest(".v");
    if (el && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); copy(el.dataset.sql); }
  });
  window.explorerReady = performance.now() - t0;   // ms to parse the data and build the open sections
})();
