"""Audio in memory: NumPy arrays as a source and a sink, for the in-memory API."""
from __future__ import annotations

import typing as tp

import numpy as np

from ..errors import AudioError
from .blocks import BLOCK


def float_samples(wav) -> np.ndarray:
    """[frames] or [frames, channels] samples as float32 in [-1, 1]; integers are scaled as
    libsndfile reads them (int16 by 2**-15, int32 by 2**-31, uint8 around 128)."""
    try:
        wav = np.asarray(wav)
    except (TypeError, ValueError, RuntimeError) as e:  # ragged lists, tensors on a GPU, ...
        raise AudioError(f"samples must be an array of numbers: {e}") from None
    if wav.ndim not in (1, 2):
        raise AudioError(f"samples must be [frames] or [frames, channels], not {wav.ndim}-D "
                         f"(shape {wav.shape})")
    if wav.ndim == 2 and wav.shape[1] > 256 and wav.shape[1] > wav.shape[0]:
        raise AudioError(f"samples of shape {wav.shape} look channels-first; pass [frames, channels] "
                         f"(samples.T)")
    if wav.ndim == 2 and wav.shape[1] == 0:
        raise AudioError(f"samples of shape {wav.shape} have no channels")
    if wav.dtype == np.bool_ or not np.issubdtype(wav.dtype, np.number) or np.issubdtype(wav.dtype, np.complexfloating):
        raise AudioError(f"samples must be integers or real floats, not {wav.dtype}")
    if wav.dtype == np.uint8:
        return ((wav.astype(np.float32) - 128) / 128)
    if np.issubdtype(wav.dtype, np.integer):
        return (wav.astype(np.float64) / (np.iinfo(wav.dtype).max + 1)).astype(np.float32)
    return wav.astype(np.float32)


MAX_RATE = 1_000_000  # Hz; soxr and the models take any rate up to this


def checked_rate(sample_rate) -> int:
    """`sample_rate` as a positive whole number of Hz, or an AudioError that says what it is."""
    ok = isinstance(sample_rate, (int, np.integer, float, np.floating)) and not isinstance(sample_rate, bool)
    if ok and np.isfinite(sample_rate) and float(sample_rate).is_integer() and 0 < sample_rate <= MAX_RATE:
        return int(sample_rate)
    raise AudioError(f"sample_rate must be a whole number of Hz from 1 to {MAX_RATE}, not {sample_rate!r}")


class ArraySource:
    bits: tp.Optional[str] = None
    tags: tp.Tuple[tp.Tuple[str, str], ...] = ()

    def __init__(self, wav: tp.Any, sample_rate: int):
        sample_rate = checked_rate(sample_rate)
        wav = float_samples(wav)
        self._wav = wav[:, None] if wav.ndim == 1 else wav
        self.sample_rate, self.channels, self.frames = sample_rate, self._wav.shape[1], len(self._wav)

    def blocks(self) -> tp.Iterator[np.ndarray]:
        for i in range(0, len(self._wav), BLOCK):
            yield self._wav[i:i + BLOCK]

    def close(self) -> None:
        pass


class ArraySink:
    """Keeps the blocks written; `samples()` joins them."""

    def __init__(self, channels: int):
        self.blocks: tp.List[np.ndarray] = []
        self.channels, self.clipped = channels, 0

    def write(self, x: np.ndarray) -> None:
        self.blocks.append(x)

    def close(self) -> None:
        pass

    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, self.channels), np.float32)
