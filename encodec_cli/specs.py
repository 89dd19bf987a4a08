"""The two official EnCodec models' hyper-parameters (no torch, so the CLI can check options)."""
from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What distinguishes the two official EnCodec models."""
    name: str
    sample_rate: int
    channels: int
    causal: bool
    norm: str                  # 'weight_norm' or 'time_group_norm'
    normalize: bool            # per-segment RMS scaling
    segment: tp.Optional[float]  # seconds, None for whole-stream
    bandwidths: tp.Tuple[float, ...]
    overlap: float = 0.01
    ratios: tp.Tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 128
    n_filters: int = 32
    bins: int = 1024

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def n_q(self) -> int:
        return int(1000 * self.bandwidths[-1] // (self.frame_rate * 10))

    @property
    def segment_length(self) -> tp.Optional[int]:
        return None if self.segment is None else int(self.segment * self.sample_rate)

    @property
    def segment_stride(self) -> tp.Optional[int]:
        length = self.segment_length
        return None if length is None else max(1, int((1 - self.overlap) * length))

    @property
    def segment_samples(self) -> int:
        """segment_length, of a model that has segments (the 48 kHz one)."""
        if self.segment_length is None:
            raise ValueError(f"{self.name} has no segments")
        return self.segment_length

    @property
    def segment_step(self) -> int:
        """segment_stride, of a model that has segments (the 48 kHz one)."""
        if self.segment_stride is None:
            raise ValueError(f"{self.name} has no segments")
        return self.segment_stride

    def codebooks_for(self, bandwidth: float) -> int:
        bw_per_q = math.log2(self.bins) * self.frame_rate / 1000
        return int(max(1, math.floor(bandwidth / bw_per_q)))


SPECS: tp.Dict[str, ModelSpec] = {
    "encodec_24khz": ModelSpec("encodec_24khz", 24_000, 1, causal=True, norm="weight_norm",
                               normalize=False, segment=None,
                               bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0)),
    "encodec_48khz": ModelSpec("encodec_48khz", 48_000, 2, causal=False, norm="time_group_norm",
                               normalize=True, segment=1.0,
                               bandwidths=(3.0, 6.0, 12.0, 24.0)),
}
