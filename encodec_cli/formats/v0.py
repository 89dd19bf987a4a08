"""Version 0: the .ecdc files of Meta's `encodec` 0.1.1 (formats/ecdc-v0.md). Imports no torch.

A file is `ECDC`, a version byte (0), the size of a JSON object (`m` model, `al` length in
samples at the model's rate, `nc` codebooks, `lm` LM-coded or not), then per segment (the
48 kHz model's 1 s segments, or the whole 24 kHz stream): the scale (48 kHz), then its codes,
frame by frame, either 10 bits each, least significant bit first, or arithmetic coded with
the reference's float language model. There is no checksum and no length of coded data.

The reader yields the codes as version-1 packets (container.Packet) of about 8 s, so the
rest of ecdc treats both versions alike. LM-coded files need `lm` (v0lm.FloatLM), which
reproduces the reference's float arithmetic: they decode only where it rounds as it did
on the machine that wrote them.
"""
from __future__ import annotations

import json
import math
import struct
import typing as tp
from dataclasses import dataclass

import numpy as np

from ..formats import v1 as F
from ..errors import CorruptError, FormatError, TruncatedError
from ..specs import SPECS, ModelSpec

_HEAD = struct.Struct("!4sBI")   # magic, version, size of the JSON metadata
_SCALE = struct.Struct("!f")
CODE_BITS = 10
RANGE_BITS = 24                  # the reference coder's total_range_bits
PACKET_SECONDS = 8.0             # as version 1 writes them
MAX_METADATA = 1 << 16


@dataclass(frozen=True)
class Metadata:
    model: str          # 'encodec_24khz' or 'encodec_48khz'
    audio_length: int   # samples at the model's rate
    n_codebooks: int
    lm: bool


