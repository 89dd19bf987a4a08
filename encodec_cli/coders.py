"""Code coders: how a packet's [frames, codebooks] codes become bytes and back.

'raw' stores 10 bits per code (container.pack_codes); 'lm' range-codes them with
EnCodec's language model (lmcoder.py), falling back to raw per packet.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from . import container as F


class RawEncoder:
    name = "raw"
    fingerprint = bytes(8)

    def encode(self, codes: np.ndarray, segments: tp.Sequence[F.Segment]) -> tp.Tuple[bytes, int]:
        return F.pack_codes(codes), 0


class RawDecoder:
    def decode(self, packet: F.Packet) -> np.ndarray:
        return packet.codes


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
