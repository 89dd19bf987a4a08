"""The Python API: compress/decompress between audio and .ecdc, streamed.

Pairs: `compress_file`/`decompress_file` (paths, '-' for stdin/stdout) and
`compress`/`decompress` (arrays and bytes in memory).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
import tempfile
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio as A
from . import container as F
from .errors import AudioError, OptionError, WeightsError
from .specs import SPECS

MODELS = {"24khz": "encodec_24khz", "48khz": "encodec_48khz"}
HOP = 320
PACKET_SECONDS = 8.0  # long enough that packet framing costs <1% of an LM-coded stream


@dataclass(frozen=True)
class CompressOptions:
    bandwidth: float = 6.0
    model: str = "encodec_24khz"
    weights: tp.Optional[Path] = None       # any checkpoint of the same architecture
    lm: bool = True                         # range-code with the language model (False: raw)
    lm_weights: tp.Optional[Path] = None
    progress: bool = True                   # download progress bars

    def check(self) -> None:
        if self.model not in SPECS:
            raise OptionError(f"unknown model {self.model}")
        if self.bandwidth not in SPECS[self.model].bandwidths:
            allowed = ", ".join(f"{b:g}" for b in SPECS[self.model].bandwidths)
            raise OptionError(f"{self.model} supports {allowed} kbps, not {self.bandwidth!r}")


@dataclass(frozen=True)
class DecompressOptions:
    weights: tp.Optional[Path] = None
    lm_weights: tp.Optional[Path] = None
    model_format: bool = False   # keep the model's rate and channels instead of the original's
    bits: tp.Optional[str] = None  # '16', '24' or 'float'; None: the original's (16 if unknown)
    progress: bool = True
    format: tp.Optional[str] = None  # 'wav', 'flac', 'ogg', 'opus', ...: else the output's extension


@dataclass
class Result:
    seconds: float = 0.0         # audio duration
    bytes_written: int = 0
    clipped: int = 0             # samples clipped to [-1, 1] on output


Progress = tp.Optional[tp.Callable[[float], None]]


# ---------------------------------------------------------------- streams

def compress_stream(source: A.Source, fo: tp.BinaryIO, opts: CompressOptions,
                    progress: Progress = None) -> Result:
    """Read `source` block by block and write an .ecdc stream to `fo`."""
    from . import codec as C
    from .coders import batches, make_encoder

    opts.check()
    blocks = iter(source.blocks())
    first = next(blocks, None)
    codec = C.load_codec(opts.model, opts.weights, opts.progress)
    spec = codec.spec
    n_q = spec.codebooks_for(opts.bandwidth)
    coder = make_encoder(opts, spec, n_q)
    header = F.Header(spec.name, coder.name, n_q, opts.bandwidth, spec.sample_rate, spec.channels,
                      source.sample_rate, source.channels, None, None,
                      codec.fingerprint, coder.fingerprint, getattr(source, "bits", None),
                      tuple(getattr(source, "tags", ())))
    counts = {"source": 0, "model": 0}

    def source_blocks() -> tp.Iterator[np.ndarray]:
        for block in itertools.chain([first], blocks):
            if not np.isfinite(block).all():  # NaN or inf in a float file: silence / full scale
                block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
            counts["source"] += len(block)
            if progress:
                progress(len(block) / source.sample_rate)
            yield block

    def model_blocks() -> tp.Iterator[np.ndarray]:
        for block in A.converted(source_blocks(), source.sample_rate, spec.sample_rate,
                                 spec.channels):
            counts["model"] += len(block)
            yield block.T

    writer = F.Writer(fo, header)
    if first is None:  # an empty input gives a valid empty file (archives have such files)
        writer.finish(0, 0)
        return Result()
    grouped = _grouped(C.encode(codec, model_blocks(), n_q), spec)
    # to a pipe, packets should flow while the input is still coming: batches grow from one
    ramp = not F.seekable(fo)
    for batch in batches(grouped, lambda p: len(p[1]), coder.batch_streams, ramp):
        for (_, segments), (payload, flags) in zip(batch, coder.encode_many(batch)):
            writer.write_packet(segments, payload, flags)
        fo.flush()  # a reader on a pipe gets each packet as soon as it is coded
    writer.finish(counts["model"], counts["source"])
    return Result(seconds=counts["source"] / source.sample_rate)


def _grouped(code_packets, spec) -> tp.Iterator[tp.Tuple[np.ndarray, tp.List[F.Segment]]]:
    """Gather the codec's output into container packets of about PACKET_SECONDS.

    The 24 kHz stream is continuous: a packet is one segment. The 48 kHz model's 1 s
    segments keep their own frame counts and scales.
    """
    limit = PACKET_SECONDS * spec.frame_rate
    codes: tp.List[np.ndarray] = []
    segments: tp.List[F.Segment] = []
    frames = 0
    for cp in code_packets:
        codes.append(cp.codes)
        frames += len(cp.codes)
        segments = [(frames, 1.0)] if spec.causal else segments + [(len(cp.codes), cp.scale)]
        if frames >= limit:
            yield np.concatenate(codes), segments
            codes, segments, frames = [], [], 0
    if codes:
        yield np.concatenate(codes), segments


def decompress_stream(fo: tp.BinaryIO, open_sink: tp.Callable[[int, int, tp.Optional[int], F.Header], A.Sink],
                      opts: DecompressOptions, progress: Progress = None) -> Result:
    """Read an .ecdc stream and write its audio to the sink made by
    `open_sink(rate, channels, frames, header)` (frames: the output's length, None if not
    yet known; the header has the source's bit depth and tags)."""
    reader = F.Reader(fo)  # a file that is not .ecdc is refused before torch is imported
    h = reader.header

    from . import codec as C
    from .coders import batches, make_decoder

    codec = C.load_codec(h.model, opts.weights, opts.progress)
    if codec.fingerprint != h.weights_fingerprint:
        raise WeightsError(f"the file was compressed with other weights (fingerprint "
                           f"{h.weights_fingerprint.hex()}, loaded {codec.fingerprint.hex()}); "
                           f"pass the same --weights FILE")
    coder = make_decoder(h, opts, codec.spec)

    def packets() -> tp.Iterator[C.CodePacket]:
        for batch in batches(reader, lambda p: len(p.segments), coder.batch_streams):
            for packet, codes in zip(batch, coder.decode_many(batch)):
                start = 0
                for frames, scale in packet.segments:
                    yield C.CodePacket(codes[start:start + frames], scale)
                    start += frames

    coded = packets()
    first = next(coded, None)
    decoded = C.decode(codec, itertools.chain([first], coded)) if first is not None else iter(())
    blocks = A.fit_length((a.T for a in decoded), lambda: reader.num_samples, HOP, h.channels)
    rate, channels = h.sample_rate, h.channels
    if not opts.model_format:
        rate, channels = h.source_sample_rate, h.source_channels
        resampled = A.converted(blocks, h.sample_rate, rate, h.channels)
        blocks = A.fit_length((A.to_channels(b, channels) for b in resampled),
                              lambda: reader.source_num_samples, 4096, channels)
    known = reader.num_samples if opts.model_format else reader.source_num_samples
    sink = open_sink(rate, channels, known, h)
    written = 0
    try:
        for block in blocks:
            sink.write(block)
            written += len(block)
            if progress:
                progress(len(block) / rate)
    finally:
        sink.close()
    return Result(seconds=written / rate, clipped=sink.clipped)


# ---------------------------------------------------------------- files

def check_output(path: str, force: bool) -> str:
    """The file that writing `path` replaces (a symlink's target), checked before any work."""
    if not path:
        raise OptionError("the output path is empty")
    if path.endswith(os.sep) or os.path.isdir(path):
        raise OptionError(f"cannot write {path}: it is a folder" if os.path.isdir(path)
                          else f"cannot write {path}: folder {path} does not exist")
    if os.path.lexists(path) and not force:
        raise OptionError(f"{path} exists; use -f/--force to overwrite")
    target = os.path.realpath(path)  # -f on a symlink replaces the file it points to
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OptionError(f"cannot write {path}: folder {os.path.dirname(os.path.abspath(path))} "
                          f"does not exist")
    return target


def _new_mode(target: str) -> int:
    """The replaced file's mode, else what the umask allows (as flac and sox do)."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str, force: bool) -> tp.Iterator[str]:
    """A temporary path beside `path`, renamed onto it only if the block succeeds."""
    target = check_output(path, force)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".",
                                   suffix=".part")
    except OSError as e:
        raise OptionError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        try:
            os.chmod(tmp, _new_mode(target))
            os.replace(tmp, target)
        except OSError as e:
            raise OptionError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _not_the_input(src: str, dst: str) -> None:
    if src != "-" and dst != "-" and os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise OptionError(f"the output {dst} is the input; choose another -o")


def compress_file(src: str, dst: str, opts: CompressOptions = CompressOptions(),
                  force: bool = False, progress: Progress = None) -> Result:
    """Compress audio file `src` ('-': stdin) to `dst` ('-': stdout)."""
    opts.check()
    _not_the_input(src, dst)
    source = A.open_source(src)
    try:
        if dst == "-":
            out = sys.stdout.buffer
            result = compress_stream(source, out, opts, progress)
            out.flush()
            return result
        with atomic_path(dst, force) as tmp, open(tmp, "wb") as f:
            result = compress_stream(source, f, opts, progress)
            result.bytes_written = f.tell()
        return result
    finally:
        source.close()


def _open_ecdc(src: str) -> tp.BinaryIO:
    if src == "-":
        return sys.stdin.buffer
    if not os.path.exists(src):
        raise AudioError(f"{src} does not exist")
    if os.path.isdir(src):
        raise AudioError(f"{src} is a folder, not an .ecdc file")
    return open(src, "rb")


def decompress_file(src: str, dst: str, opts: DecompressOptions = DecompressOptions(),
                    force: bool = False, progress: Progress = None) -> Result:
    """Decompress .ecdc file `src` ('-': stdin) to audio `dst` in any format libsndfile writes,
    chosen by `opts.format` or the extension ('-': stdout, WAV unless `opts.format` says)."""
    if opts.bits is not None and opts.bits not in A.SUBTYPES:
        raise OptionError(f"unsupported bit depth {opts.bits}")
    _not_the_input(src, dst)
    if dst == "-" and opts.format not in (None, "wav"):
        return _decompress_to_stdout_via_file(src, opts, progress)
    fmt, subtype = (None, None) if dst == "-" else A.format_for(dst, opts.format)
    if fmt and subtype is None and opts.bits is not None:
        A.check_subtype(fmt, opts.bits, dst)

    def bits(h: F.Header) -> str:
        return opts.bits or A.output_bits(fmt, h.source_bits)

    fo = _open_ecdc(src)
    try:
        if dst == "-":
            out = sys.stdout.buffer
            return decompress_stream(fo, lambda r, c, n, h: A.WavPipeSink(out, r, c, bits(h), n),
                                     opts, progress)
        with atomic_path(dst, force) as tmp:
            result = decompress_stream(
                fo, lambda r, c, n, h: A.FileSink(tmp, r, c, bits(h), fmt, dst, subtype, h.tags), opts,
                progress)
            result.bytes_written = os.path.getsize(tmp)
        return result
    finally:
        if fo is not sys.stdin.buffer:
            fo.close()


def _decompress_to_stdout_via_file(src: str, opts: DecompressOptions, progress: Progress) -> Result:
    """Formats that libsndfile cannot stream to a pipe: written to a temporary file, then copied."""
    import shutil

    folder = tempfile.mkdtemp(prefix="ecdc-out-")
    try:
        path = os.path.join(folder, "out." + opts.format)
        result = decompress_file(src, path, opts, progress=progress)
        with open(path, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- memory

def _float_samples(wav) -> np.ndarray:
    """[frames] or [frames, channels] samples as float32 in [-1, 1]; integers are scaled as
    libsndfile reads them (int16 by 2**-15, int32 by 2**-31, uint8 around 128)."""
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2):
        raise AudioError(f"samples must be [frames] or [frames, channels], not {wav.ndim}-D "
                         f"(shape {wav.shape})")
    if wav.ndim == 2 and wav.shape[1] > 256 and wav.shape[1] > wav.shape[0]:
        raise AudioError(f"samples of shape {wav.shape} look channels-first; pass [frames, channels] "
                         f"(samples.T)")
    if wav.dtype == np.uint8:
        return ((wav.astype(np.float32) - 128) / 128)
    if np.issubdtype(wav.dtype, np.integer):
        return (wav.astype(np.float64) / (np.iinfo(wav.dtype).max + 1)).astype(np.float32)
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"samples must be numbers, not {wav.dtype}")
    return wav.astype(np.float32)


class _ArraySource:
    def __init__(self, wav: np.ndarray, sample_rate: int):
        wav = _float_samples(wav)
        self._wav = wav[:, None] if wav.ndim == 1 else wav
        self.sample_rate, self.channels, self.frames = sample_rate, self._wav.shape[1], len(self._wav)

    def blocks(self) -> tp.Iterator[np.ndarray]:
        for i in range(0, len(self._wav), A.BLOCK):
            yield self._wav[i:i + A.BLOCK]

    def close(self) -> None:
        pass


class _ArraySink:
    def __init__(self):
        self.blocks: tp.List[np.ndarray] = []
        self.clipped = 0

    def write(self, x: np.ndarray) -> None:
        self.blocks.append(x)

    def close(self) -> None:
        pass


def compress(wav: np.ndarray, sample_rate: int, opts: CompressOptions = CompressOptions()) -> bytes:
    """[frames, channels] (or [frames]) audio -> .ecdc bytes. Floats are in [-1, 1]; integer
    samples (int16, int32, uint8) are scaled to it."""
    buf = io.BytesIO()
    compress_stream(_ArraySource(wav, sample_rate), buf, opts)
    return buf.getvalue()


def decompress(data: bytes, opts: DecompressOptions = DecompressOptions()
               ) -> tp.Tuple[np.ndarray, int]:
    """.ecdc bytes -> ([frames, channels] float32 audio, sample rate)."""
    sink = _ArraySink()
    rate = {}

    def open_sink(r: int, c: int, n: tp.Optional[int], h: F.Header) -> _ArraySink:
        rate["r"], rate["c"] = r, c
        return sink

    decompress_stream(io.BytesIO(data), open_sink, opts)
    wav = np.concatenate(sink.blocks) if sink.blocks else np.zeros((0, rate["c"]), np.float32)
    return wav, rate["r"]
