"""Audio files through libsndfile (WAV, FLAC, OGG, Opus, ...), and opening any input:
a path, or stdin (a WAV stream read as it comes, other formats spooled to a temporary file
first, on disk, so memory stays flat)."""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
import typing as tp

import numpy as np
import soundfile as sf

from .. import interrupts
from ..errors import AudioError
from .blocks import BLOCK, Source, clip
from .pipes import WavPipeSource, unknown_size

SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}
TAGS = ("title", "artist", "album", "date", "genre", "tracknumber", "comment", "copyright",
        "license", "software")


def source_bits(subtype: str) -> str:
    """The output bit depth that keeps an input's precision: '24', 'float' or '16'."""
    if subtype == "PCM_24":
        return "24"
    if subtype in ("PCM_32", "FLOAT", "DOUBLE"):
        return "float"
    return "16"


def native(path: str) -> tp.Union[str, bytes]:
    """`path` as libsndfile should get it: its bytes where the name is not valid UTF-8
    (Python holds such names with surrogates, which soundfile cannot encode)."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


class FileSource:
    def __init__(self, path: str, spool: tp.Optional[str] = None):
        self._spool = spool
        try:
            self._f = sf.SoundFile(native(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            self.close()
            msg = str(e).split(": ", 1)[-1] if isinstance(e, sf.LibsndfileError) else str(e)
            raise AudioError(f"cannot read audio from {'stdin' if spool else path}: {msg}") from None
        self.sample_rate, self.channels, self.frames = self._f.samplerate, self._f.channels, self._f.frames
        if self._f.format == "WAV" and os.path.isfile(path):  # libsndfile counts what a cut file holds
            self.frames = max(self.frames, _wav_frames(path) or 0)
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


def _wav_frames(path: str) -> tp.Optional[int]:
    """The frames a WAV file's header promises (None: unknown, or not a plain RIFF WAV)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"RIFF" or not f.read(8)[4:] == b"WAVE":
                return None
            align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    body = f.read(size + (size & 1))
                    align = struct.unpack("<H", body[12:14])[0] if len(body) >= 14 else None
                elif cid == b"data":
                    return size // align if align and not unknown_size(size, align) else None
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def readable(path: str) -> bool:
    """Whether libsndfile reads `path` as audio."""
    try:
        sf.info(native(path))
        return True
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False


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
    spool = None
    try:
        with interrupts.deferred():  # no Ctrl-C between the file's creation and knowing its name
            fd, spool = tempfile.mkstemp(prefix="ecdc-stdin-")
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            shutil.copyfileobj(stdin, f, 1 << 20)
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: the spool goes too
        if spool is not None:
            os.unlink(spool)
        raise
    return FileSource(spool, spool=spool)


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
            self._f = sf.SoundFile(native(path), "w", sample_rate, channels, subtype=subtype or SUBTYPES[bits],
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
            self._f.write(x if self._float else clip(x, self))
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
    code = getattr(e, "errno", None)
    if code:
        return os.strerror(code)
    if text.strip() == "System error.":
        return "the disk is full or the file cannot be written (" + os.strerror(errno.EIO) + ")"
    return text


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
    key = (name or os.path.splitext(path)[1][1:] or "wav").lower()  # no extension: WAV
    if key not in OUTPUT_FORMATS or not sf.check_format(OUTPUT_FORMATS[key][0]):
        known = ", ".join(k for k in OUTPUT_FORMATS if sf.check_format(OUTPUT_FORMATS[k][0]))
        raise AudioError(f"cannot write {path}: {'format ' + name if name else 'the extension'} is not "
                         f"one of {known}")
    return OUTPUT_FORMATS[key]
