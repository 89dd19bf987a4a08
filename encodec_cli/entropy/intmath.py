"""The exact arithmetic of coder 3's language model (formats/ecdc-v1.md): its numbers and tables.

Every number that reaches the range coder is an exact function of the checkpoint and the
past codes, the same on every CPU, instruction set, BLAS, thread count and torch version:

- activations are integers in Q10 (value * 2**10) held in int64;
- weights are int8 with a power-of-two scale per output row; a product's input is shifted
  to at most 512 (128 for the 800-wide input), so its sums are integers below 2**24: exact
  in int32 and in float32 alike, in any order;
- attention sums integers below 2**24 in float32 and 2**45 in float64, exact in any order;
- LayerNorm uses an integer square root; exp, GELU and the sinusoids come from tables of
  exactly rounded values: the sinusoids computed with Python's `decimal`, exp and GELU
  from float64 estimates, each recomputed in `decimal` where it lies near enough to a
  rounding tie that its error (a few ulp, whatever the libm) could decide the rounding.

Every layer works row by row, so a batch of rows gives each row what it alone would.
intlm.py builds the network from these, lmloops.py runs it.
"""
from __future__ import annotations

import functools
import math
import typing as tp
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np

from ..codec.lm import CARD, DIM, HEADS

Q = 10                     # activations are Q10 integers
HEAD_DIM = DIM // HEADS
PROB_TOTAL = 1 << 24       # the range coder's total; every symbol gets at least 1
FREQ_TOTAL = PROB_TOTAL - CARD  # what the model distributes before the +1 per symbol
EXP_BITS = 30              # EXP[t] = round(2**30 * exp(-t / 1024))
EXP_SIZE = 22 * 1024       # EXP is 0 from t = 22004 on; indices are clamped to the last
GELU_STEP = 5              # GELU table every 2**-5, linear interpolation between
GELU_EDGE = 6 << Q         # beyond +-6: gelu(x) = x, or 0
POS_BITS = 32              # positions 0 .. 2**32 - 1 (at 75 frames/s: 1.8 years)
POS_BLOCK = 1024           # position embeddings computed this many steps at a time
ACT_LIMIT = 1 << 20        # q, k, v saturate at +-2**20 (1024.0)
QKV_BITS = (9, 10, 10)     # then per head, mantissa bits of queries, keys and values
ATT_BITS = 13              # attention weights in Q13
LN_INPUT_BITS = 17         # LayerNorm input is shifted down to below 2**17
LN_EPS = 80 << 20          # eps 1e-5 in the integer LayerNorm's units: 1e-5 * 200**3 * 2**20
SQRT_DIM = 14.142135623730951  # float64 nearest sqrt(200)
# float64 estimates of the tables err by a few ulp (below 1e-6 at 2**30); within this of a
# tie, an entry is computed in decimal instead
TIE_MARGIN = 1e-3
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863")



# ---------------------------------------------------------------- tables (exact)

def _round_dec(x: Decimal) -> int:
    return int(x.to_integral_value(ROUND_HALF_EVEN))


def _rne_checked(estimate: np.ndarray, exact: tp.Callable[[int], Decimal], margin: float = TIE_MARGIN
                 ) -> np.ndarray:
    """RNE of each float64 estimate, or of exact(i) (at 60 digits) for the entries within
    `margin` of a half-integer, where the estimate's error could decide the rounding."""
    out = np.rint(estimate).astype(np.int64)
    with localcontext() as ctx:
        ctx.prec = 60
        for i in np.flatnonzero(np.abs(estimate - np.floor(estimate) - 0.5) <= margin):
            out[i] = _round_dec(exact(int(i)))
    return out


@functools.lru_cache(maxsize=None)
def exp_table() -> np.ndarray:
    """EXP[t] = RNE(2**30 * e**(-t/1024)), t = 0 .. EXP_SIZE-1 (int64)."""
    t = np.arange(EXP_SIZE)
    return _rne_checked(np.ldexp(np.exp(t / -1024), EXP_BITS),
                        lambda i: (Decimal(-i) / 1024).exp() * (1 << EXP_BITS))


def _phi_cdf(x: Decimal) -> Decimal:
    """The standard normal CDF, by its everywhere-convergent series of positive terms."""
    if x < 0:
        return 1 - _phi_cdf(-x)
    term = total = x
    n = 0
    while term > Decimal(10) ** -55:
        n += 1
        term = term * x * x / (2 * n + 1)
        total += term
    density = (-x * x / 2).exp() / (2 * _PI).sqrt()
    return Decimal(1) / 2 + density * total


@functools.lru_cache(maxsize=None)
def gelu_table() -> np.ndarray:
    """G[k] = RNE(2**20 * gelu(x)), x = -6 + k/32, k = 0..384, and G[385] = G[384] (int64)."""
    x = np.arange(-(GELU_EDGE >> GELU_STEP), (GELU_EDGE >> GELU_STEP) + 1) / (1 << GELU_STEP)
    phi = np.array([math.erfc(-v / math.sqrt(2)) / 2 for v in x])  # erfc: no cancellation below 0
    table = _rne_checked(np.ldexp(x * phi, 20), lambda k: Decimal(x[k]) * _phi_cdf(Decimal(x[k])) * (1 << 20))
    return np.append(table, table[-1])


