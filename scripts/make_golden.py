"""Golden vectors from the reference package (encodec 0.1.1) on ecdc's seeded random weights.

Run under the reference's environment (see ../shared/reference/README.md):

    PYTHONPATH=.:../shared/reference/refshim /tmp/refenv/bin/python scripts/make_golden.py

Writes tests/golden/<model>.npz with, for the shared recording of each model: the codes at
the highest bandwidth (lower bandwidths use a prefix of the codebooks), the 48 kHz segment
scales, and the decoded audio at every bandwidth, sampled every STRIDE-th sample.
With --lm it writes tests/golden/lm_<model>.npz: the LM's probabilities at some steps
while it runs over those codes at 6 kbps.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from encodec.model import EncodecModel, LMModel

from encodec_cli.testing import lm_state, model_state

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"
OUT = ROOT / "tests" / "golden"
STRIDE = 97
SEED = 1234
RECORDINGS = {"encodec_24khz": "test_24k.wav", "encodec_48khz": "test_48k.wav"}


def reference_model(name: str) -> EncodecModel:
    model = getattr(EncodecModel, name.replace("encodec_", "encodec_model_"))(pretrained=False)
    model.load_state_dict(model_state(name, SEED))
    return model.eval()


@torch.no_grad()
def codec_golden(name: str) -> None:
    model = reference_model(name)
    wav, sr = sf.read(AUDIO / RECORDINGS[name], dtype="float32", always_2d=True)
    assert sr == model.sample_rate and wav.shape[1] == model.channels
    x = torch.from_numpy(wav.T.copy())[None]
    model.set_target_bandwidth(model.target_bandwidths[-1])
    frames = model.encode(x)
    codes = torch.cat([f[0] for f in frames], dim=-1)[0].T.numpy().astype(np.uint16)
    seg_frames = np.array([f[0].shape[-1] for f in frames], np.int32)
    scales = np.array([float(f[1]) if f[1] is not None else 1.0 for f in frames], np.float32)
    out = {"codes": codes, "segment_frames": seg_frames, "scales": scales,
           "length": np.array(x.shape[-1]), "stride": np.array(STRIDE),
           "bandwidths": np.array(model.target_bandwidths, np.float32)}
    for bw in model.target_bandwidths:
        n_q = model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, bw)
        y = model.decode([(c[:, :n_q], s) for c, s in frames])[0, :, :x.shape[-1]]
        out[f"audio_{bw:g}"] = y[:, ::STRIDE].numpy()
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{name}.npz", **out)
    print(name, codes.shape, {k: v.shape for k, v in out.items() if k.startswith("audio")})


# LM golden steps: past the context window (262 frames at 24 kHz) to check its trimming
LM_STEPS = {"encodec_24khz": [0, 1, 2, 100, 261, 262, 263, 299],
            "encodec_48khz": [0, 1, 2, 149]}
LM_CODEBOOKS = {"encodec_24khz": 8, "encodec_48khz": 4}  # 6 kbps


@torch.no_grad()
def lm_golden(name: str) -> None:
    model = reference_model(name)
    lm = LMModel(model.quantizer.n_q, model.quantizer.bins, num_layers=5, dim=200,
                 past_context=int(3.5 * model.frame_rate))
    lm.load_state_dict(lm_state(name, SEED))
    lm.eval()
    steps, K = LM_STEPS[name], LM_CODEBOOKS[name]
    codes = np.load(OUT / f"{name}.npz")["codes"][:steps[-1] + 1, :K]
    states, offset = None, 0
    inp = torch.zeros(1, K, 1, dtype=torch.long)
    probs = []
    for t in range(len(codes)):
        p, states, offset = lm(inp, states, offset)
        if t in steps:
            probs.append(p[0, :, :, 0].T.numpy())  # [K, card]
        inp = 1 + torch.from_numpy(codes[t].astype(np.int64)).view(1, K, 1)
    np.savez_compressed(OUT / f"lm_{name}.npz", codes=codes, steps=np.array(steps),
                        probs=np.stack(probs))
    print("lm", name, np.stack(probs).shape)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lm", action="store_true", help="only the language-model vectors")
    a = p.parse_args()
    torch.set_num_threads(2)
    for name in RECORDINGS:
        if a.lm:
            lm_golden(name)
        else:
            codec_golden(name)


if __name__ == "__main__":
    main()
