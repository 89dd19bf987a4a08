"""Exact arithmetic coding into bytes, for live streams (formats/ecdc-v1.md, "Live streams").

Every symbol narrows an interval of code values by its integer frequency out of 2**24,
in unbounded integers: nothing is rounded, so the bytes are the same on every machine.
The encoder emits a byte as soon as every value left in the interval shares it, and a
decoder follows the bytes as they arrive: it decides a symbol once all continuations of
the bytes it holds fall inside that symbol's part of the interval. `seal` ends the coded
data on a byte without any length field: it emits the shortest byte string whose every
continuation lies in the interval, so whatever follows it decodes the same symbols.

(constriction's coders emit 32-bit words and seal with one or two of them, and its
decoder cannot take bytes appended; a live stream needs neither limit.)
"""
from __future__ import annotations

import typing as tp

import numpy as np

from ..errors import CorruptError, TruncatedError

PRECISION = 24
TOTAL = 1 << PRECISION
MAX_AHEAD = 1 << 16  # bytes a decoder may look ahead for one symbol before calling the data corrupt


class Mark(tp.NamedTuple):
    low: int
    width: int
    scale: int
    emitted: int


class ArithEncoder:
    """The interval is [low, low + width) in units of 2**-scale, after the bytes in `out`."""

    def __init__(self) -> None:
        self.low, self.width, self.scale = 0, 1, 0
        self.out = bytearray()

    def encode(self, cum: int, freq: int) -> None:
        """Code the symbol whose frequencies below it sum to `cum`; its own is `freq` (> 0)."""
        self.low = (self.low << PRECISION) + self.width * cum
        self.width *= freq
        self.scale += PRECISION
        while self.scale >= 8:
            shift = self.scale - 8
            byte = self.low >> shift
            if (self.low + self.width - 1) >> shift != byte:
                break
            self.out.append(byte)
            self.low -= byte << shift
            self.scale = shift

    def mark(self) -> Mark:
        return Mark(self.low, self.width, self.scale, len(self.out))

    def decodable(self, mark: Mark) -> bool:
        """Whether the bytes emitted so far decide every symbol coded before `mark`."""
        d = len(self.out) - mark.emitted
        e = int.from_bytes(self.out[mark.emitted:], "big")
        return (e << mark.scale) >= (mark.low << 8 * d) and \
            ((e + 1) << mark.scale) <= ((mark.low + mark.width) << 8 * d)

    def seal(self) -> None:
        """Emit the shortest byte string whose continuations all lie in the interval; start afresh."""
        low, width, scale = self.low, self.width, self.scale
        j = 0
        while True:
            k = -((-(low << 8 * j)) >> scale)  # ceil(low * 2**(8j) / 2**scale)
            if ((k + 1) << scale) <= ((low + width) << 8 * j):
                break
            j += 1
        self.out += k.to_bytes(j, "big")
        self.low, self.width, self.scale = 0, 1, 0


class ByteSource(tp.Protocol):
    def available(self, at: int) -> int: ...                 # bytes held from stream offset `at`
    def view(self, at: int, n: int) -> bytes: ...
    def more(self) -> bool: ...                              # read more; False at the end of the input


class ArithDecoder:
    """Follows the bytes of `src` from stream offset `base`; mirrors the encoder's state."""

    def __init__(self, src: ByteSource, base: int):
        self.src, self.base = src, base
        self.mirror = ArithEncoder()

    @property
    def position(self) -> int:
        """Stream offset of the first byte not yet settled."""
        return self.base + len(self.mirror.out)

    def decode(self, cum: np.ndarray) -> int:
        """The next symbol, under the model whose cumulative frequencies are `cum` (n + 1
        values from 0 to 2**24); reads more input until the bytes decide it."""
        m = self.mirror
        at = self.position
        r = 0
        while True:
            avail = self.src.available(at)
            if r < avail:  # look at a few more of the bytes held: usually scale/8 + 4 decide
                r = min(avail, max(m.scale // 8 + 4, r + 8))
                s = self._decide(cum, self.src.view(at, r))
                if s is not None:
                    m.encode(int(cum[s]), int(cum[s + 1] - cum[s]))
                    return s
                continue
            if r >= MAX_AHEAD:
                raise CorruptError(f"corrupted live stream: {r} bytes from byte {at} decide no symbol")
            if not self.src.more():
                raise _cut(at)

    def _decide(self, cum: np.ndarray, data: bytes) -> tp.Optional[int]:
        m = self.mirror
        r = len(data)
        value = int.from_bytes(data, "big")
        z = max(m.scale + PRECISION, 8 * r)
        shift = z - m.scale - PRECISION
        base = m.low << PRECISION
        lo = (((value << (z - 8 * r)) >> shift) - base) // m.width
        hi = (((((value + 1) << (z - 8 * r)) - 1) >> shift) - base) // m.width
        if hi < 0 or lo >= TOTAL:
            raise CorruptError(f"corrupted live stream: the bytes at {self.position} leave the coder's interval")
        if lo < 0 or hi >= TOTAL:
            return None
        s = int(np.searchsorted(cum, lo, "right")) - 1
        if s >= len(cum) - 1 or cum[s + 1] <= hi:
            return None
        if cum[s + 1] == cum[s]:
            raise CorruptError(f"corrupted live stream: byte {self.position} codes an impossible symbol")
        return s

    def seal(self) -> None:
        """Pass over the encoder's seal, checking its bytes."""
        m = self.mirror
        probe = ArithEncoder()
        probe.low, probe.width, probe.scale = m.low, m.width, m.scale
        probe.seal()
        at, n = self.position, len(probe.out)
        while self.src.available(at) < n:  # nothing changes before the bytes are there
            if not self.src.more():
                raise _cut(at)
        if self.src.view(at, n) != bytes(probe.out):
            raise CorruptError(f"corrupted live stream: the coded data at byte {at} does not end as it must")
        m.seal()


def _cut(at: int) -> TruncatedError:
    return TruncatedError(f"truncated live stream: it ends inside coded data at byte {at}")
