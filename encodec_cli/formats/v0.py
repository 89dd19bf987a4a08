"""Version 0: the .ecdc files of Meta's `encodec` 0.1.1 (formats/ecdc-v0.md). Imports no torch.

A file is `ECDC`, a version byte (0), the size of a JSON object (`m` model, `al` length in
samples at the model's rate, `nc` codebooks, `lm` LM-coded or not), then per segment (the
48 kHz model's 1 s segments, or the whole 24 kHz stream): the scale (48 kHz), then its codes,
frame by frame, either 10 bits each, least significant bit first, or arithmetic coded with
the reference's float language model. There is no checksum and no length of coded data.

The reader yields the codes as packets (records.Packet) of about 8 s, so the rest of ecdc
treats both versions alike. LM-coded files need a `CdfModel` (entropy.reference_lm), which
reproduces the reference's float arithmetic: they decode only where it rounds as it did
on the machine that wrote them.
"""
from __future__ import annotations

import json
import math
import struct
import typing as tp

import numpy as np

from ..errors import CorruptError, FormatError, TruncatedError
from ..specs import SPECS, ModelSpec
from .records import ALL_FRAMES, CODE_BITS, PACKET_SECONDS, End, Frames, Header, Input, Packet, packetize

MAGIC = b"ECDC"                  # how the files of Meta's encodec begin
_HEAD = struct.Struct("!4sBI")   # magic, version, size of the JSON metadata
_SCALE = struct.Struct("!f")
RANGE_BITS = 24                  # the reference coder's total_range_bits
MAX_METADATA = 1 << 16
DAMAGED = "a truncated or damaged file"  # what errors say could be the cause, unless told more


class CdfStream(tp.Protocol):
    def cdfs(self) -> np.ndarray: ...            # the next frame's quantized CDFs, [n_q, 1024] int64

    def push(self, codes: np.ndarray) -> None: ...  # the codes [n_q] of the frame just decoded


class CdfModel(tp.Protocol):
    """What decodes an LM-coded version-0 file: the reference's float LM (entropy.reference_lm)."""

    def start(self, n_q: int) -> CdfStream: ...


def read_header(inp: Input, head: bytes = b"") -> Header:
    """The version-1 header that describes a version-0 file (`version` 0); `head`: its first
    bytes, already read. The original's rate, channels and weights were not recorded: the
    model's rate and channels stand for them."""
    data = head + inp.read_exactly(_HEAD.size - len(head), "the version-0 header", 0)
    magic, version, size = _HEAD.unpack(data)
    if magic != MAGIC:
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
    return Header(model=model, coder="lm" if lm else "raw", n_codebooks=nc,
                  bandwidth=nc * spec.frame_rate * CODE_BITS / 1000, sample_rate=spec.sample_rate,
                  channels=spec.channels, source_sample_rate=spec.sample_rate, source_channels=spec.channels,
                  num_samples=length, source_num_samples=length, weights_fingerprint=bytes(8), version=0)


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


def frame_count(spec: ModelSpec, length: int) -> int:
    """sum(segments(spec, length)), in O(1)."""
    return _summary(spec, length, lambda frames: 0)[1]


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

    def __init__(self, inp: Input, what: str, why: str):
        self.inp, self.what, self.why = inp, what, why
        self.low = self.high = self.current = 0
        self.max_bit = -1
        self._byte = self._left = 0

    def _bit(self) -> int:
        if not self._left:
            b = self.inp.read(1)
            if not b:
                raise TruncatedError(f"{self.what} ends before its last frame at byte {self.inp.pos}: "
                                     f"{self.why}")
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


