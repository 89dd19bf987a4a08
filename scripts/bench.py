"""ecdc against Meta's reference `encodec` package, side by side, single-threaded.

    python scripts/bench.py [--ref-python /tmp/refenv/bin/python] [--repeats 2] [--quick]
    python scripts/bench.py --lm          # coder 3 against raw mode and the reference's --lm
    python scripts/bench.py --lm --baseline /tmp/old   # ... and against an earlier tree's coder 3

Both run on the same seeded random weights of the official architecture (speed does not
depend on the values) and the same inputs: the shared recordings looped to several
minutes. Runs alternate between the two tools; each is a whole process (start-up, model
loading, file I/O included), timed by wall clock, with its peak RSS from wait4().
Also printed: a breakdown of ecdc's time by stage, the model's FLOPs per second of audio,
the GFLOP/s ecdc attains, a measured single-core matrix-product peak, and --jobs scaling.

The reference needs its own environment (see ../shared/reference/README.md):
    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0 soundfile soxr numpy einops
    /tmp/refenv/bin/pip install --no-deps encodec==0.1.1
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFCODEC = SHARED / "reference" / "refcodec.py"
ENV1 = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd: list, env: dict | None = None) -> tuple:
    """Wall seconds and peak RSS (MB) of one whole process.

    The RSS comes from /usr/bin/time: a child forked straight from this (large) process
    would inherit its high-water mark through exec and report it as its own.
    """
    full_env = dict(os.environ, **ENV1, **(env or {}))
    with tempfile.NamedTemporaryFile("r") as rss:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + [str(c) for c in cmd],
                           env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t
        if p.returncode:
            sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr.decode()[-3000:]}")
        return wall, int(rss.read().split()[-1]) / 1024


def looped(src: Path, seconds: float, dst: Path) -> Path:
    base, rate = sf.read(src, dtype="float32", always_2d=True)
    reps = int(np.ceil(seconds * rate / len(base)))
    sf.write(dst, np.concatenate([base] * reps)[:int(seconds * rate)], rate, subtype="PCM_16")
    return dst


def matmul_peak() -> float:
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 1024 ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def model_flops(name: str) -> dict:
    """FLOPs (2 x multiply-adds) per second of audio, counted layer by layer."""
    from encodec_cli.codec.models import SLSTM, SConv1d, SConvTranspose1d, build_model

    model = build_model(name)
    model.fold()
    spec = model.spec
    counts = {"encoder": 0, "decoder": 0}

    def wshape(p) -> tuple:
        return tuple((p.weight_v if hasattr(p, "weight_v") else p.weight).shape)

    def hook(part):
        def f(mod, inp, out):
            x = inp[0]
            if isinstance(mod, SConv1d):
                cout, cin, k = wshape(mod.conv.params)
                counts[part] += 2 * cout * cin * k * out.shape[-1]
            elif isinstance(mod, SConvTranspose1d):
                cin, cout, k = wshape(mod.convtr.params)
                counts[part] += 2 * cin * cout * k * x.shape[-1]
            elif isinstance(mod, SLSTM):
                h = mod.lstm.hidden_size
                counts[part] += 2 * mod.lstm.num_layers * 4 * h * (h + h) * x.shape[-1]
        return f

    for part in counts:
        for m in getattr(model, part).modules():
            if isinstance(m, (SConv1d, SConvTranspose1d, SLSTM)):
                m.register_forward_hook(hook(part))
    with torch.no_grad():
        seg = spec.segment_length or spec.sample_rate
        emb = model.encoder(torch.zeros(1, spec.channels, seg))
        model.decoder(emb)
    n_q = spec.codebooks_for(6.0)
    frames = spec.frame_rate
    counts["quantizer"] = 2 * n_q * frames * spec.bins * spec.dimension
    scale = spec.sample_rate / seg
    return {k: v * scale for k, v in counts.items()}


def breakdown(name: str, wav: Path, weights: Path) -> dict:
    """ecdc's time by stage, in process (the same calls the CLI makes)."""
    from encodec_cli.audio import blocks as B
    from encodec_cli.audio import files as A
    from encodec_cli.codec import streaming as C
    from encodec_cli.formats import v1 as F
    from encodec_cli.formats.records import Header

    torch.set_num_threads(1)
    codec = C.load_codec(name, weights)
    spec, model = codec.spec, codec.model
    n_q = spec.codebooks_for(6.0)
    t = {k: 0.0 for k in ("read+resample", "encoder", "quantizer", "coder+container",
                          "container+coder (dec)", "dequantize", "decoder", "resample+write")}
    clock = time.perf_counter

    t0 = clock()
    src = A.open_source(str(wav))
    blocks = [b.T for b in B.converted(src.blocks(), src.sample_rate, spec.sample_rate, spec.channels)]
    t["read+resample"] += clock() - t0

    def timed(fn, key):
        def wrapper(*a, **k):
            s = clock()
            out = fn(*a, **k)
            t[key] += clock() - s
            return out
        return wrapper

    def patch(obj, names, key):
        saved = {n: getattr(obj, n) for n in names}
        for n in names:
            setattr(obj, n, timed(saved[n], key))
        return lambda: [setattr(obj, n, f) for n, f in saved.items()]

    restore = [patch(model.encoder, ("step", "forward_many"), "encoder"),
               patch(model.quantizer, ("encode",), "quantizer")]
    packets = list(C.encode(codec, blocks, n_q))
    for r in restore:
        r()

    t0 = clock()
    import io
    buf = io.BytesIO()
    h = Header(model=spec.name, coder="raw", n_codebooks=n_q, bandwidth=6.0, sample_rate=spec.sample_rate,
               channels=spec.channels, source_sample_rate=spec.sample_rate, source_channels=spec.channels,
               num_samples=None, source_num_samples=None, weights_fingerprint=codec.fingerprint)
    w = F.Writer(buf, h)
    for p in packets:
        w.write_packet([(len(p.codes), p.scale)], F.pack_codes(p.codes))
    w.finish(sum(b.shape[-1] for b in blocks), sum(b.shape[-1] for b in blocks))
    t["coder+container"] += clock() - t0

    t0 = clock()
    decoded = [C.CodePacket(p.codes, p.segments[0][1]) for p in F.Reader.open(io.BytesIO(buf.getvalue()))]
    t["container+coder (dec)"] += clock() - t0
    restore = [patch(model.decoder, ("step", "forward_many"), "decoder"),
               patch(model.quantizer, ("decode",), "dequantize")]
    out = list(C.decode(codec, decoded))
    for r in restore:
        r()

    t0 = clock()
    with tempfile.TemporaryDirectory() as d:
        sink = A.FileSink(str(Path(d) / "o.wav"), spec.sample_rate, spec.channels, "16", "WAV")
        for y in out:
            sink.write(y.T)
        sink.close()
    t["resample+write"] += clock() - t0
    return t


