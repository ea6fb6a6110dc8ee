"""bench/numpy_gpt2.py, the NumPy float32 yardstick bench.py measures gpt2sql against, computes
GPT-2: its logits (prefill, with a KV cache, in a batch) and perplexity equal the float64
reference's within float32's error, so the bench compares like with like."""

from __future__ import annotations

import sys

import numpy as np

import reference_gpt2 as ref
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from numpy_gpt2 import GPT2, Cache  # noqa: E402

TOL = 1e-4                      # float32 against float64 on the tiny model's logits


def test_yardstick_equals_the_reference(tiny_ckpt):
    cfg, params = ref.load(tiny_ckpt)
    model = GPT2(tiny_ckpt)
    a, b = [15496, 11, 616, 1438, 318], [464, 3290]
    full = ref.forward(a + [42], cfg, params)                                       # [T][V] float64
    cache = Cache()
    assert np.abs(model.forward([a], [cache])[0] - full[len(a) - 1]).max() <= TOL   # prefill
    assert np.abs(model.forward([[42]], [cache])[0] - full[-1]).max() <= TOL        # one token, cached
    both = model.forward([a, b], [Cache(), Cache()])                                # a batch of two
    assert np.abs(both[1] - ref.forward(b, cfg, params)[-1]).max() <= TOL
    assert np.abs(both[0] - full[len(a) - 1]).max() <= TOL
    logits = ref.forward([ref.EOS] + a[:-1], cfg, params)
    z = logits - logits.max(-1, keepdims=True)
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = float(np.exp(-np.mean([lp[i, t] for i, t in enumerate(a)])))
    assert abs(model.perplexity(a) - want) <= 1e-4 * want
    greedy = model.generate([a], 3)[0]
    assert greedy[0] == int(np.argmax(full[len(a) - 1]))
