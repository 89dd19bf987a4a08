"""The Python API: compress/decompress between audio and .ecdc, streamed.

Pairs: `compress_file`/`decompress_file` (paths, '-' for stdin/stdout) and
`compress`/`decompress` (arrays and bytes in memory).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import os
import struct
import sys
import tempfile
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import files as A
from .formats import v1 as F
from .errors import AudioError, FormatError, OptionError, WeightsError
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
    start: float = 0.0             # seconds: decode only from here ...
    end: tp.Optional[float] = None  # ... to here (None: the end)
    lm_threads: tp.Optional[int] = None  # version-0 LM files: the writer's torch threads
    # (None: torch's default here, as Meta's encodec ran; each count rounds differently)


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
    from .codec import streaming as C
    from .entropy.coders import batches, make_encoder

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


def decoded_packets(reader, opts: "DecompressOptions") -> tp.Iterator[F.Packet]:
    """The packets of `reader` (container.open_reader: version 1 or 0) with their codes
    decoded. Torch is imported only for LM-coded files."""
    h = reader.header
    if h.version == 0 and h.coder == "lm":
        from .entropy.reference_lm import load_float_lm, reference_threads

        reader.lm = load_float_lm(h.model, opts.lm_weights, opts.progress)
        threads = reader.lm.threads = opts.lm_threads or reference_threads()
        reader.why = (f"a damaged file, or one written with other torch threads or another kind of CPU "
                      f"(read with {threads} thread{'s' if threads > 1 else ''}; encodec ran with as many "
                      f"as the writing machine had cores: try --threads N)")
    if h.version == 0 or h.coder == "raw":
        yield from reader
        return

    from .entropy.coders import batches, make_decoder
    from .specs import SPECS

    coder = make_decoder(h, opts, SPECS[h.model])
    for batch in batches(reader, lambda p: len(p.segments), coder.batch_streams):
        for packet, codes in zip(batch, coder.decode_many(batch)):
            yield dataclasses.replace(packet, codes=codes)


def _output_range(opts: "DecompressOptions", rate: int, total: tp.Optional[int]
                  ) -> tp.Tuple[int, tp.Optional[int]]:
    """Output samples [start, end) of `opts.start`..`opts.end` (end None: to the end)."""
    start = round(opts.start * rate)
    end = None if opts.end is None else round(opts.end * rate)
    if end is not None and end < start:
        raise OptionError(f"the range ends ({opts.end:g} s) before it starts ({opts.start:g} s)")
    if total is not None:
        if start and start >= total:
            raise OptionError(f"--start {opts.start:g} s is past the end of the audio ({total / rate:.3f} s)")
        end = None if end is None or end >= total else end
    return start, end


def _skip(blocks: tp.Iterable[np.ndarray], n: int) -> tp.Iterator[np.ndarray]:
    """The blocks without their first n samples."""
    for block in blocks:
        if n >= len(block):
            n -= len(block)
            continue
        yield block[n:]
        n = 0


def decompress_stream(fo: tp.BinaryIO, open_sink: tp.Callable[[int, int, tp.Optional[int], F.Header], A.Sink],
                      opts: DecompressOptions, progress: Progress = None) -> Result:
    """Read an .ecdc stream (version 1, or 0: Meta's encodec) and write its audio, or the
    range `opts.start`..`opts.end`, to the sink made by `open_sink(rate, channels, frames,
    header)` (frames: the output's length, None if not yet known; the header has the
    source's bit depth and tags)."""
    from .formats.seek import plan

    reader = F.open_reader(fo)  # a file that is not .ecdc is refused before torch is imported
    h = reader.header
    rate, channels = (h.sample_rate, h.channels) if opts.model_format else (h.source_sample_rate, h.source_channels)

    def total() -> tp.Optional[int]:  # of the whole output
        return reader.num_samples if opts.model_format else reader.source_num_samples

    start, end = _output_range(opts, rate, total())

    from .codec import streaming as C

    codec = C.load_codec(h.model, opts.weights, opts.progress)
    if h.version and codec.fingerprint != h.weights_fingerprint:  # version 0 does not record it
        raise WeightsError(f"the file was compressed with other weights (fingerprint "
                           f"{h.weights_fingerprint.hex()}, loaded {codec.fingerprint.hex()}); "
                           f"pass the same --weights FILE")
    span = plan(codec.spec, rate, start, end)
    reader.skip_before, reader.stop_at = span.first_frame, span.last_frame

    def packets() -> tp.Iterator[C.CodePacket]:
        for packet in decoded_packets(reader, opts):
            pos = packet.start
            for frames, scale in packet.segments:
                lo, hi = max(0, span.first_frame - pos), frames
                if span.last_frame is not None:
                    hi = min(hi, span.last_frame - pos)
                if lo < hi:
                    row = pos - packet.start
                    yield C.CodePacket(packet.codes[row + lo:row + hi], scale)
                pos += frames

    coded = packets()
    first = next(coded, None)
    decoded = C.decode(codec, itertools.chain([first], coded), span.weight_length) if first is not None else iter(())

    def model_total() -> tp.Optional[int]:  # model-rate samples from span.model_start
        n = reader.num_samples
        if n is None:
            return None
        return max(0, (n if span.model_end is None else min(n, span.model_end)) - span.model_start)

    blocks = _skip((a.T for a in decoded), span.model_start - span.decode_start)
    blocks = A.fit_length(blocks, model_total, HOP, h.channels)
    out_start = span.model_start
    if not opts.model_format:
        resampled = A.converted(blocks, h.sample_rate, rate, h.channels)
        blocks = (A.to_channels(b, channels) for b in resampled)
        out_start = span.model_start * rate // h.sample_rate  # exact: the span starts on a common sample

    def out_total() -> tp.Optional[int]:
        n = total()
        if n is None:
            return None
        return max(0, (n if end is None else min(n, end)) - start)

    blocks = A.fit_length(_skip(blocks, start - out_start), out_total, 4096, channels)
    sink = open_sink(rate, channels, out_total(), h)
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


@contextlib.contextmanager
def _stdout_through_file(name: str) -> tp.Iterator[str]:
    """A path in a temporary folder; what the block writes there is copied to stdout if it
    succeeds (for outputs that need a seekable file or are checked before they go out)."""
    import shutil

    folder = tempfile.mkdtemp(prefix="ecdc-out-")
    try:
        path = os.path.join(folder, name)
        yield path
        with open(path, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _decompress_to_stdout_via_file(src: str, opts: DecompressOptions, progress: Progress) -> Result:
    """Formats that libsndfile cannot stream to a pipe: written to a temporary file, then copied."""
    with _stdout_through_file("out." + opts.format) as path:
        return decompress_file(src, path, opts, progress=progress)


# ---------------------------------------------------------------- codes

@dataclass(frozen=True)
class ConvertOptions:
    coder: tp.Optional[str] = None          # 'raw' or 'lm'; None: raw stays raw, LM-coded becomes 'lm'
    weights: tp.Optional[Path] = None       # version 0: the codec weights whose fingerprint to record
    lm_weights: tp.Optional[Path] = None
    progress: bool = True
    lm_threads: tp.Optional[int] = None     # version-0 LM files: see DecompressOptions

    def decoding(self) -> DecompressOptions:
        return DecompressOptions(self.weights, self.lm_weights, progress=self.progress,
                                 lm_threads=self.lm_threads)


def _hash_packet(digest, packet: F.Packet) -> None:
    digest.update(np.ascontiguousarray(packet.codes, dtype=">u2").tobytes())
    for frames, scale in packet.segments:
        digest.update(struct.pack(">If", frames, scale))


def convert_stream(fi: tp.BinaryIO, fo: tp.BinaryIO, opts: ConvertOptions = ConvertOptions(),
                   progress: Progress = None) -> tp.Tuple[Result, bytes]:
    """Re-container an .ecdc stream (version 0 or 1) as version 1 with coder `opts.coder`,
    without touching its codes. Returns the result and a digest of the codes and scales."""
    import hashlib

    from .entropy.coders import RawEncoder, batches
    from .specs import SPECS

    if opts.coder not in (None, "raw", "lm"):
        raise OptionError(f"unknown coder {opts.coder!r}")
    reader = F.open_reader(fi)
    h = reader.header
    spec = SPECS[h.model]
    fingerprint = h.weights_fingerprint
    if h.version == 0:  # it does not record its weights: those that decompress would load stand for them
        from .codec.streaming import load_codec

        fingerprint = load_codec(h.model, opts.weights, opts.progress).fingerprint
    if (opts.coder or h.coder) == "lm":
        from .entropy.lmcoder import LMEncoder

        encoder = LMEncoder.load(spec, h.n_codebooks, opts.lm_weights, opts.progress)
    else:
        encoder = RawEncoder()
    header = dataclasses.replace(h, coder=encoder.name, weights_fingerprint=fingerprint,
                                 lm_fingerprint=encoder.fingerprint, num_samples=None,
                                 source_num_samples=None, version=F.VERSION)
    writer = F.Writer(fo, header)
    digest = hashlib.sha256()
    for batch in batches(decoded_packets(reader, opts.decoding()), lambda p: len(p.segments),
                         encoder.batch_streams):
        items = [(p.codes, p.segments) for p in batch]
        for packet, (payload, flags) in zip(batch, encoder.encode_many(items)):
            writer.write_packet(packet.segments, payload, flags)
            _hash_packet(digest, packet)
            if progress:
                progress(packet.frames / spec.frame_rate)
    writer.finish(reader.num_samples, reader.source_num_samples)
    return Result(seconds=(reader.source_num_samples or 0) / h.source_sample_rate), digest.digest()


def _codes_digest(path: str, opts: ConvertOptions) -> bytes:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for packet in decoded_packets(F.open_reader(f), opts.decoding()):
            _hash_packet(digest, packet)
    return digest.digest()


def convert_file(src: str, dst: str, opts: ConvertOptions = ConvertOptions(), force: bool = False,
                 progress: Progress = None) -> Result:
    """Convert .ecdc file `src` ('-': stdin) to version 1 at `dst` ('-': stdout; with `force`,
    `dst` may be `src`). The new file is decoded and must give the same codes before it
    replaces or becomes `dst`."""
    if dst == "-":  # checked in a file before any of it goes out
        with _stdout_through_file("out.ecdc") as path:
            return convert_file(src, path, opts, True, progress)
    fi = _open_ecdc(src)
    try:
        with atomic_path(dst, force) as tmp:  # in place: with -f (--in-place sets it)
            with open(tmp, "wb") as f:
                result, digest = convert_stream(fi, f, opts, progress)
                result.bytes_written = f.tell()
            if _codes_digest(tmp, opts) != digest:
                raise FormatError(f"the converted file does not decode to the codes of {src}; "
                                  f"nothing was written")
        return result
    finally:
        if fi is not sys.stdin.buffer:
            fi.close()


def read_codes(path: tp.Union[str, os.PathLike, tp.BinaryIO], opts: DecompressOptions = DecompressOptions()
               ) -> tp.Tuple[tp.Union[np.ndarray, tp.List[tp.Tuple[np.ndarray, float]]], F.Header]:
    """The codes of an .ecdc file (version 1, or 0: Meta's encodec) and its header.

    24 kHz: a [codebooks, frames] uint16 array. 48 kHz: one (codes [codebooks, frames],
    scale) pair per 1 s segment. No model is loaded, and torch is not imported, for raw
    files; LM-coded ones load the language model (`opts.lm_weights`).
    """
    with (open(path, "rb") if isinstance(path, (str, os.PathLike)) else contextlib.nullcontext(path)) as f:
        reader = F.open_reader(f)
        packets = list(decoded_packets(reader, opts))
    h = reader.header
    k = h.n_codebooks
    if SPECS[h.model].causal:
        codes = np.concatenate([p.codes for p in packets]) if packets else np.zeros((0, k), np.uint16)
        return np.ascontiguousarray(codes.T), h
    segments = []
    for p in packets:
        row = 0
        for frames, scale in p.segments:
            segments.append((np.ascontiguousarray(p.codes[row:row + frames].T), float(scale)))
            row += frames
    return segments, h


def codes_file(src: str, dst: str, opts: DecompressOptions = DecompressOptions(), force: bool = False,
               progress: Progress = None) -> Result:
    """Write the codes of .ecdc file `src` to `dst` as .npz (see read_codes): `codes`
    [codebooks, frames] uint16 (48 kHz: the segments end to end, with `segment_frames` and
    `scales`), and `model`, `sample_rate`, `bandwidth`, `num_samples`."""
    fi = _open_ecdc(src)
    try:
        codes, h = read_codes(fi, opts)
    finally:
        if fi is not sys.stdin.buffer:
            fi.close()
    arrays = {"model": np.array(h.model), "sample_rate": np.array(h.sample_rate),
              "bandwidth": np.array(h.bandwidth), "num_samples": np.array(h.num_samples or 0)}
    if isinstance(codes, list):
        arrays["codes"] = (np.concatenate([c for c, _ in codes], axis=1) if codes
                           else np.zeros((h.n_codebooks, 0), np.uint16))
        arrays["segment_frames"] = np.array([c.shape[1] for c, _ in codes], np.int32)
        arrays["scales"] = np.array([s for _, s in codes], np.float32)
    else:
        arrays["codes"] = codes
    seconds = (h.num_samples or 0) / h.sample_rate
    if progress:
        progress(seconds)
    if dst == "-":
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return Result(seconds=seconds)
    with atomic_path(dst, force) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            size = f.tell()
    return Result(seconds=seconds, bytes_written=size)


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
