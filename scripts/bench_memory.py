"""Peak memory of ecdc on a long file: compress and decompress, measured by /usr/bin/time -v.

    python scripts/bench_memory.py [--hours 2] [--model 24khz] [--lm] [--workdir /tmp/ecdc-mem]

Writes a WAV of the given length (the shared recording looped, written block by block),
random official-architecture weights, then runs the installed `ecdc` on it.
The requirement: peak RSS at most 500 MB for a two-hour 24 kHz file, both directions.
With --lm, the language model codes the file. Random LM weights predict nothing, so ecdc
would store most packets raw, and a raw packet costs the decoder no LM work: the compressor
runs here with the raw fallback off (`CompressOptions(raw_fallback=False)`, through the API
in a process of its own, one thread as the command runs; the LM work of compressing is the
same either way), so that every packet of the file it writes is range coded and the
decompressor does the full LM work.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from encodec_cli.testing import write_checkpoints

ROOT = Path(__file__).resolve().parents[1]
RECORDING = {"24khz": ROOT.parent / "shared" / "audio" / "test_24k.wav",
             "48khz": ROOT.parent / "shared" / "audio" / "test_48k.wav"}


def long_wav(path: Path, hours: float, model: str) -> None:
    base, rate = sf.read(RECORDING[model], dtype="float32", always_2d=True)
    total = int(hours * 3600 * rate)
    with sf.SoundFile(path, "w", rate, base.shape[1], subtype="PCM_16") as f:
        done = 0
        while done < total:
            n = min(len(base), total - done)
            f.write(base[:n])
            done += n


# compress IN OUT MODEL WEIGHTS LM_WEIGHTS, every packet range coded
LM_ONLY = ("import sys; from pathlib import Path; from encodec_cli.api import CompressOptions, compress_file; "
           "compress_file(sys.argv[1], sys.argv[2], CompressOptions(model='encodec_' + sys.argv[3], "
           "weights=Path(sys.argv[4]), lm_weights=Path(sys.argv[5]), raw_fallback=False, download_bars=False), "
           "force=True)")


def measured(cmd: list) -> tuple:
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return wall, rss_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--model", choices=["24khz", "48khz"], default="24khz")
    ap.add_argument("--lm", action="store_true", help="entropy-code with the language model")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ecdc-mem"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = write_checkpoints(a.workdir / "weights", lm=a.lm)
    weights = checkpoints[f"encodec_{a.model}"]
    lm = ["--lm", "--lm-weights", str(checkpoints[f"encodec_lm_{a.model}"])] if a.lm else ["--raw"]
    wav = a.workdir / f"long_{a.model}.wav"
    if not wav.exists() or sf.info(wav).duration != a.hours * 3600:
        long_wav(wav, a.hours, a.model)
    seconds = sf.info(wav).duration
    ecdc = [sys.executable, "-m", "encodec_cli"]
    if a.lm:
        t1, m1 = measured(["env", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1", sys.executable, "-c", LM_ONLY,
                           str(wav), str(a.workdir / "long.ecdc"), a.model, str(weights), lm[2]])
    else:
        t1, m1 = measured(ecdc + ["compress", str(wav), "-o", str(a.workdir / "long.ecdc"), "-f",
                                  "--model", a.model, "--weights", str(weights), "-q", *lm])
    t2, m2 = measured(ecdc + ["decompress", str(a.workdir / "long.ecdc"), "-o",
                              str(a.workdir / "long_out.wav"), "-f", "--weights", str(weights), "-q",
                              *lm[1:]])  # decompress takes --lm-weights, not --lm/--raw
    mode = " --lm" if a.lm else ""
    print(f"{a.model}{mode}, {seconds / 3600:.2f} h of audio ({wav.stat().st_size / 2**20:.0f} MiB WAV)")
    print("| direction | wall time | real-time factor | peak RSS |")
    print("|---|---|---|---|")
    print(f"| compress | {t1:.0f} s | {seconds / t1:.1f}x | {m1:.0f} MB |")
    print(f"| decompress | {t2:.0f} s | {seconds / t2:.1f}x | {m2:.0f} MB |")


if __name__ == "__main__":
    main()
