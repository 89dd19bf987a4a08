"""Code coders: how a packet's [frames, codebooks] codes become bytes and back.

'raw' stores 10 bits per code (formats.v1.pack_codes); 'lm' range-codes them with
EnCodec's language model in exact arithmetic (lmcoder.py), falling back to raw per packet.
Coders are given packets in batches that hold at least `batch_streams` streams (segments),
the last batch of a file fewer.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np

from ..formats.records import CodedPacket, Header, Packet
from ..formats.v1 import pack_codes
from ..specs import ModelSpec


class Encoder(tp.Protocol):
    name: str                # the header's coder
    fingerprint: bytes       # of the language model (raw: zeros)
    batch_streams: int

    def encode_many(self, packets: tp.Sequence[CodedPacket], step: tp.Optional[tp.Callable[[int], None]] = None
                    ) -> tp.List[tp.Tuple[bytes, int]]:
        """(payload, flags) of each packet, given in file order; `step(n)` is told of every
        n frames coded (for progress)."""


class Decoder(tp.Protocol):
    batch_streams: int

    def decode_many(self, packets: tp.Sequence[Packet]) -> tp.List[np.ndarray]:
        """The codes [frames, codebooks] of each packet."""


class RawEncoder:
    name = "raw"
    fingerprint = bytes(8)
    batch_streams = 1

    def encode_many(self, packets: tp.Sequence[CodedPacket], step=None) -> tp.List[tp.Tuple[bytes, int]]:
        return [(pack_codes(codes), 0) for codes, _ in packets]


class RawDecoder:
    batch_streams = 1

    def decode_many(self, packets: tp.Sequence[Packet]) -> tp.List[np.ndarray]:
        return [p.codes for p in packets]


T = tp.TypeVar("T")


def batches(items: tp.Iterable[T], streams: tp.Callable[[T], int], limit: int,
            ramp: bool = False) -> tp.Iterator[tp.List[T]]:
    """Consecutive items in lists holding at least `limit` streams (the last may hold fewer).

    With `ramp`, the first lists are smaller (one item, one, two, four, ...) so that the
    first results come early.
    """
    batch: tp.List[T] = []
    count, sizes = 0, [1, 1] if ramp else []
    for item in items:
        batch.append(item)
        count += streams(item)
        if (sizes and len(batch) >= sizes[0]) or count >= limit:
            yield batch
            if sizes:
                grown = 2 * sizes.pop(0)
                if not sizes and grown < limit:
                    sizes.append(grown)
            batch, count = [], 0
    if batch:
        yield batch


def make_encoder(spec: ModelSpec, n_q: int, *, lm: bool, lm_weights: tp.Optional[Path],
                 raw_fallback: bool = True, download_bars: bool = True) -> Encoder:
    """The raw coder, or the LM coder (its model loaded) for `n_q` codebooks of `spec`."""
    if not lm:
        return RawEncoder()
    from .lmcoder import LMEncoder

    return LMEncoder.load(spec, n_q, lm_weights, download_bars, raw_fallback)


def make_decoder(spec: ModelSpec, header: Header, *, lm_weights: tp.Optional[Path],
                 download_bars: bool = True) -> Decoder:
    """The decoder of a version-1 file's coder."""
    if header.coder == "raw":
        return RawDecoder()
    from .lmcoder import LMDecoder

    return LMDecoder.load(spec, header, lm_weights, download_bars)


def live_model(spec: ModelSpec, n_q: int, *, lm: bool, lm_weights: tp.Optional[Path],
               header: tp.Optional[Header] = None, download_bars: bool = True):
    """The frequency model of a live stream (with the LM's `fingerprint`; raw: uniform).
    Given the `header` of a stream to read, its LM's fingerprint must match."""
    from ..formats.live import Uniform

    if not lm:
        return Uniform(n_q)
    from .lmcoder import LiveModel, checked_lm, load_lm

    if header is not None:
        return LiveModel(checked_lm(spec, header, lm_weights, download_bars), header.lm_fingerprint, spec, n_q)
    return LiveModel(*load_lm(spec.name, lm_weights, n_q, download_bars), spec, n_q)
