"""EnCodec's language model in exact arithmetic: the model of coder 3 (formats/ecdc-v1.md).

The network is the float LM of lm.py (same checkpoint keys), quantized at load (intmath.py)
and run by lmloops.py's compiled loops around int8 matrix products. It has two operations,
one implementation each:

- `IntLM.known`: the encoder's one causal pass over codes known in advance. Each layer
  covers a block of frames (of all of a 48 kHz packet's segments) in one product, and
  attention is masked to each frame's window;
- `IntLM.start` and `State.step`: the decoder's step, one frame for a batch of streams (a
  file's packets together, or one live stream).

They give the same frequencies, bit for bit, because every layer works row by row and every
sum is an exact integer (tests/test_lm.py::test_one_pass_equals_stepping).
"""
from __future__ import annotations

import functools
import typing as tp

import numpy as np
import torch

from ..codec.lm import CARD, DIM, HEADS, LanguageModel
from . import lmloops as loops
from .intmath import (
    POS_BITS,
    POS_BLOCK,
    Q,
    bias_q10,
    exp_table,
    gelu_tables,
    norm_params,
    position_array,
    quantize,
    rotation_table,
)

HEAD_DIM = DIM // HEADS
PASS_BLOCK = 75  # frames per block of the one-pass model: scores of [8, 75, 75 + 263]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def _exact(t: torch.Tensor) -> np.ndarray:
    """t as float32 if it is float32 (scaling it by a power of two and rounding stay exact
    there: below 2**24 it holds the integers), else as float64."""
    return t.detach().numpy() if t.dtype == torch.float32 else _np(t)


def _mm(a: np.ndarray, b: torch.Tensor) -> np.ndarray:
    """float32 matrix product of integer-valued operands whose sums stay below 2**24
    (exact in any order), through torch (it obeys --threads)."""
    return torch.matmul(torch.from_numpy(a), b).numpy()


@functools.lru_cache(maxsize=None)
def int8_products() -> bool:
    """Whether torch's int8 matrix product (int32 sums) gives exact sums here for every
    input coder 3 gives it: halves of at most 32 in magnitude, weights of at most 127.

    Integer hardware sums such products exactly, but a kernel for CPUs without integer
    dot products may add pairs in saturating int16 (x86 vpmaddubsw: oneDNN on AVX2 or
    AVX-512 without VNNI, measured) or halve the weights; so the extremes are tried once a
    process. Where they come out wrong, or torch has no such product, Product uses float32
    products of the same int8 values, exact by construction (every sum is below 2**24)."""
    mm = getattr(torch, "_int_mm", None)
    if mm is None:
        return False
    rng = np.random.default_rng(0)
    for k in (200, 800):
        sign = np.where(np.arange(k) % 2, -1, 1)
        rows = np.stack([np.full(k, 32), np.full(k, -32), 32 * sign, np.full(k, 7), np.full(k, -8),
                         rng.integers(-32, 33, k), rng.integers(-8, 8, k)])
        cols = np.stack([np.full(k, 127), np.full(k, -127), 127 * sign, 127 * rng.choice([-1, 1], k),
                         rng.integers(-127, 128, k)], axis=1)
        for m in (2, 48):  # oneDNN builds a kernel for each shape: 10 ms each
            a = np.resize(rows, (m, k)).astype(np.int8)
            w = np.resize(cols.T, (256, k)).astype(np.int8)  # [out, in], as Product holds them
            try:
                got = mm(torch.from_numpy(a), torch.from_numpy(w).t()).numpy()
            except RuntimeError:
                return False
            if not np.array_equal(got, a.astype(np.int64) @ w.T.astype(np.int64)):
                return False
    return True


