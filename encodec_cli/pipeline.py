"""The streaming core, joining the stages: audio blocks -> codec -> coder -> container, and
back. Generators throughout, so reading, coding and writing overlap and memory stays flat.

Torch is imported only where a model runs: a file that is not .ecdc is refused first, and
raw files give their codes without it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import threading
import time
import typing as tp

import numpy as np

from .audio import blocks as B
from .codec.threads import torch_threads
from .codec.weights import weights_error
from .entropy.coders import batches, live_model, make_decoder, make_encoder
from .errors import AudioError, CorruptError, MismatchError, OptionError, TruncatedError, with_salvage_hint
from .formats import live, v1
from .formats.reader import Reader, open_reader, read_header
from .formats.records import ALL_FRAMES, Frames, Header, Input, Packet, packetize
from .formats.seek import span_for
from .options import CompressOptions, DecompressOptions, Progress, Result
from .specs import SPECS

SinkFactory = tp.Callable[[int, int, tp.Optional[int], Header], B.Sink]  # rate, channels, frames, header
SLOW_START = 2.0  # seconds a live stream's preparation may take before the user is told why
LIVE_START = ("preparing the live stream: loading its models, and on this machine's first run numba compiles "
              "its kernels (10-20 s; later runs load them)")
LM_START = ("loading the language model, and on this machine's first run numba compiles its loops (5-10 s; "
            "later runs load them)")


@functools.lru_cache(maxsize=None)  # once a process for each message
def _tell_slow_start(message: str = LIVE_START) -> None:
    logging.getLogger("ecdc").warning(message)


@contextlib.contextmanager
def told_if_slow(message: str = LIVE_START) -> tp.Iterator[None]:
    """Says why nothing has happened yet if this part of the preparation (loading a model,
    compiling or loading its kernels) takes over SLOW_START seconds."""
    timer = threading.Timer(SLOW_START, _tell_slow_start, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# ---------------------------------------------------------------- compress

class _EndOfInput(Exception):
    """Raised by a stop request into a read that waits for live input."""


class LiveStop:
    """Ends a live recording cleanly where it is, so that its file is complete: `request()`
    (a signal handler's call) ends the input after the block at hand, or at once while a
    read waits for input; a second request raises KeyboardInterrupt (give up)."""

    def __init__(self) -> None:
        self.requested = self._reading = False

    def request(self) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._reading:
            raise _EndOfInput

    def blocks(self, blocks: tp.Iterator[np.ndarray]) -> tp.Iterator[np.ndarray]:
        while not self.requested:
            self._reading = True
            try:
                block = next(blocks)
            except (StopIteration, _EndOfInput):
                return
            finally:
                self._reading = False
            yield block


LIVE_STOP = LiveStop()  # the command line's signal handlers call LIVE_STOP.request()


def compress_stream(source: B.Source, fo: tp.BinaryIO, opts: CompressOptions,
                    progress: Progress = None) -> Result:
    """Read `source` block by block and write an .ecdc stream to `fo`, with `opts.threads`
    torch threads."""
    opts.check()
    with torch_threads(opts.threads):
        return _compress(source, fo, opts, progress)


def check_source(source: B.Source) -> None:
    if not (1 <= source.sample_rate <= v1.MAX_SOURCE_RATE and 1 <= source.channels <= v1.MAX_SOURCE_CHANNELS):
        raise AudioError(f"cannot compress {source.sample_rate} Hz audio of {source.channels} channels: the format "
                         f"holds originals up to {v1.MAX_SOURCE_RATE} Hz and {v1.MAX_SOURCE_CHANNELS} channels")


class Audio:
    """The source's blocks as the model takes them: not-finite samples made silence or full
    scale (and counted), converted to the model's rate and channels, [channels, n]; each
    block's seconds times `share` go to `progress` as it is read."""

    def __init__(self, source: B.Source, blocks: tp.Iterable[np.ndarray], spec, progress: Progress,
                 share: float = 1.0):
        self.source, self.spec, self._blocks, self.progress, self.share = source, spec, blocks, progress, share
        self.counts = {"source": 0, "model": 0, "not_finite": 0}

    def _source_blocks(self) -> tp.Iterator[np.ndarray]:
        counts = self.counts
        for block in self._blocks:
            if not np.isfinite(block).all():  # NaN or inf in a float file: silence / full scale
                counts["not_finite"] += int((~np.isfinite(block)).sum())
                block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
            counts["source"] += len(block)
            if self.progress:
                self.progress(len(block) / self.source.sample_rate * self.share)
            yield block

    def model_blocks(self) -> tp.Iterator[np.ndarray]:
        spec = self.spec
        for block in B.converted(self._source_blocks(), self.source.sample_rate, spec.sample_rate, spec.channels):
            self.counts["model"] += len(block)
            yield block.T

    def notes(self) -> tp.Tuple[str, ...]:
        counts, frames, out = self.counts, self.source.frames, []
        if counts["not_finite"]:
            out.append(f"{counts['not_finite']} samples were NaN or infinite: coded as silence (NaN) "
                       f"or full scale")
        if frames is not None and counts["source"] < frames:
            out.append(f"the file is shorter than its header says ({counts['source']} of "
                       f"{frames} frames): it may be cut; what it holds was compressed")
        return tuple(out)

    @property
    def seconds(self) -> float:
        return self.counts["source"] / self.source.sample_rate


def _compress(source: B.Source, fo: tp.BinaryIO, opts: CompressOptions, progress: Progress) -> Result:
    from .codec import streaming as C

    check_source(source)
    blocks = iter(source.blocks())
    if opts.live:
        blocks = LIVE_STOP.blocks(blocks)
    # live: the models load and the header goes out before the audio comes, so that the
    # decoder loads its own while the source starts; otherwise a bad input fails first
    first = None if opts.live else next(blocks, None)
    spec = SPECS[opts.model]
    n_q = spec.codebooks_for(opts.bandwidth)
    codec = C.load_codec(opts.model, opts.weights, opts.download_bars, side="encoder", codebooks=n_q)
    if opts.live:
        with told_if_slow():
            model = live_model(spec, n_q, lm=opts.lm, lm_weights=opts.lm_weights, download_bars=opts.download_bars)
        lm_fingerprint = model.fingerprint
    else:
        with told_if_slow(LM_START):
            coder = make_encoder(spec, n_q, lm=opts.lm, lm_weights=opts.lm_weights, raw_fallback=opts.raw_fallback,
                                 download_bars=opts.download_bars)
        lm_fingerprint = coder.fingerprint
    header = Header(model=spec.name, coder="lm" if opts.lm else "raw", n_codebooks=n_q, bandwidth=opts.bandwidth,
                    sample_rate=spec.sample_rate, channels=spec.channels,
                    source_sample_rate=source.sample_rate, source_channels=source.channels,
                    num_samples=None, source_num_samples=None, weights_fingerprint=codec.fingerprint,
                    lm_fingerprint=lm_fingerprint, source_bits=source.bits, tags=tuple(source.tags))
    # progress: reading and the codec's encoder, then the LM's coding, about a third as costly
    coding_share = 0.25 if opts.lm and not opts.live else 0.0

    def coded(frames: int) -> None:
        if progress:
            progress(frames / spec.frame_rate * coding_share)

    if opts.live:
        live_writer = live.Writer(fo, live.live_header(header), model)
        with told_if_slow():  # while the decoder loads: not in the stream's first frames
            C.warm_live(codec, n_q, encoder=True)
        first = next(blocks, None)
        audio = Audio(source, itertools.chain([] if first is None else [first], blocks), spec, progress)
        _compress_live(C, codec, live_writer, audio.model_blocks(), first is None, audio.counts, coded)
        return Result(seconds=audio.seconds, notes=audio.notes())
    writer = v1.Writer(fo, header)
    if first is None:  # an empty input gives a valid empty file (archives have such files)
        writer.finish(0, 0)
        return Result()
    audio = Audio(source, itertools.chain([first], blocks), spec, progress, 1 - coding_share)
    pieces = ((p.codes, p.scale) for p in C.encode(codec, audio.model_blocks(), n_q))
    write_packets(writer, pieces, coder, coded)
    writer.finish(audio.counts["model"], audio.counts["source"])
    return Result(seconds=audio.seconds, notes=audio.notes())


def write_packets(writer: v1.Writer, pieces: tp.Iterable[tp.Tuple[np.ndarray, float]], coder,
                   coded: tp.Callable[[int], None]) -> None:
    """Code (codes [frames, codebooks], scale) pieces in packets and write them."""
    spec = SPECS[writer.header.model]
    packets = packetize(pieces, spec.causal, spec.frame_rate)
    fo = writer.fo
    # to a pipe, packets should flow while the input is still coming: batches grow from one
    ramp = not v1.seekable(fo)
    for batch in batches(packets, lambda p: len(p[1]), coder.batch_streams, ramp):
        for (_, segments), (payload, flags) in zip(batch, coder.encode_many(batch, coded)):
            writer.write_packet(segments, payload, flags)
        fo.flush()  # a reader on a pipe gets each packet as soon as it is coded


def _compress_live(C, codec, writer: live.Writer, blocks: tp.Iterator[np.ndarray], empty: bool,
                   counts: tp.Dict[str, int], coded: tp.Callable[[int], None]) -> None:
    """Each frame (24 kHz) or segment (48 kHz) written as soon as it is coded."""
    spec = codec.spec
    if not empty:
        n_q = writer.header.n_codebooks
        for packet, final in C.encode_live(codec, blocks, n_q):
            if not spec.causal:
                writer.write_segment(packet.codes, packet.scale)
            elif len(packet.codes):
                last = None  # the input has ended: the last frame says how much of it is audio
                if final:
                    last = counts["model"] - (writer.frames + len(packet.codes) - 1) * spec.hop_length
                writer.write_frames(packet.codes, last)
            coded(len(packet.codes))
    writer.finish(counts["model"], counts["source"])


# ---------------------------------------------------------------- reading

def reader_for(inp: Input, header: Header, opts: DecompressOptions, frames: Frames = ALL_FRAMES,
               keep_cut: bool = False) -> Reader:
    """The reader of a file whose `header` `inp` has just read; an LM-coded version-0 file
    gets the reference's float LM (torch imported), run as `opts.lm_threads` says; a live
    stream, its frequency model (coder 'lm': the integer LM), and with `keep_cut` it ends
    where a cut stream is cut (its `cut` says so) instead of raising."""
    if header.version == v1.LIVE_VERSION:
        spec = SPECS[header.model]
        with told_if_slow():
            model = live_model(spec, header.n_codebooks, lm=header.coder == "lm", lm_weights=opts.lm_weights,
                               header=header, download_bars=opts.download_bars)
        return live.Reader(inp, header, model, frames, keep_cut=keep_cut)
    if header.version != 0 or header.coder != "lm":
        return open_reader(inp, header, frames=frames)
    from .entropy.reference_lm import ReferenceCdfs, load_float_lm, reference_threads

    threads = opts.lm_threads or reference_threads()
    lm = ReferenceCdfs(load_float_lm(header.model, opts.lm_weights, opts.download_bars), threads)
    why = (f"a damaged file, or one written with other torch threads or another kind of CPU "
           f"(read with {threads} thread{'s' if threads > 1 else ''}; encodec ran with as many "
           f"as the writing machine had cores: try --threads N)")
    return open_reader(inp, header, frames=frames, lm=lm, why=why)


def decoded_packets(reader: Reader, opts: DecompressOptions, ramp: bool = False) -> tp.Iterator[Packet]:
    """The packets of `reader` with their codes decoded. Torch is imported only for LM-coded
    files. With `ramp` (a pipe), the first packets are decoded one by one, as the encoder
    sends them, so that audio comes out while the stream is still arriving."""
    h = reader.header
    if h.version in (0, v1.LIVE_VERSION) or h.coder == "raw":  # live: the reader decodes as it reads
        yield from reader
        return
    with torch_threads(opts.threads):
        with told_if_slow(LM_START):
            coder = make_decoder(SPECS[h.model], h, lm_weights=opts.lm_weights, download_bars=opts.download_bars)
        for batch in batches(reader, lambda p: len(p.segments), coder.batch_streams, ramp):
            for packet, codes in zip(batch, coder.decode_many(batch)):
                yield dataclasses.replace(packet, codes=codes)


def read_packets(fo: tp.BinaryIO, opts: DecompressOptions) -> tp.Tuple[Reader, tp.Iterator[Packet]]:
    """The reader of a whole .ecdc stream (either version) and its packets, codes decoded."""
    inp = Input(fo)
    reader = reader_for(inp, read_header(inp), opts)
    return reader, decoded_packets(reader, opts)


# ---------------------------------------------------------------- decompress

def _output_range(opts: DecompressOptions, rate: int, total: tp.Optional[int]
                  ) -> tp.Tuple[int, tp.Optional[int]]:
    """Output samples [start, end) of `opts.start`..`opts.end` (end None: to the end)."""
    start = round(opts.start * rate)
    end = None if opts.end is None else round(opts.end * rate)
    if end is not None and end < start:
        raise OptionError(f"the range ends ({opts.end:g} s) before it starts ({opts.start:g} s)")
    if total is not None:
        if start and start >= total:
            say = f"{opts.start:g} s is past the end of the audio ({total / rate:.3f} s)"
            raise OptionError(f"start={say}", cli=f"--start {say}")
        end = None if end is None or end >= total else end
    return start, end


def decompress_stream(fo: tp.BinaryIO, open_sink: SinkFactory, opts: DecompressOptions,
                      progress: Progress = None) -> Result:
    """Read an .ecdc stream (version 1, or 0: Meta's encodec) and write its audio, or the
    range `opts.start`..`opts.end`, to the sink made by `open_sink(rate, channels, frames,
    header)` (frames: the output's length, None if not yet known; the header has the
    source's bit depth and tags)."""
    inp = Input(fo)
    h = read_header(inp)  # a file that is not .ecdc is refused before torch is imported
    try:
        with torch_threads(opts.threads):
            return _decompress(inp, h, open_sink, opts, progress)
    except (TruncatedError, CorruptError) as e:
        if h.version == 0 or opts.salvage:  # format 0 has no checksums to salvage by
            raise
        raise with_salvage_hint(e, "decodes what is intact") from None


def _decompress(inp: Input, h: Header, open_sink: SinkFactory, opts: DecompressOptions,
                progress: Progress) -> Result:
    from .codec import streaming as C

    rate, channels = (h.sample_rate, h.channels) if opts.model_format else (h.source_sample_rate, h.source_channels)
    live_stream = h.version == v1.LIVE_VERSION
    start, end = _output_range(opts, rate, h.num_samples if opts.model_format else h.source_num_samples)

    codec = C.load_codec(h.model, opts.weights, opts.download_bars, side="decoder", codebooks=h.n_codebooks)
    if h.version and codec.fingerprint != h.weights_fingerprint:  # version 0 does not record it
        raise weights_error(lambda cli: (
            f"the file was compressed with other weights (fingerprint {h.weights_fingerprint.hex()}, "
            f"loaded {codec.fingerprint.hex()}); pass the same {'--weights FILE' if cli else 'weights='}"),
            MismatchError)
    span = span_for(codec.spec, rate, start, end)
    if opts.salvage:
        if h.version == 0 or start or end is not None:
            raise OptionError("salvage reads whole files of format 1 and live streams: format 0 has no checksums, "
                              "and a range cannot be salvaged (decode the whole file)")
        from .salvage import Salvage

        salvage = Salvage(codec, inp, h, opts)
        reader: tp.Union[Reader, Salvage] = salvage
        decoded: tp.Iterator[np.ndarray] = salvage.blocks()
    else:
        if live_stream:
            with told_if_slow():  # before the first frame comes, not when it does
                C.warm_live(codec, h.n_codebooks, encoder=False)
        plain = reader_for(inp, h, opts, span.frames, keep_cut=True)  # a cut recording: what it holds
        reader = plain
        decoded = _decoded_audio(C, codec, plain, opts, span, ramp=not v1.seekable(inp.fo), live=live_stream)

    def total() -> tp.Optional[int]:  # of the whole output, once known
        return reader.num_samples if opts.model_format else reader.source_num_samples


    def model_total() -> tp.Optional[int]:  # model-rate samples from span.model_start
        n = reader.num_samples
        if n is None:
            return None
        return max(0, (n if span.model_end is None else min(n, span.model_end)) - span.model_start)

    blocks = B.skip((a.T for a in decoded), span.model_start - span.decode_start)
    # the true length may be known only at the end, so the last samples wait; a live 24 kHz
    # stream says it before its last frame, and nothing needs to wait
    causal_live = live_stream and codec.spec.causal and end is None
    blocks = B.fit_length(blocks, model_total, 0 if causal_live else codec.spec.hop_length, h.channels)
    out_start = span.model_start
    if not opts.model_format:
        resampled = B.converted(blocks, h.sample_rate, rate, h.channels)
        blocks = (B.to_channels(b, channels) for b in resampled)
        out_start = span.model_start * rate // h.sample_rate  # exact: the span starts on a common sample

    def out_total() -> tp.Optional[int]:
        n = total()
        if n is None:
            return None
        return max(0, (n if end is None else min(n, end)) - start)

    # resampling may overshoot the length by a few samples: a live stream holds back a few
    holdback = (0 if rate == h.sample_rate else 64) if live_stream and end is None else 4096
    blocks = B.fit_length(B.skip(blocks, start - out_start), out_total, holdback, channels)
    sink = open_sink(rate, channels, out_total(), h)
    written = 0
    # a live stream from a pipe or socket, played as it comes: say if it falls behind
    clock = _Pace(reader) if live_stream and not v1.seekable(inp.fo) and not start and end is None else None
    try:
        for block in blocks:
            sink.write(block)
            written += len(block)
            if progress:
                progress(len(block) / rate)
            if clock:
                clock.check(written / rate)
    finally:
        sink.close()
    damaged = tuple(getattr(reader, "damaged", ())) if opts.salvage else ()
    cut = getattr(reader, "cut", None)
    if cut is not None:  # a live stream cut short: its audio is written, and the cut said
        damaged += (f"from {written / rate:.3f} s: {cut} (no end record: an interrupted recording); "
                    f"the output ends there",)
    return Result(seconds=written / rate, clipped=sink.clipped, damaged=damaged,
                  silence=getattr(reader, "silence", 0.0))


class _Pace:
    """Says once (on the 'ecdc' logger) when a live stream decodes slower than real time:
    the time spent outside waiting for input exceeds the audio written, after 2 s of it."""

    def __init__(self, reader):
        self.reader, self.start, self.said = reader, time.monotonic(), False

    def check(self, seconds: float) -> None:
        busy = time.monotonic() - self.start - self.reader.waited
        if not self.said and seconds > 2.0 and busy > seconds * 1.05:
            self.said = True
            logging.getLogger("ecdc").warning(
                f"decoding is slower than real time ({busy:.1f} s of work for {seconds:.1f} s of audio): "
                f"the output falls behind the stream")


def _decoded_audio(C, codec, reader: Reader, opts: DecompressOptions, span, ramp: bool, live: bool = False
                   ) -> tp.Iterator[np.ndarray]:
    """Model-rate audio [channels, n] of the frames of `span`, from the decoder's start."""
    def packets() -> tp.Iterator[C.CodePacket]:
        for packet in decoded_packets(reader, opts, ramp):
            pos = packet.start
            for frames, scale in packet.segments:
                lo, hi = max(0, span.first_frame - pos), frames
                if span.last_frame is not None:
                    hi = min(hi, span.last_frame - pos)
                if lo < hi:
                    row = pos - packet.start
                    yield C.CodePacket(packet.codes[row + lo:row + hi], scale)
                pos += frames

    coded = packets()
    first = next(coded, None)
    if first is not None:
        yield from C.decode(codec, itertools.chain([first], coded), span.weight_length, live=live)
