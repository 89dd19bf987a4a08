"""What is left of a damaged file or a live stream cut short (an interrupted recording, a
dropped connection): the intact packets and the gaps that `--salvage` decodes, for both
layouts, and `ecdc info`'s description of a cut live stream, found by its blocks' CRC-32s
without decoding. Imports no torch."""
from __future__ import annotations

import io
import itertools
import shutil
import tempfile
import typing as tp
import zlib

import numpy as np

from ..errors import CorruptError, EcdcError
from ..specs import SPECS, ModelSpec
from .live import (
    _CRC,
    _END,
    _SEGMENT,
    BLOCK_FRAMES,
    END,
    END_SIZE,
    UNIT,
    UNIT_FRAMES,
    FrequencyModel,
    Reader,
    Uniform,
    read_end,
)
from .records import PACKET_SECONDS, End, Gap, Header, Input, Packet
from .v1 import _PACKET, _RECORD, FLAG_RAW, MAX_RECORD, RECORD_END, RECORD_PACKET, seekable, unpack_codes

LONGEST_BLOCK = 1 << 13  # bytes: a block's 75 frames of 32 codes (or a segment's 150 of 16) take < 7.3 KB


def describe(inp: Input, header: Header) -> tp.Tuple[End, int, tp.Optional[int]]:
    """The end record and size of a live stream whose header `inp` has just read, without
    decoding it (its frames are checked as they are decoded), and None; or, for a stream
    cut before its end record (a recording interrupted), what its checked blocks hold and
    the byte where it is cut."""
    if not seekable(inp.fo):  # a pipe: spooled on disk, so memory stays flat
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(inp.fo, spool, 1 << 20)
            spool.seek(0)
            return describe(Input(spool, inp.pos), header)
    fo = inp.fo
    here = fo.tell()
    last = fo.seek(0, 2)
    size = inp.pos + last - here  # in stream offsets
    fo.seek(max(here, last - END_SIZE))
    tail = fo.read(END_SIZE)
    whole = len(tail) == END_SIZE and tail[0] == END
    if whole and zlib.crc32(tail[:1 + _END.size]) == _CRC.unpack_from(tail, 1 + _END.size)[0]:
        return read_end(tail, size - END_SIZE, header), size, None
    fo.seek(here)
    frames, samples, cut = _checked_blocks(fo.read(), inp.pos, SPECS[header.model])
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
        (max(0, segments - 1) * spec.segment_step + last * spec.hop_length)
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

def salvage_live(inp: Input, header: Header, model: FrequencyModel) -> tp.Iterator[tp.Union[Packet, Gap]]:
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
        else:
            gone = (first - given) // _segment_frames(spec)
            yield Gap(index, base + bad, gone, first - given, gone, why)
            segments += gone


