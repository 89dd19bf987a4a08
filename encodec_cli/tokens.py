"""Codes in and out of the streaming core: audio to `Codes` (the encoder alone, as
`compress` runs it), `Codes` to an .ecdc stream (coded without the encoder), and the
codes of an .ecdc stream. The api's `encode`, `decode`, `read_codes` are built on these.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from .audio import blocks as B
from .codec.threads import torch_threads
from .codes import Codes
from .entropy.coders import make_encoder
from .formats import v1
from .formats.records import Header
from .options import CompressOptions, DecompressOptions, Progress, Result
from .pipeline import LM_START, Audio, check_source, read_packets, told_if_slow, write_packets
from .specs import SPECS

PIECE_FRAMES = 100  # 24 kHz codes are packed in pieces of this many frames, as the encoder gives them


def encode_source(source: B.Source, opts: CompressOptions, progress: Progress = None) -> tp.Tuple[Codes, Result]:
    """The codes of `source`, exactly those that `compress_stream` would store, and what
    the user should know of the input (notes)."""
    from .codec import streaming as C

    opts.check()
    check_source(source)
    spec = SPECS[opts.model]
    n_q = spec.codebooks_for(opts.bandwidth)
    with torch_threads(opts.threads):
        codec = C.load_codec(opts.model, opts.weights, opts.download_bars, side="encoder", codebooks=n_q)
        audio = Audio(source, source.blocks(), spec, progress)
        packets = list(C.encode(codec, audio.model_blocks(), n_q))
    if audio.counts["source"] == 0:
        packets = []  # an empty input has no frames (as its .ecdc file)
    joined = np.concatenate([p.codes for p in packets]) if packets else np.zeros((0, n_q), np.uint16)
    segments = {} if spec.causal else {
        "segment_frames": np.array([len(p.codes) for p in packets], np.int32),
        "scales": np.array([p.scale for p in packets], np.float32)}
    codes = Codes(codes=np.ascontiguousarray(joined.T), model=spec.name, bandwidth=opts.bandwidth,
                  num_samples=audio.counts["model"], source_sample_rate=source.sample_rate,
                  source_channels=source.channels, source_num_samples=audio.counts["source"],
                  weights_fingerprint=codec.fingerprint, **segments)
    return codes, Result(seconds=audio.seconds, notes=audio.notes())


def fingerprint_of(codes: Codes, weights, download_bars: bool = True) -> bytes:
    """The codec weights' fingerprint to record with `codes`: theirs, else that of the
    weights given (or the official ones)."""
    if codes.weights_fingerprint is not None:
        return codes.weights_fingerprint
    from .codec import weights as W

    return W.resolve(codes.model, weights, download_bars).fingerprint


def pack_stream(codes: Codes, fo: tp.BinaryIO, opts: CompressOptions, progress: Progress = None) -> Result:
    """Write `codes` as an .ecdc stream (`opts.lm`: range-coded with the LM) without
    running the encoder; `opts.model` and `opts.bandwidth` are the codes' own."""
    spec = codes.spec
    # set by Codes on creation (derived where they were left out)
    assert codes.num_samples is not None and codes.source_num_samples is not None and codes.bandwidth is not None
    assert codes.source_sample_rate is not None and codes.source_channels is not None
    fingerprint = fingerprint_of(codes, opts.weights, opts.download_bars)
    with torch_threads(opts.threads):
        with told_if_slow(LM_START):
            coder = make_encoder(spec, codes.n_codebooks, lm=opts.lm, lm_weights=opts.lm_weights,
                                 raw_fallback=opts.raw_fallback, download_bars=opts.download_bars)
        header = Header(model=spec.name, coder="lm" if opts.lm else "raw", n_codebooks=codes.n_codebooks,
                        bandwidth=codes.bandwidth, sample_rate=spec.sample_rate, channels=spec.channels,
                        source_sample_rate=codes.source_sample_rate, source_channels=codes.source_channels,
                        num_samples=None, source_num_samples=None, weights_fingerprint=fingerprint,
                        lm_fingerprint=coder.fingerprint)
        writer = v1.Writer(fo, header)

        def coded(frames: int) -> None:
            if progress:
                progress(frames / spec.frame_rate)

        write_packets(writer, _pieces(codes), coder, coded)
        writer.finish(codes.num_samples, codes.source_num_samples)
    return Result(seconds=codes.duration)


def _pieces(codes: Codes) -> tp.Iterator[tp.Tuple[np.ndarray, float]]:
    """(codes [frames, codebooks], scale) in the encoder's pieces, so packets fall where
    `compress` puts them."""
    if codes.spec.causal:
        for i in range(0, codes.frames, PIECE_FRAMES):
            yield np.ascontiguousarray(codes.codes[:, i:i + PIECE_FRAMES].T), 1.0
        return
    for part, scale in codes.segments():
        yield np.ascontiguousarray(part.T), scale


def read_stream(fo: tp.BinaryIO, opts: DecompressOptions) -> Codes:
    """The codes of an .ecdc stream (version 1, 0 or a live stream), with the lengths that
    only its end record may hold."""
    reader, decoded = read_packets(fo, opts)
    packets = list(decoded)
    h: Header = reader.header
    k = h.n_codebooks
    joined = np.concatenate([p.codes for p in packets]) if packets else np.zeros((0, k), np.uint16)
    segments = {} if SPECS[h.model].causal else {
        "segment_frames": np.array([f for p in packets for f, _ in p.segments], np.int32),
        "scales": np.array([s for p in packets for _, s in p.segments], np.float32)}
    known = h.weights_fingerprint if any(h.weights_fingerprint) else None  # format 0 does not say
    return Codes(codes=np.ascontiguousarray(joined.T), model=h.model, bandwidth=h.bandwidth,
                 num_samples=reader.num_samples, source_sample_rate=h.source_sample_rate,
                 source_channels=h.source_channels, source_num_samples=reader.source_num_samples,
                 weights_fingerprint=known, **segments)


def raw_options(codes: Codes, opts: DecompressOptions) -> CompressOptions:
    """How `decode` packs codes for the decoder: raw, with the weights it will load."""
    return CompressOptions(model=codes.model, bandwidth=tp.cast(float, codes.bandwidth), lm=False, weights=opts.weights,
                           download_bars=opts.download_bars)

