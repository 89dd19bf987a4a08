"""Batch throughput: --jobs 1, --jobs 2 and a local Ray cluster with 2 workers.

    python scripts/bench_batch.py [--files 20] [--workdir /tmp/ecdc-batch]

A corpus of 30-60 s files (the shared 24 kHz recording looped) is compressed as a folder
tree (`-r`, LM coding, 6 kbps, random official-architecture weights) by whole `ecdc`
processes; throughput is hours of audio per hour of wall time. Then the fixed and per-file
costs of each executor are fitted from runs over 10 and 30 one-second files.

Ray's servers listen on every interface: when run as root with iproute2, the Ray runs
happen in a private network namespace whose only interface is the loopback.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from encodec_cli.testing import write_checkpoints

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT.parent / "shared" / "audio" / "test_24k.wav"
NS = f"ecdc-bench-{os.getpid()}"


def corpus(folder: Path, lengths) -> float:
    base, rate = sf.read(RECORDING, dtype="float32")
    shutil.rmtree(folder, ignore_errors=True)
    for i, seconds in enumerate(lengths):
        n = int(seconds * rate)
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"f{i:03d}.wav", np.resize(base, n), rate, subtype="PCM_16")
    return float(sum(lengths))


def timed(cmd: list, env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ecdc-batch"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    ck = write_checkpoints(a.workdir / "weights")
    weights = ["--weights", str(ck["encodec_24khz"]), "--lm-weights", str(ck["encodec_lm_24khz"])]
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16))
    private = os.geteuid() == 0 and shutil.which("ip") is not None
    prefix = ["ip", "netns", "exec", NS] if private else []
    if private:
        subprocess.run(["ip", "netns", "add", NS], check=True)
        subprocess.run(prefix + ["ip", "link", "set", "lo", "up"], check=True)
    executors = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"],
                 "--cluster local, 2 workers": ["--cluster", "local", "--jobs", "2"]}
    ecdc = [sys.executable, "-m", "encodec_cli", "compress"]
    try:
        rng = np.random.default_rng(0)
        seconds = corpus(a.workdir / "corpus", rng.uniform(30, 60, a.files))
        print(f"corpus: {a.files} files, {seconds / 60:.1f} min of 24 kHz audio; LM coding, 6 kbps, "
              f"{os.cpu_count()} cores\n")
        print("| executor | wall time | throughput (h of audio per h) | vs --jobs 1 |")
        print("|---|---|---|---|")
        base = None
        for name, flags in executors.items():
            out = a.workdir / "out"
            shutil.rmtree(out, ignore_errors=True)
            cmd = (prefix if "--cluster" in flags else []) + ecdc + [
                str(a.workdir / "corpus"), "-r", "-o", str(out), "-q", *weights, *flags]
            wall = timed(cmd, env)
            base = base or wall
            print(f"| {name} | {wall:.1f} s | {seconds / wall:.1f} | {base / wall:.2f}x |", flush=True)
        print("\nfixed and per-file cost (runs over 10 and 30 files of 1 s):\n")
        print("| executor | fixed | per file |")
        print("|---|---|---|")
        small = {}
        for n in (10, 30):
            corpus(a.workdir / f"small{n}", [1.0] * n)
        for name, flags in executors.items():
            walls = []
            for n in (10, 30):
                out = a.workdir / "out"
                shutil.rmtree(out, ignore_errors=True)
                cmd = (prefix if "--cluster" in flags else []) + ecdc + [
                    str(a.workdir / f"small{n}"), "-r", "-o", str(out), "-q", *weights, *flags]
                walls.append(timed(cmd, env))
            per_file = (walls[1] - walls[0]) / 20
            small[name] = (walls[0] - 10 * per_file, per_file)
            print(f"| {name} | {small[name][0]:.1f} s | {1000 * per_file:.0f} ms |", flush=True)
    finally:
        if private:
            subprocess.run(["ip", "netns", "delete", NS], capture_output=True)


if __name__ == "__main__":
    main()
