"""EnCodec's language model in exact arithmetic: the model of coder 3 (formats/ecdc-v1.md).

The network is the float LM of lm.py (same checkpoint keys), quantized at load; intmath.py
has its arithmetic. It runs two ways that give the same frequencies, bit for bit:

- stepped (`IntLM.start`): one frame at a time for a batch of streams, as a decoder must;
- in one causal pass over codes known in advance (`IntLM.known`), as an encoder can: each
  layer covers a block of frames in one matrix product, and attention is masked to each
  frame's window.

They agree because every layer works row by row and every sum is an integer that float32
(or float64) holds exactly in any order (tests/test_lm.py::test_one_pass_equals_stepping).
"""
from __future__ import annotations

import functools
import typing as tp

import numpy as np
import torch

from ..codec.lm import CARD, DIM, HEADS, LanguageModel
from .intmath import (
    ACT_LIMIT,
    ATT_BITS,
    FREQ_ROWS,
    POS_BITS,
    POS_BLOCK,
    QKV_BITS,
    LayerNorm,
    Linear,
    Q,
    _max,
    _sum,
    excess,
    frequencies,
    gelu,
    positions,
    rescaled,
    rshift_round,
    softmax_weights,
)

HEAD_DIM = DIM // HEADS
PASS_BLOCK = 75  # frames per block of the one-pass model: scores of [8, 75, 75 + 263]
_QKV_BITS = np.array(QKV_BITS)
_MASKED = -(1 << 62)  # the score of a key outside a query's window: its weight is exactly 0


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def _exact(t: torch.Tensor) -> np.ndarray:
    """t as float32 if it is float32 (scaling it by a power of two and rounding stay exact
    there: below 2**24 it holds the integers), else as float64."""
    return t.detach().numpy() if t.dtype == torch.float32 else _np(t)


