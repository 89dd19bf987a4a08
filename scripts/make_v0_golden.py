"""Golden version-0 files: .ecdc files written by Meta's reference package (encodec 0.1.1).

Run under the reference's environment (see ../shared/reference/README.md):

    PYTHONPATH=.:../shared/reference/refshim /tmp/refenv/bin/python scripts/make_v0_golden.py

On ecdc's seeded random weights (seed 1234, as the tests' checkpoints), the reference's
own `compress` writes formats/golden/v0_<name>.ecdc from short clips of the shared
recordings, and its own `decompress` gives the expected audio. tests/golden/v0_reference.npz
holds, per file, the codes ([codebooks, frames], segments end to end), the frames per
segment, the decoded audio sampled every STRIDE-th sample, and for LM-coded files a digest
of the reference's quantized CDFs at every frame (so that a test can tell a machine that
rounds otherwise from a wrong decoder).

The LM-coded files hold bits that depend on how this machine rounds floats: they are
decoded exactly only where the reference's float LM rounds the same way.
"""
from __future__ import annotations

import hashlib
import importlib
import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from encodec.model import EncodecModel, LMModel
from encodec.quantization.ac import build_stable_quantized_cdf

from encodec_cli.testing import lm_state, model_state

C = importlib.import_module("encodec.compress")  # the package's `compress` name is a function

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"
FORMATS = ROOT / "formats" / "golden"
TESTS = ROOT / "tests" / "golden"
SEED = 1234
STRIDE = 13
# name -> (model, recording, seconds, kbps, lm); lengths off the frame grid on purpose
FILES = {
    "v0_raw_24khz": ("encodec_24khz", "test_24k.wav", 2.0071, 6.0, False),
    "v0_raw_48khz": ("encodec_48khz", "test_48k.wav", 2.5013, 6.0, False),
    "v0_lm_24khz": ("encodec_24khz", "test_24k.wav", 4.0033, 6.0, True),   # past the 262-frame context
    "v0_lm_48khz": ("encodec_48khz", "test_48k.wav", 2.2, 3.0, True),
}


def reference_model(name: str) -> EncodecModel:
    model = getattr(EncodecModel, name.replace("encodec_", "encodec_model_"))(pretrained=False)
    model.load_state_dict(model_state(name, SEED))
    model.name = name  # what the reference names its pretrained models, and writes in files
    return model.eval()


def _lm(self) -> LMModel:
    """The reference's get_lm_model, on the seeded random LM."""
    lm = LMModel(self.quantizer.n_q, self.quantizer.bins, num_layers=5, dim=200,
                 past_context=int(3.5 * self.frame_rate))
    lm.load_state_dict(lm_state(self.name, SEED))
    return lm.eval()


@torch.no_grad()
def cdf_digests(model: EncodecModel, frames) -> np.ndarray:
    """Per frame, the first 8 bytes (hex) of the sha256 of the quantized CDFs [K, 1024] as
    big-endian int64, stepping the LM over each segment's codes as compress does."""
    lm = model.get_lm_model()
    out = []
    for codes, _ in frames:
        _, K, T = codes.shape
        states, offset, inp = None, 0, torch.zeros(1, K, 1, dtype=torch.long)
        for t in range(T):
            probas, states, offset = lm(inp, states, offset)
            cdfs = torch.stack([build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False)
                                for k in range(K)])
            out.append(hashlib.sha256(cdfs.numpy().astype(">i8").tobytes()).hexdigest()[:16])
            inp = 1 + codes[:, :, t:t + 1]
    return np.array(out)


def main() -> None:
    torch.set_num_threads(1)
    EncodecModel.get_lm_model = _lm
    for name in ("encodec_24khz", "encodec_48khz"):  # what the reference's decompress builds
        C.MODELS[name] = (lambda n: lambda: reference_model(n))(name)
    expected = {}
    for key, (name, recording, seconds, kbps, lm) in FILES.items():
        model = reference_model(name)
        model.set_target_bandwidth(kbps)
        wav, sr = sf.read(AUDIO / recording, dtype="float32", always_2d=True)
        wav = torch.from_numpy(wav[:round(seconds * sr)].T.copy())
        data = C.compress(model, wav, use_lm=lm)
        (FORMATS / f"{key}.ecdc").write_bytes(data)
        with torch.no_grad():
            frames = model.encode(wav[None])
        codes = torch.cat([f[0][0] for f in frames], dim=-1).numpy().astype(np.uint16)
        out, rate = C.decompress_from_file(io.BytesIO(data))
        expected[f"{key}_codes"] = codes
        expected[f"{key}_segment_frames"] = np.array([f[0].shape[-1] for f in frames], np.int32)
        expected[f"{key}_audio"] = out[:, ::STRIDE].numpy()
        expected[f"{key}_length"] = np.array(wav.shape[-1])
        if lm:
            expected[f"{key}_cdf_sha256"] = cdf_digests(model, frames)
        print(key, len(data), "bytes", codes.shape, "audio", tuple(out.shape), rate)
    expected["stride"] = np.array(STRIDE)
    np.savez_compressed(TESTS / "v0_reference.npz", **expected)


if __name__ == "__main__":
    main()