def read_metadata(inp: F._Input, head: bytes = b"") -> Metadata:
    data = head + inp.read_exactly(_HEAD.size - len(head), "the version-0 header", 0)
    magic, version, size = _HEAD.unpack(data)
    if magic != F.V0_MAGIC:
        raise FormatError("not a version-0 .ecdc file")
    if version != 0:
        raise FormatError(f"unsupported version {version} of Meta's encodec format (ecdc reads version 0)")
    if size > MAX_METADATA:
        raise CorruptError(f"corrupted version-0 file: metadata of {size} bytes")
    try:
        meta = json.loads(inp.read_exactly(size, "the version-0 metadata").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptError("corrupted version-0 file: its metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CorruptError("corrupted version-0 file: its metadata is not a JSON object")
    model, length, nc, lm = (meta.get(k) for k in ("m", "al", "nc", "lm"))
    if model not in SPECS:
        raise FormatError(f"version-0 file of unknown model {model!r}")
    spec = SPECS[model]
    allowed = {spec.codebooks_for(b) for b in spec.bandwidths}
    if type(length) is not int or length < 0 or type(nc) is not int or nc not in allowed \
            or type(lm) is not bool:
        raise CorruptError(f"corrupted version-0 file: metadata {meta} out of range for {model}")
    return Metadata(model, length, nc, lm)


def segments(spec: ModelSpec, length: int) -> tp.Iterator[int]:
    """Frames per segment of a file of `length` samples, as the encoder wrote them.

    The reference's decoder counts ceil(n / rate * frame_rate) in floats, which is one
    too many for some lengths (6720 samples, ...): it then runs off its own files. The
    encoder's count is ceil(n / hop).
    """
    if length == 0:
        return
    size = spec.segment_length or length
    stride = spec.segment_stride or length
    for offset in range(0, length, stride):
        yield -(-min(length - offset, size) // spec.hop_length)


def _summary(spec: ModelSpec, length: int, per_segment: tp.Callable[[int], int]
             ) -> tp.Tuple[int, int, int]:
    """(segments, frames, sum of per_segment(frames)) without a loop over every segment
    (a crafted length must not cost time): all segments but the last two are full."""
    if length == 0:
        return 0, 0, 0
    size = spec.segment_length or length
    stride = spec.segment_stride or length
    count = -(-length // stride)
    full = max(0, min(count, (length - size) // stride + 1))
    frames = -(-size // spec.hop_length)
    tail = [-(-min(length - i * stride, size) // spec.hop_length) for i in range(full, count)]
    return count, full * frames + sum(tail), full * per_segment(frames) + sum(map(per_segment, tail))


def header(meta: Metadata) -> F.Header:
    """The version-1 header that describes a version-0 file: the original's rate, channels
    and weights were not recorded (the model's rate and channels stand for them)."""
    spec = SPECS[meta.model]
    kbps = meta.n_codebooks * spec.frame_rate * CODE_BITS / 1000
    return F.Header(meta.model, "lm" if meta.lm else "raw", meta.n_codebooks, kbps, spec.sample_rate,
                    spec.channels, spec.sample_rate, spec.channels, meta.audio_length,
                    meta.audio_length, bytes(8), bytes(8), version=0)


def unpack_lsb(data: bytes, n: int) -> np.ndarray:
    """n 10-bit values packed least significant bit first (the reference's BitPacker)."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:n * CODE_BITS]
    weights = (1 << np.arange(CODE_BITS)).astype(np.uint16)
    return (bits.reshape(n, CODE_BITS).astype(np.uint16) @ weights).astype(np.uint16)


class ArithmeticDecoder:
    """The reference's 24-bit arithmetic decoder, in exact integers.

    The reference computes interval ends as ceil/floor(cdf * (delta / 2**24)) in floats;
    with delta below 2**25 and cdf values below 2**25 those products are exact, so integer
    arithmetic gives the same intervals. Bits are read one at a time, least significant
    bit of each byte first.
    """

    def __init__(self, inp: F._Input, what: str, why: str):
        self.inp, self.what, self.why = inp, what, why
        self.low = self.high = self.current = 0
        self.max_bit = -1
        self._byte = self._left = 0

    def _bit(self) -> int:
        if not self._left:
            b = self.inp.fo.read(1)
            if not b:
                raise TruncatedError(f"{self.what} ends before its last frame at byte {self.inp.pos}: "
                                     f"{self.why}")
            self.inp.pos += 1
            self._byte, self._left = b[0], 8
        bit = self._byte & 1
        self._byte >>= 1
        self._left -= 1
        return bit

    def pull(self, cdf: np.ndarray) -> int:
        """The next symbol under the quantized CDF `cdf` (int64, the reference's)."""
        while self.high - self.low + 1 < 1 << RANGE_BITS:
            self.low *= 2
            self.high = self.high * 2 + 1
            self.current = self.current * 2 + self._bit()
            self.max_bit += 1
        delta = self.high - self.low + 1
        rel = self.current - self.low
        lows = -((np.concatenate([[0], cdf[:-1]]) * -delta) >> RANGE_BITS)  # ceil(cdf[s-1] * delta / 2**24)
        s = int(np.searchsorted(lows, rel, side="right")) - 1
        if s < 0 or rel > ((int(cdf[s]) - 1) * delta) >> RANGE_BITS:
            raise CorruptError(f"{self.what} cannot be decoded at byte {self.inp.pos}: {self.why}")
        self.high = self.low + (((int(cdf[s]) - 1) * delta) >> RANGE_BITS)
        self.low += int(lows[s])
        while self.max_bit >= 0:  # drop the leading bits that low and high share
            b = self.low >> self.max_bit
            if b != self.high >> self.max_bit:
                break
            self.low -= b << self.max_bit
            self.high -= b << self.max_bit
            self.current -= b << self.max_bit
            self.max_bit -= 1
        return s


class V0Reader:
    """Iterates over a version-0 file's codes as container packets (codes decoded).

    For an LM-coded file, set `lm` first: an object whose `start(n_q)` gives a state with
    `cdfs()` (the reference's quantized CDFs of the next frame, [n_q, 1024] int64) and
    `push(codes)`.
    """
    version = 0

    def __init__(self, fo: tp.BinaryIO, head: bytes = b""):
        self._in = F._Input(fo)
        self._in.pos = len(head)
        self.meta = read_metadata(self._in, head)
        self.header = header(self.meta)
        self.spec = SPECS[self.meta.model]
        self.end: tp.Optional[F.End] = None
        self.skip_before = 0  # version 0 has no index: earlier packets are decoded (and dropped)
        self.stop_at: tp.Optional[int] = None  # the packets from this frame on are not wanted
        self.lm = None
        self.why = "a truncated or damaged file"  # what errors say could be the cause

    @property
    def num_samples(self) -> int:
        return self.meta.audio_length

    source_num_samples = num_samples

    def __iter__(self) -> tp.Iterator[F.Packet]:
        meta, spec, inp = self.meta, self.spec, self._in
        if meta.lm and self.lm is None:
            raise FormatError("an LM-coded version-0 file needs its language model")
        limit = PACKET_SECONDS * spec.frame_rate
        codes: tp.List[np.ndarray] = []
        segs: tp.List[F.Segment] = []
        frames = packets = 0
        pending = 0

        def packet() -> F.Packet:
            all_codes = np.concatenate(codes)
            return F.Packet(all_codes, tuple(segs), 0, b"", 0, frames - len(all_codes), packets + 1)

        for i, n in enumerate(segments(spec, meta.audio_length)):
            scale = 1.0
            if spec.normalize:
                (scale,) = _SCALE.unpack(inp.read_exactly(_SCALE.size, f"segment {i + 1}'s scale"))
                if not (math.isfinite(scale) and scale > 0):
                    raise CorruptError(f"corrupted version-0 file: segment {i + 1} has scale {scale} "
                                       f"(byte {inp.pos - _SCALE.size})")
            parts = self._lm_codes(n, i) if meta.lm else self._raw_codes(n, int(limit), i)
            for part in parts:
                codes.append(part)
                frames += len(part)
                pending += len(part)
                if spec.causal:
                    segs = [(pending, 1.0)]
                if pending >= limit and spec.causal:
                    yield packet()
                    packets += 1
                    codes, pending = [], 0
                    if self.stop_at is not None and frames >= self.stop_at:
                        return
            if not spec.causal:
                segs.append((n, scale))
                if pending >= limit:
                    yield packet()
                    packets += 1
                    codes, segs, pending = [], [], 0
                    if self.stop_at is not None and frames >= self.stop_at:
                        return
        if codes:
            yield packet()
            packets += 1
        if inp.fo.read(1):
            raise FormatError(f"unexpected data after the last frame at byte {inp.pos}: {self.why}")
        self.end = F.End(frames, meta.audio_length, meta.audio_length, packets)

    def _raw_codes(self, n: int, chunk: int, i: int) -> tp.Iterator[np.ndarray]:
        """A segment's n frames of 10-bit codes, in chunks whose ends fall on byte boundaries."""
        k = self.meta.n_codebooks
        done = 0
        while done < n:
            m = min(chunk, n - done)  # chunk * k * 10 bits is whole bytes
            data = self._in.read_exactly(-(-m * k * CODE_BITS // 8), f"segment {i + 1}'s codes")
            yield unpack_lsb(data, m * k).reshape(m, k)
            done += m

    def _lm_codes(self, n: int, i: int) -> tp.Iterator[np.ndarray]:
        k = self.meta.n_codebooks
        decoder = ArithmeticDecoder(self._in, f"the LM-coded data of segment {i + 1}", self.why)
        state = self.lm.start(k)
        chunk = int(PACKET_SECONDS * self.spec.frame_rate)
        out = np.zeros((min(n, chunk), k), np.uint16)
        row = 0
        for _ in range(n):
            cdfs = state.cdfs()
            out[row] = [decoder.pull(cdf) for cdf in cdfs]
            state.push(out[row])
            row += 1
            if row == len(out):
                yield out.copy()
                row = 0
        if row:
            yield out[:row].copy()


def describe(fo: tp.BinaryIO, head: bytes = b"") -> tp.Tuple[F.Header, F.End, int]:
    """Header, end and size of a version-0 file, without decoding it. Raw files are checked
    to hold exactly their codes; LM-coded ones cannot be checked without decoding."""
    inp = F._Input(fo)
    inp.pos = len(head)
    meta = read_metadata(inp, head)
    spec = SPECS[meta.model]
    scale = _SCALE.size if spec.normalize else 0
    count, frames, coded = _summary(spec, meta.audio_length,
                                    lambda n: scale + -(-n * meta.n_codebooks * CODE_BITS // 8))
    size = inp.pos + sum(len(block) for block in iter(lambda: fo.read(1 << 20), b""))
    if not meta.lm:
        expected = inp.pos + coded
        if size < expected:
            raise TruncatedError(f"truncated file: {size} bytes, its codes need {expected}")
        if size > expected:
            raise FormatError(f"unexpected data after the last frame at byte {expected}")
    return header(meta), F.End(frames, meta.audio_length, meta.audio_length, count), size
