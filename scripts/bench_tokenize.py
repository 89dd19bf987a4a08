"""Tokenizing a corpus of clips: ecdc next to Meta's `encodec` and `transformers`' EncodecModel.

    python scripts/bench_tokenize.py [--clips 200] [--peer-python /tmp/refenv/bin/python]

A corpus of clips of 2-20 s is cut from the shared recordings (24 kHz mono for the 24 kHz
model, 48 kHz stereo for the 48 kHz one) and tokenized by whole processes, one thread
each: ecdc writing Parquet shards (`ecdc codes DIR -r -o OUT --parquet`, --jobs 1 and 2),
and the peers' usual loop, one clip at a time (scripts/tokenize_peers.py, run in a
scratch environment where both are installed; random official-architecture weights, the
same ones for ecdc and Meta's encodec, so their codes are compared clip by clip).
Reported: audio hours per core-hour (audio / (wall x processes)), files per second, peak
memory of the whole process tree, and ecdc's fixed cost per file (100 files of 50 ms
against one). The peers' environment:

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0 soundfile soxr numpy einops transformers
    /tmp/refenv/bin/pip install --no-deps encodec==0.1.1
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from encodec_cli.testing import write_checkpoints

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RECORDINGS = {"24khz": SHARED / "audio" / "test_24k.wav", "48khz": SHARED / "audio" / "test_48k.wav"}


def corpus(folder: Path, model: str, count: int, low: float, high: float, seed: int = 0) -> float:
    """`count` clips of `low`-`high` s in four folders, cut from the model's recording (looped)."""
    base, rate = sf.read(RECORDINGS[model], dtype="float32", always_2d=True)
    rng = np.random.default_rng(seed)
    shutil.rmtree(folder, ignore_errors=True)
    total = 0.0
    for i in range(count):
        n = int(rng.uniform(low, high) * rate)
        start = int(rng.integers(0, len(base)))
        clip = np.take(base, np.arange(start, start + n) % len(base), axis=0)
        sub = folder / f"part{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"clip{i:04d}.wav", clip, rate, subtype="PCM_16")
        total += n / rate
    return total


class TreeMemory:
    """Peak of the summed RSS of a process and its descendants, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list:
        children = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def _rss(self, pid: int) -> int:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(self._rss(p) for p in self._tree()))
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(cmd: list, env: dict | None = None) -> tuple:
    """(wall seconds, peak MB of the process tree) of a whole process."""
    t = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    memory = TreeMemory(p.pid)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    peak = memory.stop()
    if p.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{err.decode()[-3000:]}")
    return wall, peak / 2**20


def row_digests(folder: Path) -> tuple:
    import pyarrow.parquet as pq

    paths, digests = [], []
    for shard in sorted(folder.glob("*.parquet")):
        for row in pq.read_table(shard, columns=["path", "codes"]).to_pylist():
            paths.append(row["path"])
            digests.append(hashlib.sha256(np.array(row["codes"], np.uint16).tobytes()).hexdigest()[:16])
    return paths, digests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--min", type=float, default=2.0)
    ap.add_argument("--max", type=float, default=20.0)
    ap.add_argument("--configs", default="24khz:1.5,24khz:6,48khz:6")
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--peer-python", default="/tmp/refenv/bin/python")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ecdc-tokenize"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    ck = write_checkpoints(a.workdir / "weights")
    ecdc = [sys.executable, "-m", "encodec_cli"]
    peers = [] if a.no_peers or not Path(a.peer_python).exists() else ["encodec", "transformers"]
    peer_env = {**os.environ, "PYTHONPATH": str(SHARED / "reference" / "refshim"), "OMP_NUM_THREADS": "1"}
    rows = []
    audio = {}
    for config in a.configs.split(","):
        model, bandwidth = config.split(":")
        name = f"encodec_{model}"
        folder = a.workdir / f"corpus{model}"
        if model not in audio:
            audio[model] = corpus(folder, model, a.clips, a.min, a.max)
        seconds = audio[model]
        digests = None
        for jobs in map(int, a.jobs.split(",")):
            out = a.workdir / f"out-{model}-{bandwidth}-{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            wall, peak = run(ecdc + ["codes", folder, "-r", "-o", out, "--parquet", "-b", bandwidth, "--model", model,
                                     "--jobs", jobs, "--threads", 1, "-q", "--weights", ck[name]])
            paths, digests = row_digests(out)
            rows.append((f"ecdc --jobs {jobs}", model, bandwidth, seconds, wall, jobs, a.clips, peak, None))
            print(rows[-1], flush=True)
        listing = a.workdir / f"list-{model}.txt"
        listing.write_text("\n".join(str(folder / p) for p in paths))
        for peer in peers:
            report = a.workdir / f"{peer}-{model}-{bandwidth}.json"
            wall, peak = run([a.peer_python, ROOT / "scripts" / "tokenize_peers.py", peer, name, bandwidth, listing,
                              report] + (["--weights", ck[name]] if peer == "encodec" else []), peer_env)
            got = json.loads(report.read_text())
            same = (sum(x == y for x, y in zip(got["digests"], digests)) if peer == "encodec" else None)
            rows.append((peer, model, bandwidth, seconds, wall, 1, a.clips, peak, same))
            print(rows[-1], flush=True)
    # ecdc's fixed cost per file: 100 files of 50 ms against one
    tiny = a.workdir / "tiny"
    shutil.rmtree(tiny, ignore_errors=True)
    tiny.mkdir()
    for i in range(100):
        sf.write(tiny / f"t{i:03d}.wav", np.zeros(1200, np.float32), 24000)
    one = run(ecdc + ["codes", tiny / "t000.wav", "-o", a.workdir / "one", "--parquet", "-q", "-f",
                      "--weights", ck["encodec_24khz"]])[0]
    many = run(ecdc + ["codes", tiny, "-r", "-o", a.workdir / "many", "--parquet", "-q", "-f",
                       "--weights", ck["encodec_24khz"]])[0]
    fixed_ms = (many - one) / 99 * 1000
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\nMachine: {cpu}, {os.cpu_count()} cores; {a.clips} clips of {a.min:g}-{a.max:g} s; one thread a process")
    print("\n| tokenizer | model | kbps | audio h / core-hour | x real time | files/s | peak MB | same codes as ecdc |")
    print("|---|---|---|---|---|---|---|---|")
    for who, model, bw, seconds, wall, procs, files, peak, same in rows:
        same_text = "" if same is None else f"{same}/{files}"
        print(f"| {who} | {model} | {bw} | {seconds / 3600 / (wall * procs / 3600):.1f} | {seconds / wall:.1f} | "
              f"{files / wall:.2f} | {peak:.0f} | {same_text} |")
    print(f"\necdc's fixed cost per file (whole process, 100 files of 50 ms against one): {fixed_ms:.1f} ms")


if __name__ == "__main__":
    main()
