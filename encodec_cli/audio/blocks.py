"""Blocks of samples between the stages: the source and sink protocols, channel mixing,
resampling (soxr), lengths, clipping."""
from __future__ import annotations

import typing as tp

import numpy as np
import soxr

BLOCK = 1 << 15  # frames per read


class Source(tp.Protocol):
    """Audio read block by block (read-only attributes: any class or instance attribute fits)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def frames(self) -> tp.Optional[int]: ...

    @property
    def bits(self) -> tp.Optional[str]: ...             # '16', '24' or 'float': what keeps its precision

    @property
    def tags(self) -> tp.Tuple[tp.Tuple[str, str], ...]: ...   # (name, text): title, artist, ...

    def blocks(self) -> tp.Iterator[np.ndarray]: ...   # [n, channels] float32

    def close(self) -> None: ...


class Sink(tp.Protocol):
    clipped: int

    def write(self, x: np.ndarray) -> None: ...   # [n, channels] float32

    def close(self) -> None: ...


def clip(x: np.ndarray, sink: Sink) -> np.ndarray:
    """`x` within [-1, 1], the samples beyond (NaN too) counted in `sink.clipped`."""
    over = ~(np.abs(x) <= 1.0)
    if over.any():
        sink.clipped += int(over.sum())
        x = np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0)
    return x


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """[n, c] -> [n, channels]: mono is duplicated, anything else averaged to mono first
    unless it already is stereo for a stereo target."""
    c = x.shape[1]
    if c == channels:
        return x
    if channels == 2 and c == 1:
        return np.repeat(x, 2, axis=1)
    mono = x.mean(axis=1, keepdims=True, dtype=np.float32)
    return mono if channels == 1 else np.repeat(mono, channels, axis=1)


class Resampler:
    """soxr's streaming resampler, or a no-op at equal rates."""

    def __init__(self, rate_in: int, rate_out: int, channels: int):
        self._s = None if rate_in == rate_out else soxr.ResampleStream(
            rate_in, rate_out, channels, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._s is None:
            return x
        return self._s.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)


def converted(blocks: tp.Iterable[np.ndarray], rate_in: int, rate_out: int, channels: int
              ) -> tp.Iterator[np.ndarray]:
    """Blocks [n, c] at rate_in -> [n, channels] at rate_out."""
    rs = Resampler(rate_in, rate_out, channels)
    for block in blocks:
        y = rs(to_channels(block, channels))
        if len(y):
            yield y
    y = rs(np.zeros((0, channels), np.float32), last=True)
    if len(y):
        yield y


def fit_length(blocks: tp.Iterable[np.ndarray], total: tp.Callable[[], tp.Optional[int]],
               holdback: int, channels: int) -> tp.Iterator[np.ndarray]:
    """Trim or zero-pad a stream of [n, channels] blocks to `total()` frames.

    `total()` may only be known once the blocks are used up; until then the last
    `holdback` frames are held back, enough to cover any overshoot.
    """
    emitted = 0
    tail = np.zeros((0, channels), np.float32)
    for block in blocks:
        if len(tail):
            block = np.concatenate([tail, block])
        n = total()
        if n is None:
            keep = max(0, len(block) - holdback)
            block, tail = block[:keep], block[keep:]
        else:
            block, tail = block[:max(0, n - emitted)], tail[:0]
        if len(block):
            emitted += len(block)
            yield block
    n = total()
    assert n is not None, "length unknown at the end of the stream"
    rest = tail[:max(0, n - emitted)]
    if len(rest):
        emitted += len(rest)
        yield rest
    while emitted < n:  # in blocks: a length is not trusted with memory
        pad = min(n - emitted, BLOCK)
        emitted += pad
        yield np.zeros((pad, channels), np.float32)




def skip(blocks: tp.Iterable[np.ndarray], n: int) -> tp.Iterator[np.ndarray]:
    """The blocks without their first n samples."""
    for block in blocks:
        if n >= len(block):
            n -= len(block)
            continue
        yield block[n:]
        n = 0
