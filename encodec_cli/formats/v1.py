"""The .ecdc container, version 1 (see formats/ecdc-v1.md). Imports no torch.

A file is a header, then records: code packets and one end record. Every part carries
a CRC-32, so corruption is reported with a byte offset instead of decoding to noise.
"""
from __future__ import annotations

import json
import struct
import typing as tp
import zlib
from dataclasses import replace

import numpy as np

from ..errors import CorruptError, FormatError, NotEcdcError, TruncatedError
from ..specs import SPECS, ModelSpec
from . import v0
from .records import ALL_FRAMES, CODE_BITS, VERSION, End, Frames, Header, Input, Packet, Segment

MAGIC = b"\x89ECDC\r\n\x1a"
LIVE_VERSION = 2  # a live stream (live.py): the same header, then frames as they are coded
UNKNOWN = 0xFFFF_FFFF_FFFF_FFFF  # a length not known when the header was written

MODEL_IDS = {"encodec_24khz": 1, "encodec_48khz": 2}
CODER_IDS = {"raw": 0, "lm": 3}
# Coders 1 and 2: float language-model coders of unreleased development builds; their files
# decode only where floats round as on the machine that wrote them, and are refused by name.
RETIRED_CODERS = {1: "the language-model coder of ecdc development builds before 2026-11-24",
                  2: "the floating-point language-model coder of ecdc development builds "
                     "before 2026-11-25"}

_PREFIX = struct.Struct(">8sBH")             # magic, version, size of the body
_BODY = struct.Struct(">BBBIIBIHQQ8s8s")      # see Header
_CRC = struct.Struct(">I")
_EXT = struct.Struct(">BH")                   # source bit depth code, size of the tags' JSON
SOURCE_BITS = {"16": 1, "24": 2, "float": 3}
MAX_TAGS = 60000
_RECORD = struct.Struct(">BI")                # type, payload size
_PACKET = struct.Struct(">BB")                # flags, number of segments
_SEGMENT = struct.Struct(">Hf")               # frames, scale
_END = struct.Struct(">QQQI")                 # frames, samples, source samples, packets

RECORD_PACKET = 1
RECORD_END = 2
FLAG_RAW = 1  # in an LM-coded file: this packet's codes are stored raw
MAX_RECORD = 1 << 28
MAX_SOURCE_RATE = 1_000_000   # Hz: what a reader accepts of the original's rate ...
MAX_SOURCE_CHANNELS = 1024    # ... and channel count (libsndfile's limit)


def header_bytes(h: Header) -> bytes:
    """The header as written: prefix, body, extension (revision 2), CRC-32."""
    def length(n: tp.Optional[int]) -> int:
        return UNKNOWN if n is None else n

    body = _BODY.pack(MODEL_IDS[h.model], CODER_IDS[h.coder], h.n_codebooks,
                      round(h.bandwidth * 1000), h.sample_rate, h.channels,
                      h.source_sample_rate, h.source_channels,
                      length(h.num_samples), length(h.source_num_samples),
                      h.weights_fingerprint, h.lm_fingerprint)
    body += _extension(h)
    data = _PREFIX.pack(MAGIC, LIVE_VERSION if h.version == LIVE_VERSION else VERSION, len(body)) + body
    return data + _CRC.pack(zlib.crc32(data))


def _extension(h: Header) -> bytes:
    """Fields after the 50-byte body (revision 2 of version 1): source bit depth, tags."""
    if h.source_bits is None and not h.tags:
        return b""
    tags = json.dumps(dict(h.tags), ensure_ascii=False).encode()
    if len(tags) > MAX_TAGS:  # far more than any title: dropped rather than cut mid-text
        tags = b"{}"
    return _EXT.pack(SOURCE_BITS.get(h.source_bits or "", 0), len(tags)) + tags


# ---------------------------------------------------------------- raw codes

def pack_codes(codes: np.ndarray) -> bytes:
    """[frames, codebooks] codes < 1024 -> 10 bits each, frame-major, MSB first."""
    values = np.ascontiguousarray(codes, dtype=">u2").reshape(-1)
    bits = np.unpackbits(values.view(np.uint8).reshape(-1, 2), axis=1)[:, 16 - CODE_BITS:]
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_codes(data: bytes, frames: int, codebooks: int) -> np.ndarray:
    n = frames * codebooks
    if len(data) != (n * CODE_BITS + 7) // 8:
        raise FormatError(f"raw packet holds {len(data)} bytes, expected "
                          f"{(n * CODE_BITS + 7) // 8} for {frames} frames")
    bits = np.unpackbits(np.frombuffer(data, np.uint8))[:n * CODE_BITS].reshape(n, CODE_BITS)
    weights = (1 << np.arange(CODE_BITS - 1, -1, -1)).astype(np.uint16)
    return (bits.astype(np.uint16) @ weights).astype(np.uint16).reshape(frames, codebooks)


