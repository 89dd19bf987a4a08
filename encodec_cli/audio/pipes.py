"""WAV streams on pipes, read and written front to back: libsndfile can neither read a WAV
from a pipe without knowing its length nor write one to a pipe."""
from __future__ import annotations

import struct
import typing as tp

import numpy as np

from ..errors import AudioError
from .blocks import BLOCK, clip

_WAV_FORMATS = {1: "int", 3: "float", 6: "alaw", 7: "ulaw"}
# data sizes that tools writing to a pipe put where the length belongs: sox writes
# 0x7ffff000, others 0, 0x7fffffff or 0xffffffff; some round these down to whole frames
_PLACEHOLDERS = (0x7FFF_F000, 0x7FFF_FFFF, 0xFFFF_F000, 0xFFFF_FFFF)


def unknown_size(size: int, align: int) -> bool:
    """Whether a WAV data size is a placeholder for 'length unknown' rather than a length."""
    return size == 0 or any(size in (p, p - p % align) for p in _PLACEHOLDERS)


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
    """WAV read front to back; a placeholder data size (`unknown_size`) means 'until the end'."""

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
                self._remaining = None if unknown_size(size, fmt[4] if fmt and fmt[4] else 1) else size
                break
            else:
                self._read(size + (size & 1))
        if fmt is None or fmt[0] is None or fmt[1] < 1:
            raise AudioError("cannot read audio from stdin: unsupported WAV encoding")
        kind: str = fmt[0]
        _, self.channels, self.sample_rate, bits, self._align = fmt
        dtypes: tp.Dict[tp.Tuple[str, int], tp.Optional[str]] = {
            ("int", 8): "u1", ("int", 16): "<i2", ("int", 24): None, ("int", 32): "<i4",
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
            v = np.rint(clip(x, self).astype(np.float32) * np.float32(2147483647.0)).astype(np.int64) >> shift
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
