"""Coder 3 re-implemented from formats/ecdc-v1.md alone, in plain integer arithmetic.

No float matrix products and none of intlm.py's or intmath.py's code paths (only the tables, which
test_lm.py pins by hash): int64 products and Python's own rounding rules. It must give
exactly the golden frequencies that ecdc gives, which shows that the specification says
all a second implementation needs, and that ecdc's float32 products are exact.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from encodec_cli.codec.lm import build_lm
from encodec_cli.entropy.intmath import exp_table, gelu_table, positions
from encodec_cli.testing import lm_state

GOLDEN = Path(__file__).resolve().parents[1] / "formats" / "golden" / "coder3_frequencies.json"


def rne(x: np.ndarray) -> np.ndarray:
    return np.rint(x).astype(np.int64)


def rs(a, k):
    k = np.asarray(k, np.int64)
    return np.where(k > 0, (a + np.left_shift(1, np.maximum(k - 1, 0))) >> k, a)


def excess(m, b):
    m = np.asarray(m, np.int64)
    e = np.zeros_like(m)
    while (m >= np.left_shift(1, b + e)).any():
        e = e + (m >= np.left_shift(1, b + e))
    return e


def linear(w, b, query_rows=0):
    w, b = w.astype(np.float64), b.astype(np.float64)
    w[:query_rows] /= 5
    b[:query_rows] /= 5
    m = np.abs(w).max(1)
    s = np.array([math.frexp(v)[1] - 7 if v > 0 else 0 for v in m], np.int64)
    q = np.clip(rne(w * 2.0 ** -s[:, None]), -127, 127)
    return q, s, rne(b * 1024)


def lin(layer, x):
    q, s, bias = layer
    bits = 9 if x.shape[-1] == 200 else 7
    e = excess(np.abs(x).max(), bits)
    acc = q @ rs(x, e)                                     # int64: exact
    sh = -(e + s)
    return np.where(sh >= 0, rs(acc, np.maximum(sh, 0)), acc << np.maximum(-sh, 0)) + bias


def norm(params, x):
    g, bn = params
    e = excess(np.abs(x).max(), 17)
    x = x >> e
    c = 200 * x - x.sum()
    r = math.isqrt(int((c * c).sum()) + 83886080)
    return (2 * c * g + r) // (2 * r) + bn


def ln_params(w, b):
    gamma = np.clip(rne(w.astype(np.float64) * 14.142135623730951 * 1024), -2**24, 2**24)
    return gamma, rne(b.astype(np.float64) * 1024)


def gelu(h):
    t = gelu_table()
    u = np.clip(h, -6144, 6144) + 6144
    i, f = u >> 5, u & 31
    return np.where(h > 6144, h, rs(t[i] * (32 - f) + t[i + 1] * f, 15))


def quantize(v, bits):
    e = excess(np.abs(v).max(), bits)
    return rs(v, e), int(e)


class SpecLM:
    def __init__(self, name: str, k: int):
        lm = build_lm(name)
        state = {key: v.numpy() for key, v in lm_state(name).items()}
        self.past = lm.past_context
        self.k = k
        self.emb = [np.clip(rne(state[f"emb.{i}.weight"].astype(np.float64) * 1024), -2**24, 2**24)
                    for i in range(k)]
        self.heads = [linear(state[f"linears.{i}.weight"], state[f"linears.{i}.bias"]) for i in range(k)]
        self.norm_in = ln_params(state["transformer.norm_in.weight"], state["transformer.norm_in.bias"])
        self.layers = []
        for i in range(5):
            p = f"transformer.layers.{i}."
            self.layers.append((
                linear(state[p + "self_attn.in_proj_weight"], state[p + "self_attn.in_proj_bias"], 200),
                linear(state[p + "self_attn.out_proj.weight"], state[p + "self_attn.out_proj.bias"]),
                ln_params(state[p + "norm1.weight"], state[p + "norm1.bias"]),
                linear(state[p + "linear1.weight"], state[p + "linear1.bias"]),
                linear(state[p + "linear2.weight"], state[p + "linear2.bias"]),
                ln_params(state[p + "norm2.weight"], state[p + "norm2.bias"])))

    def frequencies(self, codes: np.ndarray, first: int):
        """Per step, the frequencies g [K, 1024] of a stream fed `codes`, from position `first`."""
        exp = exp_table()
        past = [[] for _ in self.layers]  # per layer: (keys, values) of the past, quantized per head

        def project(layer, x):
            a = np.clip(lin(layer, x), -2**20, 2**20)
            heads = [(quantize(a[25 * h:25 * h + 25], 9), quantize(a[200 + 25 * h:225 + 25 * h], 10),
                      quantize(a[400 + 25 * h:425 + 25 * h], 10)) for h in range(8)]
            return heads

        for i, layer in enumerate(self.layers):  # the initial all-zero input row
            past[i].append([(k, v) for _, k, v in project(layer[0], np.zeros(200, np.int64))])
        prev = None
        for t in range(len(codes)):
            x = sum(self.emb[k][0 if prev is None else int(prev[k]) + 1] for k in range(self.k))
            x = norm(self.norm_in, x) + positions(np.array([first + t]))[0]
            for i, (inp, out, n1, l1, l2, n2) in enumerate(self.layers):
                heads = project(inp, x)
                past[i].append([(k, v) for _, k, v in heads])
                window = past[i][-(self.past + 1):]
                o = np.zeros(200, np.int64)
                for h, ((u, eu), _, _) in enumerate(heads):
                    z = np.array([rs(int(u @ kk[h][0][0]) << (eu + kk[h][0][1]), 10) for kk in window])
                    ee = exp[np.minimum(z.max() - z, 22527)]
                    w = (ee * ((1 << 43) // int(ee.sum())) + (1 << 29)) >> 30
                    evs = np.array([kk[h][1][1] for kk in window])
                    m = int(evs.max())
                    w2 = rs(w, m - evs)
                    acc = sum(int(wj) * kk[h][1][0] for wj, kk in zip(w2, window))
                    o[25 * h:25 * h + 25] = rs(acc << m, 13)
                x = norm(n1, x + lin(out, o))
                x = norm(n2, x + lin(l2, gelu(lin(l1, x))))
                del past[i][:-(self.past + 1)]
            g = []
            for head in self.heads:
                z = lin(head, x)
                top = int(np.argmax(z))
                ee = exp[np.minimum(z[top] - z, 22527)]
                gk = (ee * (((2**24 - 1024) << 32) // int(ee.sum()))) >> 32
                gk[top] += (2**24 - 1024) - gk.sum()
                g.append(gk)
            yield t, np.stack(g)
            prev = codes[t]


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_specification_gives_the_golden_frequencies(name):
    doc = json.loads(GOLDEN.read_text())[name]
    codes = np.array(doc["codes"])
    steps = {s["step"]: s for s in doc["steps"]}
    last = max(s for s in steps if s <= 2)  # the first steps are enough here (pure Python is slow)
    lm = SpecLM(name, doc["codebooks"])
    for t, g in lm.frequencies(codes[:last + 1], doc["first_position"]):
        assert g[:, :8].tolist() == steps[t]["first"], t
        assert hashlib.sha256(np.ascontiguousarray(g, ">u4").tobytes()).hexdigest() == steps[t]["sha256"], t
