"""EnCodec's residual vector quantizer, named as in the checkpoints."""
from __future__ import annotations

import typing as tp

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..specs import ModelSpec
from . import products


class _Codebook(nn.Module):
    def __init__(self, dim: int, bins: int):
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(bins))
        self.register_buffer("embed", torch.zeros(bins, dim))
        self.register_buffer("embed_avg", torch.zeros(bins, dim))

    def fold(self) -> None:
        # training statistics are not needed for coding
        del self.inited, self.cluster_size, self.embed_avg
        self._search: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None

    def search(self) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """The transposed codebook and its squared norms, made on first use: a decoder, or
        an encoder at a low bandwidth, never makes those of the codebooks it does not use."""
        if self._search is None:
            embed_t = self.embed.t().contiguous()
            self._search = embed_t, embed_t.pow(2).sum(0, keepdim=True)
        return self._search

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        # The reference takes argmax of -(|x|^2 - 2 x.e + |e|^2). The same operations in
        # the same order, in place: (-2 x.e) + |x|^2 equals |x|^2 - 2 x.e exactly, and
        # argmin of d equals argmax of -d, first index on ties for both.
        embed_t, embed_sq = self.search()
        d = torch.mm(x, embed_t).mul_(-2).add_(x.pow(2).sum(1, keepdim=True))
        return d.add_(embed_sq).min(dim=-1).indices


class _VQ(nn.Module):
    def __init__(self, dim: int, bins: int):
        super().__init__()
        self._codebook = _Codebook(dim, bins)


class _RVQ(nn.Module):
    def __init__(self, dim: int, bins: int, n_q: int):
        super().__init__()
        self.layers = nn.ModuleList([_VQ(dim, bins) for _ in range(n_q)])


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.vq = _RVQ(spec.dimension, spec.bins, spec.n_q)
        self._codebooks: tp.Dict[int, tp.Tuple[np.ndarray, np.ndarray]] = {}  # the live steps' arrays

    def keep(self, n_q: int) -> None:
        """Drop the codebooks after the first `n_q` (before folding: they are never read)."""
        del self.vq.layers[n_q:]

    def _held(self, n_q: int) -> None:
        if n_q > len(self.vq.layers):
            raise ValueError(f"this quantizer holds {len(self.vq.layers)} codebooks, not {n_q}")

    def encode(self, emb: torch.Tensor, n_q: int) -> torch.Tensor:
        """[B, D, T] embeddings -> [B, K, T] codes."""
        self._held(n_q)
        B, D, T = emb.shape
        residual = emb.transpose(1, 2).reshape(B * T, D)
        codes = []
        for layer in self.vq.layers[:n_q]:
            cb = layer._codebook
            idx = cb.encode(residual)
            residual = residual - F.embedding(idx, cb.embed)
            codes.append(idx)
        return torch.stack(codes).view(n_q, B, T).transpose(0, 1)

    def encode_few(self, emb: torch.Tensor, n_q: int) -> np.ndarray:
        """A live step's [1, D, T] embeddings -> codes [T, n_q] (int64): by fewkernel where
        numba runs (its sums reassociated: the last bits differ, as between BLAS builds)."""
        kernel = products._fewkernel()
        if kernel is None:
            return self.encode(emb, n_q)[0].t().numpy()
        codes = np.empty((emb.shape[-1], n_q), np.int64)
        kernel.nearest(*self._stacked(n_q), np.ascontiguousarray(emb[0].t().numpy()), codes)
        return codes

    def decode_few(self, codes: np.ndarray) -> torch.Tensor:
        """A live step's codes [T, K] -> embeddings [1, D, T]: `decode`'s sum in the same
        order, from one numpy gather (torch's small operations took 0.4 ms a step)."""
        rows = self._stacked(codes.shape[1])[0][np.arange(codes.shape[1]), codes.astype(np.intp)]  # [T, K, D]
        out = rows[:, 0].copy()
        for k in range(1, codes.shape[1]):
            out += rows[:, k]
        return torch.from_numpy(np.ascontiguousarray(out.T))[None]

    def _stacked(self, n_q: int) -> tp.Tuple[np.ndarray, np.ndarray]:
        """The first n_q codebooks [n_q, bins, D] and their squared norms [n_q, bins] (once)."""
        self._held(n_q)
        if n_q not in self._codebooks:
            cbs = [layer._codebook for layer in self.vq.layers[:n_q]]
            self._codebooks[n_q] = (torch.stack([cb.embed for cb in cbs]).numpy(),
                                    torch.cat([cb.search()[1] for cb in cbs]).numpy())
        return self._codebooks[n_q]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, K, T] codes -> [B, D, T] embeddings."""
        self._held(codes.shape[1])
        out = torch.tensor(0.0)
        for k in range(codes.shape[1]):
            out = out + F.embedding(codes[:, k], self.vq.layers[k]._codebook.embed)
        return out.transpose(1, 2)
