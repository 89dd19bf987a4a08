"""The reference's float language model and CDF quantization, for LM-coded version-0 files.

Meta's encodec 0.1.1 chose its arithmetic coder's intervals from float probabilities, so
its files decode only where the same float operations round the same way. This module
repeats those operations as the reference runs them: the same torch modules
(nn.TransformerEncoderLayer, nn.MultiheadAttention over the whole past at every step), the
same shapes, the same order, the same `build_stable_quantized_cdf` arithmetic. A faster
model (a key/value cache, fused products) would round differently and lose the file.

The thread count matters too: every count rounds differently. Meta's command line ran with
torch's default, so that is the default here (`reference_threads`).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..codec import weights as W
from ..codec.lm import CARD, DIM, HEADS, HIDDEN, LAYERS, MAX_PERIOD, past_context
from ..codec.threads import startup_environment, torch_threads
from ..formats.v0 import RANGE_BITS
from ..specs import SPECS

ROUNDOFF = 1e-8     # the reference's defaults
MIN_RANGE = 2


class _Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm_in = nn.LayerNorm(DIM)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(DIM, HEADS, HIDDEN, dropout=0.0, activation=F.gelu,
                                       batch_first=True) for _ in range(LAYERS)])


class FloatLM(nn.Module):
    """State-dict compatible with the official LM checkpoints (all their codebooks)."""

    def __init__(self, n_q: int, context: int):
        super().__init__()
        self.n_q, self.past_context = n_q, context
        self.transformer = _Transformer()
        self.emb = nn.ModuleList([nn.Embedding(CARD + 1, DIM) for _ in range(n_q)])
        self.linears = nn.ModuleList([nn.Linear(DIM, CARD) for _ in range(n_q)])

    def fold(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def forward(self, indices: torch.Tensor, states: tp.Optional[tp.List[torch.Tensor]], offset: int):
        """The reference's LMModel.forward: probabilities [B, card, K, T], states, offset."""
        _, K, T = indices.shape
        x = sum([self.emb[k](indices[:, k]) for k in range(K)])
        tr = self.transformer
        if states is None:
            states = [torch.zeros_like(x[:, :1]) for _ in range(1 + len(tr.layers))]
        positions = torch.arange(T).view(1, -1, 1) + offset
        half = DIM // 2
        adim = torch.arange(half).view(1, 1, -1)
        phase = positions / (MAX_PERIOD ** (adim / (half - 1)))
        x = tr.norm_in(x)
        x = x + torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
        new_states = []
        for past, layer in zip(states, tr.layers):
            inp = x
            x = layer.norm1(x + self._attention(layer, x, past))
            x = layer.norm2(x + layer.linear2(F.gelu(layer.linear1(x))))
            new_states.append(torch.cat([past, inp], dim=1)[:, -self.past_context:, :])
        logits = torch.stack([self.linears[k](x) for k in range(K)], dim=1).permute(0, 3, 1, 2)
        return torch.softmax(logits, dim=1), new_states, offset + T

    def _attention(self, layer, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        T, H = x.shape[1], past.shape[1]
        keys = torch.cat([past, x], dim=1)
        delta = torch.arange(H, T + H).view(-1, 1) - torch.arange(T + H).view(1, -1)
        allowed = (delta >= 0) & (delta <= self.past_context)
        return layer.self_attn(x, keys, keys, attn_mask=~allowed, need_weights=False)[0]



def quantized_cdf(pdf: torch.Tensor) -> torch.Tensor:
    """The reference's build_stable_quantized_cdf(pdf, 24, check=False)."""
    pdf = (pdf / ROUNDOFF).floor() * ROUNDOFF
    total = 2 ** RANGE_BITS
    alpha = MIN_RANGE * len(pdf) / total
    ranges = (((1 - alpha) * total) * pdf).floor().long()
    ranges += MIN_RANGE
    return torch.cumsum(ranges, dim=-1)


class ReferenceCdfs:
    """The reference's CDFs for LM-coded version-0 files (a formats.v0.CdfModel): the float
    LM run with `threads` torch threads, as the file was written (each count rounds
    differently)."""

    def __init__(self, lm: FloatLM, threads: int):
        self.lm, self.threads = lm, threads

    def start(self, n_q: int) -> "FloatLMState":
        return FloatLMState(self.lm, n_q, self.threads)


class FloatLMState:
    """One stream, stepped as the reference's compress/decompress loops do, with `threads`
    torch threads (None: as they are)."""

    def __init__(self, lm: FloatLM, n_q: int, threads: tp.Optional[int] = None):
        self.lm, self.n_q, self.threads = lm, n_q, threads
        self.states: tp.Optional[tp.List[torch.Tensor]] = None
        self.offset = 0
        self.input = torch.zeros(1, n_q, 1, dtype=torch.long)

    @torch.no_grad()
    def cdfs(self) -> np.ndarray:
        """The quantized CDFs of the next frame's codes, [n_q, 1024] int64."""
        with torch_threads(self.threads):  # the float results depend on it
            probas, self.states, self.offset = self.lm(self.input, self.states, self.offset)
        return torch.stack([quantized_cdf(probas[0, :, k, 0]) for k in range(self.n_q)]).numpy()

    def push(self, codes: np.ndarray) -> None:
        self.input = 1 + torch.from_numpy(codes.astype(np.int64)).view(1, self.n_q, 1)


def load_float_lm(codec_name: str, weights: tp.Optional[Path], download_bars: bool = True) -> FloatLM:
    def build() -> FloatLM:
        return FloatLM(SPECS[codec_name].n_q, past_context(codec_name))

    return W.cached(("float-lm", codec_name, weights),
                    lambda: W.load_model(W.lm_name(codec_name), build, weights, download_bars)[0])


@functools.lru_cache(maxsize=None)
def reference_threads() -> int:
    """The thread count torch takes by default here, as Meta's encodec ran: asked of a fresh
    interpreter in the environment ecdc started with (ecdc sets its own threads; a user's
    OMP_NUM_THREADS, as a cluster node sets it, would have reached encodec too)."""
    env = startup_environment()
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             env=env, capture_output=True, text=True, timeout=300, check=True)
        return max(1, int(out.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
