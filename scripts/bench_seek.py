"""Time ranges: decoding the last 10 s of a 3-minute file against decoding all of it.

    python scripts/bench_seek.py [--repeats 3] [--seconds 180]

For each model and coder (LM-coded, the default, and raw), the shared recording looped
to `--seconds` is compressed once (LM: every packet range coded, no raw fallback, as
with real weights); then `ecdc decompress` runs as a whole process
(start-up and model loading included), alternately on the whole file and with
`--start` at 10 s before the end. Best of `--repeats`, one thread, seeded random weights
(speed does not depend on their values).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import soundfile as sf
from bench import ROOT, looped, run

ECDC = [sys.executable, "-m", "encodec_cli"]
RECORDINGS = {"encodec_24khz": "test_24k.wav", "encodec_48khz": "test_48k.wav"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=180.0)
    a = p.parse_args()
    from encodec_cli import api
    from encodec_cli.testing import write_checkpoints

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_checkpoints(tmp / "weights")
        rows = []
        for model, recording in RECORDINGS.items():
            wav = looped(ROOT.parent / "shared" / "audio" / recording, a.seconds, tmp / f"{model}.wav")
            weights = ["--weights", paths[model], "--lm-weights", paths[model.replace("encodec_", "encodec_lm_")]]
            for coder in ("--lm", "--raw"):
                ecdc = tmp / f"{model}{coder}.ecdc"
                opts = api.CompressOptions(model=model, weights=paths[model], lm=coder == "--lm",
                                           lm_weights=paths[model.replace("encodec_", "encodec_lm_")]
                                           if coder == "--lm" else None, raw_fallback=False, download_bars=False)
                api.compress_file(str(wav), str(ecdc), opts, force=True)
                start = f"{a.seconds - 10:g}"
                full, part = [], []
                for _ in range(a.repeats):
                    full.append(run(ECDC + ["decompress", ecdc, "-o", tmp / "full.wav", "-q", "-f"] + weights)[0])
                    part.append(run(ECDC + ["decompress", ecdc, "-o", tmp / "part.wav", "-q", "-f",
                                            "--start", start] + weights)[0])
                n = sf.info(tmp / "part.wav").frames / sf.info(tmp / "part.wav").samplerate
                rows.append((model, coder[2:], min(full), min(part), n))
        print(f"\n{a.seconds:g} s input, last 10 s (--start {a.seconds - 10:g}), best of {a.repeats}, "
              f"whole processes\n")
        print("| model | coder | full decode | last 10 s | ratio |")
        print("|---|---|---|---|---|")
        for model, coder, full_s, part_s, n in rows:
            assert abs(n - 10) < 0.01, n
            print(f"| {model} | {coder} | {full_s:.2f} s | {part_s:.2f} s | {part_s / full_s:.1%} |")


if __name__ == "__main__":
    main()
