"""Live streams: the .ecdc layout that sends each frame as soon as it is coded (version 2
of the header; formats/ecdc-v1.md, "Live streams"). Imports no torch.

After the header come units: 24 kHz, up to 600 frames (8 s) of one LM stream; 48 kHz,
one 1 s segment. A unit is coded in blocks of at most 75 frames (24 kHz) or one segment,
each ending with a seal and a CRC-32 of its bytes, so a reader checks the stream at
least once a second. Frames are coded by the exact arithmetic coder (arith.py) with the
frequencies of a `FrequencyModel`: the integer LM for coder 'lm', uniform for 'raw'.
"""
from __future__ import annotations

import struct
import typing as tp
import zlib
from dataclasses import replace

import numpy as np

from ..errors import CorruptError, EcdcError, FormatError, TruncatedError
from ..specs import SPECS
from .arith import TOTAL, ArithDecoder, ArithEncoder, Mark
from .incoming import Incoming, Wait
from .records import ALL_FRAMES, End, Frames, Header, Input, Packet
from .v1 import LIVE_VERSION, check_end, header_bytes

UNIT_FRAMES = 600           # 24 kHz: frames per unit (8 s), as a packet of a version-1 file
BLOCK_FRAMES = 75           # 24 kHz: frames per block (1 s): a CRC at least once a second
UNIT, END = 0x01, 0x02      # what starts a unit, and the end record
_SEGMENT = struct.Struct(">Hf")   # 48 kHz unit head: frames, scale
_END = struct.Struct(">QQQ")      # frames, samples, source samples
_CRC = struct.Struct(">I")
# 24 kHz: before each frame, one of: another frame / the last frame / no more frames
CONTINUE, LAST, STOP = 0, 1, 2
FLAG_CUM = np.array([0, TOTAL - 512, TOTAL - 256, TOTAL], np.int64)
VALID_BITS = 9              # the last frame's samples - 1, coded uniformly in 9 bits (< 320)
VALID_CUM = np.arange(513, dtype=np.int64) << (24 - VALID_BITS)


class FrequencyModel(tp.Protocol):
    """The frequencies that code a unit's frames, in the order of coder 3."""

    def start(self, position: int, frames: int) -> None:
        """A fresh stream of at most `frames` frames from `position`."""

    def cumulative(self) -> np.ndarray:
        """[codebooks, 1025] cumulative frequencies (0 .. 2**24) of the next frame's codes."""

    def push(self, codes: np.ndarray) -> None:
        """The frame's codes [codebooks], just coded."""

    def known(self, codes: np.ndarray) -> tp.Iterator[np.ndarray]:
        """cumulative() of each frame of a fresh stream from position 0 fed `codes` [n,
        codebooks], all known (an encoder's 48 kHz segment)."""


class Uniform:
    """Coder 'raw': every code has frequency 2**14, so it costs exactly 10 bits."""
    fingerprint = bytes(8)  # no language model

    def __init__(self, n_q: int):
        self._cum = np.repeat((np.arange(1025, dtype=np.int64) << 14)[None], n_q, axis=0)

    def start(self, position: int, frames: int) -> None:
        pass

    def cumulative(self) -> np.ndarray:
        return self._cum

    def push(self, codes: np.ndarray) -> None:
        pass

    def known(self, codes: np.ndarray) -> tp.Iterator[np.ndarray]:
        return (self._cum for _ in codes)


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Coder 3's frequencies g [codebooks, 1024] -> cumulative f = g + 1, [codebooks, 1025]."""
    out = np.zeros((freqs.shape[0], 1025), np.int64)
    np.cumsum(freqs.astype(np.int64) + 1, axis=1, out=out[:, 1:])
    return out


def live_header(h: Header) -> Header:
    """`h` as a live stream's header: version 2, lengths unknown (the end record has them)."""
    return replace(h, version=LIVE_VERSION, num_samples=None, source_num_samples=None)


# ---------------------------------------------------------------- writing

