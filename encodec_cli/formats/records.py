"""What both format versions are read into: the header, code packets, the end record; the
byte counter that lets errors name an offset; how codes are grouped into packets.

Version 1 (v1.py) writes these records; version 0 (v0.py, Meta's encodec) is read into them.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np

from ..errors import TruncatedError

CODE_BITS = 10          # every code is below 1024 (both versions store raw codes in 10 bits)
PACKET_SECONDS = 8.0    # a packet's audio: long enough that framing costs <1% of an LM-coded stream
VERSION = 1             # the version ecdc writes


@dataclass(frozen=True, kw_only=True)
class Header:
    model: str                      # 'encodec_24khz' or 'encodec_48khz'
    coder: str                      # 'raw' or 'lm'
    n_codebooks: int
    bandwidth: float                # kbps, nominal
    sample_rate: int                # the model's
    channels: int                   # the model's
    source_sample_rate: int         # the input's, restored on decompression
    source_channels: int
    num_samples: tp.Optional[int]   # at the model's rate; None while unknown
    source_num_samples: tp.Optional[int]
    weights_fingerprint: bytes      # 8 bytes
    lm_fingerprint: bytes = bytes(8)
    source_bits: tp.Optional[str] = None          # '16', '24' or 'float': restored on decompression
    tags: tp.Tuple[tp.Tuple[str, str], ...] = ()  # the source's (name, text) tags: title, artist, ...
    version: int = VERSION          # of the file read (0: Meta's encodec; 2: a live stream)


Segment = tp.Tuple[int, float]  # (frames, scale)
CodedPacket = tp.Tuple[np.ndarray, tp.Tuple[Segment, ...]]  # a packet's codes [frames, codebooks], segments


@dataclass(frozen=True, kw_only=True)
class Packet:
    codes: np.ndarray               # [frames, codebooks] uint16; [frames, 0] until the LM decodes it
    segments: tp.Tuple[Segment, ...]  # 48 kHz: one per 1 s segment; 24 kHz: one
    flags: int = 0
    payload: bytes = b""            # the coded codes as stored
    offset: int = 0                 # byte offset of the record in the file
    start: int = 0                  # index of its first frame in the file
    index: int = 1                  # its number in the file, from 1

    @property
    def frames(self) -> int:
        return self.codes.shape[0]


@dataclass(frozen=True)
class End:
    frames: int
    num_samples: int
    source_num_samples: int
    packets: int


@dataclass(frozen=True)
class Frames:
    """The frames a read wants: packets that end before `first`, or start at or after
    `stop` (None: no end), are passed over without decoding them."""
    first: int = 0
    stop: tp.Optional[int] = None


ALL_FRAMES = Frames()


@dataclass(frozen=True)
class Gap:
    """Packets lost to damage, found by a salvaging read: `packets` of them (None: not
    known) from packet `index` on, `frames` long (None: not known), from byte `offset`."""
    index: int
    offset: int
    packets: tp.Optional[int]
    frames: tp.Optional[int]
    segments: tp.Optional[int] = None  # 48 kHz: the 1 s segments lost
    why: str = ""


class Input:
    """A binary stream that counts the bytes read, so that errors can name an offset."""

    def __init__(self, fo: tp.BinaryIO, pos: int = 0):
        self.fo, self.pos = fo, pos

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer at the end)."""
        data = self.fo.read(n)
        self.pos += len(data)
        return data

    def read_exactly(self, n: int, what: str, at: tp.Optional[int] = None) -> bytes:
        """n bytes; a shortfall names `what` and its offset (`at`, else where the read began)."""
        chunks, got = [], 0
        while got < n:
            chunk = self.fo.read(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        if len(data) != n:
            raise TruncatedError(f"truncated file: {what} at byte {self.pos if at is None else at} "
                                 f"needs {n} bytes, only {len(data)} left")
        self.pos += n
        return data


def packetize(pieces: tp.Iterable[tp.Tuple[np.ndarray, float]], causal: bool, frame_rate: int
              ) -> tp.Iterator[CodedPacket]:
    """Codes in packets of about PACKET_SECONDS: (codes [frames, codebooks], segments).

    `pieces` are (codes, scale) in file order. The 24 kHz stream is continuous: its pieces
    join into one segment per packet. Each 48 kHz piece is a whole 1 s segment and keeps
    its own frame count and scale.
    """
    limit = PACKET_SECONDS * frame_rate
    codes: tp.List[np.ndarray] = []
    segments: tp.List[Segment] = []
    frames = 0
    for piece, scale in pieces:
        codes.append(piece)
        frames += len(piece)
        segments = [(frames, 1.0)] if causal else segments + [(len(piece), scale)]
        if frames >= limit:
            yield np.concatenate(codes), tuple(segments)
            codes, segments, frames = [], [], 0
    if codes:
        yield np.concatenate(codes), tuple(segments)
