"""The elementwise work of coder 3's LM in compiled loops, around float32 matrix products.

intlm.py's numpy layers make some 15 passes over each attention score and each logit
(rounding, maximum, table lookup, sums, scaling), and at the sizes a file has (blocks of
75 frames, or a decoder's 8 streams) those passes, not the products, take most of the
time. Here each of them is one compiled loop that reads a row once and keeps it in cache;
the matrix products stay in torch and numpy (BLAS), exactly as intlm.py computes them.
The integers are intlm.py's, bit for bit (tests/test_lm.py compares the two on every path).

Compiled once per machine and cached by numba, like lmkernel.py. A process that uses these
pays numba's start-up (about 0.3 s and 100 MB), so the coders use them only for inputs long
enough to repay it (LMEncoder, LMDecoder); intlm.py's numpy layers do the rest.
"""
from __future__ import annotations

import functools
import typing as tp

import numpy as np
import torch

from ..codec.lm import CARD, DIM, HEADS
from ..jit import nb
from .intlm import HEAD_DIM, PASS_BLOCK, IntLM, IntLMState
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
    _gelu_tables,
    _mm,
    _sum,
    exp_table,
    position_array,
    rotation_table,
)
from .lmkernel import _add_position, _excess, _isqrt

_jit = nb.njit(cache=True, nogil=True, error_model="numpy")
# Loops index with unsigned integers: numba must wrap a signed index that may be negative
# (a[-1]), and that check keeps LLVM from vectorizing the loop (3x slower here). Unsigned
# values serve only as indices, since numba turns uint64 mixed with int64 into float64.
_u = np.uint64


@nb.njit(inline="always")
def _rounded(y, bias):
    """Linear.round of one product: floor(y + 1/2) + bias, as int64."""
    return np.int64(np.floor(np.float64(y) + 0.5) + bias)


@nb.njit(inline="always")
def _to_input(row, bits, out):
    """Linear.products' input: a row of Q10 integers rounded to a multiple of 2**e (e the
    smallest that brings it within 2**bits), as float32."""
    m = np.int64(0)
    for i in range(_u(row.shape[0])):
        m = max(m, abs(row[i]))
    e = _excess(m, bits)
    half, mask = (np.int64(1) << e) >> 1, -(np.int64(1) << e)
    for i in range(_u(row.shape[0])):
        out[i] = np.float32((row[i] + half) & mask)


@nb.njit(inline="always")
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
def add_norm(x, y, bias, gamma2, beta, bits, out):
    """x += Linear.round(y) (products y [R, D] float32, bias [D]), then LayerNorm in place;
    out [R, D] float32: the result as the next product's input (`bits`)."""
    c = np.empty(x.shape[1], np.int64)
    for r in range(x.shape[0]):
        xr, yr = x[r], y[r]
        for i in range(_u(xr.shape[0])):
            xr[i] += _rounded(yr[i], bias[i])
        _norm_row(xr, gamma2, beta, c)
        _to_input(xr, bits, out[r])


@_jit
def norm_add(x, gamma2, beta, y, bits, out):
    """LayerNorm of x [R, D] in place, then x += y (int [R, D]); out [R, D] float32: the
    result as the next product's input (`bits`). The LM's input: embeddings, positions."""
    c = np.empty(x.shape[1], np.int64)
    for r in range(x.shape[0]):
        xr, yr = x[r], y[r]
        _norm_row(xr, gamma2, beta, c)
        for i in range(_u(xr.shape[0])):
            xr[i] += yr[i]
        _to_input(xr, bits, out[r])


@_jit
def gelu(y, bias, base, slope, bits, out):
    """intmath.gelu of Linear.round(y) (y [R, H] float32), as the next product's input."""
    h = np.empty(y.shape[1], np.int64)
    frac = (1 << GELU_STEP) - 1
    for r in range(y.shape[0]):
        yr = y[r]
        for i in range(_u(y.shape[1])):
            v = _rounded(yr[i], bias[i])
            u = max(v, -GELU_EDGE) + GELU_EDGE
            j = _u(min(u, 2 * GELU_EDGE) >> GELU_STEP)
            g = (slope[j] * (u & frac) + base[j]) >> (20 + GELU_STEP - Q)
            h[i] = v if v > GELU_EDGE else g
        _to_input(h, bits, out[r])