class Product:
    """A linear layer in integers: int8 weights q [out, in] (a torch tensor, for its int8
    product), each output's 2**s (float64) and bias (Q10, int64), and the bits its input
    is rounded to (intmath.quantize, lmloops._to_input)."""

    def __init__(self, q: torch.Tensor, powers: np.ndarray, bias: np.ndarray, in_bits: int):
        self.q, self.powers, self.bias, self.in_bits = q, powers, bias, in_bits
        self._float: tp.Optional[torch.Tensor] = None

    @classmethod
    def of(cls, weight: np.ndarray, bias: np.ndarray, in_bits: int) -> "Product":
        """The layer of float weights [out, in] and bias [out]."""
        q, shift = quantize(weight)
        return cls(torch.from_numpy(q), np.ldexp(1.0, shift), bias_q10(bias), in_bits)

    @staticmethod
    def concat(parts: tp.Sequence["Product"]) -> "Product":
        """One layer with the outputs of `parts` in turn."""
        return Product(torch.cat([p.q for p in parts]), np.concatenate([p.powers for p in parts]),
                       np.concatenate([p.bias for p in parts]), parts[0].in_bits)

    def first(self, rows: int) -> "Product":
        """The same layer restricted to its first `rows` outputs."""
        return Product(self.q[:rows], self.powers[:rows], self.bias[:rows], self.in_bits)

    def __call__(self, halves: np.ndarray) -> np.ndarray:
        """The int32 sums [2R, out] of an input's int8 halves [2R, in] times the weights."""
        if len(halves) == 2:  # one stream's step: lmloops.rows_product
            out = np.empty((2, len(self.q)), np.int32)
            loops.rows_product(halves, self.q.numpy(), out)
            return out
        a = torch.from_numpy(halves)
        if int8_products():
            try:
                return torch._int_mm(a, self.q.t()).numpy()
            except RuntimeError:  # a shape this build's int8 kernel refuses: float32 products
                pass
        if self._float is None:
            self._float = self.q.to(torch.float32)
        return torch.matmul(a.to(torch.float32), self._float.t()).to(torch.int32).numpy()


class Layer(tp.NamedTuple):
    qkv: Product
    out: Product
    norm1: tp.Tuple[np.ndarray, np.ndarray]  # 2 gamma, beta (intmath.norm_params)
    lin1: Product
    lin2: Product
    norm2: tp.Tuple[np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=None)
def _exp32() -> np.ndarray:
    """intmath.exp_table as int32 (its entries are at most 2**30): half the cache lines per lookup."""
    return exp_table().astype(np.int32)


def positions(p: np.ndarray) -> np.ndarray:
    """intmath.positions, compiled: the same integers, 5x as fast for a block."""
    p = position_array(p)
    out = np.zeros((len(p), DIM), np.int64)
    loops.positions(p, rotation_table(), out)
    return out