# ---------------------------------------------------------------- writing

class Writer:
    """Writes a header, then packets as they come, then the end record.

    On a seekable file the header's lengths are filled in at the end; on a pipe they
    stay unknown and the end record carries them.
    """

    def __init__(self, fo: tp.BinaryIO, header: Header):
        self.fo, self.header = fo, header
        self.frames = self.packets = self.segments = 0
        self.last_segment = 0  # frames of the last segment written
        fo.write(header_bytes(header))

    def write_packet(self, segments: tp.Sequence[Segment], payload: bytes, flags: int = 0) -> None:
        head = _PACKET.pack(flags, len(segments)) + b"".join(_SEGMENT.pack(*s) for s in segments)
        _write_record(self.fo, RECORD_PACKET, head + payload)
        self.frames += sum(n for n, _ in segments)
        self.packets += 1
        self.segments += len(segments)
        self.last_segment = segments[-1][0]

    def finish(self, num_samples: int, source_num_samples: int) -> End:
        end = End(self.frames, num_samples, source_num_samples, self.packets)
        _write_record(self.fo, RECORD_END, _END.pack(end.frames, end.num_samples,
                                                     end.source_num_samples, end.packets))
        if seekable(self.fo):
            pos = self.fo.tell()
            self.fo.seek(0)
            self.fo.write(header_bytes(replace(self.header, num_samples=num_samples,
                                               source_num_samples=source_num_samples)))
            self.fo.seek(pos)
        self.fo.flush()
        return end


def seekable(fo) -> bool:
    try:
        return fo.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def _write_record(fo, kind: int, payload: bytes) -> None:
    head = _RECORD.pack(kind, len(payload))
    fo.write(head + payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))))




# ---------------------------------------------------------------- reading

def read_header(inp: Input, head: bytes = b"") -> Header:
    """The header; `head`: its first bytes, already read from `inp`."""
    prefix = head + inp.read(_PREFIX.size - len(head))
    if len(prefix) < len(MAGIC) or not prefix.startswith(MAGIC):
        if prefix.startswith(v0.MAGIC):
            raise FormatError("a version-0 file (of Meta's encodec) where version 1 was expected")
        raise NotEcdcError("not an .ecdc file (no ecdc signature at the start)")
    if len(prefix) < _PREFIX.size:
        raise TruncatedError(f"truncated file: the header needs {_PREFIX.size} bytes, "
                             f"only {len(prefix)} present")
    _, version, size = _PREFIX.unpack(prefix)
    if version not in (VERSION, LIVE_VERSION):
        raise FormatError(f"unsupported .ecdc format version {version} (this ecdc reads "
                          f"versions {VERSION} and {LIVE_VERSION}, live); a newer ecdc may read it")
    if size < _BODY.size:
        raise CorruptError(f"corrupted header: body of {size} bytes is too short")
    body = inp.read_exactly(size, "the header")
    (crc,) = _CRC.unpack(inp.read_exactly(_CRC.size, "the header checksum"))
    if zlib.crc32(prefix + body) != crc:
        raise CorruptError("corrupted file: the header fails its CRC-32 check at byte 0")
    (model_id, coder_id, n_codebooks, bandwidth, sample_rate, channels, source_sample_rate,
     source_channels, num_samples, source_num_samples, weights_fp, lm_fp) = _BODY.unpack_from(body)
    model = {v: k for k, v in MODEL_IDS.items()}.get(model_id)
    coder = {v: k for k, v in CODER_IDS.items()}.get(coder_id)
    if model is None:
        raise FormatError(f"unknown model id {model_id} in the header")
    if coder_id in RETIRED_CODERS:
        raise FormatError(f"this file uses coder {coder_id}, {RETIRED_CODERS[coder_id]}, "
                          f"which this ecdc cannot decode; compress the original again")
    if coder is None:
        raise FormatError(f"unknown coder id {coder_id} in the header")
    spec = SPECS[model]
    widths = {spec.codebooks_for(b): round(b * 1000) for b in spec.bandwidths}
    checks = (("sample_rate", sample_rate, sample_rate == spec.sample_rate),
              ("channels", channels, channels == spec.channels),
              ("codebooks", n_codebooks, n_codebooks in widths),
              ("bandwidth", bandwidth, widths.get(n_codebooks) == bandwidth),
              ("source_rate", source_sample_rate, 1 <= source_sample_rate <= MAX_SOURCE_RATE),
              ("source_channels", source_channels, 1 <= source_channels <= MAX_SOURCE_CHANNELS))
    for name, value, ok in checks:
        if not ok:
            raise CorruptError(f"corrupted header: {name} {value} is out of range for {model}")
    source_bits: tp.Optional[str] = None
    tags: tp.Tuple[tp.Tuple[str, str], ...] = ()
    ext = body[_BODY.size:]
    if len(ext) >= _EXT.size:
        bits_code, tags_size = _EXT.unpack_from(ext)
        source_bits = {v: k for k, v in SOURCE_BITS.items()}.get(bits_code)
        try:
            parsed = json.loads(ext[_EXT.size:_EXT.size + tags_size].decode() or "{}")
            tags = tuple((str(k), str(v)) for k, v in parsed.items()) if isinstance(parsed, dict) else ()
        except (UnicodeDecodeError, ValueError):
            raise CorruptError("corrupted header: its tags are not valid JSON") from None
    header = Header(model=model, coder=coder, n_codebooks=n_codebooks, bandwidth=bandwidth / 1000,
                    sample_rate=sample_rate, channels=channels, source_sample_rate=source_sample_rate,
                    source_channels=source_channels,
                    num_samples=None if num_samples == UNKNOWN else num_samples,
                    source_num_samples=None if source_num_samples == UNKNOWN else source_num_samples,
                    weights_fingerprint=weights_fp, lm_fingerprint=lm_fp, source_bits=source_bits, tags=tags,
                    version=version)
    if header.num_samples is not None and header.source_num_samples is not None:
        check_lengths(header, header.num_samples, header.source_num_samples, "header")
    return header


