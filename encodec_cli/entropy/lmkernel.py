"""Coder 3's decoder step compiled with numba: the integers of `IntLMState.step`, in one call.

A decoder must step the LM frame by frame, and in numpy a step is some 400 small array
operations, most of its time at the batch sizes a decoder has. Here the whole step is one
compiled function in int64 arithmetic (no floating point at all), with the weights as the
int8 they are (a quarter of the memory traffic of float32) and keys and values as int16
mantissas in a ring of the window's rows (attention is a sum of exact integers, so the
order of the rows does not matter). tests/test_lm.py checks it against the numpy step.

Compiled once per machine and cached (numba's cache: next to this file, or the user's
cache folder). Only live streams use it (IntLM.start, compiled=True): numba costs a
process about 140 MB of memory and 1 s of start-up.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from ..jit import nb
from .intmath import (
    ACT_LIMIT,
    ATT_BITS,
    EXP_BITS,
    EXP_SIZE,
    FREQ_TOTAL,
    GELU_EDGE,
    GELU_STEP,
    LN_EPS,
    LN_INPUT_BITS,
    QKV_BITS,
    Q,
    exp_table,
    gelu_table,
    rotation_table,
)

_jit = nb.njit(cache=True, nogil=True)


@_jit
def _excess(m, bits):
    """The smallest e >= 0 with m < 2**(bits+e), for m >= 0."""
    e = 0
    while m >= np.int64(1) << (bits + e):
        e += 1
    return e


@_jit
def _max_abs(v):
    m = np.int64(0)
    for i in range(v.shape[0]):
        m = max(m, abs(v[i]))
    return m


@_jit
def _round_scaled(acc, k):
    """floor(acc * 2**k + 1/2) for |acc| < 2**40."""
    if k >= 0:
        return acc << k
    if k < -48:
        return np.int64(0)
    return (acc + (np.int64(1) << (-k - 1))) >> -k


@_jit
def _dot(x, w, n):
    acc = np.int32(0)
    for i in range(n):
        acc = np.int32(acc + np.int32(x[i]) * np.int32(w[i]))
    return acc


@_jit
def _linear(x, w, s, b, in_bits, out):
    """intmath.Linear: x [R, In] int64, w [Out, In] int8, s and b [Out] -> out [R, Out].
    Products of the rounded inputs (int16) and weights are summed in int32, 4 rows at a time."""
    rows, width = x.shape
    xq = np.empty((rows, width), np.int16)
    es = np.empty(rows, np.int64)
    for r in range(rows):
        e = _excess(_max_abs(x[r]), in_bits)
        half = (np.int64(1) << e) >> 1
        for i in range(width):
            xq[r, i] = (x[r, i] + half) >> e
        es[r] = e
    for o in range(w.shape[0]):
        wo = w[o]
        r = 0
        while r + 4 <= rows:
            x0, x1, x2, x3 = xq[r], xq[r + 1], xq[r + 2], xq[r + 3]
            a0 = a1 = a2 = a3 = np.int32(0)
            for i in range(width):
                wi = np.int32(wo[i])
                a0 = np.int32(a0 + np.int32(x0[i]) * wi)
                a1 = np.int32(a1 + np.int32(x1[i]) * wi)
                a2 = np.int32(a2 + np.int32(x2[i]) * wi)
                a3 = np.int32(a3 + np.int32(x3[i]) * wi)
            for j, a in enumerate((a0, a1, a2, a3)):
                out[r + j, o] = _round_scaled(np.int64(a), es[r + j] + s[o]) + b[o]
            r += 4
        for r in range(r, rows):
            out[r, o] = _round_scaled(np.int64(_dot(xq[r], wo, width)), es[r] + s[o]) + b[o]


@_jit
def _isqrt(t):
    r = np.int64(np.sqrt(np.float64(t)))
    while r * r > t:
        r -= 1
    while (r + 1) * (r + 1) <= t:
        r += 1
    return r


@_jit
def _layer_norm(x, gamma, beta, out):
    """intmath.LayerNorm, row by row; x may be out."""
    rows, dim = x.shape
    c = np.empty(dim, np.int64)
    for r in range(rows):
        e = _excess(_max_abs(x[r]), LN_INPUT_BITS)
        total = np.int64(0)
        for i in range(dim):
            total += x[r, i] >> e
        sq = np.int64(0)
        for i in range(dim):
            c[i] = dim * (x[r, i] >> e) - total
            sq += c[i] * c[i]
        root = _isqrt(sq + LN_EPS)
        for i in range(dim):
            out[r, i] = (2 * c[i] * gamma[i] + root) // (2 * root) + beta[i]


@_jit
def _gelu(h, table):
    frac = (1 << GELU_STEP) - 1
    for r in range(h.shape[0]):
        for i in range(h.shape[1]):
            v = h[r, i]
            if v > GELU_EDGE:
                continue
            u = max(v, -GELU_EDGE) + GELU_EDGE
            j, f = u >> GELU_STEP, u & frac
            h[r, i] = _round_scaled(table[j] * (frac + 1 - f) + table[j + 1] * f, Q - 20 - GELU_STEP)


@_jit
def _split(p, mant, exps, bits):
    """intlm._split of one row p [H * 25] (clamped here) into mant [H, 25] and exps [H]."""
    heads, width = mant.shape
    for h in range(heads):
        m = np.int64(0)
        for d in range(width):
            v = min(max(p[h * width + d], -ACT_LIMIT), ACT_LIMIT)
            p[h * width + d] = v
            m = max(m, abs(v))
        e = _excess(m, bits)
        half = (np.int64(1) << e) >> 1
        for d in range(width):
            mant[h, d] = (p[h * width + d] + half) >> e
        exps[h] = e


@_jit
def _attend(q, eq, k, ek, v, ev, n, table, out):
    """One stream's attention (intlm._KV.attend) over ring rows 0 .. n - 1 of its keys
    k [H, rows, 25] and values, exponents ek, ev [H, rows]; out [H * 25] (Q10)."""
    heads, width = q.shape
    scores = np.empty(n, np.int64)
    weights = np.empty(n, np.int64)
    acc = np.empty(width, np.int64)
    for h in range(heads):
        best = np.int64(-(1 << 62))
        top = np.int64(0)
        for j in range(n):
            scores[j] = _round_scaled(np.int64(_dot(q[h], k[h, j], width)), eq[h] + ek[h, j] - Q)
            best = max(best, scores[j])
            top = max(top, np.int64(ev[h, j]))
        total = np.int64(0)
        for j in range(n):
            weights[j] = table[min(best - scores[j], EXP_SIZE - 1)]
            total += weights[j]
        inv = (np.int64(1) << (EXP_BITS + ATT_BITS)) // total
        acc[:] = 0
        for j in range(n):
            w = (weights[j] * inv + (np.int64(1) << (EXP_BITS - 1))) >> EXP_BITS
            sh = top - ev[h, j]
            w = (w + ((np.int64(1) << sh) >> 1)) >> sh
            for d in range(width):
                acc[d] += w * v[h, j, d]
        for d in range(width):
            out[h * width + d] = ((acc[d] << top) + (1 << (ATT_BITS - 1))) >> ATT_BITS


@_jit
def _frequencies(logits, table, out):
    """intmath.frequencies of each row of logits [R, 1024] into out [R, 1024]."""
    for r in range(logits.shape[0]):
        top = 0
        for i in range(logits.shape[1]):
            if logits[r, i] > logits[r, top]:
                top = i
        best, total = logits[r, top], np.int64(0)
        for i in range(logits.shape[1]):
            out[r, i] = table[min(best - logits[r, i], EXP_SIZE - 1)]
            total += out[r, i]
        scale = (np.int64(FREQ_TOTAL) << 32) // total
        total = 0
        for i in range(logits.shape[1]):
            out[r, i] = (out[r, i] * scale) >> 32
            total += out[r, i]
        out[r, top] += FREQ_TOTAL - total


@_jit
def _add_position(p, rot, x):
    """x += intmath.positions([p]): rotate (2**30, 0) by R[j] for each set bit j of p."""
    half = rot.shape[1]
    for i in range(half):
        c, s = np.int64(1 << 30), np.int64(0)
        for j in range(rot.shape[0]):
            if (p >> j) & 1:
                rc, rs = rot[j, i, 0], rot[j, i, 1]
                c, s = (c * rc - s * rs + (1 << 29)) >> 30, (s * rc + c * rs + (1 << 29)) >> 30
        x[i] += (c + (1 << 19)) >> 20
        x[half + i] += (s + (1 << 19)) >> 20


@_jit
def _step(tokens, positions, emb, norm_in, layers, heads, bits, tables, cache, slot, n, out):
    """One step of `batch` streams. tokens [B, n_q] (code + 1 of the previous frame),
    positions [B]; the new keys and values go to ring row `slot`, and attention covers rows
    0 .. n - 1; out [B, n_q, 1024] gets the frequencies. bits: the input bits of the
    layers' products (qkv, out, lin1, lin2, heads)."""
    (w_qkv, s_qkv, b_qkv, w_out, s_out, b_out, w_1, s_1, b_1, w_2, s_2, b_2, norms) = layers
    keys, key_exps, values, value_exps = cache
    exp, gelu, rot = tables
    batch, n_q = tokens.shape
    dim, heads_n, width = emb.shape[2], keys.shape[2], keys.shape[4]
    x = np.zeros((batch, dim), np.int64)
    for b in range(batch):
        for c in range(n_q):
            for i in range(dim):
                x[b, i] += emb[c, tokens[b, c], i]
    _layer_norm(x, norm_in[0], norm_in[1], x)
    for b in range(batch):
        _add_position(positions[b], rot, x[b])
    qkv = np.empty((batch, 3 * dim), np.int64)
    att = np.empty((batch, dim), np.int64)
    y = np.empty((batch, dim), np.int64)
    hidden = np.empty((batch, w_1.shape[1]), np.int64)
    q = np.empty((heads_n, width), np.int16)
    eq = np.empty(heads_n, np.int64)
    for layer in range(w_qkv.shape[0]):
        _linear(x, w_qkv[layer], s_qkv[layer], b_qkv[layer], bits[0], qkv)
        for b in range(batch):
            _split(qkv[b, :dim], q, eq, QKV_BITS[0])
            _split(qkv[b, dim:2 * dim], keys[layer, b, :, slot], key_exps[layer, b, :, slot], QKV_BITS[1])
            _split(qkv[b, 2 * dim:], values[layer, b, :, slot], value_exps[layer, b, :, slot], QKV_BITS[2])
            _attend(q, eq, keys[layer, b], key_exps[layer, b], values[layer, b], value_exps[layer, b],
                    n, exp, att[b])
        _linear(att, w_out[layer], s_out[layer], b_out[layer], bits[1], y)
        x += y
        _layer_norm(x, norms[layer, 0], norms[layer, 1], x)
        _linear(x, w_1[layer], s_1[layer], b_1[layer], bits[2], hidden)
        _gelu(hidden, gelu)
        _linear(hidden, w_2[layer], s_2[layer], b_2[layer], bits[3], y)
        x += y
        _layer_norm(x, norms[layer, 2], norms[layer, 3], x)
    w_h, s_h, b_h = heads
    logits = np.empty((batch, w_h.shape[0]), np.int64)
    _linear(x, w_h, s_h, b_h, bits[4], logits)
    _frequencies(logits.reshape(-1, out.shape[-1]), exp, out.reshape(-1, out.shape[-1]))