class IntLM:
    """The integer LM of a folded float `LanguageModel` (its first `used` codebooks)."""

    def __init__(self, lm: LanguageModel):
        self.past_context, self.used = lm.past_context, lm.used
        self.norm_in = norm_params(*map(_np, lm.norm_in))
        # per codebook, so that no float64 copy of all of them exists at once
        self.emb = np.stack([np.clip(np.rint(_exact(e) * (1 << Q)), -(1 << 24), 1 << 24).astype(np.int32)
                             for e in lm.emb_table])                                    # [used, 1025, D]
        self.layers = []
        for (w_qkv, b_qkv, w_out, b_out, w_n1, b_n1, w_1, b_1, w_2, b_2, w_n2, b_n2) in lm.layers:
            w_qkv, b_qkv = _np(w_qkv), _np(b_qkv)
            w_qkv[:DIM] /= 5  # the queries carry the attention scale 1/sqrt(25)
            b_qkv[:DIM] /= 5
            self.layers.append(Layer(
                Product.of(w_qkv, b_qkv, 9), Product.of(_np(w_out), _np(b_out), 9), norm_params(_np(w_n1), _np(b_n1)),
                Product.of(_np(w_1), _np(b_1), 9), Product.of(_np(w_2), _np(b_2), 7),
                norm_params(_np(w_n2), _np(b_n2))))
        self.heads = Product.concat([Product.of(_np(w.t()), _np(b[0]), 9) for w, b in zip(lm.head_w, lm.head_b)])
        self._heads: tp.Dict[int, Product] = {}

    def heads_for(self, n_q: int) -> Product:
        """The heads of the first `n_q` codebooks (made once: the float32 fallback's copy is kept)."""
        self._check(n_q)
        if n_q not in self._heads:
            self._heads[n_q] = self.heads.first(n_q * CARD)
        return self._heads[n_q]

    def _check(self, n_q: int) -> None:
        if n_q > self.used:
            raise ValueError(f"this LM serves {self.used} codebooks, not {n_q}")

    def start(self, n_q: int, batch: int, frames: int, first: tp.Optional[np.ndarray] = None) -> "State":
        """`batch` fresh streams of at most `frames` frames, stream i at positions first[i]..."""
        return State(self, n_q, batch, frames, first)

    def known(self, codes: np.ndarray, first: int = 0, block: int = PASS_BLOCK) -> tp.Iterator[np.ndarray]:
        """The frequencies that stepping would give a stream fed `codes` [frames, n_q] from
        position `first`: [rows, n_q, 1024] (float32, exact) for up to `block` frames at a
        time, in order.

        codes may also be [S, frames, n_q]: S streams of the same length, all from position
        `first` (a 48 kHz packet's segments), run together, each as alone; blocks are then
        [S, rows, n_q, 1024]. Their products have S times the rows, for fewer, larger calls."""
        streams = codes[None] if codes.ndim == 2 else codes
        S, frames, n_q = streams.shape
        heads, table, (base, slope) = self.heads_for(n_q), _exp32(), gelu_tables()
        # key and value mantissas [S, H, 25, rows], the keys' 2**ek and the values' exponents
        # [S, H, rows] (int8: at most 11)
        L = len(self.layers)
        keys = np.zeros((L, S, HEADS, HEAD_DIM, frames + 1), np.float32)
        values = np.zeros((L, S, HEADS, HEAD_DIM, frames + 1), np.float32)
        scales = np.zeros((L, S, HEADS, frames + 1), np.float32)
        exps = np.zeros((L, S, HEADS, frames + 1), np.int8)
        for i, layer in enumerate(self.layers):  # row 0: the reference's all-zero input
            loops.split(np.zeros((2 * S, 3 * DIM), np.int32), np.ones(S), layer.qkv.powers, layer.qkv.bias, S, 0,
                        np.empty((S, HEADS, 1, HEAD_DIM), np.float32), keys[i], scales[i], values[i], exps[i])
        tokens = np.concatenate([np.full((S, 1, n_q), -1), streams.astype(np.int64)[:, :-1]], axis=1) + 1
        for s in range(0, frames, block):
            e = min(frames, s + block)
            R, G = e - s, S * HEADS
            x = np.add.reduce(self.emb[np.arange(n_q)[None, None], tokens[:, s:e]], axis=2,
                              dtype=np.int64).reshape(S * R, DIM)
            xin, pe = np.empty((2 * S * R, DIM), np.int8), np.empty(S * R)
            pos = positions(first + np.arange(s, e))
            loops.norm_add(x, *self.norm_in, pos if S == 1 else np.tile(pos, (S, 1)), self.layers[0].qkv.in_bits,
                           xin, pe)
            lo = max(0, s + 1 - self.past_context)  # the oldest row any frame here sees
            rows = np.arange(s + 1, e + 1)            # frame t's input is row t + 1
            see_lo, see_hi = np.maximum(rows - self.past_context, lo) - lo, rows + 1 - lo
            for i, layer in enumerate(self.layers):
                q = np.empty((S, HEADS, R, HEAD_DIM), np.float32)
                loops.split(layer.qkv(xin), pe, layer.qkv.powers, layer.qkv.bias, S, s + 1, q, keys[i], scales[i],
                            values[i], exps[i])
                k, v = keys[i, :, :, :, lo:e + 1], values[i, :, :, :, lo:e + 1]
                scores = _mm(q.reshape(G, R, HEAD_DIM), torch.from_numpy(k.reshape(G, HEAD_DIM, -1)))
                w, tops = np.empty(scores.shape, np.float32), np.empty((G, R), np.int64)
                loops.softmax(scores, scales[i, :, :, lo:e + 1].reshape(G, -1), see_lo, see_hi,
                              exps[i, :, :, lo:e + 1].reshape(G, -1), table, w, tops)
                acc = _mm(w, torch.from_numpy(v.reshape(G, HEAD_DIM, -1)).transpose(1, 2))
                loops.attention(acc.reshape(S, HEADS, R, HEAD_DIM), tops.reshape(S, HEADS, R), layer.out.in_bits,
                                xin, pe)
                self._feed_forward(i, layer, x, xin, pe, base, slope, heads)
            freqs = np.empty((S * R * n_q, CARD), np.float32)
            loops.frequencies(heads(xin), pe, heads.powers, heads.bias, table, freqs)
            yield freqs.reshape(R, n_q, CARD) if codes.ndim == 2 else freqs.reshape(S, R, n_q, CARD)

    def _feed_forward(self, i: int, layer: Layer, x: np.ndarray, xin: np.ndarray, pe: np.ndarray,
                      base: np.ndarray, slope: np.ndarray, heads: Product) -> None:
        """Layer i after its attention (the output product's input in xin and pe): x and
        the next product's input (the next layer's, or the heads') in xin and pe."""
        loops.add_norm(x, layer.out(xin), pe, layer.out.powers, layer.out.bias, *layer.norm1, layer.lin1.in_bits,
                       xin, pe)
        hidden, hs = np.empty((len(xin), len(layer.lin1.q)), np.int8), np.empty(len(pe))
        loops.gelu(layer.lin1(xin), pe, layer.lin1.powers, layer.lin1.bias, base, slope, layer.lin2.in_bits,
                   hidden, hs)
        after = self.layers[i + 1].qkv if i + 1 < len(self.layers) else heads
        loops.add_norm(x, layer.lin2(hidden), hs, layer.lin2.powers, layer.lin2.bias, *layer.norm2, after.in_bits,
                       xin, pe)


