"""Seeded random checkpoints with the official architecture, for tests and benchmarks.

The official weights cannot be fetched everywhere; compute cost does not depend on the
weight values, and equivalence with the reference is checked on the same random weights.
The draw depends only on the seed and the key names, so a script run under another
environment (the reference's) reproduces the same tensors.
"""
from __future__ import annotations

import hashlib
import math
import typing as tp
from pathlib import Path

import torch

from .codec.weights import REGISTRY


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def randomize(template: tp.Dict[str, torch.Tensor], seed: int) -> tp.Dict[str, torch.Tensor]:
    """A state dict of the template's keys and shapes, filled like freshly initialised layers."""
    out: tp.Dict[str, torch.Tensor] = {}
    for key in sorted(template):
        shape = tuple(template[key].shape)
        g = _generator(seed, key)
        leaf = key.rsplit(".", 1)[1]

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(shape, generator=g) * 2 - 1) * bound

        if leaf in ("weight_v", "weight") and len(shape) == 3:
            t = uniform(math.sqrt(3 / (shape[1] * shape[2])))
        elif leaf == "weight_g":
            continue  # set from weight_v below
        elif leaf == "embed":  # codebooks at the scale of the embeddings they quantize
            t = 0.25 * torch.randn(shape, generator=g)
        elif leaf == "embed_avg":
            continue
        elif leaf == "inited":
            t = torch.ones(shape)
        elif leaf == "cluster_size":
            t = torch.zeros(shape)
        elif "norm" in key and leaf == "weight":
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "norm" in key and leaf == "bias":
            t = 0.1 * torch.randn(shape, generator=g)
        elif key.startswith("emb."):
            t = torch.randn(shape, generator=g)
        elif len(shape) == 2:
            t = uniform(1 / math.sqrt(shape[1]))
        else:
            t = uniform(0.01)
        out[key] = t.float()
    for key in template:
        if key.endswith("weight_g"):
            v = out[key[:-1] + "v"]
            out[key] = v.flatten(1).norm(dim=1).view(template[key].shape).float()
        elif key.endswith("embed_avg"):
            out[key] = out[key[:-4]].clone()
    return {k: out[k] for k in template}


def model_state(name: str, seed: int = 1234) -> tp.Dict[str, torch.Tensor]:
    from .codec.models import build_model

    return randomize(build_model(name).state_dict(), seed)


def lm_state(name: str, seed: int = 1234) -> tp.Dict[str, torch.Tensor]:
    from .codec.lm import build_lm

    return randomize(build_lm(name).state_dict(), seed)


def random_lm(name: str, seed: int = 1234):
    """The LM of codec `name` with seeded random weights, folded and ready to step."""
    from .codec.lm import build_lm

    lm = build_lm(name)
    lm.load_state_dict(lm_state(name, seed))
    lm.fold()
    return lm


def random_int_lm(name: str, seed: int = 1234, used: tp.Optional[int] = None):
    """The integer LM (coder 3) of the seeded random LM, for its first `used` codebooks."""
    from .entropy.intlm import IntLM
    from .codec.lm import build_lm

    lm = build_lm(name, used)
    lm.load_state_dict(lm_state(name, seed))
    lm.fold()
    return IntLM(lm)


def likely_codes(lm, k: int, frames: int, first: tp.Optional[tp.Sequence[int]] = None):
    """[frames, k] codes the integer LM `lm` finds likely: its greedy choices (after
    `first`, if given), so that they really get range coded."""
    import numpy as np

    state, codes = lm.start(k, 1, frames), []
    for t in range(frames):
        frame = state.step()[0].argmax(axis=-1)
        if t == 0 and first is not None:
            frame = np.array(first)
        state.push(frame[None])
        codes.append(frame.astype(np.uint16))
    return np.stack(codes)


def write_checkpoints(folder: Path, seed: int = 1234, lm: bool = True) -> tp.Dict[str, Path]:
    """Write random checkpoints under their official file names; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("encodec_24khz", "encodec_48khz"):
        paths[name] = folder / REGISTRY[name].filename
        torch.save(model_state(name, seed), paths[name])
        if lm:
            lm_name = name.replace("encodec_", "encodec_lm_")
            paths[lm_name] = folder / REGISTRY[lm_name].filename
            torch.save(lm_state(name, seed), paths[lm_name])
    return paths
