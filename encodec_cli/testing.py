"""Test and benchmark support, not used by ecdc itself: seeded random checkpoints with the
official architecture, and the float LM stepped as the reference computes it.

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

import numpy as np
import torch
from torch.nn import functional as F

from .codec.lm import DIM, HEADS, MAX_PERIOD, LanguageModel, build_lm
from .codec.models import build_model
from .codec.weights import REGISTRY, lm_name
from .entropy.intlm import IntLM, Window

POSITION_BLOCK = 1024  # float positions computed at a time: memory stays flat however long the stream


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
    return randomize(build_model(name).state_dict(), seed)


def lm_state(name: str, seed: int = 1234) -> tp.Dict[str, torch.Tensor]:
    return randomize(build_lm(name).state_dict(), seed)


def random_lm(name: str, seed: int = 1234):
    """The LM of codec `name` with seeded random weights, folded and ready to step."""
    lm = build_lm(name)
    lm.load_state_dict(lm_state(name, seed))
    lm.fold()
    return lm


def random_int_lm(name: str, seed: int = 1234, used: tp.Optional[int] = None):
    """The integer LM (coder 3) of the seeded random LM, for its first `used` codebooks."""
    lm = build_lm(name, used)
    lm.load_state_dict(lm_state(name, seed))
    lm.fold()
    return IntLM(lm)


def likely_codes(lm, k: int, frames: int, first: tp.Optional[tp.Sequence[int]] = None):
    """[frames, k] codes the integer LM `lm` finds likely: its greedy choices (after
    `first`, if given), so that they really get range coded."""
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
            paths[lm_name(name)] = folder / REGISTRY[lm_name(name)].filename
            torch.save(lm_state(name, seed), paths[lm_name(name)])
    return paths


# ---------------------------------------------------------------- the float LM, stepped

class FloatLMState:
    """`batch` streams of a folded float `LanguageModel`, stepped together as the reference
    computes them (a key/value cache instead of its recomputed past): the float baseline of
    the integer model's tests and of scripts/lm_size.py."""

    def __init__(self, lm: LanguageModel, n_q: int, batch: int = 1):
        if n_q > lm.used:
            raise ValueError(f"this LM serves {lm.used} codebooks, not {n_q}")
        self.lm, self.n_q, self.batch = lm, n_q, batch
        self.offset = 0
        self.prev = torch.zeros(batch, n_q, dtype=torch.long)
        self._codebooks = torch.arange(n_q)
        self._positions, self._position_block = torch.zeros(0, DIM), -1
        capacity = 2 * (lm.past_context + 1)
        # per layer: keys and values, [2, batch, heads, capacity, head dim]
        self.kv = [torch.zeros(2, batch, HEADS, capacity, DIM // HEADS) for _ in lm.layers]
        zero = torch.zeros(batch, DIM)  # the reference starts its past with one all-zero input
        for kv, weights in zip(self.kv, lm.layers):
            self._qkv(zero, kv, 0, weights)
        self.window = Window(lm.past_context, capacity)

    def position(self, offset: int) -> torch.Tensor:
        """The reference's sinusoidal embedding of one position, from a table of one block."""
        block = offset // POSITION_BLOCK
        if block != self._position_block:
            half = DIM // 2
            adim = torch.arange(half).view(1, 1, -1)
            steps = torch.arange(block * POSITION_BLOCK, (block + 1) * POSITION_BLOCK).view(1, -1, 1)
            phase = steps / (MAX_PERIOD ** (adim / (half - 1)))
            self._positions = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)[0]
            self._position_block = block
        i = offset - block * POSITION_BLOCK
        return self._positions[i:i + 1]

    def _qkv(self, x: torch.Tensor, kv: torch.Tensor, pos: int, weights) -> torch.Tensor:
        """Store the keys and values of `x` at `pos`; return its queries [batch, heads, 1, head dim]."""
        qkv = F.linear(x, weights[0], weights[1]).view(self.batch, 3, HEADS, DIM // HEADS)
        kv.select(3, pos).copy_(qkv[:, 1:].transpose(0, 1))
        return qkv[:, 0, :, None]

    def _move(self, start: int, stop: int) -> None:
        for kv in self.kv:
            kv[:, :, :, :stop - start] = kv[:, :, :, start:stop].clone()

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Probabilities [batch, n_q, 1024] of the next frame's codes."""
        lm = self.lm
        x = lm.emb_table[self._codebooks, self.prev].sum(1)
        x = F.layer_norm(x, (DIM,), *lm.norm_in)
        x = x + self.position(self.offset)
        pos = self.window.slot(self._move)
        for kv, weights in zip(self.kv, lm.layers):
            _, _, w_out, b_out, w_n1, b_n1, w_1, b_1, w_2, b_2, w_n2, b_n2 = weights
            q = self._qkv(x, kv, pos, weights)
            past = kv[:, :, :, self.window.start:pos + 1]
            att = F.scaled_dot_product_attention(q, past[0], past[1])
            att = F.linear(att.reshape(self.batch, DIM), w_out, b_out)
            x = F.layer_norm(x + att, (DIM,), w_n1, b_n1)
            ff = F.linear(F.gelu(F.linear(x, w_1, b_1)), w_2, b_2)
            x = F.layer_norm(x + ff, (DIM,), w_n2, b_n2)
        self.window.advance()
        logits = torch.baddbmm(lm.head_b[:self.n_q], x.expand(self.n_q, self.batch, DIM),
                               lm.head_w[:self.n_q])
        self.offset += 1
        return torch.softmax(logits, dim=-1).transpose(0, 1)

    def push(self, codes: torch.Tensor) -> None:
        """Feed the codes [batch, n_q] of the frame just coded."""
        self.prev = codes.long().view(self.batch, self.n_q) + 1
