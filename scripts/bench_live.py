"""Live streaming: latency, bytes on the wire and CPU of `ecdc compress --live | ecdc decompress`.

    python scripts/bench_live.py [--seconds 23] [--warmup 3] [--block-ms 20] [--quick]

Latency: a source writes a 24 kHz (or 48 kHz stereo) WAV stream into `ecdc compress - -o -
--live` in blocks of --block-ms at real time (the shared recording, looped); the harness
carries the compressed bytes to `ecdc decompress - -o -` (counting them) and notes when each
decoded sample comes out. A sample's latency is when it leaves the decoder minus when its
block went into the encoder; the statistics skip the first --warmup seconds. opus-tools run
in the same harness as the reference row (`opusenc --max-delay 20 - - | opusdec - -`).

Stalls: the stretches of a 24 kHz row's output whose latency passed 200 ms are named on
stderr (seconds into the stream, and the worst), so that a pause is found, not only seen in
the max.

CPU: each process's user + system time, read from /proc between the warm-up's end and the
input's end, per second of audio (start-up and model loading excluded: the clock starts
once both processes have loaded and sit idle). Each process is pinned to its own core.

Bytes: the same codes compressed to a file and as a live stream. Random LM weights predict
nothing, so the LM rows use the sharpened LM of scripts/lm_size.py and codes sampled from
it, so that frames are really LM coded; raw rows use the codec's own codes.

Every process runs on the seeded random weights of the official architecture (speed and
latency do not depend on the values).
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "scripts"))
ENV1 = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# -P: the encodec_cli on sys.path (PYTHONPATH), not the current folder's
ECDC = [sys.executable, "-P", "-m", "encodec_cli"]


def wav_head(rate: int, channels: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", 0xFFFFFFFF)


def source(rate: int, channels: int, seconds: float) -> np.ndarray:
    x, sr = sf.read(SHARED / "audio" / "test_24k.wav", dtype="float32", always_2d=True)
    x = x.mean(axis=1, keepdims=True)
    if sr != rate:
        x = soxr.resample(x, sr, rate)
    n = int(seconds * rate)
    x = np.tile(x, (n // len(x) + 1, channels))[:n]
    return (np.clip(x, -1, 1) * 32767).astype("<i2")


def cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def pinned(cmd: list, core: int) -> list:
    """`cmd` on one core (each side gets its own; the harness's threads float)."""
    return (["taskset", "-c", str(core)] + cmd) if shutil.which("taskset") and os.cpu_count() > 1 else cmd


def run_pipeline(enc_cmd, dec_cmd, rate: int, channels: int, seconds: float, warmup: float,
                 block_ms: float, out_rate: int) -> dict:
    """Feed a paced WAV stream through encoder | harness | decoder; latencies per sample."""
    enc_cmd, dec_cmd = pinned(enc_cmd, 0), pinned(dec_cmd, 1)
    pcm = source(rate, channels, seconds)
    block = int(rate * block_ms / 1000)
    enc = subprocess.Popen(enc_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV1, bufsize=0)
    dec = subprocess.Popen(dec_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV1, bufsize=0)
    sent_at = np.zeros(len(pcm) // block + 2)
    wire = {"bytes": 0}
    arrivals = []  # (time, samples out so far)
    marks = {}

    def carry():
        while True:
            data = enc.stdout.read1(65536) if hasattr(enc.stdout, "read1") else os.read(enc.stdout.fileno(), 65536)
            if not data:
                break
            wire["bytes"] += len(data)
            dec.stdin.write(data)
        dec.stdin.close()

    def collect():
        head = b""
        while len(head) < 44:
            chunk = os.read(dec.stdout.fileno(), 44 - len(head))
            if not chunk:
                return
            head += chunk
        got, rest = 0, b""
        frame = 2 * channels
        while True:
            chunk = os.read(dec.stdout.fileno(), 65536)
            if not chunk:
                break
            now = time.monotonic()
            rest += chunk
            n = len(rest) // frame
            rest = rest[n * frame:]
            got += n
            arrivals.append((now, got))

    threads = [threading.Thread(target=carry, daemon=True), threading.Thread(target=collect, daemon=True)]
    for t in threads:
        t.start()
    # a live link is set up before it carries sound: the stream's header goes through, then
    # the clock starts once both sides have loaded their models and sit idle
    enc.stdin.write(wav_head(rate, channels))
    idle_since, last = time.monotonic(), None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = (cpu_seconds(enc.pid), cpu_seconds(dec.pid))
        if now != last:
            idle_since, last = time.monotonic(), now
        elif time.monotonic() - idle_since > 1.0 and wire["bytes"]:
            break
    start = time.monotonic()
    for i in range(0, len(pcm), block):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if i // block == int(warmup * rate) // block:
            marks["cpu0"] = (cpu_seconds(enc.pid), cpu_seconds(dec.pid), time.monotonic())
        enc.stdin.write(pcm[i:i + block].tobytes())
        sent_at[i // block] = time.monotonic()
    marks["cpu1"] = (cpu_seconds(enc.pid), cpu_seconds(dec.pid), time.monotonic())
    enc.stdin.close()
    for t in threads:
        t.join(timeout=60)
    enc.wait()
    dec.wait()
    times = np.array([a[0] for a in arrivals])
    counts = np.array([a[1] for a in arrivals])
    # the output time of each output sample, mapped to the input sample it stands for
    out_samples = np.arange(int(warmup * out_rate), int((seconds - 0.5) * out_rate), max(1, out_rate // 1000))
    idx = np.searchsorted(counts, out_samples + 1)
    ok = idx < len(times)
    out_t = times[idx[ok]]
    in_idx = (out_samples[ok] * rate // out_rate)
    in_t = sent_at[in_idx // block]
    lat = (out_t - in_t) * 1000
    c0, c1 = marks["cpu0"], marks["cpu1"]
    audio = (c1[2] - c0[2])
    return {"first": (times[0] - start) if len(times) else float("nan"),
            "median": float(np.median(lat)), "p95": float(np.percentile(lat, 95)),
            "max": float(lat.max()), "wire": wire["bytes"], "samples": int(counts[-1]) if len(counts) else 0,
            "enc_cpu": (c1[0] - c0[0]) / audio, "dec_cpu": (c1[1] - c0[1]) / audio,
            "late": late_spans(out_samples[ok] / out_rate, lat)}


def late_spans(t: np.ndarray, lat: np.ndarray, limit_ms: float = 200.0) -> list:
    """The stretches of output (seconds into the stream) whose latency passed limit_ms, with
    their worst: a stall (a compile, a collection) shows up here, not only in the max."""
    spans, late = [], np.flatnonzero(lat > limit_ms)
    for run in np.split(late, np.flatnonzero(np.diff(late) > 1) + 1) if len(late) else []:
        spans.append((float(t[run[0]]), float(t[run[-1]]), float(lat[run].max())))
    return spans


def latency_rows(weights: dict, a) -> list:
    rows = []
    configs = [("24khz", b, lm) for b in a.bandwidths for lm in (True, False)]
    if not a.quick:
        configs += [("48khz", 6.0, True), ("48khz", 6.0, False)]
    for model, bw, lm in configs:
        rate, ch = (24000, 1) if model == "24khz" else (48000, 2)
        name = f"encodec_{model}"
        w = ["--weights", str(weights[name]), "--lm-weights", str(weights[f"encodec_lm_{model}"])]
        enc = ECDC + ["compress", "-", "-o", "-", "--live", "-q", "--model", model, "-b", f"{bw:g}",
                      "--lm" if lm else "--raw"] + w
        dec = ECDC + ["decompress", "-", "-o", "-", "-q"] + w
        r = run_pipeline(enc, dec, rate, ch, a.seconds, a.warmup, a.block_ms, rate)
        rows.append((f"ecdc {model} {bw:g} kbps, {'LM' if lm else '--raw'}", r))
        print(f"| {rows[-1][0]} | {r['median']:.0f} ms | {r['p95']:.0f} ms | {r['max']:.0f} ms | "
              f"{r['enc_cpu']:.2f} | {r['dec_cpu']:.2f} | {8 * r['wire'] / a.seconds / 1000:.2f} |", flush=True)
        if model == "24khz" and r["late"]:
            spans = ", ".join(f"{a:.1f}-{b:.1f} s (worst {w:.0f} ms)" for a, b, w in r["late"])
            print(f"  late (over 200 ms): {spans}", file=sys.stderr, flush=True)
    if shutil.which("opusenc") and shutil.which("opusdec"):
        enc = ["opusenc", "--quiet", "--max-delay", "20", "--bitrate", "6", "-", "-"]
        dec = ["opusdec", "--quiet", "--rate", "24000", "-", "-"]
        r = run_pipeline(enc, dec, 24000, 1, a.seconds, a.warmup, a.block_ms, 24000)
        rows.append(("opus-tools, 6 kbps, --max-delay 20", r))
        print(f"| {rows[-1][0]} | {r['median']:.0f} ms | {r['p95']:.0f} ms | {r['max']:.0f} ms | "
              f"{r['enc_cpu']:.2f} | {r['dec_cpu']:.2f} | {8 * r['wire'] / a.seconds / 1000:.2f} |", flush=True)
    return rows


def overhead_rows(weights: dict, a) -> None:
    """Bytes of the same codes in a file and as a live stream."""
    import torch
    from lm_size import find_sharpening, float_lm, sample

    from encodec_cli.entropy.intlm import IntLM
    from encodec_cli.entropy.lmcoder import LiveModel, LMEncoder
    from encodec_cli.formats import live, v1
    from encodec_cli.formats.records import Header, packetize
    from encodec_cli.specs import SPECS

    torch.set_num_threads(1)
    print("\n| model | kbps | coder | file bytes | live bytes | live overhead |")
    print("|---|---|---|---|---|---|")
    for model, bws in (("encodec_24khz", a.bandwidths), ("encodec_48khz", [6.0])):
        spec = SPECS[model]
        for bw in bws:
            k = spec.codebooks_for(bw)
            frames = int(a.overhead_seconds * spec.frame_rate)
            lm = float_lm(model, k, find_sharpening(model, k))
            unit = 600 if spec.causal else 150
            if spec.causal:
                codes = sample(lm, k, frames, 1, frames, np.random.default_rng(1))[0][0].astype(np.uint16)
                pieces = [(codes, 1.0)]
            else:
                seg = sample(lm, k, unit, max(1, frames // unit), unit, np.random.default_rng(1))[0]
                pieces = [(s.astype(np.uint16), 1.0) for s in seg]
            int_lm = IntLM(lm)
            for coder in ("lm", "raw"):
                h = Header(model=model, coder=coder, n_codebooks=k, bandwidth=bw, sample_rate=spec.sample_rate,
                           channels=spec.channels, source_sample_rate=spec.sample_rate,
                           source_channels=spec.channels, num_samples=None, source_num_samples=None,
                           weights_fingerprint=bytes(8))
                n = sum(len(c) for c, _ in pieces) * spec.hop_length
                fo = io.BytesIO()
                w = v1.Writer(fo, h)
                if coder == "lm":
                    enc = LMEncoder(int_lm, bytes(8), spec, k, raw_fallback=False)
                    for pk, (payload, flags) in zip(packetize(pieces, spec.causal, spec.frame_rate),
                                                    enc.encode_many(list(packetize(pieces, spec.causal,
                                                                                   spec.frame_rate)))):
                        w.write_packet(pk[1], payload, flags)
                else:
                    for codes_, segs in packetize(pieces, spec.causal, spec.frame_rate):
                        w.write_packet(segs, v1.pack_codes(codes_))
                w.finish(n, n)
                file_bytes = len(fo.getvalue())
                fo = io.BytesIO()
                model_ = LiveModel(int_lm, bytes(8), spec, k) if coder == "lm" else live.Uniform(k)
                lw = live.Writer(fo, live.live_header(h), model_)
                if spec.causal:
                    lw.write_frames(pieces[0][0][:-1])
                    lw.write_frames(pieces[0][0][-1:], spec.hop_length)
                else:
                    for c, s in pieces:
                        lw.write_segment(c, s)
                lw.finish(n, n)
                live_bytes = len(fo.getvalue())
                print(f"| {model[8:]} | {bw:g} | {coder} | {file_bytes} | {live_bytes} | "
                      f"{100 * (live_bytes / file_bytes - 1):+.2f}% |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=23.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--block-ms", type=float, default=20.0)
    ap.add_argument("--bandwidths", type=float, nargs="+", default=[1.5, 6.0, 24.0])
    ap.add_argument("--overhead-seconds", type=float, default=40.0)
    ap.add_argument("--quick", action="store_true", help="24 kHz only")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-overhead", action="store_true")
    a = ap.parse_args()
    from encodec_cli.testing import write_checkpoints

    print(f"# bench_live: {platform.processor() or platform.machine()}, "
          f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}, "
          f"{time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = {k: v for k, v in write_checkpoints(Path(tmp)).items()}
        if not a.no_latency:
            print(f"\n{a.seconds:g} s paced at real time in {a.block_ms:g} ms blocks, first {a.warmup:g} s "
                  f"not counted; CPU in core-seconds per second of audio\n")
            print("| pipeline | median latency | 95th percentile | max | compress CPU | decompress CPU | "
                  "kbit/s on the wire |")
            print("|---|---|---|---|---|---|---|")
            latency_rows(weights, a)
        if not a.no_overhead:
            overhead_rows(weights, a)


if __name__ == "__main__":
    main()
