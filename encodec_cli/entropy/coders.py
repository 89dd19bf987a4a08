"""Code coders: how a packet's [frames, codebooks] codes become bytes and back.

'raw' stores 10 bits per code (container.pack_codes); 'lm' range-codes them with
EnCodec's language model in exact arithmetic (lmcoder.py), falling back to raw per packet.
Coders take packets in batches of up to `batch_streams` streams (segments).
"""
from __future__ import annotations

import typing as tp

import numpy as np

from ..formats import v1 as F


class RawEncoder:
    name = "raw"
    fingerprint = bytes(8)
    batch_streams = 1

    def encode_many(self, packets: tp.Sequence[tp.Tuple[np.ndarray, tp.Sequence[F.Segment]]]
                    ) -> tp.List[tp.Tuple[bytes, int]]:
        return [(F.pack_codes(codes), 0) for codes, _ in packets]


class RawDecoder:
    batch_streams = 1

    def decode_many(self, packets: tp.Sequence[F.Packet]) -> tp.List[np.ndarray]:
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


def make_encoder(opts, spec, n_q: int):
    if not opts.lm:
        return RawEncoder()
    from .lmcoder import LMEncoder

    return LMEncoder.load(spec, n_q, opts.lm_weights, opts.progress)


def make_decoder(header: F.Header, opts, spec):
    if header.coder == "raw":
        return RawDecoder()
    from .lmcoder import LMDecoder

    return LMDecoder.load(spec, header, opts.lm_weights, opts.progress)
