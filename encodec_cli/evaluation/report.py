"""`ecdc eval`'s runs and their report: code one input at several bandwidths, with ecdc and
with Opus, and measure what each costs (metrics.py); plot.py draws the result.

Every decoding is compared with the input as it is, at its own rate and channels: what
`ecdc decompress` gives back. The whole input is held in memory: evaluate clips.
"""
from __future__ import annotations

import os
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import api
from ..audio import files as A
from ..errors import AudioError, OptionError
from ..outputs import atomic_path, check_output
from ..specs import SPECS
from . import metrics as M
from . import opus as O

OPUS_KBPS = (6.0, 12.0, 24.0)  # always compared, with whatever else was asked for from 6 up
EXTRA = "pip install 'encodec-cli[eval]'"


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    model: str = "encodec_24khz"
    bandwidths: tp.Tuple[float, ...] = ()   # empty: all of the model's
    lm: bool = True
    weights: tp.Optional[Path] = None
    lm_weights: tp.Optional[Path] = None
    threads: int = 1                        # torch threads, as `ecdc compress --threads`
    opus: bool = True                       # compare with Opus when there is one
    keep: tp.Optional[Path] = None          # a folder for the coded files and decoded WAVs
    force: bool = False                     # overwrite kept files
    download_bars: bool = True              # progress bars while weights download

    def targets(self) -> tp.Tuple[float, ...]:
        spec = SPECS[self.model]
        for b in self.bandwidths:
            api.CompressOptions(bandwidth=b, model=self.model).check()
        return tuple(sorted(set(self.bandwidths))) or spec.bandwidths

    def opus_targets(self) -> tp.Tuple[float, ...]:
        return tuple(sorted(set(OPUS_KBPS) | {b for b in self.targets() if b >= OPUS_KBPS[0]}))


@dataclass(kw_only=True)
class Row:
    codec: str                      # 'ecdc' or 'opus'
    bandwidth: float                # kbps asked for
    kbps: float                     # achieved: the coded file's bytes * 8 / duration
    si_snr: tp.Optional[float]      # dB; None for a silent input
    mel_distance: float
    stoi: tp.Optional[float]        # None below 10 kHz or for too little speech
    encode_s: float
    decode_s: float
    bytes: int

    def to_json(self) -> dict:
        return {"codec": self.codec, "bandwidth": self.bandwidth, "kbps": round(self.kbps, 3),
                "si_snr": _round(self.si_snr, 3), "mel_distance": _round(self.mel_distance, 5),
                "stoi": _round(self.stoi, 4),
                "seconds": {"encode": round(self.encode_s, 3), "decode": round(self.decode_s, 3)},
                "bytes": self.bytes}


def _round(x: tp.Optional[float], digits: int) -> tp.Optional[float]:
    return None if x is None else round(x, digits)


@dataclass
class Spectrogram:
    label: str
    db: np.ndarray          # [frames, mels], dB re full scale
    hop_s: float
    max_hz: float


@dataclass(kw_only=True)
class Report:
    source: str
    sample_rate: int
    channels: int
    duration: float
    model: str
    coder: str
    opus: tp.Optional[str]              # the Opus encoder used: 'opusenc', 'libsndfile' or None
    rows: tp.List[Row]
    spectrograms: tp.List[Spectrogram]  # the input's, then the lowest and highest of each codec
    notes: tp.List[str]

    def input_line(self) -> str:
        """'name: 20.00 s, 24000 Hz mono'."""
        name = "stdin" if self.source == "-" else os.path.basename(self.source)
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{name}: {self.duration:.2f} s, {self.sample_rate} Hz {layout}"


def check_extra(plot: bool) -> None:
    """The `eval` extra's packages, imported now so that a missing one stops us before work."""
    missing = []
    for module, needed in (("pystoi", True), ("matplotlib", plot)):
        if needed:
            try:
                __import__(module)
            except ImportError:
                missing.append(module)
    if missing:
        raise OptionError(f"ecdc eval needs {' and '.join(missing)}: {EXTRA}")


def _kept(source: str, keep: Path, codec: str, kbps: float) -> tp.Tuple[Path, Path]:
    """Where --keep puts one coding: the coded file and the decoded WAV."""
    base = f"{'stdin' if source == '-' else Path(source).stem}-{codec}-{kbps:g}kbps"
    return keep / (base + (".opus" if codec == "opus" else ".ecdc")), keep / (base + ".wav")


def _read(source: str) -> tp.Tuple[np.ndarray, int, str]:
    src = A.open_source(source)
    try:
        blocks = list(src.blocks())
        rate, channels, bits = src.sample_rate, src.channels, getattr(src, "bits", "16")
    finally:
        src.close()
    x = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
    if not len(x):
        raise AudioError(f"{source} has no audio to evaluate")
    return np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), rate, bits