def _cos_sin(a: Decimal) -> tp.Tuple[Decimal, Decimal]:
    """Taylor series, |a| <= 1."""
    c = s = Decimal(0)
    term, n = Decimal(1), 0
    while abs(term) > Decimal(10) ** -58:
        if n % 4 == 0:
            c += term
        elif n % 4 == 1:
            s += term
        elif n % 4 == 2:
            c -= term
        else:
            s -= term
        n += 1
        term = term * a / n
    return c, s


@functools.lru_cache(maxsize=None)
def rotation_table() -> np.ndarray:
    """R[j, i] = RNE(2**30 * (cos, sin)(2**j * w_i)), w_i = 10000**(-i/99); [32, 100, 2] int64.

    cos and sin of w_i (|w_i| <= 1) by their series, the multiples by the double-angle
    formulas, all at 60 digits.
    """
    half = DIM // 2
    out = np.zeros((POS_BITS, half, 2), np.int64)
    with localcontext() as ctx:
        ctx.prec = 60
        ln = Decimal(10000).ln()
        for i in range(half):
            c, s = _cos_sin((-ln * i / (half - 1)).exp())
            for j in range(POS_BITS):
                out[j, i] = _round_dec(c * (1 << 30)), _round_dec(s * (1 << 30))
                c, s = 2 * c * c - 1, 2 * s * c
    return out


def position_array(p: np.ndarray) -> np.ndarray:
    """p as int64, refused unless every position is in 0 .. 2**32 - 1."""
    p = np.asarray(p, np.int64)
    if len(p) and (p.min() < 0 or p.max() >= 1 << POS_BITS):
        raise ValueError("position out of range")
    return p


def positions(p: np.ndarray) -> np.ndarray:
    """Q10 sinusoidal embeddings [len(p), 200] of the positions p (int64).

    Position p rotates (2**30, 0) by R[j] for each set bit j of p, lowest first, rounding
    each product to Q30; then cos and sin are rounded to Q10.
    """
    rot = rotation_table()
    p = position_array(p)[:, None]
    c = np.full((len(p), DIM // 2), 1 << 30, np.int64)
    s = np.zeros((len(p), DIM // 2), np.int64)
    half = np.int64(1 << 29)
    for j in range(int(p.max()).bit_length() if len(p) else 0):
        rows = np.flatnonzero((p[:, 0] >> j) & 1)  # the positions with bit j set
        if len(rows):
            rc, rs, cj, sj = rot[j, :, 0], rot[j, :, 1], c[rows], s[rows]
            c[rows], s[rows] = (cj * rc - sj * rs + half) >> 30, (sj * rc + cj * rs + half) >> 30
    return (np.concatenate([c, s], axis=1) + (1 << 19)) >> 20


# ---------------------------------------------------------------- weights as integers

def _rne(x: np.ndarray) -> np.ndarray:
    return np.rint(x).astype(np.int64)  # round half to even


def quantize(weight: np.ndarray) -> tp.Tuple[np.ndarray, np.ndarray]:
    """A linear layer's weights [out, in] (float64) as int8 q and a power of two per output
    row: m = max|w_r| = f * 2**E with f in [0.5, 1), s_r = E - 7 (0 if m = 0),
    q = clamp(RNE(w * 2**-s_r), -127, 127), so w ~ q * 2**s_r; rows below 2**-93 are 0."""
    m = np.max(np.abs(weight), axis=1)
    shift = np.where(m > 0, np.frexp(m)[1] - 7, 0).astype(np.int64)
    q = np.multiply(weight, np.ldexp(1.0, -shift)[:, None])  # exact: a power of two
    np.rint(q, out=q)
    np.clip(q, -127, 127, out=q)
    q[shift < -100] = 0  # rows below 2**-93 give round(x * 2**-100) = 0 anyway
    return q.astype(np.int8), shift


def bias_q10(bias: np.ndarray) -> np.ndarray:
    """A bias in Q10 (int64)."""
    return _rne(bias * (1 << Q))


def norm_params(weight: np.ndarray, bias: np.ndarray) -> tp.Tuple[np.ndarray, np.ndarray]:
    """LayerNorm's gamma * (x - mean) / sqrt(var + 1e-5) + beta over 200 values, in integers:
    with c = 200 x - sum(x) and r = isqrt(sum(c^2) + 80 * 2**20), the output is
    floor((2 c G + r) / 2r) + B, G = RNE(gamma * sqrt(200) * 2**10), B = RNE(beta * 2**10);
    rows reaching 2**17 are first shifted right (floor) until below. Returns 2G and B."""
    gamma = np.clip(_rne(weight * SQRT_DIM * (1 << Q)), -(1 << 24), 1 << 24)
    return 2 * gamma, bias_q10(bias)


@functools.lru_cache(maxsize=None)
def gelu_tables() -> tp.Tuple[np.ndarray, np.ndarray]:
    """GELU in Q10 is the 2**-5-step table G interpolated linearly (x above 6.0, 0 below
    -6.0); as one product and sum: G[i] * 32 + 2**19 and G[i + 1] - G[i]."""
    table = gelu_table()
    return table[:-1] * (1 << GELU_STEP) + (1 << (20 + GELU_STEP - Q - 1)), np.diff(table)