class Reader:
    """Iterates over the packets of a version-1 stream whose header `inp` has just read;
    `end` is set once read.

    Packets outside `frames` are passed over unread: on a seekable file only their record
    and segment heads are read (their checksums are not checked), on a pipe their bytes are
    read and dropped. Past `frames.stop` the iteration ends at once when the header has the
    lengths.
    """

    def __init__(self, inp: Input, header: Header, frames: Frames = ALL_FRAMES):
        if header.version == LIVE_VERSION:
            raise FormatError("a live stream (version 2): its frames are read by formats.live.Reader")
        self._in, self.header, self.frames = inp, header, frames
        self.end: tp.Optional[End] = None

    @classmethod
    def open(cls, fo: tp.BinaryIO, frames: Frames = ALL_FRAMES) -> "Reader":
        """A reader of `fo`, its header read."""
        inp = Input(fo)
        return cls(inp, read_header(inp), frames)

    @property
    def num_samples(self) -> tp.Optional[int]:
        """Length at the model's rate: from the header, else from the end record once read."""
        if self.header.num_samples is not None:
            return self.header.num_samples
        return self.end.num_samples if self.end else None

    @property
    def source_num_samples(self) -> tp.Optional[int]:
        if self.header.source_num_samples is not None:
            return self.header.source_num_samples
        return self.end.source_num_samples if self.end else None

    @property
    def position(self) -> int:
        """Bytes read so far."""
        return self._in.pos

    def __iter__(self) -> tp.Iterator[Packet]:
        inp, h = self._in, self.header
        first, stop = self.frames.first, self.frames.stop
        count = frames = 0
        while True:
            offset = inp.pos
            head = inp.read(_RECORD.size)
            if not head:
                raise TruncatedError(f"truncated file: it ends at byte {offset} without its end "
                                     f"record (after {count} packets)")
            if len(head) < _RECORD.size:
                raise TruncatedError(f"truncated file: record at byte {offset} is cut short")
            kind, size = _RECORD.unpack(head)
            if size > MAX_RECORD:
                raise CorruptError(f"corrupted file: record at byte {offset} claims {size} bytes")
            after = stop is not None and frames >= stop
            if kind == RECORD_PACKET and after and h.num_samples is not None:
                return  # the rest is not wanted, and the lengths are known without the end record
            if kind == RECORD_PACKET and (frames < first or after) and seekable(inp.fo):
                n = self._skim(size, offset)
                if frames + n <= first or after:
                    inp.fo.seek(offset + _RECORD.size + size + _CRC.size)
                    inp.pos = offset + _RECORD.size + size + _CRC.size
                    count += 1
                    frames += n
                    continue
                inp.fo.seek(offset + _RECORD.size)
                inp.pos = offset + _RECORD.size
            payload = inp.read_exactly(size, f"record {count + 1}", offset)
            (crc,) = _CRC.unpack(inp.read_exactly(_CRC.size, f"record {count + 1}'s checksum", offset))
            if zlib.crc32(payload, zlib.crc32(head)) != crc:
                raise CorruptError(f"corrupted file: record {count + 1} at byte {offset} fails "
                                   f"its CRC-32 check")
            if kind == RECORD_END:
                if len(payload) < _END.size:
                    raise CorruptError(f"corrupted file: end record at byte {offset} is too short")
                end = End(*_END.unpack_from(payload))
                if end.frames != frames or end.packets != count:
                    raise CorruptError(f"corrupted file: end record at byte {offset} counts "
                                       f"{end.packets} packets / {end.frames} frames, "
                                       f"the file has {count} / {frames}")
                if h.num_samples is not None and h.num_samples != end.num_samples:
                    raise CorruptError(f"corrupted file: the lengths in the header and the end record at byte "
                                       f"{offset} disagree")
                check_end(h, end, f"file: the end record at byte {offset}")
                if inp.read(1):
                    raise FormatError(f"unexpected data after the end record at byte {inp.pos - 1}")
                self.end = end
                return
            if kind != RECORD_PACKET:
                continue  # a record type from a later minor revision: skip it
            if len(payload) < _PACKET.size:
                raise CorruptError(f"corrupted file: packet at byte {offset} is too short")
            flags, nseg = _PACKET.unpack_from(payload)
            start = _PACKET.size + nseg * _SEGMENT.size
            if nseg == 0 or len(payload) < start:
                raise CorruptError(f"corrupted file: packet at byte {offset} has a bad segment table")
            segments = tuple(_SEGMENT.unpack_from(payload, _PACKET.size + i * _SEGMENT.size)
                             for i in range(nseg))
            n = sum(f for f, _ in segments)
            if frames + n <= first or after:  # on a pipe: read, then dropped undecoded
                count += 1
                frames += n
                continue
            data = payload[start:]
            if h.coder == "raw" or flags & FLAG_RAW:
                codes = unpack_codes(data, n, h.n_codebooks)
            else:
                codes = np.empty((n, 0), np.uint16)
            yield Packet(codes=codes, segments=segments, flags=flags, payload=data, offset=offset,
                         start=frames, index=count + 1)
            count += 1
            frames += n

    def _skim(self, size: int, offset: int) -> int:
        """Frames of the packet whose payload (`size` bytes) comes next, from its segment table."""
        inp = self._in
        if size < _PACKET.size:
            raise CorruptError(f"corrupted file: packet at byte {offset} is too short")
        _, nseg = _PACKET.unpack(inp.read_exactly(_PACKET.size, f"the packet at byte {offset}"))
        if nseg == 0 or size < _PACKET.size + nseg * _SEGMENT.size:
            raise CorruptError(f"corrupted file: packet at byte {offset} has a bad segment table")
        table = inp.read_exactly(nseg * _SEGMENT.size, f"the packet at byte {offset}")
        return sum(_SEGMENT.unpack_from(table, i * _SEGMENT.size)[0] for i in range(nseg))