class Reader:
    """Iterates over the codes of a version-0 file whose header `inp` has just read, as
    packets of about 8 s (codes decoded); `end` is set once read.

    LM-coded files need `lm`; `why` is what errors give as the likely cause. Version 0 has
    no index: the packets before `frames.first` are decoded too; from `frames.stop` on,
    none is read.
    """

    def __init__(self, inp: Input, header: Header, frames: Frames = ALL_FRAMES,
                 lm: tp.Optional[CdfModel] = None, why: str = DAMAGED):
        if header.coder == "lm" and lm is None:
            raise FormatError("an LM-coded version-0 file needs its language model")
        self._in, self.header, self.frames, self.lm, self.why = inp, header, frames, lm, why
        self.spec = SPECS[header.model]
        self.end: tp.Optional[End] = None
        self._n = _length(header)

    @property
    def num_samples(self) -> int:
        return self._n

    source_num_samples = num_samples

    @property
    def position(self) -> int:
        """Bytes read so far."""
        return self._in.pos

    def __iter__(self) -> tp.Iterator[Packet]:
        spec, stop = self.spec, self.frames.stop
        frames = packets = 0
        for codes, segs in packetize(self._segments(), spec.causal, spec.frame_rate):
            packets += 1
            yield Packet(codes=codes, segments=segs, start=frames, index=packets)
            frames += len(codes)
            if stop is not None and frames >= stop:
                return
        if self._in.read(1):
            raise FormatError(f"unexpected data after the last frame at byte {self._in.pos - 1}: {self.why}")
        self.end = End(frames, self._n, self._n, packets)

    def _segments(self) -> tp.Iterator[tp.Tuple[np.ndarray, float]]:
        """(codes, scale) as read: the 24 kHz stream in pieces of at most a packet, the
        48 kHz model one whole segment at a time."""
        inp, spec = self._in, self.spec
        chunk = packet_frames(spec)
        for i, n in enumerate(segments(spec, self._n)):
            scale = 1.0
            if spec.normalize:  # in an LM-coded file, a bad scale is where an earlier segment went wrong
                cause = f": {self.why}" if self.header.coder == "lm" else ""
                try:
                    (scale,) = _SCALE.unpack(inp.read_exactly(_SCALE.size, f"segment {i + 1}'s scale"))
                except TruncatedError as e:
                    raise TruncatedError(f"{e}{cause}") from None
                if not (math.isfinite(scale) and scale > 0):
                    raise CorruptError(f"corrupted version-0 file: segment {i + 1} has scale {scale} "
                                       f"(byte {inp.pos - _SCALE.size}){cause}")
            parts = self._lm_codes(n, chunk, i) if self.header.coder == "lm" else self._raw_codes(n, chunk, i)
            if spec.causal:
                yield from ((part, scale) for part in parts)
            else:
                yield np.concatenate(list(parts)), scale

    def _raw_codes(self, n: int, chunk: int, i: int) -> tp.Iterator[np.ndarray]:
        """A segment's n frames of 10-bit codes, in chunks whose ends fall on byte boundaries."""
        k = self.header.n_codebooks
        done = 0
        while done < n:
            m = min(chunk, n - done)  # chunk * k * 10 bits is whole bytes
            data = self._in.read_exactly(-(-m * k * CODE_BITS // 8), f"segment {i + 1}'s codes")
            yield unpack_lsb(data, m * k).reshape(m, k)
            done += m

    def _lm_codes(self, n: int, chunk: int, i: int) -> tp.Iterator[np.ndarray]:
        k = self.header.n_codebooks
        decoder = ArithmeticDecoder(self._in, f"the LM-coded data of segment {i + 1}", self.why)
        assert self.lm is not None  # checked when opened
        state = self.lm.start(k)
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


def packet_frames(spec: ModelSpec) -> int:
    """Frames in a full packet (24 kHz), as version 1 groups them."""
    return int(PACKET_SECONDS * spec.frame_rate)


def describe(inp: Input, header: Header) -> tp.Tuple[End, int]:
    """End and size of a version-0 file whose header `inp` has just read, without decoding
    it. Raw files are checked to hold exactly their codes; LM-coded ones cannot be checked
    without decoding."""
    spec = SPECS[header.model]
    k = header.n_codebooks
    scale = _SCALE.size if spec.normalize else 0
    n = _length(header)
    count, frames, coded = _summary(spec, n, lambda frames: scale + -(-frames * k * CODE_BITS // 8))
    size = inp.pos + sum(len(block) for block in iter(lambda: inp.fo.read(1 << 20), b""))
    if header.coder == "raw":
        expected = inp.pos + coded
        if size < expected:
            raise TruncatedError(f"truncated file: {size} bytes, its codes need {expected}")
        if size > expected:
            raise FormatError(f"unexpected data after the last frame at byte {expected}")
    return End(frames, n, n, count), size


def _length(header: Header) -> int:
    """A version-0 header always has the length (its reader fills it in)."""
    if header.num_samples is None:
        raise FormatError("a version-0 header without its length")
    return header.num_samples