@_jit
def split(p, bias, first, queries, keys, scales, values, exps):
    """intlm._split and _KV.put of rows p [S, R, 3 * D] (products of S streams' R rows).

    queries [S, H, R, 25] get the scaled mantissas attention multiplies (q * 2**(eq - 10));
    row r's key and value mantissas go to column first + r of keys and values [S, H, 25,
    rows] (float32, or int16 for a decoder: they are below 2**10 + 1), the key's 2**ek to
    scales [S, H, rows] (float32) and the value's exponent to exps [S, H, rows]."""
    streams, rows = p.shape[0], p.shape[1]
    heads, width = queries.shape[1], queries.shape[3]
    dim = heads * width
    v = np.empty(width, np.int64)
    for s in range(streams):
        for r in range(rows):
            t = first + r
            for part in range(3):
                for h in range(heads):
                    o = part * dim + h * width
                    pr, br = p[s, r, o:o + width], bias[o:o + width]
                    m = np.int64(0)
                    for d in range(_u(width)):
                        v[d] = min(max(_rounded(pr[d], br[d]), -ACT_LIMIT), ACT_LIMIT)
                        m = max(m, abs(v[d]))
                    e = _excess(m, QKV_BITS[part])
                    half = (np.int64(1) << e) >> 1
                    if part == 0:
                        scale, row = np.float32(2.0 ** (e - Q)), queries[s, h, r]
                        for d in range(_u(width)):
                            row[d] = np.float32((v[d] + half) >> e) * scale
                    else:
                        column = (keys if part == 1 else values)[s, h, :, t]
                        for d in range(_u(width)):
                            column[d] = (v[d] + half) >> e
                        if part == 1:
                            scales[s, h, t] = np.float32(2.0 ** e)
                        else:
                            exps[s, h, t] = e


