"""Reading either version: the `Reader` protocol both implement, the header of either, and
`ecdc info`'s description. Imports no torch.

A read is two steps, because what it needs depends on the header (the frames of a time
range, a language model for Meta's LM-coded files):

    inp = Input(fo)
    header = read_header(inp)
    reader = open_reader(inp, header, frames=..., lm=...)
"""
from __future__ import annotations

import typing as tp

from . import recovery, v0, v1
from .records import ALL_FRAMES, End, Frames, Header, Input, Packet


class Reader(tp.Protocol):
    """The packets of a file, in order; the lengths as soon as they are known."""
    header: Header
    end: tp.Optional[End]       # set once the iteration has reached the end

    @property
    def num_samples(self) -> tp.Optional[int]: ...          # at the model's rate

    @property
    def source_num_samples(self) -> tp.Optional[int]: ...   # at the original's rate

    @property
    def position(self) -> int: ...                          # bytes read so far

    def __iter__(self) -> tp.Iterator[Packet]: ...


def read_header(inp: Input) -> Header:
    """The header of a version-1 file, or of version 0 (`header.version` 0)."""
    head = inp.read(len(v0.MAGIC))
    if head == v0.MAGIC:
        return v0.read_header(inp, head)
    return v1.read_header(inp, head)


def open_reader(inp: Input, header: Header, *, frames: Frames = ALL_FRAMES,
                lm: tp.Optional[v0.CdfModel] = None, why: str = v0.DAMAGED) -> Reader:
    """The reader of a file whose `header` `inp` has just read. `lm` and `why` serve
    LM-coded version-0 files: the reference's float LM, and the likely cause errors give."""
    if header.version == 0:
        return v0.Reader(inp, header, frames, lm, why)
    return v1.Reader(inp, header, frames)


class Description(tp.NamedTuple):
    header: Header
    end: End
    size: int                       # bytes
    range_coded: tp.Optional[int]   # packets range coded (not stored raw); None: version 0 and live streams do not say
    cut: tp.Optional[int] = None    # a live stream cut before its end record: the byte where it is cut


def describe(fo: tp.BinaryIO) -> Description:
    """What `ecdc info` shows, reading every record and checking its CRC; of a version-0
    file, what its metadata says (`header.version` is 0)."""
    inp = Input(fo)
    header = read_header(inp)
    if header.version == 0:
        return Description(header, *v0.describe(inp, header), None)
    if header.version == v1.LIVE_VERSION:
        end, size, cut = recovery.describe(inp, header)
        return Description(header, end, size, None, cut)
    reader = v1.Reader(inp, header)
    coded = sum(header.coder == "lm" and not p.flags & v1.FLAG_RAW for p in reader)
    assert reader.end is not None
    return Description(header, reader.end, reader.position, coded)
