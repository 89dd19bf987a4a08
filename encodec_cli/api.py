"""The Python API: compress/decompress between audio and .ecdc, streamed.

Pairs: `compress_file`/`decompress_file` (paths, '-' for stdin/stdout) and
`compress`/`decompress` (arrays and bytes in memory); `convert_file`, `read_codes` and
`codes_file` for what is already coded. The work is done in pipeline.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import typing as tp

import numpy as np

from .audio import files as A
from .audio.arrays import ArraySink, ArraySource
from .audio.pipes import WavPipeSink
from .conversion import codes_digest, convert_stream
from .errors import (
    AudioError,
    CorruptError,
    FormatError,
    NotEcdcError,
    OptionError,
    TruncatedError,
    with_salvage_hint,
)
from .formats import v0, v1
from .formats.records import Header
from .options import MODELS, CompressOptions, ConvertOptions, DecompressOptions, Progress, Result
from .outputs import atomic_path, not_the_input, stdout_through_file
from .pipeline import compress_stream, decompress_stream, read_packets
from .specs import SPECS

__all__ = ["MODELS", "CompressOptions", "DecompressOptions", "ConvertOptions", "Result", "Progress",
           "compress_file", "decompress_file", "compress", "decompress", "convert_file", "read_codes",
           "codes_file", "compress_stream", "decompress_stream", "convert_stream"]


# ---------------------------------------------------------------- files

def compress_file(src: str, dst: str, opts: CompressOptions = CompressOptions(),
                  force: bool = False, progress: Progress = None) -> Result:
    """Compress audio file `src` ('-': stdin) to `dst` ('-': stdout)."""
    opts.check()
    if src != "-" and os.path.isfile(src) and _starts_as_ecdc(src):  # (a pipe's bytes are not read twice)
        raise OptionError(f"{src} is an .ecdc file: did you mean decompress_file?",
                          cli=f"{src} is an .ecdc file: did you mean `ecdc decompress`?")
    not_the_input(src, dst)
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


def _starts_as_ecdc(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(len(v1.MAGIC))
    except OSError:
        return False  # said when it is opened
    return head.startswith(v1.MAGIC) or head[:5] == v0.MAGIC + b"\0"


def _not_audio(src: str) -> None:
    if src != "-" and os.path.isfile(src) and not _starts_as_ecdc(src) and A.readable(src):
        raise NotEcdcError(f"{src} is audio, not an .ecdc file: did you mean compress_file?",
                           cli=f"{src} is audio, not an .ecdc file: did you mean `ecdc compress`?")


@contextlib.contextmanager
def _ecdc_input(src: str) -> tp.Iterator[tp.BinaryIO]:
    """.ecdc file `src` opened for reading ('-': stdin, left open). A file that does not
    begin as one is named, and audio is told apart."""
    if src != "-" and not os.path.exists(src):
        raise AudioError(f"{src} does not exist")
    if src != "-" and os.path.isdir(src):
        raise AudioError(f"{src} is a folder, not an .ecdc file")
    try:
        if src == "-":
            yield sys.stdin.buffer
            return
        with open(src, "rb") as f:
            yield f
    except NotEcdcError as e:
        _not_audio(src)
        raise NotEcdcError(f"{'stdin' if src == '-' else src} is {e}") from None


def decompress_file(src: str, dst: str, opts: DecompressOptions = DecompressOptions(),
                    force: bool = False, progress: Progress = None) -> Result:
    """Decompress .ecdc file `src` ('-': stdin) to audio `dst` in any format libsndfile writes,
    chosen by `opts.format` or the extension ('-': stdout, WAV unless `opts.format` says)."""
    if opts.bits is not None and opts.bits not in A.SUBTYPES:
        raise OptionError(f"unsupported bit depth {opts.bits}")
    _not_audio(src)  # before anything else: an audio input is the mistake to name
    not_the_input(src, dst)
    if dst == "-" and opts.format not in (None, "wav"):
        # formats that libsndfile cannot stream to a pipe: written to a temporary file, then copied
        with stdout_through_file("out." + opts.format) as path:
            return decompress_file(src, path, opts, progress=progress)
    fmt, subtype = (None, None) if dst == "-" else A.format_for(dst, opts.format)
    if fmt and subtype is None and opts.bits is not None:
        A.check_subtype(fmt, opts.bits, dst)

    def bits(h: Header) -> str:
        return opts.bits or A.output_bits(fmt, h.source_bits)

    with _ecdc_input(src) as fo:
        if dst == "-":
            out = sys.stdout.buffer
            return decompress_stream(fo, lambda r, c, n, h: WavPipeSink(out, r, c, bits(h), n),
                                     opts, progress)
        with atomic_path(dst, force) as tmp:
            result = decompress_stream(
                fo, lambda r, c, n, h: A.FileSink(tmp, r, c, bits(h), fmt, dst, subtype, h.tags), opts,
                progress)
            result.bytes_written = os.path.getsize(tmp)
        return result


def convert_file(src: str, dst: str, opts: ConvertOptions = ConvertOptions(), force: bool = False,
                 progress: Progress = None) -> Result:
    """Convert .ecdc file `src` ('-': stdin) to version 1 at `dst` ('-': stdout; with `force`,
    `dst` may be `src`). The new file is decoded and must give the same codes before it
    replaces or becomes `dst`."""
    if dst == "-":  # checked in a file before any of it goes out
        with stdout_through_file("out.ecdc") as path:
            return convert_file(src, path, opts, True, progress)
    with _ecdc_input(src) as fi, atomic_path(dst, force) as tmp:  # in place: with -f (--in-place sets it)
        with open(tmp, "wb") as f:
            try:
                result, digest = convert_stream(fi, f, opts, progress)
            except (TruncatedError, CorruptError) as e:
                if opts.salvage:
                    raise
                raise with_salvage_hint(e, "keeps what comes before it") from None
            result.bytes_written = f.tell()
        with open(tmp, "rb") as f:
            if codes_digest(f, opts) != digest:
                raise FormatError(f"the converted file does not decode to the codes of {src}; "
                                  f"nothing was written")
    return result


# ---------------------------------------------------------------- codes

Codes = tp.Union[np.ndarray, tp.List[tp.Tuple[np.ndarray, float]]]


def read_codes(path: tp.Union[str, os.PathLike, tp.BinaryIO], opts: DecompressOptions = DecompressOptions()
               ) -> tp.Tuple[Codes, Header]:
    """The codes of an .ecdc file (version 1, or 0: Meta's encodec) and its header.

    24 kHz: a [codebooks, frames] uint16 array. 48 kHz: one (codes [codebooks, frames],
    scale) pair per 1 s segment. The header's lengths are filled in from the end record
    where the header could not hold them (a file written to a pipe, a live stream). No
    model is loaded, and torch is not imported, for raw files; LM-coded ones load the
    language model (`opts.lm_weights`).
    """
    with (open(path, "rb") if isinstance(path, (str, os.PathLike)) else contextlib.nullcontext(path)) as f:
        reader, decoded = read_packets(f, opts)
        packets = list(decoded)
    # a file written to a pipe, or a live stream, has its lengths in the end record only
    h = dataclasses.replace(reader.header, num_samples=reader.num_samples,
                            source_num_samples=reader.source_num_samples)
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
    with _ecdc_input(src) as fi:
        codes, h = read_codes(fi, opts)
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

def compress(wav: np.ndarray, sample_rate: int, opts: CompressOptions = CompressOptions()) -> bytes:
    """[frames, channels] (or [frames]) audio -> .ecdc bytes. Floats are in [-1, 1]; integer
    samples (int16, int32, uint8) are scaled to it."""
    buf = io.BytesIO()
    compress_stream(ArraySource(wav, sample_rate), buf, opts)
    return buf.getvalue()


def decompress(data: bytes, opts: DecompressOptions = DecompressOptions()) -> tp.Tuple[np.ndarray, int]:
    """.ecdc bytes -> ([frames, channels] float32 audio, sample rate)."""
    sinks: tp.List[tp.Tuple[ArraySink, int]] = []

    def open_sink(rate: int, channels: int, frames: tp.Optional[int], h: Header) -> ArraySink:
        sinks.append((ArraySink(channels), rate))
        return sinks[-1][0]

    try:
        fo = io.BytesIO(data)
    except TypeError:
        raise FormatError(f"data must be the bytes of an .ecdc file, not {type(data).__name__}") from None
    decompress_stream(fo, open_sink, opts)
    sink, rate = sinks[0]
    return sink.samples(), rate
