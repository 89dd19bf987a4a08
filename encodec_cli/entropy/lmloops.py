"""Coder 3's LM (formats/ecdc-v1.md) in compiled loops, around integer matrix products.

Each layer's input is rounded to at most 2**in_bits (intmath.py) and handed to the product
as two int8 rows, hi = (x + 8) >> 4 and lo = x - 16 hi (so x = 16 hi + lo, |hi| <= 32,
-8 <= lo <= 7): int8 products of int8 weights with int32 sums, which CPUs run as integer
dot products (VNNI, vpmaddwd, sdot). The loops here do everything between the products,
each reading a row once while it is in cache: they join the halves' sums
(acc = 16 hi_sum + lo_sum), scale and round them, add the bias, and go on to the next
product's input (LayerNorm, GELU, the split into heads, attention, the frequencies).

Compiled once per machine and cached by numba (next to this file, or the user's cache; in
each process where no cache folder can be written).
intlm.py runs the network with these; tests/test_coder3_spec.py checks the integers
against an implementation of the specification in plain int64 arithmetic.
"""
from __future__ import annotations

import math

import numpy as np

from ..jit import nb, njit
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
)

_jit = njit(nogil=True, error_model="numpy")
_inline = nb.njit(inline="always")
# Loops index with unsigned integers: numba must wrap a signed index that may be negative
# (a[-1]), and that check keeps LLVM from vectorizing the loop (3x slower here). Unsigned
# values serve only as indices, since numba turns uint64 mixed with int64 into float64.
_u = np.uint64


@_inline
def _excess(m, bits):
    """The smallest e >= 0 with m < 2**(bits+e), for m >= 0."""
    e = 0
    while m >= np.int64(1) << (bits + e):
        e += 1
    return e


@_inline
def _isqrt(t):
    """floor(sqrt(t)) of an int64 t >= 0: a float estimate, corrected."""
    r = np.int64(np.sqrt(np.float64(t)))
    while r * r > t:
        r -= 1
    while (r + 1) * (r + 1) <= t:
        r += 1
    return r


@_inline
def _value(p, rows, r, i, scale, bias):
    """Output i of a product's row r: its halves' sums (p [2 * rows, out] int32) joined,
    times 2**(e_r + s_i) (scale: that power of two), rounded half up, plus the bias.
    Exact in float64: |acc| < 2**31, so acc * scale is exact and below 2**52 where it
    matters, and adding 1/2 before the floor rounds as (acc + 2**(k-1)) >> k does."""
    acc = (np.int64(p[r, i]) << 4) + np.int64(p[rows + r, i])
    return np.int64(np.floor(np.float64(acc) * scale + 0.5)) + bias


@_inline
def _to_input(row, bits, hi, lo):
    """A row of Q10 integers as a product's input: shifted right (rounding) by the smallest
    e that brings it within 2**bits, as int8 halves; returns 2**e (float64)."""
    m = np.int64(0)
    for i in range(_u(row.shape[0])):
        m = max(m, abs(row[i]))
    e = _excess(m, bits)
    half = (np.int64(1) << e) >> 1
    for i in range(_u(row.shape[0])):
        v = (row[i] + half) >> e
        h = (v + 8) >> 4
        hi[i] = h
        lo[i] = v - (h << 4)
    return math.ldexp(1.0, e)


@_inline
def _norm_row(x, gamma2, beta, c):
    """intmath.LayerNorm of one row, in place. The quotient comes from float64 division,
    corrected by one where it overshot: numerator and divisor are integers below 2**53,
    so the rounded quotient is never below the true floor."""
    dim = x.shape[0]
    m = np.int64(0)
    for i in range(_u(dim)):
        m = max(m, abs(x[i]))
    e = _excess(m, LN_INPUT_BITS)
    total = np.int64(0)
    for i in range(_u(dim)):
        total += x[i] >> e
    sq = np.int64(0)
    for i in range(_u(dim)):
        c[i] = dim * (x[i] >> e) - total
        sq += c[i] * c[i]
    root = _isqrt(sq + LN_EPS)
    d = np.float64(2 * root)
    for i in range(_u(dim)):
        n = c[i] * gamma2[i] + root
        q = np.int64(np.floor(np.float64(n) / d))
        if q * (2 * root) > n:
            q -= 1
        x[i] = q + beta[i]


