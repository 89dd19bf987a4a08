"""Write the golden .ecdc files (version 1, and version 2: live streams) in formats/golden/
and their expected codes.

    python scripts/make_format_golden.py

The tests read these files, so that every later ecdc still decodes version 1. The LM-coded
files (coder 3) use the seeded random LM (seed 1234) and codes that this LM predicts well,
so that their packets really are range coded. `coder3_frequencies.json` holds the integer
frequencies of a few frames of each model's LM: a second implementation of coder 3 can
check itself against them, and the tests check ecdc against them on every run.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from encodec_cli.codec.models import SPECS
from encodec_cli.entropy.lmcoder import LiveModel, LMEncoder
from encodec_cli.formats import live
from encodec_cli.formats import v1 as F
from encodec_cli.formats.records import End, Header
from encodec_cli.testing import likely_codes, random_int_lm

random_lm = random_int_lm

OUT = Path(__file__).resolve().parents[1] / "formats" / "golden"
FP = bytes.fromhex("0123456789abcdef")
LM_FP = bytes.fromhex("fedcba9876543210")


def header(model: str, coder: str, k: int, bw: float, src_rate: int, src_ch: int,
           n=None, src_n=None) -> Header:
    spec = SPECS[model]
    return Header(model=model, coder=coder, n_codebooks=k, bandwidth=bw, sample_rate=spec.sample_rate,
                  channels=spec.channels, source_sample_rate=src_rate, source_channels=src_ch, num_samples=n,
                  source_num_samples=src_n, weights_fingerprint=FP, lm_fingerprint=LM_FP if coder == "lm" else bytes(8))


def save(name: str, data: bytes, h: Header, packets: list, end: End) -> None:
    (OUT / f"{name}.ecdc").write_bytes(data)
    doc = {
        "header": {"model": h.model, "coder": h.coder, "codebooks": h.n_codebooks,
                   "bandwidth": h.bandwidth, "sample_rate": h.sample_rate,
                   "channels": h.channels, "source_sample_rate": h.source_sample_rate,
                   "source_channels": h.source_channels, "weights_fp": h.weights_fingerprint.hex(),
                   "lm_fp": h.lm_fingerprint.hex(), "source_bits": h.source_bits,
                   "tags": dict(h.tags)},
        "packets": [{"flags": f, "segments": [list(x) for x in seg], "codes": c.tolist()}
                    for c, seg, f in packets],
        "end": {"frames": end.frames, "num_samples": end.num_samples,
                "source_samples": end.source_num_samples, "packets": end.packets},
    }
    (OUT / f"{name}.codes.json").write_text(json.dumps(doc) + "\n")
    print(name, len(data), "bytes")


def raw_24khz() -> None:
    rng = np.random.default_rng(24)
    h = header("encodec_24khz", "raw", 8, 6.0, 44100, 2)
    buf = io.BytesIO()
    w = F.Writer(buf, h)
    packets = []
    for i, frames in enumerate([75, 40]):
        codes = rng.integers(0, 1024, (frames, 8)).astype(np.uint16)
        codes[0, :2] = [1023, 0]  # the extremes
        w.write_packet([(frames, 1.0)], F.pack_codes(codes))
        packets.append((codes, [(frames, 1.0)], 0))
        if i == 0:  # a record type from the future, which readers skip
            F._write_record(buf, 7, b"future record")
    end = w.finish(115 * 320 - 100, round((115 * 320 - 100) * 44100 / 24000))
    save("v1_raw_24khz", buf.getvalue(), h, packets, end)


def raw_24khz_tags() -> None:
    """Revision 2 of the header: the source's bit depth and tags (non-ASCII included)."""
    rng = np.random.default_rng(25)
    h = replace(header("encodec_24khz", "raw", 4, 3.0, 48000, 1), source_bits="24",
                tags=(("title", "Interview, part 1"), ("artist", "Zoë Example")))
    buf = io.BytesIO()
    w = F.Writer(buf, h)
    codes = rng.integers(0, 1024, (30, 4)).astype(np.uint16)
    w.write_packet([(30, 1.0)], F.pack_codes(codes))
    end = w.finish(30 * 320, 30 * 640)
    save("v1_raw_24khz_tags", buf.getvalue(), replace(h, num_samples=30 * 320), [(codes, [(30, 1.0)], 0)], end)


class _Pipe(io.BytesIO):
    def seekable(self) -> bool:
        return False


def raw_48khz_pipe() -> None:
    rng = np.random.default_rng(48)
    h = header("encodec_48khz", "raw", 4, 6.0, 48000, 2)
    buf = _Pipe()
    w = F.Writer(buf, h)
    packets = []
    for segments in ([(150, 0.125), (150, 0.25)], [(4, 0.0625)]):
        codes = rng.integers(0, 1024, (sum(n for n, _ in segments), 4)).astype(np.uint16)
        w.write_packet(segments, F.pack_codes(codes))
        packets.append((codes, segments, 0))
    end = w.finish(2 * 47520 + 1000, 2 * 47520 + 1000)
    save("v1_raw_48khz_pipe", buf.getvalue(), h, packets, end)


def lm_file(name: str, model: str, k: int, bw: float, parts: list, expect_flags: list) -> None:
    """Code `parts` (codes, segments) as the LM coder would and save them."""
    enc = LMEncoder(random_lm(model), LM_FP, SPECS[model], k)
    h = header(model, "lm", k, bw, SPECS[model].sample_rate, SPECS[model].channels)
    buf = io.BytesIO()
    w = F.Writer(buf, h)
    packets = []
    for (codes, segments), (payload, flags) in zip(parts, enc.encode_many(parts)):
        w.write_packet(segments, payload, flags)
        packets.append((codes, segments, flags))
    assert [p[2] for p in packets] == expect_flags
    frames = sum(len(c) for c, _ in parts)
    end = w.finish(frames * 320, frames * 320)
    save(name, buf.getvalue(), h, packets, end)