def _segment_frames(spec) -> int:
    return -(-spec.segment_samples // spec.hop_length)


def _unit_of(spec, frame: int, segments: int) -> int:
    """The 1-based number of the unit that holds `frame` (48 kHz: after `segments`)."""
    return frame // UNIT_FRAMES + 1 if spec.causal else segments + 1


def _reader_at(buf: bytes, base: int, at: int, header: Header, model: FrequencyModel, first: int) -> Reader:
    inp = Input(io.BytesIO(buf[at:]), base + at)
    return Reader(inp, header, model, keep_cut=True, first_frame=first, checked_only=True)


def _resume(buf: bytes, base: int, after: int, header: Header, model: FrequencyModel, given: int,
            per_byte: tp.Optional[float]):
    """(byte, first frame, reader, its packets) of the first unit from buffer offset `after`
    (just past the damaged block) whose first block checks out and decodes; None if none."""
    spec = SPECS[header.model]
    lm = not isinstance(model, Uniform)
    for j in _unit_starts(buf, after, spec):
        if spec.causal:
            least = given // UNIT_FRAMES + 1
            guess = max(least, round((given + (j - after) * per_byte) / UNIT_FRAMES)) if per_byte else least
            units = sorted(range(least, guess + 4), key=lambda k: abs(k - guess))[:6] if lm else [guess]
            starts = [unit * UNIT_FRAMES for unit in units]
        else:  # a segment's LM starts afresh; how many segments were lost, the bytes tell
            per = _segment_frames(spec)
            starts = [given + per * (max(1, round((j - after + 1) * per_byte / per)) if per_byte else 1)]
        for first in starts:
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
        most = -(-spec.segment_samples // spec.hop_length)
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


# ---------------------------------------------------------------- version 1

class Layout:
    """The (frames, segments) of the packets ecdc writes for `num_samples` samples: 24 kHz,
    runs of PACKET_SECONDS of frames; 48 kHz, groups of 1 s segments as long. Computed per
    range, never listed: a crafted length costs neither memory nor time."""

    def __init__(self, spec: ModelSpec, num_samples: int):
        self.spec, self.n = spec, num_samples
        self.per = int(PACKET_SECONDS * spec.frame_rate)
        if spec.causal:
            self.frames = -(-num_samples // spec.hop_length)
            self.packets = -(-self.frames // self.per)
        else:
            self.segments = -(-num_samples // spec.segment_step) if num_samples else 0
            full = -(-spec.segment_samples // spec.hop_length)
            self.group = -(-self.per // full)  # segments a packet: only the last is shorter
            self.packets = -(-self.segments // self.group)

    def _segment_frames(self, first: int, stop: int) -> int:
        """Frames of segments [first, stop)."""
        spec = self.spec
        size, stride = spec.segment_samples, spec.segment_step
        full = max(first, min(stop, (self.n - size) // stride + 1))  # segments before `full` are whole
        frames = (full - first) * -(-size // spec.hop_length)
        return frames + sum(-(-min(self.n - i * stride, size) // spec.hop_length) for i in range(full, stop))

    def span(self, first: int, count: tp.Optional[int]) -> tp.Tuple[int, int, int]:
        """(packets, frames, segments) of `count` packets from packet `first` (0-based; None:
        all that remain)."""
        stop = self.packets if count is None else min(self.packets, first + count)
        if stop <= first:
            return 0, 0, 0
        if self.spec.causal:
            frames = min(self.frames, stop * self.per) - first * self.per
            return stop - first, frames, stop - first
        a, b = first * self.group, min(self.segments, stop * self.group)
        return stop - first, self._segment_frames(a, b), b - a


MIN_RECORD = _RECORD.size + _PACKET.size + _SEGMENT.size + _CRC.size  # the smallest packet record


def salvage_v1(inp: Input, header: Header) -> tp.Iterator[tp.Union[Packet, Gap]]:
    """The packets of a damaged version-1 file whose checksums hold, and a `Gap` for each run
    of records lost, to the end of the file (held in memory: this is for rescue, not speed).

    A record that fails its CRC but whose length leads to a sound record (or the end) is one
    lost packet; otherwise the next sound record is searched for byte by byte. How much a gap
    lost comes from the packet layout that the header's length implies (unless the file is
    too small to hold that many packets), else from the usual packet size; a file cut before
    its end record loses what follows (its length is known only if the header has it).
    """
    spec = SPECS[header.model]
    usual = (int(PACKET_SECONDS * spec.frame_rate), 1 if spec.causal else int(PACKET_SECONDS / (spec.segment or 1.0)))
    base, buf = inp.pos, inp.fo.read()
    layout = Layout(spec, header.num_samples) if header.num_samples is not None else None
    if layout is not None and layout.packets > len(buf) // MIN_RECORD + 1:
        layout = None  # more packets than the file could hold: the length is damaged too
    count = frames = 0
    sizes: tp.List[int] = []

    def sound(i: int) -> tp.Optional[tp.Tuple[int, int]]:
        if i + _RECORD.size > len(buf):
            return None
        kind, size = _RECORD.unpack_from(buf, i)
        end = i + _RECORD.size + size
        if kind not in (RECORD_PACKET, RECORD_END) or size > MAX_RECORD or end + _CRC.size > len(buf):
            return None
        return (kind, size) if zlib.crc32(buf[i:end]) == _CRC.unpack_from(buf, end)[0] else None

    def lost(i: int, n: tp.Optional[int], why: str) -> Gap:
        """n packets (None: all that remain) lost from buffer position i."""
        if layout is not None:
            return Gap(count + 1, base + i, *layout.span(count, n), why)
        if n is None:
            return Gap(count + 1, base + i, None, None, None, why)
        return Gap(count + 1, base + i, n, n * usual[0], n * usual[1], why)

    i = 0
    while True:
        if i >= len(buf):
            yield lost(i, None, f"the file ends at byte {base + i} without its end record")
            return
        record = sound(i)
        if record is None:
            size = _RECORD.unpack_from(buf, i)[1] if i + _RECORD.size <= len(buf) else None
            after = None if size is None else i + _RECORD.size + size + _CRC.size
            if after is not None and after <= len(buf) and (after == len(buf) or sound(after)):
                gap, i = lost(i, 1, f"record {count + 1} at byte {base + i} fails its CRC-32 check"), after
            else:
                j = next((j for j in range(i + 1, len(buf)) if sound(j)), None)
                if j is None:
                    cut = after is not None and after > len(buf)
                    yield lost(i, None, f"the file is cut inside record {count + 1} (byte {base + i})" if cut
                               else f"nothing readable from byte {base + i} on")
                    return
                n = max(1, round((j - i) / (sum(sizes) / len(sizes)))) if sizes else 1
                gap, i = lost(i, n, f"bytes {base + i} to {base + j} are damaged"), j
            yield gap
            count += gap.packets or 0
            frames += gap.frames or 0
            continue
        kind, size = record
        payload = buf[i + _RECORD.size:i + _RECORD.size + size]
        offset, i = base + i, i + _RECORD.size + size + _CRC.size
        if kind == RECORD_END:
            return
        flags, nseg = _PACKET.unpack_from(payload) if len(payload) >= _PACKET.size else (0, 0)
        start = _PACKET.size + nseg * _SEGMENT.size
        if nseg == 0 or len(payload) < start:
            continue  # a sound record with a bad table cannot be; skipped all the same
        segments = tuple(_SEGMENT.unpack_from(payload, _PACKET.size + k * _SEGMENT.size) for k in range(nseg))
        n = sum(f for f, _ in segments)
        data = payload[start:]
        codes = unpack_codes(data, n, header.n_codebooks) if header.coder == "raw" or flags & FLAG_RAW \
            else np.empty((n, 0), np.uint16)
        sizes.append(size)
        yield Packet(codes=codes, segments=segments, flags=flags, payload=data, offset=offset, start=frames,
                     index=count + 1)
        count += 1
        frames += n
