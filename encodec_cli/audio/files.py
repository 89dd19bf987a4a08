"""Audio in and out, block by block: files through libsndfile, pipes as streamed WAV.

libsndfile can neither read a WAV from a pipe without knowing its length nor write one to
a pipe, so pipes use the small WAV reader and writer below; other formats on stdin are
spooled to a temporary file first (on disk, so memory stays flat).
"""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
import typing as tp

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError

BLOCK = 1 << 15  # frames per read
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}


class Source(tp.Protocol):
    sample_rate: int
    channels: int
    frames: tp.Optional[int]

    def blocks(self) -> tp.Iterator[np.ndarray]: ...   # [n, channels] float32

    def close(self) -> None: ...


TAGS = ("title", "artist", "album", "date", "genre", "tracknumber", "comment", "copyright",
        "license", "software")


def source_bits(subtype: str) -> str:
    """The output bit depth that keeps an input's precision: '24', 'float' or '16'."""
    if subtype == "PCM_24":
        return "24"
    if subtype in ("PCM_32", "FLOAT", "DOUBLE"):
        return "float"
    return "16"


class FileSource:
    def __init__(self, path: str, spool: tp.Optional[str] = None):
        self._spool = spool
        try:
            self._f = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            self.close()
            msg = str(e).split(": ", 1)[-1] if isinstance(e, sf.LibsndfileError) else str(e)
            raise AudioError(f"cannot read audio from {'stdin' if spool else path}: {msg}") from None
        self.sample_rate, self.channels, self.frames = self._f.samplerate, self._f.channels, self._f.frames
        self.bits = source_bits(self._f.subtype)
        self.tags = tuple((k, v) for k in TAGS if (v := getattr(self._f, k, "")))

    def blocks(self) -> tp.Iterator[np.ndarray]:
        try:
            while True:
                data = self._f.read(BLOCK, dtype="float32", always_2d=True)
                if not len(data):
                    return
                yield data
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"cannot read audio: {e}") from None

    def close(self) -> None:
        if getattr(self, "_f", None) is not None:
            self._f.close()
        if self._spool:
            os.unlink(self._spool)
            self._spool = None


_WAV_FORMATS = {1: "int", 3: "float", 6: "alaw", 7: "ulaw"}


def _g711(kind: str) -> np.ndarray:
    """The 256 16-bit values of G.711 A-law or mu-law bytes, as libsndfile decodes them."""
    out = np.zeros(256, np.float32)
    for byte in range(256):
        if kind == "ulaw":
            u = ~byte & 0xFF
            exponent, mantissa = (u >> 4) & 7, u & 0x0F
            value = (((mantissa << 3) + 0x84) << exponent) - 0x84
            out[byte] = -value if u & 0x80 else value
        else:
            a = byte ^ 0x55
            exponent, mantissa = (a >> 4) & 7, a & 0x0F
            value = ((mantissa << 4) + 0x108) << (exponent - 1) if exponent else (mantissa << 4) + 8
            out[byte] = value if a & 0x80 else -value
    return out / 32768.0


