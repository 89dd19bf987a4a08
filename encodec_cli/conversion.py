"""Re-containering coded files without touching their codes (`ecdc convert`): format 0, live
streams and either coder to format 1 with the coder asked for; a digest of the codes lets
the caller check the new file. Salvaged files keep what comes before their first loss."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import struct
import typing as tp

import numpy as np

from .codec.threads import torch_threads
from .entropy.coders import RawEncoder, batches, make_encoder
from .errors import OptionError
from .formats import v1
from .formats.reader import read_header
from .formats.records import Header, Input, Packet, packetize
from .options import ConvertOptions, Progress, Result
from .pipeline import read_packets
from .specs import SPECS


def hash_packet(digest, packet: Packet) -> None:
    """Add a packet's codes and scales to `digest` (what convert must keep)."""
    digest.update(np.ascontiguousarray(packet.codes, dtype=">u2").tobytes())
    for frames, scale in packet.segments:
        digest.update(struct.pack(">If", frames, scale))


def codes_digest(fo: tp.BinaryIO, opts: ConvertOptions) -> bytes:
    digest = hashlib.sha256()
    for packet in read_packets(fo, opts.decoding())[1]:
        hash_packet(digest, packet)
    return digest.digest()


def convert_stream(fi: tp.BinaryIO, fo: tp.BinaryIO, opts: ConvertOptions = ConvertOptions(),
                   progress: Progress = None) -> tp.Tuple[Result, bytes]:
    """Re-container an .ecdc stream (version 0 or 1) as version 1 with coder `opts.coder`,
    without touching its codes. Returns the result and a digest of the codes and scales."""
    if opts.coder not in (None, "raw", "lm"):
        raise OptionError(f"unknown coder {opts.coder!r}")
    damaged: tp.List[str] = []
    if opts.salvage:
        from .salvage import intact_start

        inp = Input(fi)
        h = read_header(inp)
        if h.version == 0:
            raise OptionError("salvage reads files of format 1 and live streams: format 0 has no checksums")
        reader = None
        packets: tp.Iterator[Packet] = intact_start(inp, h, opts.decoding(), damaged)
    else:
        reader, packets = read_packets(fi, opts.decoding())
        h = reader.header
    spec = SPECS[h.model]
    fingerprint = h.weights_fingerprint
    if h.version == 0:  # it does not record its weights: those that decompress would load stand for them
        from .codec.streaming import load_codec

        fingerprint = load_codec(h.model, opts.weights, opts.download_bars).fingerprint
    if (opts.coder or h.coder) == "lm":
        encoder = make_encoder(spec, h.n_codebooks, lm=True, lm_weights=opts.lm_weights,
                               download_bars=opts.download_bars)
    else:
        encoder = RawEncoder()
    header = dataclasses.replace(h, coder=encoder.name, weights_fingerprint=fingerprint,
                                 lm_fingerprint=encoder.fingerprint, num_samples=None,
                                 source_num_samples=None, version=v1.VERSION)
    writer = v1.Writer(fo, header)
    digest = hashlib.sha256()
    if h.version == v1.LIVE_VERSION:  # frames as they were decided: into the usual packets
        pieces = ((p.codes, p.segments[0][1]) for p in packets)
        packets = (Packet(codes=c, segments=s) for c, s in packetize(pieces, spec.causal, spec.frame_rate))
    with torch_threads(opts.threads) if encoder.name == "lm" else contextlib.nullcontext():
        for batch in batches(packets, lambda p: len(p.segments), encoder.batch_streams):
            items = [(p.codes, p.segments) for p in batch]
            for packet, (payload, flags) in zip(batch, encoder.encode_many(items)):
                writer.write_packet(packet.segments, payload, flags)
                hash_packet(digest, packet)
                if progress:
                    progress(packet.frames / spec.frame_rate)
    if reader is not None:  # read to its end record
        n, source_n = reader.num_samples, reader.source_num_samples
    elif not damaged:  # nothing was lost
        n, source_n = h.num_samples, h.source_num_samples
    else:
        n = source_n = None
    # salvaged (or lengths that were never known): as long as what was kept
    lengths = (n, source_n) if n is not None and source_n is not None else _kept_lengths(h, writer)
    writer.finish(*lengths)
    return Result(seconds=(lengths[1] or 0) / h.source_sample_rate, damaged=tuple(damaged)), digest.digest()


def _kept_lengths(h: Header, writer: v1.Writer) -> tp.Tuple[int, int]:
    """(model, original) samples of the frames written: 24 kHz, whole frames; 48 kHz, whole
    1 s segments overlapping, the last one's frames at the end."""
    spec = SPECS[h.model]
    if spec.causal:
        n = writer.frames * spec.hop_length
    else:
        n = max(0, writer.segments - 1) * spec.segment_step + writer.last_segment * spec.hop_length
    return n, n * h.source_sample_rate // h.sample_rate