@_jit
def norm_add(x, gamma2, beta, y, bits, xin, scales):
    """LayerNorm of x [R, D] in place, then x += y (int [R, D]); xin [2R, D] int8 and
    scales [R]: the result as the next product's input (`bits`). The LM's input."""
    rows = x.shape[0]
    c = np.empty(x.shape[1], np.int64)
    for r in range(rows):
        xr, yr = x[r], y[r]
        _norm_row(xr, gamma2, beta, c)
        for i in range(_u(xr.shape[0])):
            xr[i] += yr[i]
        scales[r] = _to_input(xr, bits, xin[r], xin[rows + r])


@_jit
def add_norm(x, p, scales, powers, bias, gamma2, beta, bits, xin, xin_scales):
    """x += a layer's output (p: its products of the input whose 2**e are `scales`;
    powers: its rows' 2**s), then LayerNorm in place; xin [2R, D] and xin_scales [R] (may
    be `scales`) get the result as the next product's input (`bits`)."""
    rows = x.shape[0]
    c = np.empty(x.shape[1], np.int64)
    for r in range(rows):
        xr, pe = x[r], scales[r]
        for i in range(_u(xr.shape[0])):
            xr[i] += _value(p, rows, r, i, pe * powers[i], bias[i])
        _norm_row(xr, gamma2, beta, c)
        xin_scales[r] = _to_input(xr, bits, xin[r], xin[rows + r])


@_inline
def _gelu(v, base, slope):
    """GELU of a Q10 integer: the table (intmath.gelu_tables) interpolated; v above 6.0."""
    u = max(v, -GELU_EDGE) + GELU_EDGE
    j = _u(min(u, 2 * GELU_EDGE) >> GELU_STEP)
    g = (slope[j] * (u & ((1 << GELU_STEP) - 1)) + base[j]) >> (20 + GELU_STEP - Q)
    return v if v > GELU_EDGE else g


@_jit
def gelu(p, scales, powers, bias, base, slope, bits, hin, hin_scales):
    """GELU of a layer's output (p, scales, powers: as add_norm's), as the next product's
    input: hin [2R, H] and hin_scales [R]."""
    rows, width = p.shape[0] // 2, p.shape[1]
    h = np.empty(width, np.int64)
    for r in range(rows):
        pe = scales[r]
        for i in range(_u(width)):
            h[i] = _gelu(_value(p, rows, r, i, pe * powers[i], bias[i]), base, slope)
        hin_scales[r] = _to_input(h, bits, hin[r], hin[rows + r])


@_jit
def split(p, scales, powers, bias, streams, first, queries, keys, key_scales, values, value_exps):
    """Queries, keys and values per head from the input projection's output (p, scales,
    powers: as add_norm's) of `streams` streams' R rows each (stream-major): each clamped to
    +-2**20, then as mantissas of at most 2**9, 2**10, 2**10 and their exponents.

    queries [S, H, R, 25] get q * 2**(eq - 10) (float32, exact); row r's key and value
    mantissas go to column first + r of keys and values [S, H, 25, rows] (int16: they
    are below 2**10 + 1), the key's 2**ek to key_scales [S, H, rows] (float32) and the
    value's exponent to value_exps [S, H, rows] (int8)."""
    total = p.shape[0] // 2
    rows = total // streams
    heads, width = queries.shape[1], queries.shape[3]
    dim = heads * width
    v = np.empty(3 * dim, np.int64)
    for s in range(streams):
        for r in range(rows):
            n, t = s * rows + r, first + r
            pe = scales[n]
            for i in range(_u(3 * dim)):  # the whole row first: one loop the compiler vectorizes
                v[i] = min(max(_value(p, total, n, i, pe * powers[i], bias[i]), -ACT_LIMIT), ACT_LIMIT)
            for part in range(3):
                for h in range(heads):
                    o = part * dim + h * width
                    m = np.int64(0)
                    for d in range(_u(width)):
                        m = max(m, abs(v[o + d]))
                    e = _excess(m, QKV_BITS[part])
                    half = (np.int64(1) << e) >> 1
                    if part == 0:
                        scale, row = np.float32(math.ldexp(1.0, e - Q)), queries[s, h, r]
                        for d in range(_u(width)):
                            row[d] = np.float32((v[o + d] + half) >> e) * scale
                    else:
                        column = (keys if part == 1 else values)[s, h, :, t]
                        for d in range(_u(width)):
                            column[d] = (v[o + d] + half) >> e
                        if part == 1:
                            key_scales[s, h, t] = np.float32(math.ldexp(1.0, e))
                        else:
                            value_exps[s, h, t] = e


