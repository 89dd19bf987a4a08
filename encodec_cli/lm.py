"""EnCodec's small transformer language model over codes, with a streaming K/V cache.

Architecture (as the official checkpoints): the input of frame t is the sum of
per-codebook embeddings of frame t-1's codes (index + 1; 0 before the first frame),
LayerNorm, sinusoidal positions, 5 post-norm transformer layers (8 heads, width 200,
feed-forward 800, GELU) attending to the last `past_context` frames, and one
1024-way softmax head per codebook.

The reference recomputes keys and values of its whole past at every step; here each
layer caches the projected keys and values, so a step costs one token's work.
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .models import SPECS

DIM, HEADS, LAYERS, HIDDEN, CARD = 200, 8, 5, 800, 1024
MAX_PERIOD = 10000


class _Attention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)


class _Layer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.self_attn = _Attention(dim)
        self.linear1 = nn.Linear(dim, HIDDEN)
        self.linear2 = nn.Linear(HIDDEN, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)


class _Transformer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([_Layer(dim) for _ in range(LAYERS)])


class LanguageModel(nn.Module):
    def __init__(self, n_q: int, past_context: int):
        super().__init__()
        self.n_q, self.past_context = n_q, past_context
        self.transformer = _Transformer(DIM)
        self.emb = nn.ModuleList([nn.Embedding(CARD + 1, DIM) for _ in range(n_q)])
        self.linears = nn.ModuleList([nn.Linear(DIM, CARD) for _ in range(n_q)])

    def fold(self) -> None:
        """Stack the heads for one batched product; call once after loading."""
        self.head_w = torch.stack([lin.weight for lin in self.linears]).transpose(1, 2).contiguous()
        self.head_b = torch.stack([lin.bias for lin in self.linears])[:, None, :].contiguous()
        half = DIM // 2
        adim = torch.arange(half).view(1, 1, -1)
        self._inv_period = MAX_PERIOD ** (adim / (half - 1))
        self.requires_grad_(False)
        self.eval()

    def start(self, n_q: int) -> "LMState":
        return LMState(self, n_q)


class LMState:
    """One stream: the K/V cache of each layer, the position and the previous codes."""

    def __init__(self, lm: LanguageModel, n_q: int):
        self.lm, self.n_q = lm, n_q
        self.offset = 0
        self.prev = torch.zeros(n_q, dtype=torch.long)
        # the reference starts its past with one all-zero input row
        zero = torch.zeros(1, DIM)
        self.keys, self.values = [], []
        for layer in lm.transformer.layers:
            k, v = self._kv(layer, zero)
            self.keys.append(k)
            self.values.append(v)

    @staticmethod
    def _kv(layer: _Layer, x: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        a = layer.self_attn
        w, b = a.in_proj_weight, a.in_proj_bias
        k = F.linear(x, w[DIM:2 * DIM], b[DIM:2 * DIM])
        v = F.linear(x, w[2 * DIM:], b[2 * DIM:])
        return k.view(-1, HEADS, DIM // HEADS).transpose(0, 1), v.view(-1, HEADS, DIM // HEADS).transpose(0, 1)

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Probabilities [n_q, 1024] of the next frame's codes."""
        lm = self.lm
        x = lm.emb[0](self.prev[0:1])
        for k in range(1, self.n_q):
            x = x + lm.emb[k](self.prev[k:k + 1])
        tr = lm.transformer
        x = tr.norm_in(x)
        phase = torch.tensor([[[self.offset]]]) / lm._inv_period
        x = x + torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)[0]
        for i, layer in enumerate(tr.layers):
            a = layer.self_attn
            q = F.linear(x, a.in_proj_weight[:DIM], a.in_proj_bias[:DIM])
            k, v = self._kv(layer, x)
            keys = torch.cat([self.keys[i], k], dim=1)
            values = torch.cat([self.values[i], v], dim=1)
            q = q.view(1, HEADS, DIM // HEADS).transpose(0, 1)
            att = F.scaled_dot_product_attention(q, keys, values)
            att = F.linear(att.transpose(0, 1).reshape(1, DIM), a.out_proj.weight, a.out_proj.bias)
            # the cache keeps the last past_context inputs (the current one included)
            self.keys[i] = keys[:, -lm.past_context:]
            self.values[i] = values[:, -lm.past_context:]
            x = layer.norm1(x + att)
            x = layer.norm2(x + layer.linear2(F.gelu(layer.linear1(x))))
        logits = torch.baddbmm(lm.head_b[:self.n_q], x.expand(self.n_q, 1, DIM),
                               lm.head_w[:self.n_q])[:, 0]
        self.offset += 1
        return torch.softmax(logits, dim=-1)

    def push(self, codes: torch.Tensor) -> None:
        """Feed the codes [n_q] of the frame just coded."""
        self.prev = codes.long() + 1


def past_context(name: str) -> int:
    return int(3.5 * SPECS[name].frame_rate)


def build_lm(name: str) -> LanguageModel:
    """The LM for codec `name` ('encodec_24khz' or 'encodec_48khz')."""
    return LanguageModel(SPECS[name].n_q, past_context(name))


def checkpoint_name(name: str) -> str:
    return name.replace("encodec_", "encodec_lm_")
