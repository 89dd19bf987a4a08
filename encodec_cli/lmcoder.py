"""Range coding of codes with EnCodec's language model ('lm' coder, formats/ecdc-v1.md).

The encoder and the decoder run the same step-by-step LM computation (one frame per
call, same shapes in the same order), so on one machine they get bit-identical
probabilities; a batched pass over many frames would round differently. Probabilities
are floored to multiples of 2**-24 before constriction's range coder quantizes them,
and each packet stores a CRC-32 of its codes: a decoder whose arithmetic differs stops
with an error instead of writing garbage.
"""
from __future__ import annotations

import struct
import typing as tp
import zlib
from pathlib import Path

import constriction
import numpy as np
import torch

from . import container as F
from . import weights as W
from .errors import CorruptError, WeightsError
from .lm import LanguageModel, LMState, build_lm, checkpoint_name
from .models import ModelSpec

PROB_BITS = 24
_MODEL = constriction.stream.model.Categorical(perfect=False)
_CACHE: tp.Dict[tp.Tuple[str, tp.Optional[Path]], tp.Tuple[LanguageModel, bytes]] = {}


def load_lm(codec_name: str, weights: tp.Optional[Path], progress: bool = True
            ) -> tp.Tuple[LanguageModel, bytes]:
    key = (codec_name, weights)
    if key not in _CACHE:
        _CACHE[key] = W.load_model(checkpoint_name(codec_name), lambda: build_lm(codec_name),
                                   weights, progress)
    return _CACHE[key]


def quantize(probs: torch.Tensor) -> np.ndarray:
    """Floor to the 2**-24 grid, exactly, in float64."""
    p = probs.double().numpy()
    return np.floor(p * (1 << PROB_BITS)) / (1 << PROB_BITS)


def codes_crc(codes: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(codes, dtype=">u2").tobytes())


class _Stream:
    """The LM state of a stream: carried across a 24 kHz file, fresh at every 48 kHz segment."""

    def __init__(self, lm: LanguageModel, n_q: int, per_segment: bool):
        self.lm, self.n_q, self.per_segment = lm, n_q, per_segment
        self.state: tp.Optional[LMState] = None

    def states(self, segments: tp.Sequence[F.Segment]) -> tp.Iterator[LMState]:
        """The state to use for each frame of a packet, in order."""
        for frames, _ in segments:
            if self.state is None or self.per_segment:
                self.state = self.lm.start(self.n_q)
            for _ in range(frames):
                yield self.state


class LMEncoder:
    name = "lm"

    def __init__(self, lm: LanguageModel, fingerprint: bytes, spec: ModelSpec, n_q: int):
        self.fingerprint = fingerprint
        self._stream = _Stream(lm, n_q, per_segment=not spec.causal)

    @classmethod
    def load(cls, spec: ModelSpec, n_q: int, weights: tp.Optional[Path], progress: bool = True):
        lm, fp = load_lm(spec.name, weights, progress)
        return cls(lm, fp, spec, n_q)

    def encode_lm(self, codes: np.ndarray, segments: tp.Sequence[F.Segment]) -> bytes:
        """The packet's LM-coded data (codes checksum and range coder words)."""
        probs = []
        for state, frame in zip(self._stream.states(segments), codes):
            probs.append(state.step())
            state.push(torch.from_numpy(frame.astype(np.int64)))
        coder = constriction.stream.queue.RangeEncoder()
        coder.encode(codes.reshape(-1).astype(np.int32), _MODEL,
                     quantize(torch.cat(probs)) if probs else np.zeros((0, 1024)))
        return struct.pack(">I", codes_crc(codes)) + coder.get_compressed().astype(">u4").tobytes()

    def encode(self, codes: np.ndarray, segments: tp.Sequence[F.Segment]) -> tp.Tuple[bytes, int]:
        """(data, flags) of a packet: LM-coded, or raw when that is not smaller."""
        payload = self.encode_lm(codes, segments)
        raw = F.pack_codes(codes)
        if len(payload) >= len(raw):
            return raw, F.FLAG_RAW  # never worse than 10 bits per code
        return payload, 0


class LMDecoder:
    def __init__(self, lm: LanguageModel, spec: ModelSpec, n_q: int):
        self._stream = _Stream(lm, n_q, per_segment=not spec.causal)
        self.n_q = n_q
        self.packets = 0

    @classmethod
    def load(cls, spec: ModelSpec, header: F.Header, weights: tp.Optional[Path], progress: bool = True):
        lm, fp = load_lm(spec.name, weights, progress)
        if fp != header.lm_fingerprint:
            raise WeightsError(f"the file was coded with another language model (fingerprint "
                               f"{header.lm_fingerprint.hex()}, loaded {fp.hex()}); "
                               f"pass the same --lm-weights FILE")
        return cls(lm, spec, header.n_codebooks)

    def probabilities(self, state: LMState) -> np.ndarray:
        return quantize(state.step())

    def decode(self, packet: F.Packet) -> np.ndarray:
        self.packets += 1
        states = self._stream.states(packet.segments)
        if packet.flags & F.FLAG_RAW:
            for state, frame in zip(states, packet.codes):  # keep in step with the encoder
                state.step()
                state.push(torch.from_numpy(frame.astype(np.int64)))
            return packet.codes
        data = packet.payload
        if len(data) < 4 or (len(data) - 4) % 4:
            raise CorruptError(f"corrupted file: LM packet at byte {packet.offset} has a bad size")
        (crc,) = struct.unpack_from(">I", data)
        words = np.frombuffer(data, ">u4", offset=4).astype(np.uint32)
        coder = constriction.stream.queue.RangeDecoder(words)
        codes = np.empty((packet.frames, self.n_q), np.uint16)
        for t, state in enumerate(states):
            frame = coder.decode(_MODEL, self.probabilities(state))
            codes[t] = frame
            state.push(torch.from_numpy(frame.astype(np.int64)))
        if codes_crc(codes) != crc:
            raise CorruptError(
                f"LM decoding of packet {self.packets} (byte {packet.offset}) gives codes that fail "
                f"their checksum: the file is damaged, or this machine computes the language "
                f"model's probabilities differently from the one that compressed it")
        return codes