@_inline
def _weights(scores, scales, a, b, exps, table, s, buf, out):
    """One query's attention weights (intmath's rounding, softmax_weights and `rescaled`)
    over its keys a .. b - 1, into out (0 elsewhere); returns the largest exponent seen.
    scores: float32 products of q and the key mantissas, scales: the keys' 2**ek (the
    product is exact in float64); exps: the values' exponents (at most 11, so shifts stay
    below 64); s and buf: scratch of the row's length."""
    half = np.int64(1) << (EXP_BITS - 1)
    last = np.int64(EXP_SIZE - 1)
    best = np.int64(-(1 << 62))
    top = np.int64(0)
    for j in range(a, b):
        v = np.int64(np.floor(np.float64(scores[j]) * np.float64(scales[j]) + 0.5))
        s[j] = v
        best = max(best, v)
        top = max(top, exps[j])
    total = np.int64(0)
    for j in range(a, b):
        w = table[_u(min(best - s[j], last))]
        buf[j] = w
        total += w
    inv = (np.int64(1) << (EXP_BITS + ATT_BITS)) // total
    out[:a] = 0
    for j in range(a, b):
        w = (buf[j] * inv + half) >> EXP_BITS
        k = top - exps[j]
        out[j] = np.float32((w + ((np.int64(1) << k) >> 1)) >> k)
    out[b:] = 0
    return top


@_jit
def softmax(scores, scales, lo, hi, exps, table, weights, tops):
    """Attention weights of scores [G, R, L] (float32 products of q and the key mantissas;
    G = streams * heads; the keys' 2**ek in scales [G, L]), row r seeing columns lo[r] ..
    hi[r] - 1 (0 elsewhere), as _weights gives them: weights [G, R, L] float32 (exact:
    below 2**14) and tops [G, R]. exps [G, L]."""
    groups, rows, cols = scores.shape
    s, buf = np.empty(cols, np.int64), np.empty(cols, np.int64)
    for g in range(groups):
        for r in range(rows):
            tops[g, r] = _weights(scores[g, r], scales[g], _u(lo[r]), _u(hi[r]), exps[g], table, s, buf,
                                  weights[g, r])


@nb.njit(nogil=True, error_model="numpy", fastmath={"reassoc"})
def _dot(w, v, lo, hi):
    """sum of w[j] * v[j], j = lo .. hi - 1, in float32 in any order (reassoc lets it
    vectorize): exact, for attention weights and value mantissas keep every partial sum
    below 2**24 (intmath's rules)."""
    total = np.float32(0)
    for j in range(lo, hi):
        total += w[j] * np.float32(v[j])
    return total


@_inline
def _attention_row(a, bits, out, scales, n, rows):
    """A Q10 attention output row as the output product's input (row n of `rows`)."""
    scales[n] = _to_input(a, bits, out[n], out[rows + n])


