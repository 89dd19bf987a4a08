"""Live streams: the .ecdc layout that sends each frame as soon as it is coded (version 2
of the header; formats/ecdc-v1.md, "Live streams"). Imports no torch.

After the header come units: 24 kHz, up to 600 frames (8 s) of one LM stream; 48 kHz,
one 1 s segment. A unit is coded in blocks of at most 75 frames (24 kHz) or one segment,
each ending with a seal and a CRC-32 of its bytes, so a reader checks the stream at
least once a second. Frames are coded by the exact arithmetic coder (arith.py) with the
frequencies of a `FrequencyModel`: the integer LM for coder 'lm', uniform for 'raw'.
"""
from __future__ import annotations

import io
import itertools
import struct
import typing as tp
import zlib
from dataclasses import replace

import numpy as np

from ..errors import CorruptError, EcdcError, FormatError, TruncatedError
from ..specs import SPECS
from .arith import TOTAL, ArithDecoder, ArithEncoder, Mark
from .incoming import Incoming, Wait
from .records import ALL_FRAMES, End, Frames, Gap, Header, Input, Packet
from .v1 import LIVE_VERSION, check_lengths, frames_for, header_bytes

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
            if last:
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
        self.decided = first_frame             # frames given out (and their samples, next)
        self._decided_samples = 0
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
                self.decided = packet.start + packet.frames
                if self.spec.causal:
                    self._decided_samples = self.decided * self.spec.hop_length
                else:  # 1 s segments, each overlapping the last: the decoder's output length
                    segments += 1
                    self._decided_samples = (segments - 1) * self.spec.segment_stride \
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
                end = End(*_END.unpack(body), 0)
                self._check(self.at + 1 + _END.size)
                if end.frames != count:
                    raise CorruptError(f"corrupted live stream: the end record counts {end.frames} frames, "
                                       f"the stream has {count}")
                if self._total is not None and end.num_samples != self._total:
                    raise CorruptError("corrupted live stream: the end record's length disagrees with its last frame")
                check_end(self.header, end, self.at)
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
        most = -(-self.spec.segment_length // self.spec.hop_length)
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


def check_end(h: Header, end: End, at: int) -> None:
    """An end record's lengths must fit its frames (a reader pads the output to them)."""
    if abs(frames_for(SPECS[h.model], end.num_samples) - end.frames) > SPECS[h.model].frame_rate:
        raise CorruptError(f"corrupted live stream: the end record at byte {at} claims {end.num_samples} "
                           f"samples for {end.frames} frames")
    check_lengths(h, end.num_samples, end.source_num_samples, f"live stream: the end record at byte {at}")


def read_end(data: bytes, at: int, header: Header) -> End:
    """The end record in `data` (its last END_SIZE bytes, from stream offset `at`)."""
    if len(data) != END_SIZE or data[0] != END:
        raise CorruptError(f"corrupted live stream: no end record at byte {at}")
    (crc,) = _CRC.unpack_from(data, 1 + _END.size)
    if zlib.crc32(data[:1 + _END.size]) != crc:
        raise CorruptError(f"corrupted live stream: the end record at byte {at} fails its CRC-32 check")
    end = End(*_END.unpack_from(data, 1), 0)
    check_end(header, end, at)
    return end


LONGEST_BLOCK = 1 << 13  # bytes: a block's 75 frames of 32 codes (or a segment's 150 of 16) take < 7.3 KB


def describe(inp: Input, header: Header) -> tp.Tuple[End, int, tp.Optional[int]]:
    """The end record and size of a live stream whose header `inp` has just read, without
    decoding it (its frames are checked as they are decoded), and None; or, for a stream
    cut before its end record (a recording interrupted), what its checked blocks hold and
    the byte where it is cut."""
    fo = inp.fo
    try:
        seekable = fo.seekable()
    except (AttributeError, OSError, ValueError):
        seekable = False
    if seekable:
        start = fo.tell()
        size = fo.seek(0, 2)
        fo.seek(max(start, size - END_SIZE))
        tail = fo.read(END_SIZE)
    else:
        start = inp.pos
        data = fo.read()
        size, tail = start + len(data), data[-END_SIZE:]
    whole = len(tail) == END_SIZE and tail[0] == END
    if whole and zlib.crc32(tail[:1 + _END.size]) == _CRC.unpack_from(tail, 1 + _END.size)[0]:
        return read_end(tail, size - END_SIZE, header), size, None
    if seekable:
        fo.seek(start)
        data = fo.read()
    frames, samples, cut = _checked_blocks(data, start, SPECS[header.model])
    source = samples * header.source_sample_rate // header.sample_rate
    return End(frames, samples, source, 0), size, cut


def _checked_blocks(data: bytes, base: int, spec) -> tp.Tuple[int, int, int]:
    """(frames, model samples, byte where it is cut) of a live stream's blocks from stream
    offset `base`, each found by its CRC-32: a stream cut short ends inside its last block."""
    at, blocks, frames, segments, last = 0, 0, 0, 0, 0
    while at < len(data):
        if data[at] == END:
            break  # cut inside the end record
        if not spec.causal or blocks % (UNIT_FRAMES // BLOCK_FRAMES) == 0:
            if data[at] != UNIT:
                raise CorruptError(f"corrupted live stream: byte {base + at} starts no unit (found {data[at]:#04x})")
        end = _block_end(data, at)
        if end is None:
            if len(data) - at > LONGEST_BLOCK:
                raise CorruptError(f"corrupted live stream: the block at byte {base + at} fails its CRC-32 check "
                                   f"(--salvage decodes what is intact)")
            break  # cut inside this block
        if spec.causal:
            frames += BLOCK_FRAMES
        else:
            last = _SEGMENT.unpack_from(data, at + 1)[0] if end - at > _SEGMENT.size else 0
            frames, segments = frames + last, segments + 1
        blocks += 1
        at = end + _CRC.size
    samples = frames * spec.hop_length if spec.causal else \
        (max(0, segments - 1) * spec.segment_stride + last * spec.hop_length)
    return frames, samples, base + at


def _block_end(data: bytes, at: int) -> tp.Optional[int]:
    """The first offset e after `at` where data[e:e + 4] holds the CRC-32 of data[at:e]."""
    crc = zlib.crc32(data[at:at + 1])
    for e in range(at + 1, min(len(data) - _CRC.size, at + LONGEST_BLOCK) + 1):
        if crc == int.from_bytes(data[e:e + _CRC.size], "big"):
            return e
        crc = zlib.crc32(data[e:e + 1], crc)
    return None


# ---------------------------------------------------------------- salvage

def salvage(inp: Input, header: Header, model: FrequencyModel) -> tp.Iterator[tp.Union[Packet, Gap]]:
    """The checked frames of a damaged or cut live stream whose header `inp` has just read,
    and a `Gap` for each run lost, to the end (held in memory: this is for rescue).

    After a block that fails its check, decoding resumes at the next unit whose first block
    checks out (24 kHz: the next 8 s unit; 48 kHz: the next segment). How much was lost is
    estimated from the bytes skipped; a 24 kHz unit's LM depends on its position, so there
    the estimate is confirmed by decoding the unit's first block. A cut stream ends at the cut."""
    spec = SPECS[header.model]
    base, buf = inp.pos, inp.fo.read()
    at, first, segments = 0, 0, 0   # where the reader starts: byte, frame; 48 kHz: segments so far
    reader = _reader_at(buf, base, at, header, model, first)
    packets: tp.Iterator[Packet] = iter(reader)
    while True:
        given = first
        try:
            for packet in packets:
                given = packet.start + packet.frames
                segments += not spec.causal
                yield packet
            if reader.cut is not None:
                yield Gap(_unit_of(spec, given, segments), reader.at, None, None, None, reader.cut)
            return
        except EcdcError as e:
            why, bad = str(e), reader.block_start - base
        per_byte = (given - first) / (bad - at) if given > first and bad > at else None
        resumed = _resume(buf, base, bad + 1, header, model, given, per_byte)
        index = _unit_of(spec, given, segments)
        if resumed is None:
            yield Gap(index, base + bad, None, None, None, f"{why}; nothing checks out after it")
            return
        at, first, reader, packets = resumed
        if spec.causal:
            units = first // UNIT_FRAMES - given // UNIT_FRAMES
            yield Gap(index, base + bad, units, first - given, units, why)
        else:  # a segment's frames are its own: how many were lost, the bytes tell
            per = -(-spec.segment_length // spec.hop_length)
            gone = max(1, round((at - bad) * per_byte / per)) if per_byte else 1
            yield Gap(index, base + bad, gone, gone * per, gone, why)
            segments += gone
            first = given + gone * per


def _unit_of(spec, frame: int, segments: int) -> int:
    """The 1-based number of the unit that holds `frame` (48 kHz: after `segments`)."""
    return frame // UNIT_FRAMES + 1 if spec.causal else segments + 1


def _reader_at(buf: bytes, base: int, at: int, header: Header, model: FrequencyModel, first: int) -> Reader:
    inp = Input(io.BytesIO(buf[at:]), base + at)
    return Reader(inp, header, model, keep_cut=True, first_frame=first, checked_only=True)


def _resume(buf: bytes, base: int, after: int, header: Header, model: FrequencyModel, given: int,
            per_byte: tp.Optional[float]):
    """(byte, first frame, reader, its packets) of the first unit from buffer offset `after`
    whose first block checks out and decodes; None if there is none."""
    spec = SPECS[header.model]
    lm = not isinstance(model, Uniform)
    for j in _unit_starts(buf, after, spec):
        if spec.causal:
            least = given // UNIT_FRAMES + 1
            guess = max(least, round((given + (j - after) * per_byte) / UNIT_FRAMES)) if per_byte else least
            units = sorted(range(least, guess + 4), key=lambda k: abs(k - guess))[:6] if lm else [guess]
        else:
            units = [0]  # a segment's LM starts afresh
        for unit in units:
            first = unit * UNIT_FRAMES if spec.causal else given
            reader = _reader_at(buf, base, j, header, model, first)
            packets = iter(reader)
            try:
                head = next(packets, None)
            except EcdcError:
                continue
            if head is None and reader.cut is None and reader.end is None:
                continue
            return j, first, reader, itertools.chain([head] if head is not None else [], packets)
    return None


def _unit_starts(buf: bytes, after: int, spec) -> tp.Iterator[int]:
    """Offsets from `after` where a unit could start: a unit byte whose block's CRC-32 holds
    (searched for many offsets at once); 48 kHz, with a segment head and a record or the
    end after it."""
    data = np.frombuffer(buf, np.uint8)
    n = len(data)
    if n < 6:
        return
    stored = np.zeros(n + 1, np.uint32)  # the big-endian word at each offset
    stored[:n - 3] = (data[:-3].astype(np.uint32) << 24 | data[1:-2].astype(np.uint32) << 16
                      | data[2:-1].astype(np.uint32) << 8 | data[3:])
    candidates = np.flatnonzero(data[after:] == UNIT) + after
    if not spec.causal:  # a segment's head: its frame count
        most = -(-spec.segment_length // spec.hop_length)
        heads = candidates[candidates + 3 <= n - 1]
        frames = data[heads + 1].astype(np.int64) << 8 | data[heads + 2]
        candidates = heads[(frames >= 1) & (frames <= most)]
    for batch in np.array_split(candidates, max(1, -(-len(candidates) // 4096))):
        if not len(batch):
            continue
        reg = np.full(len(batch), 0xFFFFFFFF, np.uint32)
        found = np.full(len(batch), -1, np.int64)
        for d in range(min(LONGEST_BLOCK, n - int(batch[0]))):
            pos = batch + d
            live = (pos < n - 4) & (found < 0)
            if not live.any():
                break
            reg = _CRC_TABLE[(reg ^ data[np.minimum(pos, n - 1)]) & 0xFF] ^ (reg >> 8)
            e = np.minimum(pos + 1, n)
            hit = live & ((reg ^ 0xFFFFFFFF) == stored[e])
            if not spec.causal:  # a segment is a whole unit: a record or the end follows
                follows = np.where(e + 4 < n, data[np.minimum(e + 4, n - 1)], UNIT)
                hit &= (follows == UNIT) | (follows == END)
            found[hit] = e[hit]
        yield from (int(j) for j in batch[found >= 0])


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()
