"""The Python API: compress/decompress between audio and .ecdc, streamed.

Pairs: `compress_file`/`decompress_file` (paths, '-' for stdin/stdout) and
`compress`/`decompress` (arrays and bytes in memory); the tokenizer's `encode`/`decode`
(arrays and `Codes` in memory), `encode_file`, `read_codes`, `load_codes`, `codes_file`;
`convert_file` for what is already coded. The work is done in pipeline.py and tokens.py.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import typing as tp

import numpy as np

from . import tokens as T
from .audio import files as A
from .audio.arrays import ArraySink, ArraySource
from .audio.pipes import WavPipeSink
from .codes import Codes, CodesError, to_npz_bytes
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
from .options import MODELS, CodesOptions, CompressOptions, ConvertOptions, DecompressOptions, Progress, Result
from .outputs import atomic_path, not_the_input, stdout_through_file
from .pipeline import compress_stream, decompress_stream

__all__ = ["MODELS", "CompressOptions", "DecompressOptions", "ConvertOptions", "CodesOptions", "Result",
           "Progress", "Codes", "encode", "decode", "encode_file", "read_codes", "load_codes", "compress_file",
           "decompress_file", "compress", "decompress", "convert_file", "codes_file", "compress_stream",
           "decompress_stream", "convert_stream"]


# ---------------------------------------------------------------- files

def compress_file(src: str, dst: str, opts: CompressOptions = CompressOptions(),
                  force: bool = False, progress: Progress = None) -> Result:
    """Compress audio file `src` ('-': stdin) to `dst` ('-': stdout). An .npz of codes
    (`codes.Codes`) is packed as it is, without the encoder: its model and bandwidth are
    its own, and `opts` says the coder."""
    if _is_codes(src):
        return _pack_file(src, dst, opts, force, progress)
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


def _pack_file(src: str, dst: str, opts: CompressOptions, force: bool, progress: Progress) -> Result:
    not_the_input(src, dst)
    codes = load_codes(src)
    if dst == "-":
        result = T.pack_stream(codes, sys.stdout.buffer, opts, progress)
        sys.stdout.buffer.flush()
        return result
    with atomic_path(dst, force) as tmp, open(tmp, "wb") as f:
        result = T.pack_stream(codes, f, opts, progress)
        result.bytes_written = f.tell()
    return result


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


@contextlib.contextmanager
def _codes_input(src: str, opts: DecompressOptions) -> tp.Iterator[tp.BinaryIO]:
    """An .npz of codes as the raw .ecdc stream that decodes it."""
    yield _packed(load_codes(src), opts)


def _packed(codes: Codes, opts: DecompressOptions) -> io.BytesIO:
    buf = io.BytesIO()
    T.pack_stream(codes, buf, T.raw_options(codes, opts))
    buf.seek(0)
    return buf


def decompress_file(src: str, dst: str, opts: DecompressOptions = DecompressOptions(),
                    force: bool = False, progress: Progress = None) -> Result:
    """Decompress .ecdc file `src` ('-': stdin) to audio `dst` in any format libsndfile writes,
    chosen by `opts.format` or the extension ('-': stdout, WAV unless `opts.format` says).
    `src` may be an .npz of codes (`codes.Codes`), decoded as the .ecdc file they came from;
    or a Parquet shard of `ecdc codes --parquet`, whose rows become files under folder `dst`."""
    if src.lower().endswith(".parquet"):
        return _decompress_shard(src, dst, opts, force, progress)
    if opts.bits is not None and opts.bits not in A.SUBTYPES:
        raise OptionError(f"unsupported bit depth {opts.bits}")
    _not_audio(src)  # before anything else: an audio input is the mistake to name
    not_the_input(src, dst)
    return _decompress(lambda: _codes_input(src, opts) if _is_codes(src) else _ecdc_input(src), dst, opts,
                       force, progress)


def _decompress(opened: tp.Callable[[], tp.ContextManager[tp.BinaryIO]], dst: str, opts: DecompressOptions,
                force: bool, progress: Progress) -> Result:
    if dst == "-" and opts.format not in (None, "wav"):
        # formats that libsndfile cannot stream to a pipe: written to a temporary file, then copied
        with stdout_through_file("out." + opts.format) as path:
            return _decompress(opened, path, opts, False, progress)
    fmt, subtype = (None, None) if dst == "-" else A.format_for(dst, opts.format)
    if fmt and subtype is None and opts.bits is not None:
        A.check_subtype(fmt, opts.bits, dst)

    def bits(h: Header) -> str:
        return opts.bits or A.output_bits(fmt, h.source_bits)

    with opened() as fo:
        if dst == "-":
            out = sys.stdout.buffer
            return decompress_stream(fo, lambda r, c, n, h: WavPipeSink(out, r, c, bits(h), n),
                                     opts, progress)
        assert fmt is not None  # a file's format: given, or by its extension
        file_format = fmt
        with atomic_path(dst, force) as tmp:
            result = decompress_stream(
                fo, lambda r, c, n, h: A.FileSink(tmp, r, c, bits(h), file_format, dst, subtype, h.tags), opts,
                progress)
            result.bytes_written = os.path.getsize(tmp)
        return result


def _decompress_shard(src: str, folder: str, opts: DecompressOptions, force: bool, progress: Progress) -> Result:
    """Each row of Parquet shard `src` to an audio file under `folder`, named by its path."""
    from .shards import decompress_rows

    if folder == "-":
        raise OptionError("a shard's rows are files: give a folder with -o, not stdout")

    def write(codes: Codes, out: str) -> None:
        _decompress(lambda: contextlib.nullcontext(_packed(codes, opts)), out, opts, force, None)

    seconds = decompress_rows(src, folder, write, "." + (opts.format or "wav"), progress)
    return Result(seconds=seconds)


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

def read_codes(path: tp.Union[str, os.PathLike, tp.BinaryIO], opts: DecompressOptions = DecompressOptions()
               ) -> Codes:
    """The codes of an .ecdc file (version 1, a live stream, or 0: Meta's encodec).

    Lengths that only the end record holds (a file written to a pipe, a live stream) are
    filled in. No model is loaded, and torch is not imported, for raw files; LM-coded
    ones load the language model (`opts.lm_weights`).
    """
    with (open(path, "rb") if isinstance(path, (str, os.PathLike)) else contextlib.nullcontext(path)) as f:
        return T.read_stream(f, opts)


def encode_file(src: str, opts: CompressOptions = CompressOptions(), progress: Progress = None) -> Codes:
    """The codes of audio file `src` ('-': stdin), those that `compress_file` would store."""
    source = A.open_source(src)
    try:
        return T.encode_source(source, opts, progress)[0]
    finally:
        source.close()


def codes_of(src: str, opts: CodesOptions = CodesOptions(), progress: Progress = None
             ) -> tp.Tuple[Codes, Result]:
    """The codes of `src`: an .ecdc file read, or audio encoded as `opts` says; and the
    notes of its reading."""
    if src != "-" and os.path.isfile(src) and not _starts_as_ecdc(src):
        source = A.open_source(src)
        try:
            return T.encode_source(source, opts.encoding(), progress)
        finally:
            source.close()
    with _ecdc_input(src) as fi:
        codes = T.read_stream(fi, opts.decoding())
    if progress:
        progress(codes.duration)
    return codes, Result(seconds=codes.duration)


def codes_file(src: str, dst: str, opts: CodesOptions = CodesOptions(), force: bool = False,
               progress: Progress = None) -> Result:
    """Write the codes of `src` (an .ecdc file, or audio: encoded as `opts` says) to `dst`
    ('-': stdout) as .npz, in the layout of `codes.Codes.save`."""
    codes, result = codes_of(src, opts, progress)
    data = to_npz_bytes(codes)
    if dst == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return result
    with atomic_path(dst, force) as tmp, open(tmp, "wb") as f:
        f.write(data)
    result.bytes_written = len(data)
    return result


def load_codes(src: str) -> Codes:
    """Codes from an .npz file (the layout of `codes.Codes`); errors name the file."""
    try:
        if src == "-":
            return Codes.load(io.BytesIO(sys.stdin.buffer.read()))
        if not os.path.isfile(src):
            raise AudioError(f"{src} does not exist" if not os.path.exists(src) else f"{src} is not a file")
        return Codes.load(src)
    except CodesError as e:
        raise CodesError(f"{'stdin' if src == '-' else src}: {e}") from None


def _is_codes(src: str) -> bool:
    return src.lower().endswith(".npz")


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


Audio = tp.Any  # a [frames] or [frames, channels] array, or a torch tensor [channels, frames] or [frames]


def encode(audio: tp.Union[Audio, tp.Sequence[Audio]], sample_rate: int, opts: CompressOptions = CompressOptions()
           ) -> tp.Union[Codes, tp.List[Codes]]:
    """The codes of one clip, or of each clip of a list (all at `sample_rate`): resampled and
    mixed as `compress` does, and the codes that it would store. NumPy arrays are [frames]
    or [frames, channels] (as soundfile reads them); torch tensors [channels, frames] (as
    torchaudio loads them) or [frames]."""
    if isinstance(audio, (list, tuple)):
        return [tp.cast(Codes, encode(clip, sample_rate, opts)) for clip in audio]
    if type(audio).__module__.startswith("torch") and hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
        audio = audio.T if audio.ndim == 2 else audio
    return T.encode_source(ArraySource(audio, sample_rate), opts)[0]


def decode(codes: tp.Union[Codes, tp.Sequence[Codes]], opts: DecompressOptions = DecompressOptions()
           ) -> tp.Union[tp.Tuple[np.ndarray, int], tp.List[tp.Tuple[np.ndarray, int]]]:
    """([frames, channels] float32 audio, rate) of `codes` (or of each of a list): at the
    original's rate, channels and length as the codes record them (`opts.model_format`: the
    model's), exactly as `decompress` gives them from the .ecdc file of the same codes."""
    if isinstance(codes, (list, tuple)):
        return [tp.cast(tp.Tuple[np.ndarray, int], decode(c, opts)) for c in codes]
    if not isinstance(codes, Codes):
        raise CodesError(f"decode takes Codes (encodec_cli.codes.Codes), not {type(codes).__name__}")
    return decompress(_packed(codes, opts).getvalue(), opts)