class Window:
    """Which rows of a key/value cache of `capacity` rows hold the last `context` inputs.

    Rows start .. start + count - 1 hold them, oldest first; row 0 starts with the
    reference's initial all-zero input. The window slides along the buffer and is copied
    back to its front only when it reaches the end (amortised: no copy per step).
    """

    def __init__(self, context: int, capacity: int):
        self.context, self.capacity = context, capacity
        self.start, self.count = 0, 1

    def slot(self, move: tp.Callable[[int, int], None]) -> int:
        """The row for the next input. At the buffer's end, `move(start, stop)` must first
        copy rows start .. stop - 1 to the front."""
        pos = self.start + self.count
        if pos == self.capacity:
            move(self.start, pos)
            self.start, pos = 0, self.count
        return pos

    def advance(self) -> None:
        """The input just stored joins the window; past `context` inputs, the oldest leaves."""
        self.count += 1
        if self.count > self.context:
            self.start += self.count - self.context
            self.count = self.context


class Positions:
    """Each of `batch` streams' position embedding at each step, stream i from position
    first[i], from a table of POS_BLOCK steps (memory stays flat however long the streams)."""

    def __init__(self, batch: int, frames: int, first: tp.Optional[np.ndarray]):
        self.batch, self.frames = batch, frames
        self.first = np.zeros(batch, np.int64) if first is None else np.asarray(first, np.int64)
        if len(self.first) and (self.first.min() < 0 or self.first.max() + frames > 1 << POS_BITS):
            raise ValueError("position out of range")
        self.table, self.block = np.zeros((batch, 0, DIM), np.int64), -1

    def at(self, offset: int) -> np.ndarray:
        """[batch, D] int64 at step `offset`."""
        block, i = divmod(offset, POS_BLOCK)
        if block != self.block:
            count = min(POS_BLOCK, self.frames - block * POS_BLOCK)
            steps = self.first[:, None] + block * POS_BLOCK + np.arange(count)
            self.table = positions(steps.reshape(-1)).reshape(self.batch, count, DIM)
            self.block = block
        return self.table[:, i]

    def keep(self, streams: np.ndarray) -> None:
        """Only the streams at these indices go on."""
        self.batch = len(streams)
        self.first, self.table = self.first[streams], self.table[streams]