class Writer:
    """Writes a live stream; every call writes and flushes the bytes it has settled."""

    def __init__(self, fo: tp.BinaryIO, header: Header, model: FrequencyModel):
        self.fo, self.header, self.model = fo, header, model
        self.causal = SPECS[header.model].causal
        self.frames = 0                 # all frames written
        self.unit_frames = 0            # of the open unit (24 kHz); 0: none open
        self.block_frames = 0
        self.enc = ArithEncoder()
        self.sent = 0                   # bytes of enc.out written
        self.crc = 0
        self.pending: tp.Optional[Mark] = None  # the state after the previous frame, while undecidable
        self._next: tp.Optional[np.ndarray] = None  # the next frame's frequencies, when computed ahead
        self._write(header_bytes(header), crc=False)
        self.fo.flush()

    def _write(self, data: bytes, crc: bool = True) -> None:
        if crc:
            self.crc = zlib.crc32(data, self.crc)
        self.fo.write(data)

    def _emit(self) -> None:
        data = bytes(self.enc.out[self.sent:])
        self.sent = len(self.enc.out)
        self._write(data)

    def _close_block(self) -> None:
        self.enc.seal()
        self._emit()
        self.fo.write(_CRC.pack(self.crc))
        self.crc, self.enc, self.sent, self.pending, self.block_frames = 0, ArithEncoder(), 0, None, 0

    def _code(self, codes: np.ndarray, cum: tp.Optional[np.ndarray] = None) -> None:
        """One frame, with the model's next frequencies (or `cum`, computed already)."""
        if cum is None:
            cum = self.model.cumulative() if self._next is None else self._next
            self._next = None
            self.model.push(codes)
        for k, c in enumerate(codes.tolist()):
            self.enc.encode(int(cum[k, c]), int(cum[k, c + 1] - cum[k, c]))

    def _ahead(self) -> None:
        """The next frame's frequencies, computed now, while the input is awaited, rather
        than once its codes have come (24 kHz, inside a unit)."""
        if 0 < self.unit_frames < UNIT_FRAMES and self._next is None:
            self._next = self.model.cumulative()

    def write_frames(self, codes: np.ndarray, last_valid: tp.Optional[int] = None) -> None:
        """24 kHz: frames [n, codebooks] in order; `last_valid`: the last of them ends the
        stream and holds that many samples (1..320)."""
        for i, frame in enumerate(codes):
            last = last_valid is not None and i == len(codes) - 1
            if self.unit_frames == 0:
                self._write(bytes([UNIT]))
                self.model.start(self.frames, UNIT_FRAMES)
            self.enc.encode(int(FLAG_CUM[LAST if last else CONTINUE]), 256 if last else TOTAL - 512)
            if last_valid is not None and last:
                self.enc.encode((last_valid - 1) << 15, 1 << 15)
            self._code(frame)
            self.frames += 1
            self.unit_frames += 1
            self.block_frames += 1
            if last or self.unit_frames == UNIT_FRAMES or self.block_frames == BLOCK_FRAMES:
                self._close_block()
                if last or self.unit_frames == UNIT_FRAMES:
                    self.unit_frames = -1 if last else 0
            elif self.pending is not None and not self.enc.decodable(self.pending):
                self.enc.seal()  # the previous frame must not wait for more than this one
                self.pending = None
                self._emit()
            else:
                self.pending = self.enc.mark()
                self._emit()
        self.fo.flush()
        self._ahead()

    def write_segment(self, codes: np.ndarray, scale: float) -> None:
        """48 kHz: one segment's frames [n, codebooks] and scale; its bytes go out as they
        settle, so that the decoder's LM runs along with the encoder's."""
        self._write(bytes([UNIT]) + _SEGMENT.pack(len(codes), scale))
        for frame, cum in zip(codes, self.model.known(codes)):  # the LM in one pass: codes are known
            self._code(frame, cum)
            self._emit()
            self.fo.flush()
        self.frames += len(codes)
        self._close_block()
        self.fo.flush()

    def finish(self, num_samples: int, source_num_samples: int) -> End:
        if self.causal and self.unit_frames > 0:  # an open unit: 'no more frames'
            self.enc.encode(int(FLAG_CUM[STOP]), 256)
            self._close_block()
        self._write(bytes([END]) + _END.pack(self.frames, num_samples, source_num_samples))
        self.fo.write(_CRC.pack(self.crc))
        self.fo.flush()
        return End(self.frames, num_samples, source_num_samples, 0)


# ---------------------------------------------------------------- reading