class WavPipeSource:
    """WAV read front to back; a data size of 0 or 0xFFFFFFFF means 'until the end'."""

    def __init__(self, fo: tp.BinaryIO, head: bytes):
        self._fo = fo
        riff = head + self._read(12 - len(head))
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
            raise AudioError("cannot read audio from stdin: not a WAV stream")
        fmt = None
        while True:
            chunk = self._read(8)
            if len(chunk) < 8:
                raise AudioError("cannot read audio from stdin: WAV stream has no data chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = self._read(size + (size & 1))
                tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == 0xFFFE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]
                fmt = (_WAV_FORMATS.get(tag), channels, rate, bits, align)
            elif cid == b"data":
                self._remaining = None if size in (0, 0xFFFFFFFF) else size
                break
            else:
                self._read(size + (size & 1))
        if fmt is None or fmt[0] is None or fmt[1] < 1:
            raise AudioError("cannot read audio from stdin: unsupported WAV encoding")
        kind, self.channels, self.sample_rate, bits, self._align = fmt
        dtypes = {("int", 8): "u1", ("int", 16): "<i2", ("int", 24): None, ("int", 32): "<i4",
                  ("float", 32): "<f4", ("float", 64): "<f8", ("ulaw", 8): "u1", ("alaw", 8): "u1"}
        if (kind, bits) not in dtypes or self._align != self.channels * bits // 8:
            raise AudioError(f"cannot read audio from stdin: unsupported WAV ({kind}, {bits} bits)")
        self._kind, self._bits = kind, bits
        self.bits = "24" if (kind, bits) == ("int", 24) else "float" if kind == "float" or bits == 32 else "16"
        self.tags: tp.Tuple[tp.Tuple[str, str], ...] = ()
        self._dtype = dtypes[(kind, bits)]
        self._table = _g711(kind) if kind in ("ulaw", "alaw") else None
        self.frames = None if self._remaining is None else self._remaining // self._align

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self._fo.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def _convert(self, raw: bytes) -> np.ndarray:
        if self._bits == 24:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = (b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8
            x = v.astype(np.float32) / 8388608.0
        else:
            x = np.frombuffer(raw, self._dtype)
            if self._table is not None:
                x = self._table[x]
            elif self._kind == "float":
                x = x.astype(np.float32)
            elif self._bits == 8:
                x = (x.astype(np.float32) - 128.0) / 128.0
            else:
                x = x.astype(np.float32) / float(2 ** (self._bits - 1))
        return x.reshape(-1, self.channels)

    def blocks(self) -> tp.Iterator[np.ndarray]:
        leftover = b""
        while self._remaining is None or self._remaining > 0:
            want = BLOCK * self._align
            if self._remaining is not None:
                want = min(want, self._remaining)
            read = getattr(self._fo, "read1", self._fo.read)  # what has arrived, without waiting
            raw = read(want)
            if not raw:
                break
            if self._remaining is not None:
                self._remaining -= len(raw)
            raw = leftover + raw
            usable = len(raw) - len(raw) % self._align
            leftover = raw[usable:]
            if usable:
                yield self._convert(raw[:usable])

    def close(self) -> None:
        pass


def open_source(path: str) -> Source:
    """Open a path, or '-' for stdin."""
    if path != "-":
        if not os.path.exists(path):
            raise AudioError(f"{path} does not exist")
        if os.path.isdir(path):
            raise AudioError(f"{path} is a folder, not an audio file")
        return FileSource(path)
    stdin = sys.stdin.buffer
    head = stdin.read(4)
    if head in (b"RIFF", b"RF64"):
        return WavPipeSource(stdin, head)
    fd, spool = tempfile.mkstemp(prefix="ecdc-stdin-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            shutil.copyfileobj(stdin, f, 1 << 20)
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: the spool goes too
        os.unlink(spool)
        raise
    return FileSource(spool, spool=spool)


# ---------------------------------------------------------------- conversion

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
    if emitted < n:
        yield np.zeros((n - emitted, channels), np.float32)


# ---------------------------------------------------------------- output

class Sink(tp.Protocol):
    clipped: int

    def write(self, x: np.ndarray) -> None: ...   # [n, channels] float32

    def close(self) -> None: ...


def _clip(x: np.ndarray, sink) -> np.ndarray:
    over = ~(np.abs(x) <= 1.0)  # NaN counts as out of range too
    if over.any():
        sink.clipped += int(over.sum())
        x = np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0)
    return x


def output_bits(fmt: tp.Optional[str], source: tp.Optional[str]) -> str:
    """The original's bit depth where format `fmt` (None: a WAV stream) holds it, else 16."""
    keep = source or "16"
    return keep if fmt is None or sf.check_format(fmt, SUBTYPES[keep]) else "16"


def check_subtype(fmt: str, bits: str, name: str) -> None:
    if not sf.check_format(fmt, SUBTYPES[bits]):
        can = " or ".join(b for b in SUBTYPES if sf.check_format(fmt, SUBTYPES[b]))
        raise AudioError(f"cannot write {name}: {fmt} cannot hold {bits}{' bit' if bits != 'float' else ''} "
                         f"samples; use --bits {can}")


class FileSink:
    """Audio written through libsndfile; `name` is how errors call the file."""

    _ERRORS = (sf.LibsndfileError, RuntimeError, OSError, ValueError)

    def __init__(self, path: str, sample_rate: int, channels: int, bits: str, fmt: str,
                 name: tp.Optional[str] = None, subtype: tp.Optional[str] = None,
                 tags: tp.Sequence[tp.Tuple[str, str]] = ()):
        self.clipped = 0
        self._float = bits == "float" and subtype is None
        self._name = name or path
        if subtype is None:
            check_subtype(fmt, bits, self._name)
        elif subtype == "OPUS" and sample_rate not in OPUS_RATES:
            raise AudioError(f"cannot write {self._name}: Opus stores 8, 12, 16, 24 or 48 kHz, not "
                             f"{sample_rate} Hz; add --model-format to keep the model's rate")
        try:
            self._f = sf.SoundFile(path, "w", sample_rate, channels, subtype=subtype or SUBTYPES[bits],
                                   format=fmt)
        except self._ERRORS as e:
            raise AudioError(f"cannot write {self._name}: {_reason(e)}") from None
        for key, value in tags:
            try:
                setattr(self._f, key, value)
            except self._ERRORS:
                pass  # a format without that tag

    def write(self, x: np.ndarray) -> None:
        try:
            self._f.write(x if self._float else _clip(x, self))
        except self._ERRORS as e:  # a full disk, a vanished folder
            raise AudioError(f"cannot write {self._name}: {_reason(e)}") from None

    def close(self) -> None:
        try:
            self._f.close()
        except self._ERRORS as e:
            raise AudioError(f"cannot write {self._name}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """libsndfile says 'System error' for any failed write; the OS knows why."""
    import errno

    text = str(e).split(": ", 1)[-1] if isinstance(e, sf.LibsndfileError) else str(e)
    if getattr(e, "errno", None):
        return os.strerror(e.errno)
    if text.strip() == "System error.":
        return "the disk is full or the file cannot be written (" + os.strerror(errno.EIO) + ")"
    return text


class WavPipeSink:
    """WAV written front to back. With the length known its sizes are exact; otherwise they
    say 'unknown' (0xFFFFFFFF), as streaming tools write it, and readers take it to the end.
    The header goes out together with the first audio, so that a reader that sniffs the
    type from its first read (sox) sees both."""

    def __init__(self, fo: tp.BinaryIO, sample_rate: int, channels: int, bits: str,
                 frames: tp.Optional[int] = None):
        self.clipped = 0
        self._fo, self._bits, self._channels = fo, bits, channels
        tag, width = (3, 4) if bits == "float" else (1, int(bits) // 8)
        fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * channels * width,
                          channels * width, width * 8)
        size = None if frames is None else frames * channels * width
        riff = None if size is None else 4 + 8 + len(fmt) + 8 + size + (size & 1)
        if riff is not None and riff >= 0xFFFFFFFF:  # too long for a WAV header: 'unknown'
            size = riff = None
        riff = 0xFFFFFFFF if riff is None else riff
        self._pad = size is not None and size & 1
        self._head = (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt))
                      + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF if size is None else size))

    def write(self, x: np.ndarray) -> None:
        # integer conversion as libsndfile does it (float32 scaled to 32 bits, rounded, then
        # shifted), so pipes and files hold the same samples
        if self._bits == "float":
            data = x.astype("<f4").tobytes()
        else:
            shift = 32 - int(self._bits)
            v = np.rint(_clip(x, self).astype(np.float32) * np.float32(2147483647.0)).astype(np.int64) >> shift
            top = (1 << (int(self._bits) - 1)) - 1
            v = np.clip(v, -top - 1, top)
            if self._bits == "16":
                data = v.astype("<i2").tobytes()
            else:
                data = v.astype("<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        self._fo.write(self._head + data)
        self._head = b""
        self._fo.flush()

    def close(self) -> None:
        self._fo.write(self._head + (b"\0" if self._pad else b""))
        self._head = b""
        self._fo.flush()


# what decompress writes, by extension: libsndfile format, and the subtype of lossy formats
# (their bit depth is their own: --bits does not apply)
OUTPUT_FORMATS = {"wav": ("WAV", None), "flac": ("FLAC", None), "aiff": ("AIFF", None),
                  "aif": ("AIFF", None), "au": ("AU", None), "caf": ("CAF", None), "w64": ("W64", None),
                  "rf64": ("RF64", None), "ogg": ("OGG", "VORBIS"), "oga": ("OGG", "VORBIS"),
                  "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def format_for(path: str, name: tp.Optional[str] = None) -> tp.Tuple[str, tp.Optional[str]]:
    """(libsndfile format, fixed subtype or None) for an output: `name` (--format), else the
    path's extension."""
    key = (name or os.path.splitext(path)[1][1:]).lower()
    if key not in OUTPUT_FORMATS or not sf.check_format(OUTPUT_FORMATS[key][0]):
        known = ", ".join(k for k in OUTPUT_FORMATS if sf.check_format(OUTPUT_FORMATS[k][0]))
        raise AudioError(f"cannot write {path}: {'format ' + name if name else 'the extension'} is not "
                         f"one of {known}")
    return OUTPUT_FORMATS[key]