class IntLM:
    """The integer LM of a folded float `LanguageModel` (its first `used` codebooks)."""

    def __init__(self, lm: LanguageModel):
        self.past_context, self.used = lm.past_context, lm.used
        self.norm_in = LayerNorm(*map(_np, lm.norm_in))
        # per codebook, so that no float64 copy of all of them exists at once
        self.emb = np.stack([np.clip(np.rint(_exact(e) * (1 << Q)), -(1 << 24), 1 << 24).astype(np.int32)
                             for e in lm.emb_table])                                    # [used, 1025, D]
        self.layers = []
        for (w_qkv, b_qkv, w_out, b_out, w_n1, b_n1, w_1, b_1, w_2, b_2, w_n2, b_n2) in lm.layers:
            w_qkv, b_qkv = _np(w_qkv), _np(b_qkv)
            w_qkv[:DIM] /= 5  # the queries carry the attention scale 1/sqrt(25)
            b_qkv[:DIM] /= 5
            self.layers.append((
                Linear(w_qkv, b_qkv, 9),
                Linear(_np(w_out), _np(b_out), 9), LayerNorm(_np(w_n1), _np(b_n1)),
                Linear(_np(w_1), _np(b_1), 9), Linear(_np(w_2), _np(b_2), 7),
                LayerNorm(_np(w_n2), _np(b_n2))))
        self.heads = Linear.concat([Linear(_np(w.t()), _np(b[0]), 9) for w, b in zip(lm.head_w, lm.head_b)])
        self._kernel_weights: tp.Dict[int, tp.Any] = {}

    def _check(self, n_q: int) -> None:
        if n_q > self.used:
            raise ValueError(f"this LM serves {self.used} codebooks, not {n_q}")

    def start(self, n_q: int, batch: int, frames: int, first: tp.Optional[np.ndarray] = None,
              compiled: bool = False) -> tp.Union["IntLMState", "CompiledState"]:
        """`batch` fresh streams of at most `frames` frames, stream i at positions first[i]...

        `compiled`: stepped by lmkernel.py's compiled function where numba can run (numpy
        otherwise), with the same integers. It is 4x as fast for one stream (a live
        stream), but numba costs a process about 0.5 s and 100 MB of start-up. (For a
        decoder's batches, lmfused.FusedState is faster.)"""
        self._check(n_q)
        return (CompiledState if compiled and have_numba() else IntLMState)(self, n_q, batch, frames, first)

    def kernel_weights(self, n_q: int):
        """The compiled kernel's arrays for the first `n_q` codebooks (built once)."""
        from . import lmkernel

        if n_q not in self._kernel_weights:
            self._kernel_weights[n_q] = lmkernel.weights(self, n_q)
        return self._kernel_weights[n_q]

    def known(self, codes: np.ndarray, first: int = 0, block: int = PASS_BLOCK) -> tp.Iterator[np.ndarray]:
        """The frequencies that stepping would give a stream fed `codes` [frames, n_q] from
        position `first`: [rows, n_q, 1024] for up to `block` frames at a time, in order.
        (lmfused.known gives the same, 2.5x as fast after numba's start-up.)"""
        frames, n_q = codes.shape
        self._check(n_q)
        heads = self.heads.first(n_q * CARD)
        cache = [_KV(layer[0], 1, frames + 1) for layer in self.layers]
        tokens = np.concatenate([np.full((1, n_q), -1), codes.astype(np.int64)[:-1]]) + 1
        for s in range(0, frames, block):
            e = min(frames, s + block)
            x = _sum(self.emb[np.arange(n_q)[None], tokens[s:e]], axis=1, dtype=np.int64)
            x = self.norm_in(x) + positions(first + np.arange(s, e))
            lo = max(0, s + 1 - self.past_context)      # the oldest row any frame here sees
            rows, cols = np.arange(s + 1, e + 1)[:, None], np.arange(lo, e + 1)[None]
            sees = (cols <= rows) & (cols >= rows - self.past_context)  # frame t's input is row t + 1
            for (qkv, out, norm1, lin1, lin2, norm2), kv in zip(self.layers, cache):
                (q, k, v), (eq, ek, ev) = _split(qkv, x)
                kv.put(slice(s + 1, e + 1), k, ek, v, ev)
                x = norm1(x + out(kv.attend(q[None], eq[None], slice(lo, e + 1), sees)[0]))
                x = norm2(x + lin2(gelu(lin1(x))))
            y, out = heads.products(x), np.empty((e - s, n_q, CARD), np.int64)
            step = max(1, FREQ_ROWS // n_q)  # frames at a time: rounded and turned into frequencies in cache
            for lo in range(0, e - s, step):
                out[lo:lo + step] = frequencies(heads.round(y[lo:lo + step]).reshape(-1, n_q, CARD))
            yield out


def _split(proj: Linear, x: np.ndarray) -> tp.Tuple[tp.Tuple[np.ndarray, ...], tp.Tuple[np.ndarray, ...]]:
    """Project rows x [R, D]: queries, keys and values as per-head mantissas [H, R, 25] of
    at most 2**9, 2**10, 2**10, and their exponents [H, R]."""
    parts = proj(x)
    np.maximum(parts, -ACT_LIMIT, out=parts)
    np.minimum(parts, ACT_LIMIT, out=parts)
    parts = parts.reshape(len(x), 3, HEADS, HEAD_DIM)
    e = excess(_max(np.abs(parts), axis=3) << (10 - _QKV_BITS)[:, None], 10)   # [R, 3, H]
    mant = rshift_round(parts, e[..., None]).transpose(1, 2, 0, 3)              # [3, H, R, 25]
    return tuple(mant), tuple(e.transpose(1, 2, 0))


def _small_mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked matrix products, exact on integer-valued float32 (intmath's rules). One row
    per matrix (a decoder's step) goes through numpy's loop, about twice as fast there as
    torch's; larger ones go through torch, which obeys --threads."""
    if a.shape[-2] == 1:
        return np.matmul(a, b)
    return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()


class _KV:
    """Keys and values of one layer (input projection `proj`) for `batch` streams: keys
    times their power of two, transposed [B, H, 25, rows], and values as mantissas
    [B, H, rows, 25] (float32, exact) with their exponents [B, H, rows] and those powers
    of two (float32). Row 0 holds the reference's initial past, one all-zero input."""

    def __init__(self, proj: Linear, batch: int, rows: int):
        self.k = np.zeros((batch, HEADS, HEAD_DIM, rows), np.float32)
        self.v = np.zeros((batch, HEADS, rows, HEAD_DIM), np.float32)
        self.ev = np.zeros((batch, HEADS, rows), np.int64)
        self.pv = np.ones((batch, HEADS, rows), np.float32)
        (_, k, v), (_, ek, ev) = _split(proj, np.zeros((1, DIM), np.int64))
        self.put(slice(0, 1), k, ek, v, ev)  # the same for every stream

    def put(self, rows: slice, k: np.ndarray, ek: np.ndarray, v: np.ndarray, ev: np.ndarray) -> None:
        """Store keys and values ([B, H, R, 25] mantissas, [B, H, R] exponents) at `rows`."""
        self.k[..., rows] = np.ldexp(k.astype(np.float32), ek[..., None].astype(np.int32)).swapaxes(-1, -2)
        self.v[:, :, rows] = v
        self.ev[:, :, rows] = ev
        self.pv[:, :, rows] = np.ldexp(np.float32(1), ev.astype(np.int32))

    def move(self, start: int, stop: int) -> None:
        """Copy rows start .. stop - 1 to the front."""
        self.k[..., :stop - start] = self.k[..., start:stop].copy()
        for buf in (self.v, self.ev, self.pv):
            buf[:, :, :stop - start] = buf[:, :, start:stop].copy()

    def attend(self, q: np.ndarray, eq: np.ndarray, rows: slice, sees: tp.Optional[np.ndarray] = None
               ) -> np.ndarray:
        """Attention output (Q10, [B, R, D]) of queries [B, H, R, 25] (exponents [B, H, R])
        over the keys at `rows`; `sees` [R, L]: whether each query sees each key (None: all)."""
        # scaled so that the product is dots * 2**(eq + ek - 10), exactly: then round to Q10
        qs = np.ldexp(q.astype(np.float32), (eq - Q)[..., None].astype(np.int32))
        half = 0.5 if sees is None else np.where(sees, 0.5, -np.inf)       # -inf: weight 0
        scores = np.add(_small_mm(qs, self.k[..., rows]), half, dtype=np.float64)
        np.floor(scores, out=scores)                                         # exact integers
        ev = self.ev[:, :, None, rows]
        top = _max(ev if sees is None else ev * sees, axis=-1, keepdims=True)
        w = softmax_weights(scores, axis=-1)                                 # Q13
        ws = rescaled(w, self.pv[:, :, None, rows], np.ldexp(np.float32(1), top.astype(np.int32)))
        acc = _small_mm(ws, self.v[:, :, rows]).astype(np.int64)            # exact: sums < 2**13 + L
        out = rshift_round(acc << top, ATT_BITS)                            # [B, H, R, 25]
        return out.transpose(0, 2, 1, 3).reshape(out.shape[0], out.shape[2], DIM)


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


def _per_stream(mant: np.ndarray, exps: np.ndarray) -> tp.Tuple[np.ndarray, np.ndarray]:
    """_split's [H, B, 25] and [H, B] of one row per stream as [B, H, 1, 25] and [B, H, 1]."""
    return mant.transpose(1, 0, 2)[:, :, None], exps.T[:, :, None]


class Positions:
    """Each of `batch` streams' position embedding at each step, stream i from position
    first[i], from a table of POS_BLOCK steps (memory stays flat however long the streams)
    that `embed` (intmath.positions, or lmfused's) computes."""

    def __init__(self, batch: int, frames: int, first: tp.Optional[np.ndarray],
                 embed: tp.Callable[[np.ndarray], np.ndarray]):
        self.batch, self.frames, self.embed = batch, frames, embed
        self.first = np.zeros(batch, np.int64) if first is None else np.asarray(first, np.int64)
        self.table, self.block = np.zeros((batch, 0, DIM), np.int32), -1

    def at(self, offset: int) -> np.ndarray:
        """[batch, D] int32 at step `offset`."""
        block, i = divmod(offset, POS_BLOCK)
        if block != self.block:
            count = min(POS_BLOCK, self.frames - block * POS_BLOCK)
            steps = self.first[:, None] + block * POS_BLOCK + np.arange(count)
            self.table = self.embed(steps.reshape(-1)).astype(np.int32).reshape(self.batch, count, DIM)
            self.block = block
        return self.table[:, i]


class IntLMState:
    """`batch` independent streams of at most `frames` frames each, stepped together."""

    SLACK = 32  # spare cache rows: the window moves back to the front once per SLACK steps
    embed = staticmethod(positions)  # position embeddings of an array of positions

    def __init__(self, lm: IntLM, n_q: int, batch: int, frames: int, first: tp.Optional[np.ndarray] = None):
        lm._check(n_q)
        self.lm, self.n_q, self.batch = lm, n_q, batch
        capacity = min(lm.past_context, frames) + 1 + self.SLACK
        self.offset = 0
        self.positions = Positions(batch, frames, first, self.embed)
        self.prev = np.zeros((batch, n_q), np.int64)
        self._codebooks = np.arange(n_q)[None]
        self._heads = lm.heads.first(n_q * CARD)
        self.window = Window(lm.past_context, capacity)
        self._start_cache(capacity)

    def _start_cache(self, capacity: int) -> None:
        self.cache = [_KV(layer[0], self.batch, capacity) for layer in self.lm.layers]

    def step(self) -> np.ndarray:
        """Integer frequencies [batch, n_q, 1024] of the next frame (rows sum to 2**24 - 1024)."""
        lm = self.lm
        x = _sum(lm.emb[self._codebooks, self.prev], axis=1, dtype=np.int64)
        x = lm.norm_in(x) + self.positions.at(self.offset)
        pos = self.window.slot(self._move)
        rows = slice(self.window.start, pos + 1)
        for (qkv, out, norm1, lin1, lin2, norm2), kv in zip(lm.layers, self.cache):
            (q, k, v), (eq, ek, ev) = _split(qkv, x)              # [H, B, 25], [H, B]
            kv.put(slice(pos, pos + 1), *_per_stream(k, ek), *_per_stream(v, ev))
            x = norm1(x + out(kv.attend(*_per_stream(q, eq), rows)[:, 0]))
            x = norm2(x + lin2(gelu(lin1(x))))
        self.window.advance()  # the cache keeps the last past_context inputs, this one included
        self.offset += 1
        return frequencies(self._heads.rounded(x).reshape(self.batch, self.n_q, CARD))

    def push(self, codes: np.ndarray) -> None:
        """Feed the codes [batch, n_q] of the frame just coded."""
        self.prev = codes.astype(np.int64).reshape(self.batch, self.n_q) + 1

    def _move(self, start: int, stop: int) -> None:
        for kv in self.cache:
            kv.move(start, stop)


@functools.lru_cache(maxsize=None)  # once a process: a failed import is not remembered
def have_numba() -> bool:
    """Whether the compiled kernel can run here (numba installed, and a cache it can write:
    numba refuses to define cached functions otherwise); numpy steps where it cannot."""
    try:
        from . import lmkernel  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


class CompiledState:
    """The streams of IntLMState, stepped by lmkernel.py's compiled function: keys and
    values in a ring of the window's rows (order does not change an exact sum), each
    step's position embeddings computed in the step (no table: no pause every POS_BLOCK)."""

    def __init__(self, lm: IntLM, n_q: int, batch: int, frames: int, first: tp.Optional[np.ndarray] = None):
        from . import lmkernel

        self._kernel, self.n_q, self.batch = lmkernel, n_q, batch
        self.weights = lm.kernel_weights(n_q)
        self.first = np.zeros(batch, np.int64) if first is None else np.asarray(first, np.int64)
        if len(self.first) and (self.first.min() < 0 or self.first.max() + frames > 1 << POS_BITS):
            raise ValueError("position out of range")
        self.rows = min(lm.past_context, frames) + 1
        self.kv = lmkernel.cache(len(lm.layers), batch, HEADS, self.rows, HEAD_DIM)
        for layer, (qkv, *_) in enumerate(lm.layers):  # row 0: the reference's all-zero input
            (_, k, v), (_, ek, ev) = _split(qkv, np.zeros((1, DIM), np.int64))
            for buf, part in zip(self.kv, (k, ek, v, ev)):
                buf[layer, :, :, 0] = part[:, 0]
        self.written, self.offset = 1, 0
        self.tokens = np.zeros((batch, n_q), np.int64)

    def step(self) -> np.ndarray:
        """Integer frequencies [batch, n_q, 1024] of the next frame (rows sum to 2**24 - 1024)."""
        out = np.empty((self.batch, self.n_q, CARD), np.int64)
        self._kernel.step(self.weights, self.tokens, self.first + self.offset, self.kv,
                          self.written % self.rows, min(self.written + 1, self.rows), out)
        self.written += 1
        self.offset += 1
        return out

    def push(self, codes: np.ndarray) -> None:
        """Feed the codes [batch, n_q] of the frame just coded."""
        self.tokens = codes.astype(np.int64).reshape(self.batch, self.n_q) + 1