def evaluate(source: str, opts: EvalOptions = EvalOptions(),
             step: tp.Optional[tp.Callable[[str], object]] = None) -> Report:
    """Code `source` (a path, '-': stdin) at each bandwidth with ecdc, and with Opus where
    there is one; `step(label)` is called after each coding."""
    from ..codec import streaming as C
    from ..codec.threads import torch_threads

    targets = opts.targets()
    backend = O.find_opus() if opts.opus else None
    if opts.keep is not None:
        if opts.keep.exists() and not opts.keep.is_dir():
            raise OptionError(f"--keep {opts.keep}: not a folder")
    x, rate, bits = _read(source)
    channels, duration = x.shape[1], len(x) / rate
    if opts.keep is not None:
        opts.keep.mkdir(parents=True, exist_ok=True)
        runs = [("ecdc", b) for b in targets] + [("opus", b) for b in (opts.opus_targets() if backend else ())]
        for codec, kbps in runs:
            for path in _kept(source, opts.keep, codec, kbps):
                check_output(str(path), opts.force)
    notes = [] if backend or not opts.opus else [f"no Opus to compare with: {O.HOW_TO_GET}"]
    first = "input (the reference)" + ("; every spectrogram averages the channels" if channels > 1 else "")
    report = Report(source=source, sample_rate=rate, channels=channels, duration=duration, model=opts.model,
                    coder="lm" if opts.lm else "raw", opus=backend.name if backend else None, rows=[],
                    spectrograms=[_spectrogram(first, x, rate)], notes=notes)

    def measure(codec: str, kbps: float, y: np.ndarray, data: bytes, times: tp.Tuple[float, float],
                ends: tp.Sequence[float]) -> None:
        report.rows.append(Row(codec=codec, bandwidth=kbps, kbps=len(data) * 8 / duration / 1000,
                               si_snr=M.si_snr(x, y), mel_distance=M.mel_distance(x, y, rate),
                               stoi=M.stoi(x, y, rate), encode_s=times[0], decode_s=times[1], bytes=len(data)))
        label = f"{'Opus' if codec == 'opus' else 'ecdc'} at {kbps:g} kbps"
        if kbps in (ends[0], ends[-1]):
            report.spectrograms.append(
                _spectrogram(f"{label} ({report.rows[-1].kbps:.2f} kbps achieved)", y, rate))
        if opts.keep is not None:
            coded, wav = _kept(source, opts.keep, codec, kbps)
            _keep(coded, data, opts.force)
            _keep_wav(wav, y, rate, bits, opts.force)
        if step:
            step(label)

    with torch_threads(opts.threads):
        C.load_codec(opts.model, opts.weights, opts.download_bars)  # loading is not coding: not timed
        for kbps in targets:
            copts = api.CompressOptions(bandwidth=kbps, model=opts.model, weights=opts.weights, lm=opts.lm,
                                        lm_weights=opts.lm_weights, download_bars=opts.download_bars)
            dopts = api.DecompressOptions(weights=opts.weights, lm_weights=opts.lm_weights,
                                          download_bars=opts.download_bars)
            if opts.lm:
                from ..entropy.lmcoder import load_lm

                load_lm(opts.model, opts.lm_weights, SPECS[opts.model].codebooks_for(kbps), opts.download_bars)
            t0 = time.perf_counter()
            data = api.compress(x, rate, copts)
            t1 = time.perf_counter()
            y, _ = api.decompress(data, dopts)
            t2 = time.perf_counter()
            measure("ecdc", kbps, _fit(y, len(x)), data, (t1 - t0, t2 - t1), targets)

    if backend is not None:
        usable = [b for b in opts.opus_targets() if b >= backend.min_kbps(channels)]
        skipped = [b for b in opts.opus_targets() if b not in usable]
        if skipped:
            report.notes.append(
                f"Opus through {backend.name} starts at {backend.min_kbps(channels):g} kbps for {channels} "
                f"channels: {', '.join(f'{b:g}' for b in skipped)} kbps left out"
                + ("" if isinstance(backend, O.OpusTools) else " (opus-tools go down to 6)"))
        for kbps in usable:
            coded = backend.code(x, rate, kbps)
            measure("opus", kbps, _fit(coded.audio, len(x)), coded.data, (coded.encode_s, coded.decode_s), usable)
    return report


def _fit(y: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad to the input's length (Opus decoders can end a few samples off)."""
    if len(y) >= frames:
        return y[:frames]
    return np.concatenate([y, np.zeros((frames - len(y), y.shape[1]), y.dtype)])


def _spectrogram(label: str, x: np.ndarray, rate: int) -> Spectrogram:
    db, hop = M.mel_db(x, rate)
    return Spectrogram(label, db, hop / rate, rate / 2)


def _keep(path: Path, data: bytes, force: bool) -> None:
    with atomic_path(str(path), force) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _keep_wav(path: Path, y: np.ndarray, rate: int, bits: str, force: bool) -> None:
    with atomic_path(str(path), force) as tmp:
        sink = A.FileSink(tmp, rate, y.shape[1], A.output_bits("WAV", bits), "WAV", str(path))
        sink.write(y)
        sink.close()


def table(report: Report) -> str:
    """The rows as a table for the terminal."""
    head = ("codec", "asked", "kbps", "SI-SNR", "mel dist", "STOI", "encode", "decode")
    unit = ("", "kbps", "achieved", "dB", "lower=better", "max 1", "s", "s")
    lines = [head, unit]
    for r in report.rows:
        lines.append((r.codec, f"{r.bandwidth:g}", f"{r.kbps:.2f}", _fmt(r.si_snr, ".2f"),
                      _fmt(r.mel_distance, ".4f"), _fmt(r.stoi, ".3f"), f"{r.encode_s:.2f}", f"{r.decode_s:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for line in lines:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(out)


def _fmt(x: tp.Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def describe(report: Report) -> str:
    return (f"{report.input_line()}; {report.model} ({report.coder} coder); "
            f"Opus: {report.opus or 'not compared'}")