class State:
    """`batch` independent streams of at most `frames` frames each, stepped together.

    Per layer: key and value mantissas as int16 [B, H, 25, rows] (half the memory traffic of
    float32), the keys' 2**ek and the values' exponents (int8) [B, H, rows], in a
    window that slides along its buffers."""

    SLACK = 32  # spare cache rows: the window moves back to the front once per SLACK steps

    def __init__(self, lm: IntLM, n_q: int, batch: int, frames: int, first: tp.Optional[np.ndarray] = None):
        self.lm, self.n_q, self.batch = lm, n_q, batch
        self._heads = lm.heads_for(n_q)  # refuses more codebooks than the LM serves
        capacity = min(lm.past_context, frames) + 1 + self.SLACK
        self.offset = 0
        self.positions = Positions(batch, frames, first)
        self.prev = np.zeros((batch, n_q), np.int64)
        self._codebooks = np.arange(n_q)[None]
        self.window = Window(lm.past_context, capacity)
        layers = len(lm.layers)
        self.keys: np.ndarray = np.zeros((layers, batch, HEADS, HEAD_DIM, capacity), np.int16)
        self.values: np.ndarray = np.zeros((layers, batch, HEADS, HEAD_DIM, capacity), np.int16)
        self.scales: np.ndarray = np.zeros((layers, batch, HEADS, capacity), np.float32)
        self.exps: np.ndarray = np.zeros((layers, batch, HEADS, capacity), np.int8)
        self._queries = np.empty((batch, HEADS, 1, HEAD_DIM), np.float32)
        for i, layer in enumerate(lm.layers):  # row 0: the reference's all-zero input
            loops.split(np.zeros((2 * batch, 3 * DIM), np.int32), np.ones(batch), layer.qkv.powers,
                        layer.qkv.bias, batch, 0, self._queries, *self._layer(i))
        self._tables = _exp32(), gelu_tables()

    def _layer(self, i: int) -> tp.Tuple[np.ndarray, ...]:
        return self.keys[i], self.scales[i], self.values[i], self.exps[i]

    def step(self) -> np.ndarray:
        """Integer frequencies [batch, n_q, 1024] of the next frame, as float32 (rows sum to 2**24 - 1024)."""
        lm, B = self.lm, self.batch
        table, (base, slope) = self._tables
        x = np.add.reduce(lm.emb[self._codebooks, self.prev], axis=1, dtype=np.int64)
        xin, pe = np.empty((2 * B, DIM), np.int8), np.empty(B)
        loops.norm_add(x, *lm.norm_in, self.positions.at(self.offset), lm.layers[0].qkv.in_bits, xin, pe)
        pos = self.window.slot(self._move)
        q = self._queries
        for i, layer in enumerate(lm.layers):
            cache = self._layer(i)
            loops.split(layer.qkv(xin), pe, layer.qkv.powers, layer.qkv.bias, B, pos, q, *cache)
            loops.attend(q[:, :, 0], *cache, self.window.start, pos + 1, table, layer.out.in_bits, xin, pe)
            lm._feed_forward(i, layer, x, xin, pe, base, slope, self._heads)
        self.window.advance()
        self.offset += 1
        freqs = np.empty((B * self.n_q, CARD), np.float32)
        loops.frequencies(self._heads(xin), pe, self._heads.powers, self._heads.bias, table, freqs)
        return freqs.reshape(B, self.n_q, CARD)

    def push(self, codes: np.ndarray) -> None:
        """Feed the codes [batch, n_q] of the frame just coded."""
        self.prev = codes.astype(np.int64).reshape(self.batch, self.n_q) + 1

    def keep(self, streams: np.ndarray) -> None:
        """Only the streams at these indices (ascending) go on: the others' caches are
        dropped, so that finished streams cost no more steps."""
        self.batch = len(streams)
        self.positions.keep(streams)
        self.prev = self.prev[streams]
        # np.take gives C-contiguous arrays (a[:, i] does not), as the compiled loops take
        # them; one at a time, so that only one old array is held beside its copy
        self.keys = np.take(self.keys, streams, axis=1)
        self.values = np.take(self.values, streams, axis=1)
        self.scales = np.take(self.scales, streams, axis=1)
        self.exps = np.take(self.exps, streams, axis=1)
        self._queries = np.empty((self.batch, HEADS, 1, HEAD_DIM), np.float32)

    def _move(self, start: int, stop: int) -> None:
        n = stop - start
        for buf in (self.keys, self.values, self.scales, self.exps):
            buf[..., :n] = buf[..., start:stop].copy()