class Reader:
    """The frames of a live stream whose header `inp` has just read, as packets: 24 kHz,
    one per frame; 48 kHz, one per segment. Each is yielded as soon as its bytes decide it."""

    def __init__(self, inp: Input, header: Header, model: FrequencyModel, frames: Frames = ALL_FRAMES, *,
                 keep_cut: bool = False, first_frame: int = 0, checked_only: bool = False):
        """`keep_cut`: a stream cut short (a recording interrupted, a connection dropped) ends
        the iteration where it is cut, said in `cut`, instead of raising TruncatedError.
        `first_frame`: the frame at which the unit that `inp` starts with begins (salvage).
        `checked_only`: frames of a block that fails its check are dropped, not given out."""
        self.header, self.model, self.frames = header, model, frames
        self.spec = SPECS[header.model]
        self.buf = Incoming(inp)
        self.keep_cut, self.first_frame, self.checked_only = keep_cut, first_frame, checked_only
        self.cut: tp.Optional[str] = None      # why the stream ends early (keep_cut)
        self._decided_samples = 0              # model samples of the frames given out
        self.end: tp.Optional[End] = None
        self.at = self.block_start = self.buf.start  # where the next record, and the block checked next, begin
        self._total: tp.Optional[int] = None   # model samples, once the last frame says
        self._stop = False                     # 24 kHz: flag 'no more frames' read
        self._group: tp.List[np.ndarray] = []  # frames decided, not yet given out
        self._group_start = 0
        self.blocks = 0

    @property
    def num_samples(self) -> tp.Optional[int]:
        if self.end:
            return self.end.num_samples
        if self._total is None and self.cut is not None:
            return self._decided_samples  # what was decoded before the cut
        return self._total

    @property
    def source_num_samples(self) -> tp.Optional[int]:
        if self.end:
            return self.end.source_num_samples
        n, h = self.num_samples, self.header
        if self.cut is None or n is None:
            return None
        return n * h.source_sample_rate // h.sample_rate

    @property
    def position(self) -> int:
        return self.at

    @property
    def waited(self) -> float:
        return self.buf.waited

    def _check(self, at: int) -> None:
        data = self.buf.view(self.block_start, at - self.block_start)
        (stored,) = _CRC.unpack(self.buf.need(at, _CRC.size, "a block's checksum"))
        if zlib.crc32(data) != stored:
            raise CorruptError(f"corrupted live stream: block {self.blocks + 1} (bytes {self.block_start} "
                               f"to {at}) fails its CRC-32 check")
        self.blocks += 1
        self.at = self.block_start = at + _CRC.size
        self.buf.drop(self.at)

    def __iter__(self) -> tp.Iterator[Packet]:
        try:
            segments = 0
            for packet in self._packets():
                if self.spec.causal:
                    self._decided_samples = (packet.start + packet.frames) * self.spec.hop_length
                else:  # 1 s segments, each overlapping the last: the decoder's output length
                    segments += 1
                    self._decided_samples = (segments - 1) * self.spec.segment_step \
                        + packet.frames * self.spec.hop_length
                yield packet
        except TruncatedError as e:
            if not self.keep_cut:
                raise
            self.cut = str(e)

    def _packets(self) -> tp.Iterator[Packet]:
        count, unit = self.first_frame, 0
        while True:
            stopped = self._total is not None or self._stop  # the stream said it ends
            (kind,) = self.buf.need(self.at, 1, "the record")
            if kind == END:
                if not stopped and self.spec.causal and count % UNIT_FRAMES:
                    raise CorruptError(f"corrupted live stream: end record at byte {self.at} inside a unit")
                body = self.buf.need(self.at + 1, _END.size, "the end record")
                frames, samples, source_samples = _END.unpack(body)
                end = End(frames, samples, source_samples, 0)
                self._check(self.at + 1 + _END.size)
                if end.frames != count:
                    raise CorruptError(f"corrupted live stream: the end record counts {end.frames} frames, "
                                       f"the stream has {count}")
                if self._total is not None and end.num_samples != self._total:
                    raise CorruptError("corrupted live stream: the end record's length disagrees with its last frame")
                check_end(self.header, end, f"live stream: the end record at byte {self.at}")
                if self.buf.available(self.at) or self.buf.more():
                    raise FormatError(f"unexpected data after the end record at byte {self.at}")
                self.end = end
                return
            if kind != UNIT or stopped:
                raise CorruptError(f"corrupted live stream: byte {self.at} starts no unit "
                                   f"(found {kind:#04x})")
            unit += 1
            if self.spec.causal:
                packets = self._unit(count)
            else:
                packets = self._segment(count, unit)
            for packet in packets:
                count += packet.frames
                if self._wanted(packet):
                    yield packet

    def _wanted(self, p: Packet) -> bool:
        return p.start + p.frames > self.frames.first and (self.frames.stop is None or p.start < self.frames.stop)

    def _try(self, fn, *args):
        """fn(*args), as a generator: while decoded frames wait to go out, it runs only on the
        bytes at hand; when it would wait for input, the frames go out first."""
        while self._group:
            self.buf.nowait = True
            try:
                return fn(*args)
            except Wait:
                pass
            except EcdcError as e:  # what was decided before the damage goes out first
                self.buf.nowait = False
                if self.checked_only and not isinstance(e, TruncatedError):
                    self._group = []  # unless only checked blocks may go out
                    raise
                yield self._take_group()
                raise
            finally:
                self.buf.nowait = False
            yield self._take_group()
        return fn(*args)

    def _take_group(self) -> Packet:
        group, self._group = self._group, []
        codes = np.stack(group)
        return Packet(codes=codes, segments=((len(codes), 1.0),), start=self._group_start, offset=self.at,
                      index=self._group_start + 1)

    def _unit(self, first: int) -> tp.Iterator[Packet]:
        """24 kHz: the frames of a unit, grouped as they are decided before the input pauses."""
        h = self.header
        self.model.start(first, UNIT_FRAMES)
        dec = ArithDecoder(self.buf, self.at + 1)
        pending: tp.Optional[Mark] = None
        block = 0
        for i in range(UNIT_FRAMES):
            flag = yield from self._try(dec.decode, FLAG_CUM)
            if flag == STOP:
                yield from self._try(dec.seal)
                yield from self._try(self._check, dec.position)
                self._stop = True
                break
            valid = None
            if flag == LAST:
                valid = (yield from self._try(dec.decode, VALID_CUM)) + 1
                if valid > self.spec.hop_length:
                    raise CorruptError(f"corrupted live stream: the last frame claims {valid} samples")
                self._total = (first + i) * self.spec.hop_length + valid
            cum = self.model.cumulative()
            codes = np.zeros(h.n_codebooks, np.uint16)
            for k in range(h.n_codebooks):
                codes[k] = yield from self._try(dec.decode, cum[k])
            self.model.push(codes)
            block += 1
            if not self._group:
                self._group_start = first + i
            self._group.append(codes)
            if valid is not None or i + 1 == UNIT_FRAMES or block == BLOCK_FRAMES:
                yield from self._try(dec.seal)
                yield from self._try(self._check, dec.position)
                if self._group:  # a block's frames, checked, go out whatever the input does
                    yield self._take_group()
                if valid is not None:
                    break
                block, pending = 0, None
                dec = ArithDecoder(self.buf, self.at)
            elif pending is not None and not dec.mirror.decodable(pending):
                yield from self._try(dec.seal)
                pending = None
            else:
                pending = dec.mirror.mark()
        if self._group:
            yield self._take_group()

    def _segment(self, first: int, unit: int) -> tp.Iterator[Packet]:
        head = self.buf.need(self.at + 1, _SEGMENT.size, "a segment's head")
        frames, scale = _SEGMENT.unpack(head)
        most = -(-self.spec.segment_samples // self.spec.hop_length)
        if not 1 <= frames <= most or not np.isfinite(scale):
            raise CorruptError(f"corrupted live stream: segment {unit} at byte {self.at} claims {frames} frames")
        self.model.start(0, frames)
        dec = ArithDecoder(self.buf, self.at + 1 + _SEGMENT.size)
        codes = np.zeros((frames, self.header.n_codebooks), np.uint16)
        for t in range(frames):
            cum = self.model.cumulative()
            codes[t] = [dec.decode(cum[k]) for k in range(self.header.n_codebooks)]
            self.model.push(codes[t])
        dec.seal()
        offset = self.at
        self._check(dec.position)
        yield Packet(codes=codes, segments=((frames, scale),), start=first, offset=offset, index=unit)


END_SIZE = 1 + _END.size + _CRC.size


def read_end(data: bytes, at: int, header: Header) -> End:
    """The end record in `data` (its last END_SIZE bytes, from stream offset `at`)."""
    if len(data) != END_SIZE or data[0] != END:
        raise CorruptError(f"corrupted live stream: no end record at byte {at}")
    (crc,) = _CRC.unpack_from(data, 1 + _END.size)
    if zlib.crc32(data[:1 + _END.size]) != crc:
        raise CorruptError(f"corrupted live stream: the end record at byte {at} fails its CRC-32 check")
    frames, samples, source_samples = _END.unpack_from(data, 1)
    end = End(frames, samples, source_samples, 0)
    check_end(header, end, f"live stream: the end record at byte {at}")
    return end