class Weights(tp.NamedTuple):
    """An IntLM's integers in the kernel's layout."""
    emb: np.ndarray
    norm_in: np.ndarray
    layers: tuple
    heads: tuple
    bits: tp.Tuple[int, ...]
    tables: tuple


def weights(lm, n_q: int) -> Weights:
    """The kernel's arrays for the first `n_q` codebooks of an IntLM (built once per LM)."""
    def stack(i: int) -> tp.Tuple[np.ndarray, ...]:
        parts = [layer[i].integers() for layer in lm.layers]
        return tuple(np.ascontiguousarray(np.stack(a)) for a in zip(*parts))

    norms = np.stack([np.stack([layer[2].gamma, layer[2].beta, layer[5].gamma, layer[5].beta])
                      for layer in lm.layers]).astype(np.int64)
    heads = lm.heads.first(n_q * 1024).integers()
    bits = tuple(lm.layers[0][i].in_bits for i in (0, 1, 3, 4)) + (lm.heads.in_bits,)
    return Weights(lm.emb, np.stack([lm.norm_in.gamma, lm.norm_in.beta]).astype(np.int64),
                   stack(0) + stack(1) + stack(3) + stack(4) + (norms,), heads, bits,
                   (exp_table(), gelu_table(), rotation_table()))


def cache(layers: int, batch: int, heads: int, rows: int, width: int) -> tp.Tuple[np.ndarray, ...]:
    """Keys, their exponents, values, their exponents: [L, B, H, rows, 25] int16, [L, B, H, rows]."""
    return (np.zeros((layers, batch, heads, rows, width), np.int16), np.zeros((layers, batch, heads, rows), np.int64),
            np.zeros((layers, batch, heads, rows, width), np.int16), np.zeros((layers, batch, heads, rows), np.int64))


def step(w: Weights, tokens: np.ndarray, positions: np.ndarray, kv: tp.Tuple[np.ndarray, ...], slot: int, n: int,
         out: np.ndarray) -> None:
    _step(tokens, positions, w.emb, w.norm_in, w.layers, w.heads, w.bits, w.tables, kv, slot, n, out)
