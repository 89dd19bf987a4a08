"""What coder 3 costs in size: the integer LM against the float LM's ideal code length.

    python scripts/lm_size.py [--frames 2400] [--models 24khz 48khz]

Random LM weights predict almost nothing, so the heads are sharpened (multiplied by a factor
found here) until the float LM's mean entropy on its own samples is about 6.5 bits per code,
like a trained LM. Code sequences are then sampled from that float LM, and for each model
and bandwidth the script reports:

- ideal: the float LM's -log2 p of the samples, its state carried through the whole stream
  (24 kHz) or restarted per 1 s segment (48 kHz, as the reference);
- reset: the same with the state restarted at every packet, as coder 3 does (8 s packets
  at 24 kHz, each starting at its own position in the file; 48 kHz segments are already
  independent, so nothing changes there);
- coded: coder 3's real output for the same packets (range coder words and the 4-byte
  codes checksum of each packet), and its overhead over the float ideal with resets.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from encodec_cli.codec.lm import build_lm
from encodec_cli.entropy.intlm import IntLM
from encodec_cli.entropy.lmcoder import LMEncoder
from encodec_cli.specs import SPECS
from encodec_cli.testing import FloatLMState, lm_state

PACKET_FRAMES = {"encodec_24khz": 600, "encodec_48khz": 150}  # 8 s packets; 1 s segments
TARGET_BITS = 6.5


def float_lm(name: str, used: int, sharpen: float):
    lm = build_lm(name, used)
    state = lm_state(name)
    for key in state:
        if key.startswith("linears."):
            state[key] = state[key] * sharpen
    lm.load_state_dict(state)
    lm.fold()
    return lm


def sample(lm, k: int, frames: int, streams: int, unit: int, rng) -> tuple:
    """Codes [streams, frames, k] sampled from the float LM (restarted every `unit` frames),
    and their -log2 p in bits."""
    codes = np.zeros((streams, frames, k), np.int64)
    bits = 0.0
    state = None
    for t in range(frames):
        if t % unit == 0:
            state = FloatLMState(lm, k, streams)
        p = state.step().double().numpy()                       # [streams, k, 1024]
        cdf = p.cumsum(-1)
        u = rng.random((streams, k, 1)) * cdf[..., -1:]
        c = np.minimum((cdf < u).sum(-1), 1023)
        codes[:, t] = c
        bits -= np.log2(np.take_along_axis(p, c[..., None], -1)).sum()
        state.push(torch.from_numpy(c))
    return codes, bits


def ideal_bits(lm, codes: np.ndarray, unit: int) -> float:
    """-log2 p with the state restarted every `unit` frames at the frame's position."""
    streams, frames, k = codes.shape
    bits, state = 0.0, None
    for t in range(frames):
        if t % unit == 0:
            state = FloatLMState(lm, k, streams)
            state.offset = t
        p = state.step().double().numpy()
        bits -= np.log2(np.take_along_axis(p, codes[:, t, :, None], -1)).sum()
        state.push(torch.from_numpy(codes[:, t]))
    return bits


def entropy(lm, k: int, frames: int = 60) -> float:
    state, h = FloatLMState(lm, k, 4), []
    rng = np.random.default_rng(0)
    for _ in range(frames):
        p = state.step().double().numpy()
        h.append(-(p * np.log2(np.maximum(p, 1e-300))).sum(-1).mean())
        cdf = p.cumsum(-1)
        c = np.minimum((cdf < rng.random((4, k, 1)) * cdf[..., -1:]).sum(-1), 1023)
        state.push(torch.from_numpy(c))
    return float(np.mean(h))


def find_sharpening(name: str, k: int) -> float:
    """The head factor giving TARGET_BITS of entropy, by bisection on log scale."""
    lo, hi = 1.0, 64.0
    for _ in range(12):
        mid = (lo * hi) ** 0.5
        if entropy(float_lm(name, k, mid), k) > TARGET_BITS:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5


def measure(name: str, bandwidth: float, frames: int) -> dict:
    spec = SPECS[name]
    k = spec.codebooks_for(bandwidth)
    unit = PACKET_FRAMES[name]
    sharpen = find_sharpening(name, k)
    lm = float_lm(name, k, sharpen)
    rng = np.random.default_rng(int(bandwidth * 10))
    if spec.causal:  # one continuous stream, as before coder 3
        codes, ideal = sample(lm, k, frames, 1, frames, rng)
        reset = ideal_bits(lm, codes, unit)
        packets = [(codes[0, i:i + unit].astype(np.uint16), [(len(codes[0, i:i + unit]), 1.0)])
                   for i in range(0, frames, unit)]
    else:  # independent 1 s segments, 8 to a packet
        streams = max(1, frames // unit)
        codes, ideal = sample(lm, k, unit, streams, unit, rng)
        reset = ideal
        packets = [(codes[i:i + 8].reshape(-1, k).astype(np.uint16), [(unit, 1.0)] * len(codes[i:i + 8]))
                   for i in range(0, streams, 8)]
    enc = LMEncoder(IntLM(lm), bytes(8), spec, k)
    t = time.perf_counter()
    payloads = enc.encode_lm(packets)
    wall = time.perf_counter() - t
    coded = 8 * sum(len(p) for p in payloads)
    n = codes.size
    return {"model": name, "kbps": bandwidth, "k": k, "sharpen": sharpen,
            "entropy": ideal / n, "ideal": ideal, "reset": reset, "coded": coded,
            "reset_cost": reset / ideal - 1, "overhead": coded / reset - 1,
            "crc_share": 32 * len(payloads) / reset, "codes": n, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2400, help="frames per configuration (24 kHz: 32 s)")
    ap.add_argument("--models", nargs="+", default=["24khz", "48khz"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| model | kbps | codebooks | head factor | float LM bits/code | reset cost | "
          "coder 3 overhead (incl. 4-byte checksums) | of which checksums |")
    print("|---|---|---|---|---|---|---|---|")
    for flag in a.models:
        name = f"encodec_{flag}"
        for bw in SPECS[name].bandwidths:
            r = measure(name, bw, a.frames)
            print(f"| {flag} | {bw:g} | {r['k']} | {r['sharpen']:.2f} | {r['entropy']:.2f} | "
                  f"{100 * r['reset_cost']:+.2f}% | {100 * r['overhead']:+.3f}% | "
                  f"{100 * r['crc_share']:.3f}% |", flush=True)


if __name__ == "__main__":
    main()