@nb.njit(inline="always")
def _weights(scores, scales, a, b, exps, table, s, buf, out):
    """One query's attention weights (intlm._KV.attend's rounding, softmax_weights and
    `rescaled`) over its keys a .. b - 1, into out (0 elsewhere); returns the largest
    exponent seen. scores: float32 products of q and the key mantissas, scales: the keys'
    2**ek (the product is exact in float64); exps: the values' exponents (at most 11, so
    shifts stay below 64); s and buf: scratch of the row's length."""
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
    below 2**24 (_KV.attend)."""
    total = np.float32(0)
    for j in range(lo, hi):
        total += w[j] * np.float32(v[j])
    return total


@_jit
def attend(queries, keys, scales, values, exps, start, stop, table, bits, out):
    """A decoder step's attention for each stream: its query (queries [B, H, 25], scaled
    as `split` gives them) over the keys and values at rows start .. stop - 1 (as `split`
    stores them), the products in float32 (exact in any order, intmath's rules), into out
    [B, D] as the output product's input (`bits`)."""
    streams, heads, width = queries.shape
    cap = keys.shape[3]
    scores, w = np.empty(cap, np.float32), np.empty(cap, np.float32)
    s, buf = np.empty(cap, np.int64), np.empty(cap, np.int64)
    a = np.empty(heads * width, np.int64)
    lo, hi = _u(start), _u(stop)
    for b in range(streams):
        for h in range(heads):
            q, k, v = queries[b, h], keys[b, h], values[b, h]  # C-contiguous: loops vectorize
            scores[lo:hi] = 0
            for d in range(width):
                kd, qd = k[d], q[d]
                for j in range(lo, hi):
                    scores[j] += qd * np.float32(kd[j])
            top = _weights(scores, scales[b, h], lo, hi, exps[b, h], table, s, buf, w)
            for d in range(width):
                acc = _dot(w, v[d], lo, hi)
                a[h * width + d] = ((np.int64(acc) << top) + (1 << (ATT_BITS - 1))) >> ATT_BITS
        _to_input(a, bits, out[b])


@_jit
def attention(acc, tops, bits, out):
    """Attention outputs from acc [S, H, R, 25] (float32 sums of weights times value
    mantissas, exact) and tops [S, H, R]: Q10 rows [S * R, D], as the output product's
    input (`bits`), into out [S * R, D] float32."""
    streams, heads, rows, width = acc.shape
    a = np.empty(heads * width, np.int64)
    for s in range(streams):
        for r in range(rows):
            for h in range(heads):
                t, part, ar = tops[s, h, r], a[h * width:(h + 1) * width], acc[s, h, r]
                for d in range(_u(width)):
                    part[d] = ((np.int64(ar[d]) << t) + (1 << (ATT_BITS - 1))) >> ATT_BITS
            _to_input(a, bits, out[s * rows + r])


@_jit
def frequencies(y, bias, table, out):
    """intmath.frequencies of Linear.round(y) (head products y [R, n_q * 1024] float32),
    into out [R * n_q, 1024] (float32: exact, every frequency is below 2**24)."""
    card = out.shape[1]
    n_q = y.shape[1] // card
    z = np.empty(card, np.int64)
    last = np.int64(EXP_SIZE - 1)
    for r in range(y.shape[0]):
        for c in range(n_q):
            yr, br, g = y[r, c * card:(c + 1) * card], bias[c * card:(c + 1) * card], out[r * n_q + c]
            best = np.int64(-(1 << 62))
            for i in range(_u(card)):
                z[i] = _rounded(yr[i], br[i])
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


@_jit
def _positions(p, rot, out):
    """out [R, D] (zeros) += intmath.positions(p), p [R]."""
    for r in range(p.shape[0]):
        _add_position(p[r], rot, out[r])


def positions(p: np.ndarray) -> np.ndarray:
    """intmath.positions, compiled (lmkernel.py's loop): the same integers, 5x as fast for a block."""
    p = position_array(p)
    out = np.zeros((len(p), DIM), np.int64)
    _positions(p, rotation_table(), out)
    return out


# ---------------------------------------------------------------- the LM with these loops

@functools.lru_cache(maxsize=None)
def _exp32() -> np.ndarray:
    """intmath.exp_table as int32 (its entries are at most 2**30): half the cache lines per lookup."""
    return exp_table().astype(np.int32)


def known(lm: IntLM, codes: np.ndarray, first: int = 0, block: int = PASS_BLOCK) -> tp.Iterator[np.ndarray]:
    """IntLM.known with these loops between the products (the frequencies as float32).

    codes may also be [S, frames, n_q]: S streams of the same length, all from position
    `first` (a 48 kHz packet's segments), run together, each as alone; blocks are then
    [S, rows, n_q, 1024]. Their products have S times the rows, for fewer, larger calls."""
    streams = codes[None] if codes.ndim == 2 else codes
    S, frames, n_q = streams.shape
    lm._check(n_q)
    heads, table, (base, slope) = lm.heads.first(n_q * CARD), _exp32(), _gelu_tables()
    # key and value mantissas [S, H, 25, rows], the keys' 2**ek and the values' exponents [S, H, rows]
    keys = np.zeros((len(lm.layers), S, HEADS, HEAD_DIM, frames + 1), np.float32)
    values = np.zeros((len(lm.layers), S, HEADS, HEAD_DIM, frames + 1), np.float32)
    scales = np.zeros((len(lm.layers), S, HEADS, frames + 1), np.float32)
    exps = np.zeros((len(lm.layers), S, HEADS, frames + 1), np.int64)
    for i, layer in enumerate(lm.layers):  # row 0: the reference's all-zero input
        split(np.zeros((S, 1, 3 * DIM), np.float32), layer[0].bias, 0,
              np.empty((S, HEADS, 1, HEAD_DIM), np.float32), keys[i], scales[i], values[i], exps[i])
    tokens = np.concatenate([np.full((S, 1, n_q), -1), streams.astype(np.int64)[:, :-1]], axis=1) + 1
    for s in range(0, frames, block):
        e = min(frames, s + block)
        R, G = e - s, S * HEADS
        x = _sum(lm.emb[np.arange(n_q)[None, None], tokens[:, s:e]], axis=2, dtype=np.int64).reshape(S * R, DIM)
        xin = np.empty(x.shape, np.float32)
        pos = positions(first + np.arange(s, e))
        norm_add(x, lm.norm_in._gamma2, lm.norm_in.beta, pos if S == 1 else np.tile(pos, (S, 1)),
                 lm.layers[0][0].in_bits, xin)
        lo = max(0, s + 1 - lm.past_context)  # the oldest row any frame here sees
        rows = np.arange(s + 1, e + 1)            # frame t's input is row t + 1
        see_lo, see_hi = np.maximum(rows - lm.past_context, lo) - lo, rows + 1 - lo
        for i, (qkv, out, norm1, lin1, lin2, norm2) in enumerate(lm.layers):
            q = np.empty((S, HEADS, R, HEAD_DIM), np.float32)
            split(_mm(xin, qkv.w).reshape(S, R, 3 * DIM), qkv.bias, s + 1, q, keys[i], scales[i], values[i],
                  exps[i])
            k, v = keys[i, :, :, :, lo:e + 1], values[i, :, :, :, lo:e + 1]
            scores = _mm(q.reshape(G, R, HEAD_DIM), torch.from_numpy(k.reshape(G, HEAD_DIM, -1)))
            w, tops = np.empty(scores.shape, np.float32), np.empty((G, R), np.int64)
            softmax(scores, scales[i, :, :, lo:e + 1].reshape(G, -1), see_lo, see_hi,
                    exps[i, :, :, lo:e + 1].reshape(G, -1), table, w, tops)
            acc = _mm(w, torch.from_numpy(v.reshape(G, HEAD_DIM, -1)).transpose(1, 2))
            att = np.empty(x.shape, np.float32)
            attention(acc.reshape(S, HEADS, R, HEAD_DIM), tops.reshape(S, HEADS, R), out.in_bits, att)
            add_norm(x, _mm(att, out.w), out.bias, norm1._gamma2, norm1.beta, lin1.in_bits, xin)
            hidden = np.empty((S * R, lin1.bias.shape[0]), np.float32)
            gelu(_mm(xin, lin1.w), lin1.bias, base, slope, lin2.in_bits, hidden)
            after = lm.layers[i + 1][0] if i + 1 < len(lm.layers) else heads
            add_norm(x, _mm(hidden, lin2.w), lin2.bias, norm2._gamma2, norm2.beta, after.in_bits, xin)
        freqs = np.empty((S * R * n_q, CARD), np.float32)
        frequencies(_mm(xin, heads.w), heads.bias, table, freqs)
        yield freqs.reshape(R, n_q, CARD) if codes.ndim == 2 else freqs.reshape(S, R, n_q, CARD)


class FusedState(IntLMState):
    """The streams of IntLMState, stepped with these loops around the same products.

    Per layer: key and value mantissas as int16 [B, H, 25, rows] (half the memory, and
    the memory traffic, of float32), the keys' 2**ek and the values' exponents [B, H,
    rows], in a window that slides along its buffers as IntLMState's does."""

    embed = staticmethod(positions)

    def _start_cache(self, capacity: int) -> None:
        layers, batch = len(self.lm.layers), self.batch
        self.keys = np.zeros((layers, batch, HEADS, HEAD_DIM, capacity), np.int16)
        self.values = np.zeros((layers, batch, HEADS, HEAD_DIM, capacity), np.int16)
        self.scales = np.zeros((layers, batch, HEADS, capacity), np.float32)
        self.exps = np.zeros((layers, batch, HEADS, capacity), np.int64)
        self._queries = np.empty((batch, HEADS, 1, HEAD_DIM), np.float32)
        for i, layer in enumerate(self.lm.layers):  # row 0: the reference's all-zero input
            split(np.zeros((batch, 1, 3 * DIM), np.float32), layer[0].bias, 0, self._queries,
                  *self._layer(i))
        self._tables = _exp32(), _gelu_tables()

    def _layer(self, i: int) -> tp.Tuple[np.ndarray, ...]:
        return self.keys[i], self.scales[i], self.values[i], self.exps[i]

    def step(self) -> np.ndarray:
        """Integer frequencies [batch, n_q, 1024] of the next frame, as float32 (rows sum to 2**24 - 1024)."""
        lm, B = self.lm, self.batch
        table, (base, slope) = self._tables
        x = _sum(lm.emb[self._codebooks, self.prev], axis=1, dtype=np.int64)
        xin = np.empty(x.shape, np.float32)
        norm_add(x, lm.norm_in._gamma2, lm.norm_in.beta, self.positions.at(self.offset), lm.layers[0][0].in_bits,
                 xin)
        pos = self.window.slot(self._move)
        q, att = self._queries, np.empty((B, DIM), np.float32)
        for i, (qkv, out, norm1, lin1, lin2, norm2) in enumerate(lm.layers):
            cache = self._layer(i)
            split(_mm(xin, qkv.w).reshape(B, 1, 3 * DIM), qkv.bias, pos, q, *cache)
            attend(q[:, :, 0], *cache, self.window.start, pos + 1, table, out.in_bits, att)
            add_norm(x, _mm(att, out.w), out.bias, norm1._gamma2, norm1.beta, lin1.in_bits, xin)
            hidden = np.empty((B, lin1.bias.shape[0]), np.float32)
            gelu(_mm(xin, lin1.w), lin1.bias, base, slope, lin2.in_bits, hidden)
            after = lm.layers[i + 1][0] if i + 1 < len(lm.layers) else self._heads
            add_norm(x, _mm(hidden, lin2.w), lin2.bias, norm2._gamma2, norm2.beta, after.in_bits, xin)
        self.window.advance()
        self.offset += 1
        freqs = np.empty((B * self.n_q, CARD), np.float32)
        frequencies(_mm(xin, self._heads.w), self._heads.bias, table, freqs)
        return freqs.reshape(B, self.n_q, CARD)

    def _move(self, start: int, stop: int) -> None:
        n = stop - start
        for buf in (self.keys, self.values, self.scales, self.exps):
            buf[..., :n] = buf[..., start:stop].copy()
