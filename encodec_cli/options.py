"""The options and results of the public calls (api.py re-exports them). No torch."""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass
from pathlib import Path

from .errors import OptionError
from .specs import SPECS

MODELS = {"24khz": "encodec_24khz", "48khz": "encodec_48khz"}  # the command line's names

# Seconds of audio done, called as blocks are coded (the functions' `progress` argument).
Progress = tp.Optional[tp.Callable[[float], None]]


@dataclass(frozen=True, kw_only=True)
class CompressOptions:
    bandwidth: float = 6.0
    model: str = "encodec_24khz"
    weights: tp.Optional[Path] = None       # any checkpoint of the same architecture
    lm: bool = True                         # range-code with the language model (False: raw)
    lm_weights: tp.Optional[Path] = None
    raw_fallback: bool = True               # store a packet raw when the LM does not make it smaller
    live: bool = False                      # a live stream: each frame sent as soon as it is coded
    threads: int = 1                        # torch threads while coding (as `ecdc compress`)
    download_bars: bool = True              # progress bars while weights download

    def check(self) -> None:
        if self.model not in SPECS:
            raise OptionError(f"unknown model {self.model}")
        if self.bandwidth not in SPECS[self.model].bandwidths:
            allowed = ", ".join(f"{b:g}" for b in SPECS[self.model].bandwidths)
            raise OptionError(f"{self.model} supports {allowed} kbps, not {self.bandwidth!r}")


@dataclass(frozen=True, kw_only=True)
class DecompressOptions:
    weights: tp.Optional[Path] = None
    lm_weights: tp.Optional[Path] = None
    model_format: bool = False     # keep the model's rate and channels instead of the original's
    bits: tp.Optional[str] = None  # '16', '24' or 'float'; None: the original's (16 if unknown)
    format: tp.Optional[str] = None  # 'wav', 'flac', 'ogg', 'opus', ...: else the output's extension
    start: float = 0.0             # seconds: decode only from here ...
    end: tp.Optional[float] = None  # ... to here (None: the end)
    lm_threads: tp.Optional[int] = None  # version-0 LM files: the writer's torch threads
    # (None: torch's default here, as Meta's encodec ran; each count rounds differently)
    threads: int = 1                     # torch threads while decoding
    salvage: bool = False                # a damaged file: decode what is intact, silence for the rest
    download_bars: bool = True


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    coder: tp.Optional[str] = None          # 'raw' or 'lm'; None: raw stays raw, LM-coded becomes 'lm'
    weights: tp.Optional[Path] = None       # version 0: the codec weights whose fingerprint to record
    lm_weights: tp.Optional[Path] = None
    lm_threads: tp.Optional[int] = None     # version-0 LM files: see DecompressOptions
    threads: int = 1
    salvage: bool = False                   # a damaged or cut file: keep what comes before the damage
    download_bars: bool = True

    def decoding(self) -> DecompressOptions:
        return DecompressOptions(weights=self.weights, lm_weights=self.lm_weights, lm_threads=self.lm_threads,
                                 threads=self.threads, download_bars=self.download_bars)


@dataclass
class Result:
    seconds: float = 0.0         # audio duration
    bytes_written: int = 0
    clipped: int = 0             # samples clipped to [-1, 1] on output
    notes: tp.Tuple[str, ...] = ()  # what the user should know of a file that worked (NaN input, ...)
    damaged: tp.Tuple[str, ...] = ()  # what was lost: time ranges (salvage), or where a cut stream ends
    silence: float = 0.0              # seconds of silence put in place of lost audio (salvage)


@dataclass(frozen=True, kw_only=True)
class CodesOptions:
    """`codes_file` and `ecdc codes`: how audio inputs are encoded (model, bandwidth) and
    .ecdc inputs read (their LM)."""
    bandwidth: float = 6.0
    model: str = "encodec_24khz"
    weights: tp.Optional[Path] = None
    lm_weights: tp.Optional[Path] = None
    lm_threads: tp.Optional[int] = None     # version-0 LM files: see DecompressOptions
    threads: int = 1
    download_bars: bool = True

    def check(self) -> None:
        self.encoding().check()

    def encoding(self) -> CompressOptions:
        return CompressOptions(bandwidth=self.bandwidth, model=self.model, weights=self.weights, lm=False,
                               threads=self.threads, download_bars=self.download_bars)

    def decoding(self) -> DecompressOptions:
        return DecompressOptions(weights=self.weights, lm_weights=self.lm_weights, lm_threads=self.lm_threads,
                                 threads=self.threads, download_bars=self.download_bars)
