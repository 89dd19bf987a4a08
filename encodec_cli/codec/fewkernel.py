"""Float32 matrix products of a few columns, compiled with numba, for live steps.

A live step multiplies each weight matrix by one or two frames. The matrices (30 MB a
network at 24 kHz) do not stay in cache between steps, so a step is bound by reading them
from memory. CPU BLAS reads a matrix once for one column, but for 2-8 columns it packs the
matrix first and takes 1.5-2.5x as long; these loops read each weight once for up to
FEW columns. Sums are reassociated (vectorized), so the last bits differ from BLAS's, as
BLAS's differ between machines: the codec's floats decide codes, not how they are coded.

Only live steps use it (`products.rows`, under `streaming.live_steps`); without numba
they keep BLAS's products.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from ..jit import lean_loads, nb

FEW = 3  # columns up to which these loops beat BLAS (measured: at 12 BLAS wins)


def _jit(f: tp.Callable) -> tp.Any:
    return lean_loads(nb.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})(f))


@_jit
def affine(w, x, b, out):
    """out[t, i] = b[i] + sum_k x[t, k] w[i, k], for w [m, n], x [t, n], t <= FEW."""
    m, n = w.shape
    t = x.shape[0]
    for i in range(m):
        a0 = np.float32(0)
        a1 = np.float32(0)
        a2 = np.float32(0)
        if t == 1:
            for k in range(n):
                a0 += w[i, k] * x[0, k]
        elif t == 2:
            for k in range(n):
                wk = w[i, k]
                a0 += wk * x[0, k]
                a1 += wk * x[1, k]
        else:
            for k in range(n):
                wk = w[i, k]
                a0 += wk * x[0, k]
                a1 += wk * x[1, k]
                a2 += wk * x[2, k]
        out[0, i] = a0 + b[i]
        if t > 1:
            out[1, i] = a1 + b[i]
        if t > 2:
            out[2, i] = a2 + b[i]


@_jit
def nearest(embed, embed_sq, x, codes):
    """Residual vector quantization of rows x [t, d] by codebooks embed [n_q, bins, d]
    (embed_sq [n_q, bins]: their squared norms): codes [t, n_q], each the first codeword
    of least (|r|^2 - 2 r.e) + |e|^2 for the residual r left by the codebooks before it."""
    t, d = x.shape
    n_q, bins = embed_sq.shape
    r = np.empty(d, np.float32)
    for row in range(t):
        r[:] = x[row]
        for q in range(n_q):
            rr = np.float32(0)
            for j in range(d):
                rr += r[j] * r[j]
            best, arg = np.float32(np.inf), 0
            for c in range(bins):
                dot = np.float32(0)
                for j in range(d):
                    dot += r[j] * embed[q, c, j]
                dist = (np.float32(-2) * dot + rr) + embed_sq[q, c]
                if dist < best:
                    best, arg = dist, c
            codes[row, q] = arg
            for j in range(d):
                r[j] -= embed[q, arg, j]


@_jit
def _sigmoid(v):
    return np.float32(1) / (np.float32(1) + np.exp(-v))


@_jit
def lstm(w_ih, w_hh, bias, x, h, c, out):
    """A stacked LSTM over frames x [t, d] of one stream, in torch's gate order (i, f, g, o):
    per layer w_ih, w_hh [4d, d] and bias [4d] (b_ih + b_hh), tuples over the layers; the
    state h, c [layers, d] is updated in place; out [t, d] gets the last layer's outputs."""
    t, d = x.shape
    out[:] = x
    gx = np.empty((t, 4 * d), np.float32)
    g = np.empty((1, 4 * d), np.float32)
    for layer in range(len(w_ih)):
        for s in range(0, t, FEW):
            e = min(t, s + FEW)
            affine(w_ih[layer], out[s:e], bias[layer], gx[s:e])
        for j in range(t):
            affine(w_hh[layer], h[layer:layer + 1], gx[j], g)
            for i in range(d):
                c[layer, i] = _sigmoid(g[0, d + i]) * c[layer, i] + _sigmoid(g[0, i]) * np.tanh(g[0, 2 * d + i])
                h[layer, i] = _sigmoid(g[0, 3 * d + i]) * np.tanh(c[layer, i])
            out[j] = h[layer]
