"""Decoding what is intact of a damaged version-1 file or live stream (`decompress --salvage`):
every packet (or live block) whose checksums hold, silence of the right length where packets
are lost, each loss named.

Runs of intact packets are decoded on their own (the 24 kHz decoder starts afresh after a
gap, with a short transient); the time of everything after a gap is kept when the file says
how much was lost (formats.recovery).
"""
from __future__ import annotations

import dataclasses
import itertools
import typing as tp

import numpy as np

from .entropy.coders import live_model, make_decoder
from .errors import CorruptError
from .formats import recovery, v1
from .formats.records import Gap, Header, Input, Packet
from .options import DecompressOptions
from .specs import SPECS


class Salvage:
    """Model-rate audio of a damaged file; `damaged` lists the time ranges lost, once read."""

    def __init__(self, codec, inp: Input, header: Header, opts: DecompressOptions):
        self.codec, self.inp, self.header, self.opts = codec, inp, header, opts
        self.spec = SPECS[header.model]
        self.damaged: tp.List[str] = []
        self.silence = 0.0  # seconds of silence put where audio was lost
        self.produced, self.done, self.ended_early = 0, False, False

    @property
    def num_samples(self) -> tp.Optional[int]:
        """The header's length, unless the output ended early (a cut, or a length the file
        could not hold); then what was produced. Known once done."""
        if not self.done:
            return None
        return self.produced if self.ended_early or self.header.num_samples is None else self.header.num_samples

    @property
    def source_num_samples(self) -> tp.Optional[int]:
        h = self.header
        if not self.done:
            return None
        if h.source_num_samples is not None and not self.ended_early:
            return h.source_num_samples
        return round(self.produced * h.source_sample_rate / h.sample_rate)

    def _samples(self, frames: int, segments: int) -> int:
        """Model-rate samples that `frames` frames in `segments` segments stand for."""
        return frames * self.spec.hop_length if self.spec.causal else segments * self.spec.segment_step

    def items(self) -> tp.Iterator[tp.Union[Packet, Gap]]:
        """The salvaged packets with their codes decoded, one at a time (so that one that
        fails its codes checksum is lost alone), and the gaps."""
        h = self.header
        if h.version == v1.LIVE_VERSION:  # the live reader decodes as it reads
            model = live_model(self.spec, h.n_codebooks, lm=h.coder == "lm", lm_weights=self.opts.lm_weights,
                               header=h, download_bars=self.opts.download_bars)
            yield from recovery.salvage_live(self.inp, h, model)
            return
        coder = None if h.coder == "raw" else make_decoder(self.spec, h, lm_weights=self.opts.lm_weights,
                                                           download_bars=self.opts.download_bars)
        for item in recovery.salvage_v1(self.inp, h):
            if isinstance(item, Packet) and coder is not None and not item.flags & v1.FLAG_RAW:
                try:
                    item = dataclasses.replace(item, codes=coder.decode_many([item])[0])
                except CorruptError as e:
                    item = Gap(item.index, item.offset, 1, item.frames, len(item.segments), str(e))
            yield item

    def blocks(self) -> tp.Iterator[np.ndarray]:
        """Model-rate audio [channels, n], gaps as silence."""
        from .codec import streaming as C

        rate, position, overshoot = self.spec.sample_rate, 0, 0
        for is_gap, group in itertools.groupby(self.items(), key=lambda x: isinstance(x, Gap)):
            if not is_gap:
                expected = 0

                def pieces(packets=group) -> tp.Iterator[C.CodePacket]:
                    nonlocal expected
                    for p in packets:
                        expected += self._samples(p.frames, len(p.segments))
                        row = 0
                        for frames, scale in p.segments:
                            yield C.CodePacket(p.codes[row:row + frames], scale)
                            row += frames

                made = 0
                for y in C.decode(self.codec, pieces()):
                    made += y.shape[-1]
                    yield y
                self.produced += made
                position += expected
                overshoot = made - expected  # 48 kHz: the last segment's overlap
                continue
            for gap in tp.cast(tp.Iterator[Gap], group):  # (groupby's key says so)
                t0 = position / rate
                if gap.frames is None:
                    self.damaged.append(f"from {t0:.3f} s: {gap.why}; the output ends there (the file does not "
                                        f"say how long it was)")
                    self.done = self.ended_early = True
                    return
                n = self._samples(gap.frames, gap.segments or 1)
                last = gap.index + (gap.packets or 1) - 1
                word = "packet" if self.header.version != v1.LIVE_VERSION else "unit"
                what = f"{word} {gap.index}" if last == gap.index else f"{word}s {gap.index}-{last}"
                self.damaged.append(f"{t0:.3f}-{(position + n) / rate:.3f} s ({what}): {gap.why}; silence")
                silence = max(0, n - overshoot)
                overshoot = 0
                self.produced += silence
                self.silence += silence / rate
                while silence:  # in blocks: flat memory whatever a gap claims
                    step = min(silence, rate)
                    silence -= step
                    yield np.zeros((self.header.channels, step), np.float32)
                position += n
        self.done = True


def intact_start(inp: Input, header: Header, opts: DecompressOptions, damaged: tp.List[str]
                 ) -> tp.Iterator[Packet]:
    """The packets of a damaged or cut file (codes decoded) up to its first loss, which is
    said in `damaged` (`convert --salvage`: a cut recording keeps all it holds)."""
    for item in Salvage(None, inp, header, opts).items():
        if isinstance(item, Gap):
            damaged.append(f"{item.why}; the new file ends there")
            return
        yield item
