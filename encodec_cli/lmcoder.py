"""Range coding of codes with EnCodec's language model ('lm' coder, formats/ecdc-v1.md).

The encoder and the decoder run the same step-by-step LM computation (one frame of each
stream per call, same shapes in the same order, always on one thread), so on one machine
they get bit-identical probabilities; a batched pass over many frames, or more threads,
would round differently. Probabilities are floored to multiples of 2**-24 before
constriction's range coder quantizes them, and each packet stores a CRC-32 of its codes:
a decoder whose arithmetic differs stops with an error instead of writing garbage.
"""
from __future__ import annotations

import contextlib
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
from .lm import CARD, LanguageModel, LMState, build_lm, checkpoint_name
from .models import ModelSpec

PROB_BITS = 24
_MODEL = constriction.stream.model.Categorical(perfect=False)
_CACHE: tp.Dict[tp.Tuple[str, tp.Optional[Path], int], tp.Tuple[LanguageModel, bytes]] = {}


def load_lm(codec_name: str, weights: tp.Optional[Path], n_q: int, progress: bool = True
            ) -> tp.Tuple[LanguageModel, bytes]:
    """The LM for the first `n_q` codebooks (the others' embeddings and heads are not kept)."""
    key = (codec_name, weights, n_q)
    if key not in _CACHE:
        _CACHE[key] = W.load_model(checkpoint_name(codec_name), lambda: build_lm(codec_name, n_q),
                                   weights, progress)
    return _CACHE[key]


def quantize(probs: torch.Tensor) -> np.ndarray:
    """Floor to the 2**-24 grid, exactly, in float64."""
    p = probs.double().numpy()
    return np.floor(p * (1 << PROB_BITS)) / (1 << PROB_BITS)


@contextlib.contextmanager
def one_thread() -> tp.Iterator[None]:
    """Run the LM on one thread: with more, torch splits sums differently and rounds otherwise."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def codes_crc(codes: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(codes, dtype=">u2").tobytes())


class _Streams:
    """Which LM state codes which frame, in coding order.

    24 kHz: one state runs over the whole file, frame after frame. 48 kHz: every segment
    starts a fresh state (as in the reference), so the segments of a packet are independent
    streams; they are stepped together as one batch, frame t of every segment in turn.
    """

    def __init__(self, lm: LanguageModel, n_q: int, per_segment: bool):
        self.lm, self.n_q, self.per_segment = lm, n_q, per_segment
        self.state: tp.Optional[LMState] = None

    def schedule(self, segments: tp.Sequence[F.Segment]) -> tp.Iterator[tp.Tuple[LMState, np.ndarray]]:
        """Per LM step: the state, and per stream the packet frame it codes (-1: none, finished)."""
        frames = np.array([f for f, _ in segments], np.int64)
        if not self.per_segment:
            if self.state is None:
                self.state = self.lm.start(self.n_q)
            for row in range(int(frames.sum())):
                yield self.state, np.array([row])
            return
        if not len(frames):
            return
        state = self.lm.start(self.n_q, len(frames))
        starts = np.cumsum(frames) - frames
        for t in range(int(frames.max())):
            yield state, np.where(t < frames, starts + t, -1)


def _push(state: LMState, codes: np.ndarray, rows: np.ndarray) -> None:
    """Feed the frames `rows` of `codes`; a finished stream gets frame 0 (its output is unused)."""
    state.push(torch.from_numpy(codes[np.maximum(rows, 0)].astype(np.int64)))


class LMEncoder:
    name = "lm"
    fallback = True  # store a packet raw when LM coding is not smaller (benchmarks turn it off)

    def __init__(self, lm: LanguageModel, fingerprint: bytes, spec: ModelSpec, n_q: int):
        self.fingerprint = fingerprint
        self._streams = _Streams(lm, n_q, per_segment=not spec.causal)

    @classmethod
    def load(cls, spec: ModelSpec, n_q: int, weights: tp.Optional[Path], progress: bool = True):
        lm, fp = load_lm(spec.name, weights, n_q, progress)
        return cls(lm, fp, spec, n_q)

    def encode_lm(self, codes: np.ndarray, segments: tp.Sequence[F.Segment]) -> bytes:
        """The packet's LM-coded data (codes checksum and range coder words)."""
        coder = constriction.stream.queue.RangeEncoder()
        with one_thread():
            for state, rows in self._streams.schedule(segments):
                live = rows >= 0
                symbols = codes[rows[live]].reshape(-1).astype(np.int32)
                coder.encode(symbols, _MODEL, quantize(state.step())[live].reshape(-1, CARD))
                _push(state, codes, rows)
        return struct.pack(">I", codes_crc(codes)) + coder.get_compressed().astype(">u4").tobytes()

    def encode(self, codes: np.ndarray, segments: tp.Sequence[F.Segment]) -> tp.Tuple[bytes, int]:
        """(data, flags) of a packet: LM-coded, or raw when that is not smaller."""
        payload = self.encode_lm(codes, segments)
        raw = F.pack_codes(codes)
        if self.fallback and len(payload) >= len(raw):
            return raw, F.FLAG_RAW  # never worse than 10 bits per code
        return payload, 0


class LMDecoder:
    def __init__(self, lm: LanguageModel, spec: ModelSpec, n_q: int):
        self._streams = _Streams(lm, n_q, per_segment=not spec.causal)
        self.n_q = n_q
        self.packets = 0

    @classmethod
    def load(cls, spec: ModelSpec, header: F.Header, weights: tp.Optional[Path], progress: bool = True):
        lm, fp = load_lm(spec.name, weights, header.n_codebooks, progress)
        if fp != header.lm_fingerprint:
            raise WeightsError(f"the file was coded with another language model (fingerprint "
                               f"{header.lm_fingerprint.hex()}, loaded {fp.hex()}); "
                               f"pass the same --lm-weights FILE")
        return cls(lm, spec, header.n_codebooks)

    def probabilities(self, state: LMState) -> np.ndarray:
        """Quantized probabilities [streams, codebooks, 1024] of the state's next frame."""
        return quantize(state.step())

    def decode(self, packet: F.Packet) -> np.ndarray:
        self.packets += 1
        with one_thread():
            return self._decode(packet)

    def _decode(self, packet: F.Packet) -> np.ndarray:
        if packet.flags & F.FLAG_RAW:
            if not self._streams.per_segment:  # keep the carried state in step with the encoder
                for state, rows in self._streams.schedule(packet.segments):
                    state.step()
                    _push(state, packet.codes, rows)
            return packet.codes
        data = packet.payload
        if len(data) < 4 or (len(data) - 4) % 4:
            raise CorruptError(f"corrupted file: LM packet at byte {packet.offset} has a bad size")
        (crc,) = struct.unpack_from(">I", data)
        words = np.frombuffer(data, ">u4", offset=4).astype(np.uint32)
        coder = constriction.stream.queue.RangeDecoder(words)
        codes = np.zeros((packet.frames, self.n_q), np.uint16)
        for state, rows in self._streams.schedule(packet.segments):
            live = rows >= 0
            probs = self.probabilities(state)[live].reshape(-1, CARD)
            codes[rows[live]] = coder.decode(_MODEL, probs).reshape(-1, self.n_q)
            _push(state, codes, rows)
        if codes_crc(codes) != crc:
            raise CorruptError(
                f"LM decoding of packet {self.packets} (byte {packet.offset}) gives codes that fail "
                f"their checksum: the file is damaged, or this machine computes the language "
                f"model's probabilities differently from the one that compressed it")
        return codes