# ---------------------------------------------------------------- lengths

def check_end(h: Header, end: End, where: str) -> None:
    """An end record's lengths must fit its frames, within a second (a reader pads its
    output to them), and each other."""
    if abs(frames_for(SPECS[h.model], end.num_samples) - end.frames) > SPECS[h.model].frame_rate:
        raise CorruptError(f"corrupted {where}: it claims {end.num_samples} samples for {end.frames} frames")
    check_lengths(h, end.num_samples, end.source_num_samples, where)


def check_lengths(h: Header, num_samples: int, source_num_samples: int, where: str) -> None:
    """The original's length must be the model-rate length at the original's rate (within
    1 s and 1%, far more than resampling moves it): a reader pads the output to it."""
    seconds, source_seconds = num_samples / h.sample_rate, source_num_samples / h.source_sample_rate
    if abs(seconds - source_seconds) > 1 + 0.01 * seconds:
        raise CorruptError(f"corrupted {where}: its lengths disagree ({num_samples} samples at {h.sample_rate} Hz, "
                           f"{source_num_samples} at {h.source_sample_rate} Hz)")


def frames_for(spec: ModelSpec, num_samples: int) -> int:
    """The frames that ecdc's encoder makes of `num_samples` samples (in O(1))."""
    if spec.causal:
        return -(-num_samples // spec.hop_length)
    return v0.frame_count(spec, num_samples)
