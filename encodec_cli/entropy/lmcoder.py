"""Range coding of codes with EnCodec's language model in exact arithmetic (coder 3, 'lm').

The model (intlm.py) gives integer frequencies that are the same on every machine, so a
file decodes wherever it was not damaged. Every packet is coded on its own: each of its
segments is a fresh LM stream (24 kHz: one per packet; 48 kHz: one per 1 s segment).
Streams never interact. The encoder knows every code, so it runs the LM over each stream
in one causal pass (IntLM.known); the decoder must step frame by frame, and steps the
streams of several packets together (BATCH_STREAMS), with the same result. Each packet
stores a CRC-32 of its codes, so a damaged packet stops decoding with an error instead of noise.
"""
from __future__ import annotations

import itertools
import struct
import typing as tp
import zlib
from pathlib import Path

import constriction
import numpy as np

from ..codec import weights as W
from ..codec.lm import CARD, build_lm
from ..errors import CorruptError, MismatchError
from ..formats.live import cumulative
from ..formats.records import CodedPacket, Header, Packet, Segment
from ..formats.v1 import FLAG_RAW, pack_codes
from ..specs import ModelSpec
from .intlm import PASS_BLOCK, IntLM, State

_MODEL = constriction.stream.model.Categorical(perfect=False)
Step = tp.Optional[tp.Callable[[int], None]]  # told of each step's frames, for progress
# streams a decoder steps together; wider is faster per frame, but each holds its keys and
# values (int16): a 24 kHz packet (a 263-frame window) 1.3 MB, a 48 kHz segment (150
# frames) 0.8 MB. 8 keeps a two-hour 24 kHz file within 500 MB.
BATCH_STREAMS = {True: 8, False: 24}  # by spec.causal
DROP_COST = 4  # steps of each stream kept that dropping ended streams may cost (_Batch)


def load_lm(codec_name: str, weights: tp.Optional[Path], n_q: int, download_bars: bool = True
            ) -> tp.Tuple[IntLM, bytes]:
    """The integer LM for the first `n_q` codebooks, and the checkpoint's fingerprint."""
    def load() -> tp.Tuple[IntLM, bytes]:
        # mapped, so that the heads and tables of the codebooks not used are never read
        lm, fp = W.load_model(W.lm_name(codec_name), lambda: build_lm(codec_name, n_q),
                              weights, download_bars, mmap=True)
        return IntLM(lm), fp  # the float model is dropped

    return W.cached(("int-lm", codec_name, weights, n_q), load)


def codes_crc(codes: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(codes, dtype=">u2").tobytes())


def model_probabilities(freqs: np.ndarray) -> np.ndarray:
    """What constriction is given: the frequencies as float32 (exact: all below 2**24).

    They sum to 2**24 - 1024, so constriction's scale is exactly 1 and it codes symbol s
    with probability (g_s + 1) / 2**24 (formats/ecdc-v1.md, coder 3).
    """
    return freqs.reshape(-1, CARD).astype(np.float32, copy=False)


class _Batch:
    """The streams of several packets, stepped together: stream i codes frame t at step t.

    Streams are the packets' segments in order, so a packet's streams are contiguous
    (`ranges`); their frames are rows of the packets' codes laid end to end (`base`: each
    stream's first row). A 24 kHz packet's stream starts at the position of its first frame
    in the file (`offsets`: frames before each packet); 48 kHz segments start at position 0.
    Streams that have ended are dropped from the state (`live`: the ones it still steps),
    where the steps saved outweigh copying the others' caches.
    """

    def __init__(self, lm: IntLM, n_q: int, packets: tp.Sequence[tp.Sequence[Segment]],
                 offsets: tp.Optional[tp.Sequence[int]]):
        self.lengths = np.array([n for segs in packets for n, _ in segs], np.int64)
        self.base = np.cumsum(self.lengths) - self.lengths
        counts = np.cumsum([len(segs) for segs in packets])
        self.ranges = list(zip(counts - [len(segs) for segs in packets], counts))
        first = None
        if offsets is not None:
            first = np.repeat(np.asarray(offsets, np.int64), [len(segs) for segs in packets])
        self.steps = int(self.lengths.max()) if len(self.lengths) else 0
        self.state: tp.Optional[State] = lm.start(n_q, len(self.lengths), self.steps, first) if self.steps else None
        self.live = np.arange(len(self.lengths))

    def rows(self, t: int) -> np.ndarray:
        """Per live stream, the row it codes at step t (an ended stream: its last row, unused)."""
        return self.base[self.live] + np.minimum(t, self.lengths[self.live] - 1)

    def probabilities(self, t: int, n_q: int) -> np.ndarray:
        """What constriction gets for step t: [live streams, n_q, 1024]."""
        assert self.state is not None  # there are steps
        going = self.lengths[self.live] > t
        ended = len(going) - int(going.sum())
        # copying a stream's caches takes about as long as a few of its steps
        if ended and ended * (self.steps - t) >= DROP_COST * (len(going) - ended):
            self.live = self.live[going]
            self.state.keep(np.flatnonzero(going))
        return model_probabilities(self.state.step()).reshape(len(self.live), n_q, CARD)

    def push(self, codes: np.ndarray) -> None:
        """Feed each live stream's codes [streams, n_q] of the step just decoded."""
        assert self.state is not None
        self.state.push(codes)


