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

from ..specs import SPECS

DIM, HEADS, LAYERS, HIDDEN, CARD = 200, 8, 5, 800, 1024
MAX_PERIOD = 10000
POSITION_BLOCK = 1024  # positions computed at a time: memory stays flat however long the stream


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
        # plain tensors for the step loop (module attribute lookups cost ~5% of a step)
        tr = self.transformer
        self.norm_in = (tr.norm_in.weight, tr.norm_in.bias)
        self.layers = [(t.self_attn.in_proj_weight, t.self_attn.in_proj_bias,
                        t.self_attn.out_proj.weight, t.self_attn.out_proj.bias,
                        t.norm1.weight, t.norm1.bias, t.linear1.weight, t.linear1.bias,
                        t.linear2.weight, t.linear2.bias, t.norm2.weight, t.norm2.bias)
                       for t in tr.layers]
        self._positions, self._position_block = torch.zeros(0, DIM), -1
        self.requires_grad_(False)
        self.eval()

    def position(self, offset: int) -> torch.Tensor:
        """The reference's sinusoidal embedding of one position, from a table of one block."""
        block = offset // POSITION_BLOCK
        if block != self._position_block:
            half = DIM // 2
            adim = torch.arange(half).view(1, 1, -1)
            positions = torch.arange(block * POSITION_BLOCK, (block + 1) * POSITION_BLOCK).view(1, -1, 1)
            phase = positions / (MAX_PERIOD ** (adim / (half - 1)))
            self._positions = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)[0]
            self._position_block = block
        i = offset - block * POSITION_BLOCK
        return self._positions[i:i + 1]

    def start(self, n_q: int, batch: int = 1) -> "LMState":
        if n_q > self.used:
            raise ValueError(f"this LM serves {self.used} codebooks, not {n_q}")
        return LMState(self, n_q, batch)


class LMState:
    """`batch` streams stepped together: each layer's K/V cache, the position, the previous codes.

    The streams start together and advance together. Keys and values live in a buffer twice
    the context long; the window slides along it and is moved back to the front when it
    reaches the end (amortised, no copy per step).
    """

    def __init__(self, lm: LanguageModel, n_q: int, batch: int = 1):
        self.lm, self.n_q, self.batch = lm, n_q, batch
        self.offset = 0
        self.prev = torch.zeros(batch, n_q, dtype=torch.long)
        self._codebooks = torch.arange(n_q)
        self.capacity = 2 * (lm.past_context + 1)
        # per layer: keys and values, [2, batch, heads, capacity, head dim]
        self.kv = [torch.zeros(2, batch, HEADS, self.capacity, DIM // HEADS) for _ in lm.layers]
        # the reference starts its past with one all-zero input row
        zero = torch.zeros(batch, DIM)
        for kv, weights in zip(self.kv, lm.layers):
            self._qkv(zero, kv, 0, weights)
        self.start, self.count = 0, 1

    def _qkv(self, x: torch.Tensor, kv: torch.Tensor, pos: int, weights) -> torch.Tensor:
        """Store the keys and values of `x` at `pos`; return its queries [batch, heads, 1, head dim]."""
        qkv = F.linear(x, weights[0], weights[1]).view(self.batch, 3, HEADS, DIM // HEADS)
        kv.select(3, pos).copy_(qkv[:, 1:].transpose(0, 1))
        return qkv[:, 0, :, None]

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Probabilities [batch, n_q, 1024] of the next frame's codes."""
        lm = self.lm
        x = lm.emb_table[self._codebooks, self.prev].sum(1)
        x = F.layer_norm(x, (DIM,), *lm.norm_in)
        x = x + lm.position(self.offset)
        pos = self.start + self.count
        if pos == self.capacity:  # slide the window back to the front of the buffers
            for kv in self.kv:
                kv[:, :, :, :self.count] = kv[:, :, :, self.start:pos].clone()
            self.start, pos = 0, self.count
        for kv, weights in zip(self.kv, lm.layers):
            _, _, w_out, b_out, w_n1, b_n1, w_1, b_1, w_2, b_2, w_n2, b_n2 = weights
            q = self._qkv(x, kv, pos, weights)
            past = kv[:, :, :, self.start:pos + 1]
            # 4-d inputs take torch's fused CPU attention kernel
            att = F.scaled_dot_product_attention(q, past[0], past[1])
            att = F.linear(att.reshape(self.batch, DIM), w_out, b_out)
            x = F.layer_norm(x + att, (DIM,), w_n1, b_n1)
            ff = F.linear(F.gelu(F.linear(x, w_1, b_1)), w_2, b_2)
            x = F.layer_norm(x + ff, (DIM,), w_n2, b_n2)
        # the cache keeps the last past_context inputs (the current one included)
        self.count += 1
        if self.count > lm.past_context:
            self.start += self.count - lm.past_context
            self.count = lm.past_context
        logits = torch.baddbmm(lm.head_b[:self.n_q], x.expand(self.n_q, self.batch, DIM),
                               lm.head_w[:self.n_q])
        self.offset += 1
        return torch.softmax(logits, dim=-1).transpose(0, 1)

    def push(self, codes: torch.Tensor) -> None:
        """Feed the codes [batch, n_q] of the frame just coded."""
        self.prev = codes.long().view(self.batch, self.n_q) + 1


def past_context(name: str) -> int:
    return int(3.5 * SPECS[name].frame_rate)


def build_lm(name: str, used: tp.Optional[int] = None) -> LanguageModel:
    """The LM for codec `name` ('encodec_24khz' or 'encodec_48khz'), for its first `used`
    codebooks (all by default)."""
    return LanguageModel(SPECS[name].n_q, past_context(name), used)


def checkpoint_name(name: str) -> str:
    return name.replace("encodec_", "encodec_lm_")
