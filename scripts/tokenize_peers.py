"""The peers' tokenizing loop, run by scripts/bench_tokenize.py in a scratch environment
that has Meta's `encodec` (with ../shared/reference/refshim on PYTHONPATH) and
Hugging Face `transformers`; never imports ecdc.

    python tokenize_peers.py {encodec,transformers} MODEL BANDWIDTH LIST.txt OUT.json [--weights CK]

One clip at a time, as their documentation does it: read the file, encode it, keep the
codes. Prints nothing; writes the timing, the peak memory and each clip's codes digest.
"""
import argparse
import hashlib
import json
import resource
import sys
import time

import numpy as np
import soundfile as sf
import torch


def meta(model_name: str, weights: str):
    from encodec.model import EncodecModel

    factory = getattr(EncodecModel, model_name.replace("encodec_", "encodec_model_"))
    model = factory(pretrained=False)
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()

    def encode(wav: torch.Tensor, bandwidth: float):
        model.set_target_bandwidth(bandwidth)
        frames = model.encode(wav[None])
        return [f[0][0].numpy() for f in frames]
    return encode


def hf(model_name: str, weights: str):
    from transformers import EncodecConfig, EncodecModel

    if model_name == "encodec_24khz":
        config = EncodecConfig()
    else:  # the hub's facebook/encodec_48khz configuration
        config = EncodecConfig(sampling_rate=48_000, audio_channels=2, normalize=True, chunk_length_s=1.0,
                               overlap=0.01, target_bandwidths=[3.0, 6.0, 12.0, 24.0], use_causal_conv=False,
                               norm_type="time_group_norm")
    model = EncodecModel(config).eval()

    def encode(wav: torch.Tensor, bandwidth: float):
        out = model.encode(wav[None], bandwidth=bandwidth)
        return [c[0].numpy() for c in out.audio_codes]
    return encode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("peer", choices=["encodec", "transformers"])
    ap.add_argument("model")
    ap.add_argument("bandwidth", type=float)
    ap.add_argument("files")
    ap.add_argument("out")
    ap.add_argument("--weights", default="")
    a = ap.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(1)
    encode = (meta if a.peer == "encodec" else hf)(a.model, a.weights)
    ready = time.perf_counter()
    digests, seconds = [], 0.0
    with torch.inference_mode():
        for path in open(a.files).read().split("\n"):
            if not path:
                continue
            x, rate = sf.read(path, dtype="float32", always_2d=True)
            seconds += len(x) / rate
            codes = encode(torch.from_numpy(x.T.copy()), a.bandwidth)
            joined = np.concatenate(codes, axis=-1).astype(np.uint16)
            digests.append(hashlib.sha256(np.ascontiguousarray(joined).tobytes()).hexdigest()[:16])
    end = time.perf_counter()
    json.dump({"wall_s": end - start, "setup_s": ready - start, "audio_s": seconds, "files": len(digests),
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "digests": digests},
              open(a.out, "w"))


if __name__ == "__main__":
    sys.exit(main())