def ecdc_cmd(*args) -> list:
    # -P: the encodec_cli on sys.path (PYTHONPATH for --baseline), not the one in the current folder
    return [sys.executable, "-P", "-m", "encodec_cli", *map(str, args)]


def ref_cmd(ref_python: str, *args) -> list:
    return [ref_python, str(REFCODEC), *map(str, args)]


def codec_bench(a, work: Path, weights: dict) -> None:
    configs = [("encodec_24khz", "24khz", SHARED / "audio" / "test_24k.wav", a.minutes24),
               ("encodec_48khz", "48khz", SHARED / "audio" / "test_48k.wav", a.minutes48)]
    peak = matmul_peak()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"single-core float32 matrix-product peak: {peak:.0f} GFLOP/s\n")
    rows = []
    for name, flag, src, minutes in configs:
        seconds = minutes * 60
        wav = looped(src, seconds, work / f"{flag}.wav")
        w = weights[name]
        res = {k: [] for k in ("ec", "ed", "rc", "rd")}
        for _ in range(a.repeats):
            res["ec"].append(run(ecdc_cmd("compress", wav, "-o", work / "e.ecdc", "-f", "-q", "--raw",
                                          "--model", flag, "-b", 6, "--weights", w)))
            res["rc"].append(run(ref_cmd(a.ref_python, "compress", wav, work / "r.ecdc", "-b", 6,
                                         "--weights", work / "weights")
                                 + (["--hq"] if flag == "48khz" else []),
                                 {"PYTHONPATH": str(SHARED / "reference" / "refshim")}))
            res["ed"].append(run(ecdc_cmd("decompress", work / "e.ecdc", "-o", work / "e.wav",
                                          "-f", "-q", "--weights", w)))
            res["rd"].append(run(ref_cmd(a.ref_python, "decompress", work / "r.ecdc", work / "r.wav",
                                         "--weights", work / "weights"),
                                 {"PYTHONPATH": str(SHARED / "reference" / "refshim")}))
        best = {k: min(v) for k, v in res.items()}  # (wall, rss) of the fastest run
        flops = model_flops(name)
        parts = breakdown(name, wav, w)
        enc_gf = (flops["encoder"] + flops["quantizer"]) * seconds / (parts["encoder"] + parts["quantizer"]) / 1e9
        dec_gf = flops["decoder"] * seconds / parts["decoder"] / 1e9
        for direction, e, r, gf, fl in (("compress", "ec", "rc", enc_gf, flops["encoder"] + flops["quantizer"]),
                                        ("decompress", "ed", "rd", dec_gf, flops["decoder"])):
            rows.append((f"{flag} 6 kbps, {minutes:g} min", direction, seconds / best[e][0],
                         seconds / best[r][0], best[r][0] / best[e][0], best[e][1], best[r][1],
                         fl / 1e9, gf))
        print(f"{flag}: ecdc time by stage for {minutes:g} min (s): " +
              ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    print()
    _table(["input", "direction", "ecdc RTF", "reference RTF", "speed-up", "ecdc peak RSS", "reference peak RSS",
            "model GFLOP per s of audio", "ecdc GFLOP/s attained"],
           [[r[0], r[1], f"{r[2]:.1f}x", f"{r[3]:.1f}x", f"**{r[4]:.2f}x**", f"{r[5]:.0f} MB", f"{r[6]:.0f} MB",
             f"{r[7]:.2f}", f"{r[8]:.0f}"] for r in rows])
    jobs_bench(work, weights["encodec_24khz"])


def jobs_bench(work: Path, w: Path) -> None:
    base, rate = sf.read(SHARED / "audio" / "test_24k.wav", dtype="float32")
    files = []
    for i in range(4):
        files.append(work / f"job{i}.wav")
        sf.write(files[-1], np.concatenate([base] * 3), rate)  # 1 min each
    times = {}
    for jobs in (1, 2):
        out = work / f"jobs{jobs}"
        out.mkdir(exist_ok=True)
        times[jobs] = run(ecdc_cmd("compress", *files, "-o", out, "-f", "-q", "--jobs", jobs,
                                   "--raw", "--weights", w))[0]
    print(f"\n--jobs on 4 one-minute files (24 kHz, 6 kbps, {os.cpu_count()} cores): "
          f"1 job {times[1]:.1f} s, 2 jobs {times[2]:.1f} s, throughput x{times[1] / times[2]:.2f}")


def lm_bench(a, work: Path, weights: dict) -> None:
    """--lm: coder 3 against raw mode (the same ecdc) and against the reference's --lm; sizes."""
    from encodec_cli.api import CompressOptions, compress_file
    from encodec_cli.codec import streaming as C
    from encodec_cli.entropy.lmcoder import LMEncoder, load_lm
    from encodec_cli.formats import v1 as F
    from encodec_cli.formats.records import packetize

    refenv = {"PYTHONPATH": str(SHARED / "reference" / "refshim")}
    have_ref = Path(a.ref_python).exists()
    rows, sizes = [], []
    for name, flag, src, seconds in (("encodec_24khz", "24khz", SHARED / "audio" / "test_24k.wav", a.lm_seconds),
                                     ("encodec_48khz", "48khz", SHARED / "audio" / "test_48k.wav", a.lm_seconds)):
        wav = looped(src, seconds, work / f"lm_{flag}.wav")
        w, lw = weights[name], weights[name.replace("encodec_", "encodec_lm_")]
        # random LM weights predict nothing, so ecdc would store most packets raw, and a raw
        # packet costs the decoder no LM work; decompression is timed on a file fully LM coded
        lm_only = work / f"lm_only_{flag}.ecdc"
        compress_file(str(wav), str(lm_only), CompressOptions(model=name, weights=w, lm=True, lm_weights=lw,
                                                              raw_fallback=False), force=True)
        runs = {
            "raw_c": (ecdc_cmd("compress", wav, "-o", work / "raw.ecdc", "-f", "-q", "--model", flag,
                               "--raw", "--weights", w), None),
            "lm_c": (ecdc_cmd("compress", wav, "-o", work / "e.ecdc", "-f", "-q", "--model", flag,
                              "--lm", "--lm-weights", lw, "--weights", w), None),
            "raw_d": (ecdc_cmd("decompress", work / "raw.ecdc", "-o", work / "e.wav", "-f", "-q",
                               "--weights", w), None),
            "lm_d": (ecdc_cmd("decompress", lm_only, "-o", work / "e.wav", "-f", "-q",
                              "--weights", w, "--lm-weights", lw), None),
        }
        if a.baseline:  # another tree's ecdc (an earlier commit), on the same files
            base = {"PYTHONPATH": str(Path(a.baseline).resolve())}
            runs["base_c"] = (runs["lm_c"][0], base)
            runs["base_d"] = (runs["lm_d"][0], base)
        if have_ref:
            runs["ref_c"] = (ref_cmd(a.ref_python, "compress", wav, work / "r.ecdc", "-b", 6, "--lm",
                                     "--weights", work / "weights") + (["--hq"] if flag == "48khz" else []), refenv)
            runs["ref_d"] = (ref_cmd(a.ref_python, "decompress", work / "r.ecdc", work / "r.wav",
                                     "--weights", work / "weights"), refenv)
        best: tp.Dict[str, tp.Tuple[float, float]] = {}
        walls: tp.Dict[str, tp.List[float]] = {}
        for _ in range(a.repeats):
            for key, (cmd, env) in runs.items():  # alternating, so drifts hit every tool alike
                wall, rss = run(cmd, env)
                walls.setdefault(key, []).append(wall)
                if key not in best or wall < best[key][0]:
                    best[key] = (wall, rss)
        for direction, c in (("compress", "c"), ("decompress", "d")):
            raw, lm = best[f"raw_{c}"], best[f"lm_{c}"]
            # each round's raw and LM runs are neighbours in time: their ratio is spared the
            # VM's slower drifts, which the best of each alone is not
            paired = float(np.median(np.array(walls[f"raw_{c}"]) / np.array(walls[f"lm_{c}"])))
            paired_base = (float(np.median(np.array(walls[f"raw_{c}"]) / np.array(walls[f"base_{c}"])))
                           if f"base_{c}" in walls else 0.0)
            ref = best.get(f"ref_{c}")
            base = best.get(f"base_{c}")
            rows.append((f"{flag} 6 kbps, {seconds:g} s", direction, seconds / raw[0], seconds / lm[0],
                         raw[0] / lm[0], lm[1], seconds / ref[0] if ref else None,
                         ref[0] / lm[0] if ref else None, raw[0] / base[0] if base else None, paired,
                         paired_base))
        # sizes: coder 3's payload without and with the raw fallback, against raw
        codec = C.load_codec(name, w)
        n_q = codec.spec.codebooks_for(6.0)
        x = sf.read(wav, dtype="float32", always_2d=True)[0].T.copy()
        grouped = list(packetize(((p.codes, p.scale) for p in C.encode(codec, [x], n_q)), codec.spec.causal,
                                 codec.spec.frame_rate))
        lm, fp = load_lm(name, lw, n_q)
        pure = sum(len(p) for p in LMEncoder(lm, fp, codec.spec, n_q).encode_lm(grouped))
        with_fallback = sum(len(p) for p, _ in LMEncoder(lm, fp, codec.spec, n_q).encode_many(grouped))
        raw = sum(len(F.pack_codes(c)) for c, _ in grouped)
        ref_size = (work / "r.ecdc").stat().st_size if have_ref else None
        sizes.append((flag, ref_size, (work / "e.ecdc").stat().st_size, pure, with_fallback, raw))
    _table(["input", "direction", "raw RTF", "--lm RTF", "--lm / raw speed", "median of rounds' --lm / raw",
            "--lm peak RSS", "reference --lm RTF", "ecdc --lm vs reference --lm"]
           + (["baseline --lm / raw (median of rounds)"] if a.baseline else []),
           [[r[0], r[1], f"{r[2]:.1f}x", f"{r[3]:.1f}x", f"**{100 * r[4]:.0f}%**", f"{100 * r[9]:.0f}%",
             f"{r[5]:.0f} MB", f"{r[6]:.2f}x" if r[6] else "n/a", f"**{r[7]:.1f}x**" if r[6] else "n/a"]
            + ([f"{100 * r[8]:.0f}% ({100 * r[10]:.0f}%)"] if a.baseline else []) for r in rows])
    print()
    _table(["input", "reference --lm file", "ecdc --lm file", "coder 3 payload, no fallback",
            "with raw fallback", "raw payload"],
           [[s[0], f"{s[1]} B" if s[1] else "n/a", *(f"{v} B" for v in s[2:])] for s in sizes])


def _table(head: tp.Sequence[str], rows: tp.Iterable[tp.Sequence[str]]) -> None:
    """A Markdown table on stdout."""
    for cells in [head, ["---"] * len(head), *rows]:
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-python", default="/tmp/refenv/bin/python")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--minutes24", type=float, default=3.0)
    ap.add_argument("--minutes48", type=float, default=2.0)
    ap.add_argument("--lm", action="store_true", help="benchmark the --lm coders")
    ap.add_argument("--lm-seconds", type=float, default=60.0)
    ap.add_argument("--baseline", metavar="TREE", help="--lm: also time the ecdc of this source tree "
                    "(say, a worktree of an earlier commit), alternating with this one")
    ap.add_argument("--quick", action="store_true", help="short inputs, one repeat")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.minutes24, a.minutes48, a.lm_seconds = 1, 0.5, 0.5, 10
    from encodec_cli.testing import write_checkpoints

    print(f"ecdc benchmark, {datetime.date.today()}, torch {torch.__version__}, single thread\n")
    with tempfile.TemporaryDirectory(prefix="ecdc-bench-") as d:
        work = Path(d)
        weights = write_checkpoints(work / "weights")
        (lm_bench if a.lm else codec_bench)(a, work, weights)


if __name__ == "__main__":
    main()