@_jit
def attend(queries, keys, key_scales, values, value_exps, start, stop, table, bits, out, scales):
    """A decoder step's attention for each stream: its query (queries [B, H, 25], scaled
    as `split` gives them) over the keys and values at rows start .. stop - 1 (as `split`
    stores them), the products in float32 (exact in any order, intmath's rules); out
    [2B, D] int8 and scales [B]: the result as the output product's input (`bits`)."""
    streams, heads, width = queries.shape
    cap = keys.shape[3]
    sc, w = np.empty(cap, np.float32), np.empty(cap, np.float32)
    s, buf = np.empty(cap, np.int64), np.empty(cap, np.int64)
    a = np.empty(heads * width, np.int64)
    lo, hi = _u(start), _u(stop)
    for b in range(streams):
        for h in range(heads):
            q, k, v = queries[b, h], keys[b, h], values[b, h]  # C-contiguous: loops vectorize
            sc[lo:hi] = 0
            for d in range(width):
                kd, qd = k[d], q[d]
                for j in range(lo, hi):
                    sc[j] += qd * np.float32(kd[j])
            top = _weights(sc, key_scales[b, h], lo, hi, value_exps[b, h], table, s, buf, w)
            for d in range(width):
                acc = _dot(w, v[d], lo, hi)
                a[h * width + d] = ((np.int64(acc) << top) + (1 << (ATT_BITS - 1))) >> ATT_BITS
        _attention_row(a, bits, out, scales, b, streams)


@_jit
def attention(acc, tops, bits, out, scales):
    """Attention outputs from acc [S, H, R, 25] (float32 sums of weights times value
    mantissas, exact) and tops [S, H, R]: Q10 rows, stream-major, as the output product's
    input (`bits`): out [2 S R, D] int8 and scales [S R]."""
    streams, heads, rows, width = acc.shape
    a = np.empty(heads * width, np.int64)
    for s in range(streams):
        for r in range(rows):
            for h in range(heads):
                t, part, ar = tops[s, h, r], a[h * width:(h + 1) * width], acc[s, h, r]
                for d in range(_u(width)):
                    part[d] = ((np.int64(ar[d]) << t) + (1 << (ATT_BITS - 1))) >> ATT_BITS
            _attention_row(a, bits, out, scales, s * rows + r, streams * rows)


@_jit
def frequencies(p, scales, powers, bias, table, out):
    """intmath.frequencies of the heads' output (p, scales, powers: as add_norm's; R rows
    of n_q * 1024) into out [R * n_q, 1024] (float32: exact, every frequency is below
    2**24): e = EXP[min(max - z, last)], scaled to sum to FREQ_TOTAL, what the floors
    leave to the first most likely symbol."""
    rows = p.shape[0] // 2
    card = out.shape[1]
    n_q = p.shape[1] // card
    z = np.empty(card, np.int64)
    last = np.int64(EXP_SIZE - 1)
    for r in range(rows):
        pe = scales[r]
        for c in range(n_q):
            g, o = out[r * n_q + c], c * card
            best = np.int64(-(1 << 62))
            for i in range(_u(card)):
                z[i] = _value(p, rows, r, o + i, pe * powers[o + i], bias[o + i])
                best = max(best, z[i])
            top = 0
            while z[top] != best:  # the first most likely symbol
                top += 1
            total = np.int64(0)
            for i in range(_u(card)):
                z[i] = table[_u(min(best - z[i], last))]
                total += z[i]
            scale = (np.int64(FREQ_TOTAL) << 32) // total
            total = 0
            for i in range(_u(card)):
                z[i] = (z[i] * scale) >> 32
                total += z[i]
            z[top] += FREQ_TOTAL - total
            for i in range(_u(card)):
                g[i] = z[i]


@_inline
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
def positions(p, rot, out):
    """out [R, D] (zeros) += intmath.positions(p), p [R]."""
    for r in range(p.shape[0]):
        _add_position(p[r], rot, out[r])


@_jit
def rows_product(halves, weights, out):
    """out [R, N] = halves [R, K] (int8) times weights [N, K] (int8, a row per output), int32
    sums: for one stream's step (R = 2), which reads each weight once, where a GEMM library
    packs the weight matrix first (measured 2x as long at one stream)."""
    rows, width = halves.shape
    for o in range(weights.shape[0]):
        w = weights[o]
        for r in range(rows):
            h = halves[r]
            acc = np.int32(0)
            for i in range(width):
                acc += np.int32(h[i]) * np.int32(w[i])
            out[r, o] = acc