def lm_24khz() -> None:
    """Independent packets, one of them stored raw."""
    lm = random_lm("encodec_24khz")
    first = likely_codes(lm, 4, 25)
    second = likely_codes(lm, 4, 30, first=[5, 6, 7, 8])
    noise = np.random.default_rng(3).integers(0, 1024, (10, 4)).astype(np.uint16)  # stored raw
    parts = [(part, [(len(part), 1.0)]) for part in (first, second, noise)]
    lm_file("v1_lm_24khz", "encodec_24khz", 4, 3.0, parts, [0, 0, F.FLAG_RAW])


def lm_48khz() -> None:
    """Segments of one packet are coded in lockstep; the last one is shorter."""
    lm = random_lm("encodec_48khz")
    segs = [likely_codes(lm, 4, n, first=[i, 2 * i, 3 * i, 4 * i]) for i, n in enumerate((30, 30, 12))]
    noise = np.random.default_rng(4).integers(0, 1024, (24, 4)).astype(np.uint16)
    parts = [(np.concatenate(segs), [(30, 0.5), (30, 0.25), (12, 0.125)]),
             (noise, [(12, 0.5), (12, 0.5)])]
    lm_file("v1_lm_48khz", "encodec_48khz", 4, 6.0, parts, [0, F.FLAG_RAW])


def live_file(name: str, model: str, k: int, bw: float, coder: str, write) -> None:
    """A live stream (version 2) written by `write(writer)`, and its frames' codes."""
    spec = SPECS[model]
    h = live.live_header(header(model, coder, k, bw, spec.sample_rate, spec.channels))
    freq = LiveModel(random_lm(model), LM_FP, spec, k) if coder == "lm" else live.Uniform(k)
    buf = io.BytesIO()
    w = live.Writer(buf, h, freq)
    packets, n = write(w)
    end = w.finish(n, n)
    save(name, buf.getvalue(), h, packets, end)


def live_lm_24khz() -> None:
    """Two units (600 frames, then 12), blocks of 75 frames, the last frame of 200 samples."""
    codes = likely_codes(random_lm("encodec_24khz"), 2, 612)

    def write(w):
        w.write_frames(codes[:300])
        w.write_frames(codes[300:611])
        w.write_frames(codes[611:], last_valid=200)
        return [(codes, [(612, 1.0)], 0)], 611 * 320 + 200
    live_file("v2_live_lm_24khz", "encodec_24khz", 2, 1.5, "lm", write)


def live_raw_24khz() -> None:
    """Raw coder (uniform), 80 frames ended by 'no more frames' in the second block."""
    codes = np.random.default_rng(5).integers(0, 1024, (80, 4)).astype(np.uint16)

    def write(w):
        w.write_frames(codes)
        return [(codes, [(80, 1.0)], 0)], 80 * 320
    live_file("v2_live_raw_24khz", "encodec_24khz", 4, 3.0, "raw", write)


def live_lm_48khz() -> None:
    """Two segments, the second shorter."""
    lm = random_lm("encodec_48khz")
    parts = [(likely_codes(lm, 4, 150), 0.25), (likely_codes(lm, 4, 40, first=[1, 2, 3, 4]), 0.5)]

    def write(w):
        for c, scale in parts:
            w.write_segment(c, scale)
        return [(c, [(len(c), scale)], 0) for c, scale in parts], 47520 + 40 * 320
    live_file("v2_live_lm_48khz", "encodec_48khz", 4, 6.0, "lm", write)


def frequency_digest(g: np.ndarray) -> str:
    """SHA-256 of a frame's frequencies [K, 1024] written as big-endian u32."""
    return hashlib.sha256(np.ascontiguousarray(g, ">u4").tobytes()).hexdigest()


def frequencies() -> None:
    """Coder 3's frequencies for some frames of each model's seeded random LM."""
    doc = {}
    # a 24 kHz stream two hours into a file (its positions start there), a 48 kHz segment
    for model, k, frames, start in (("encodec_24khz", 8, 40, 540_000), ("encodec_48khz", 4, 30, 0)):
        lm = random_lm(model)
        codes = np.random.default_rng(7).integers(0, 1024, (frames, k)).astype(np.uint16)
        codes[frames // 2:] = likely_codes(lm, k, frames - frames // 2)
        state, steps = lm.start(k, 1, frames, np.array([start])), []
        for t in range(frames):
            g = state.step()[0]
            if t in (0, 1, 2, frames // 2, frames - 1):
                steps.append({"step": t, "sha256": frequency_digest(g),
                              "first": g[:, :8].tolist(),
                              "top": [[int(s), int(g[c, s])] for c, s in enumerate(g.argmax(axis=1))]})
            state.push(codes[t][None])
        doc[model] = {"codebooks": k, "first_position": start, "codes": codes.tolist(), "steps": steps}
    (OUT / "coder3_frequencies.json").write_text(json.dumps(doc) + "\n")
    print("coder3_frequencies.json")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    raw_24khz()
    raw_48khz_pipe()
    raw_24khz_tags()
    lm_24khz()
    lm_48khz()
    live_lm_24khz()
    live_raw_24khz()
    live_lm_48khz()
    frequencies()


if __name__ == "__main__":
    main()
