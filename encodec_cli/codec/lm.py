"""EnCodec's small transformer language model over codes: the checkpoint's layout.

Architecture (as the official checkpoints): the input of frame t is the sum of
per-codebook embeddings of frame t-1's codes (index + 1; 0 before the first frame),
LayerNorm, sinusoidal positions, 5 post-norm transformer layers (8 heads, width 200,
feed-forward 800, GELU) attending to the last `past_context` frames, and one
1024-way softmax head per codebook.

This module only loads the weights: coding runs them in exact integer arithmetic
(entropy.intlm). Its float step, the reference's arithmetic, is test support
(testing.FloatLMState).
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn

from ..specs import SPECS

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


class _Table(nn.Module):
    """An embedding table: the checkpoint's `emb.K.weight`. (nn.Embedding would draw random
    values at construction, which on the meta device imports ~800 modules: 70 MB.)"""

    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, dim))


class _Transformer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([_Layer(dim) for _ in range(LAYERS)])


class LanguageModel(nn.Module):
    """The LM of a checkpoint with `n_q` codebooks, serving the first `used` of them."""

    def __init__(self, n_q: int, past_context: int, used: tp.Optional[int] = None):
        super().__init__()
        self.n_q, self.past_context = n_q, past_context
        self.used = n_q if used is None else used
        self.transformer = _Transformer(DIM)
        self.emb = nn.ModuleList([_Table(CARD + 1, DIM) for _ in range(n_q)])
        self.linears = nn.ModuleList([nn.Linear(DIM, CARD) for _ in range(n_q)])

    def fold(self) -> None:
        """Stack the used codebooks' embeddings and heads for single gathers and products,
        and drop the per-codebook modules (the others' weights are freed); once after loading."""
        self.emb_table = torch.stack([e.weight for e in self.emb[:self.used]])    # [used, 1025, D]
        self.head_w = torch.stack([lin.weight for lin in self.linears[:self.used]]).transpose(1, 2).contiguous()
        self.head_b = torch.stack([lin.bias for lin in self.linears[:self.used]])[:, None, :].contiguous()
        del self.emb, self.linears
        # plain tensors, as the integer model (entropy.intlm) and the float step read them
        tr = self.transformer
        self.norm_in = (tr.norm_in.weight, tr.norm_in.bias)
        self.layers = [(t.self_attn.in_proj_weight, t.self_attn.in_proj_bias,
                        t.self_attn.out_proj.weight, t.self_attn.out_proj.bias,
                        t.norm1.weight, t.norm1.bias, t.linear1.weight, t.linear1.bias,
                        t.linear2.weight, t.linear2.bias, t.norm2.weight, t.norm2.bias)
                       for t in tr.layers]
        self.requires_grad_(False)
        self.eval()


def past_context(name: str) -> int:
    return int(3.5 * SPECS[name].frame_rate)


def build_lm(name: str, used: tp.Optional[int] = None) -> LanguageModel:
    """The LM for codec `name` ('encodec_24khz' or 'encodec_48khz'), for its first `used`
    codebooks (all by default)."""
    return LanguageModel(SPECS[name].n_q, past_context(name), used)