class LMEncoder:
    """Codes packets in file order. With `raw_fallback` (the default), a packet that LM
    coding does not make smaller is stored raw; without it every packet is range coded
    (to measure LM coding with untrained weights, which predict nothing)."""
    name = "lm"
    batch_streams = 1  # each packet is coded on its own, in one pass

    def __init__(self, lm: IntLM, fingerprint: bytes, spec: ModelSpec, n_q: int, raw_fallback: bool = True):
        self.lm, self.fingerprint, self.n_q, self.raw_fallback = lm, fingerprint, n_q, raw_fallback
        self.positions = spec.causal  # 24 kHz: streams start at their packet's frame offset
        self.frames = 0               # frames of the packets coded so far

    @classmethod
    def load(cls, spec: ModelSpec, n_q: int, weights: tp.Optional[Path], download_bars: bool = True,
             raw_fallback: bool = True) -> "LMEncoder":
        lm, fp = load_lm(spec.name, weights, n_q, download_bars)
        for _ in lm.known(np.zeros((1, n_q), np.int64)):  # numba's loops compiled or loaded now, not in a packet
            pass
        return cls(lm, fp, spec, n_q, raw_fallback)

    def encode_lm(self, packets: tp.Sequence[CodedPacket], step: Step = None) -> tp.List[bytes]:
        """Each packet's LM-coded data: codes checksum, then the range coder's words.

        The packets follow those of earlier calls in the file. The codes are known, so the
        LM runs over each stream in one causal pass (IntLM.known) rather than stepping."""
        out = []
        for codes, segments in packets:
            first = self.frames if self.positions else 0  # 24 kHz: the packet's first frame
            self.frames += len(codes)
            bounds = np.cumsum([0] + [n for n, _ in segments])
            streams = [codes[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
            coder = constriction.stream.queue.RangeEncoder()
            for row, live in enumerate(self._blocks(streams, first)):
                # the same block of every segment's pass, its codes in the stepped order
                parts = [streams[j][row * PASS_BLOCK:][:len(g)] for j, g in live]
                if len(live) == 1:
                    symbols, freqs = parts[0], live[0][1]
                elif len({len(g) for _, g in live}) == 1:  # frame t of each segment in turn
                    symbols, freqs = np.stack(parts, axis=1), np.stack([g for _, g in live], axis=1)
                else:  # 48 kHz, a short last segment: the same order, by index
                    lengths = np.array([len(g) for _, g in live])
                    t, i = np.nonzero(np.arange(lengths.max())[:, None] < lengths)
                    order = (np.cumsum(lengths) - lengths)[i] + t
                    symbols = np.concatenate(parts)[order]
                    freqs = np.concatenate([g for _, g in live])[order]
                coder.encode(symbols.reshape(-1).astype(np.int32), _MODEL, model_probabilities(freqs))
                if step:
                    step(symbols.size // symbols.shape[-1])
            out.append(struct.pack(">I", codes_crc(codes)) + coder.get_compressed().astype(">u4").tobytes())
        return out

    def _blocks(self, streams: tp.Sequence[np.ndarray], first: int) -> tp.Iterator[tp.List[tp.Tuple[int, np.ndarray]]]:
        """Per block of PASS_BLOCK frames, (j, frequencies) of each stream j that has frames
        there. Streams of one length (a 48 kHz packet's segments) run together."""
        groups = [[j for j, _ in g] for _, g in itertools.groupby(enumerate(streams), key=lambda p: len(p[1]))]
        passes = [self.lm.known(np.stack([streams[j] for j in g]), first) for g in groups]
        for blocks in itertools.zip_longest(*passes):
            yield [(j, b[k]) for g, b in zip(groups, blocks) if b is not None for k, j in enumerate(g)]

    def encode_many(self, packets: tp.Sequence[CodedPacket], step: Step = None) -> tp.List[tp.Tuple[bytes, int]]:
        """(data, flags) per packet: LM-coded, or raw when that is not smaller. `step(n)` is
        told of every n frames coded."""
        out = []
        for (codes, _), payload in zip(packets, self.encode_lm(packets, step)):
            raw = pack_codes(codes)
            if self.raw_fallback and len(payload) >= len(raw):
                out.append((raw, FLAG_RAW))  # never worse than 10 bits per code
            else:
                out.append((payload, 0))
        return out

    def encode(self, codes: np.ndarray, segments: tp.Sequence[Segment]) -> tp.Tuple[bytes, int]:
        return self.encode_many([(codes, tuple(segments))])[0]


def checked_lm(spec: ModelSpec, header: Header, weights: tp.Optional[Path], download_bars: bool = True) -> IntLM:
    """The LM of a file's header, refused unless its fingerprint is the file's."""
    lm, fp = load_lm(spec.name, weights, header.n_codebooks, download_bars)
    if fp != header.lm_fingerprint:
        raise W.weights_error(lambda cli: (
            f"the file was coded with another language model (fingerprint {header.lm_fingerprint.hex()}, "
            f"loaded {fp.hex()}); pass the same {'--lm-weights FILE' if cli else 'lm_weights='}"), MismatchError)
    return lm


class LiveModel:
    """Coder 3's integer LM as a live stream's frequency model (formats/live.py): one
    stream at a time, at the unit's first frame's position (24 kHz) or 0 (48 kHz)."""

    def __init__(self, lm: IntLM, fingerprint: bytes, spec: ModelSpec, n_q: int):
        self.lm, self.fingerprint, self.n_q, self.positions = lm, fingerprint, n_q, spec.causal
        self.state: tp.Optional[State] = None
        self.start(0, 1)  # a first step builds the tables and loads the loops: before the stream, not in it
        self.cumulative()
        self.state = None

    def start(self, position: int, frames: int) -> None:
        first = np.array([position if self.positions else 0], np.int64)
        self.state = self.lm.start(self.n_q, 1, frames, first)

    def cumulative(self) -> np.ndarray:
        assert self.state is not None, "start() a unit first"
        return cumulative(self.state.step()[0])

    def push(self, codes: np.ndarray) -> None:
        assert self.state is not None, "start() a unit first"
        self.state.push(codes[None])

    def known(self, codes: np.ndarray) -> tp.Iterator[np.ndarray]:
        for block in self.lm.known(codes):
            yield from map(cumulative, block)


class LMDecoder:
    def __init__(self, lm: IntLM, spec: ModelSpec, n_q: int):
        self.lm, self.n_q = lm, n_q
        self.positions = spec.causal
        self.batch_streams = BATCH_STREAMS[spec.causal]

    @classmethod
    def load(cls, spec: ModelSpec, header: Header, weights: tp.Optional[Path], download_bars: bool = True):
        lm, n_q = checked_lm(spec, header, weights, download_bars), header.n_codebooks
        for streams in (1, 2):  # numba's loops (one stream's products, and several's) compiled or loaded now
            lm.start(n_q, streams, 1).step()
        return cls(lm, spec, n_q)

    def decode(self, packet: Packet) -> np.ndarray:
        return self.decode_many([packet])[0]

    def decode_many(self, packets: tp.Sequence[Packet]) -> tp.List[np.ndarray]:
        """The codes of any packets of a file (their `start` and `index` say where they are
        in it); raw packets cost no LM work."""
        out = [p.codes for p in packets]
        coded = [i for i, p in enumerate(packets) if not p.flags & FLAG_RAW]
        if coded:
            decoded = self._decode_lm([packets[i] for i in coded], [packets[i].index for i in coded],
                                      [packets[i].start for i in coded] if self.positions else None)
            for i, codes in zip(coded, decoded):
                out[i] = codes
        return out

    def _decode_lm(self, packets: tp.Sequence[Packet], numbers: tp.Sequence[int],
                   offsets: tp.Optional[tp.Sequence[int]]) -> tp.List[np.ndarray]:
        coders, crcs = [], []
        for packet, n in zip(packets, numbers):
            data = packet.payload
            if len(data) < 4 or (len(data) - 4) % 4:
                raise CorruptError(f"corrupted file: LM packet {n} at byte {packet.offset} has a bad size")
            crcs.append(struct.unpack_from(">I", data)[0])
            words = np.frombuffer(data, ">u4", offset=4).astype(np.uint32)
            coders.append(constriction.stream.queue.RangeDecoder(words))
        frames = sum(p.frames for p in packets)
        batch = _Batch(self.lm, self.n_q, [p.segments for p in packets], offsets)
        decoded = np.zeros((frames, self.n_q), np.uint16)
        for t in range(batch.steps):
            probs = batch.probabilities(t, self.n_q)
            coding = t < batch.lengths[batch.live]
            rows = batch.rows(t)
            for p, streams in enumerate(batch.ranges):
                a, b = np.searchsorted(batch.live, streams)  # the packet's live streams
                sel = coding[a:b]
                if sel.any():
                    try:
                        symbols = coders[p].decode(_MODEL, probs[a:b][sel].reshape(-1, CARD))
                    except Exception as e:  # constriction's own checks on damaged data
                        raise CorruptError(f"corrupted file: LM packet {numbers[p]} at byte "
                                           f"{packets[p].offset} cannot be decoded ({e})") from None
                    decoded[rows[a:b][sel]] = symbols.reshape(-1, self.n_q)
            batch.push(decoded[rows])
        codes = np.split(decoded, np.cumsum([p.frames for p in packets])[:-1])
        for p, (packet, crc) in enumerate(zip(packets, crcs)):
            if codes_crc(codes[p]) != crc:
                raise CorruptError(f"corrupted file: LM packet {numbers[p]} (byte {packet.offset}) "
                                   f"decodes to codes that fail their checksum")
        return codes
