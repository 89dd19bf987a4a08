"""The layers' matrix products: BLAS, or codec/fewkernel.py for a live step's few frames.

A live step multiplies each weight matrix by one or two frames, and CPU BLAS takes 1.5-2.5x
as long for 2-8 columns as for one (it packs the matrix first) and 5-15x as long for
`w @ x` as for `(x^T w^T)^T` (measured with MKL, one thread). File mode keeps BLAS and
torch's kernels, whose results the golden tests pin.
"""
from __future__ import annotations

import functools
import typing as tp

import torch


@functools.lru_cache(maxsize=None)
def _fewkernel() -> tp.Any:
    """codec/fewkernel.py where numba can run (installed, with a cache it can write), else None."""
    try:
        from . import fewkernel
    except (ImportError, RuntimeError):
        return None
    return fewkernel


def rows(w: torch.Tensor, b: tp.Optional[torch.Tensor], xt: torch.Tensor,
         w_t: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """xt [t, n] @ w [m, n]^T (+ b) as [t, m]: fewkernel up to its FEW rows, else BLAS
    (with `w_t`, w^T in its own layout, where given)."""
    kernel = _fewkernel()
    if kernel is None or not 0 < xt.shape[0] <= kernel.FEW:
        w_t = w.t() if w_t is None else w_t
        return torch.mm(xt, w_t) if b is None else torch.addmm(b, xt, w_t)
    out = torch.empty(xt.shape[0], w.shape[0])
    bias = torch.zeros(w.shape[0]) if b is None else b
    kernel.affine(w.contiguous().numpy(), xt.contiguous().numpy(), bias.contiguous().numpy(), out.numpy())
    return out


def columns(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, live: bool) -> torch.Tensor:
    """w [m, n] @ x [B, n, t] + b, as [B, m, t]."""
    if live and x.shape[0] == 1:
        if x.shape[-1] <= 8:
            return rows(w, b, x[0].t()).t()[None]
        return torch.addmm(b[:, None], w, x[0])[None]
    if live and 1 < x.shape[-1] <= 8:
        return torch.matmul(x.transpose(1, 2), w.t()).transpose(1, 2).add_(b[:, None])
    return torch.matmul(w, x).add_(b[:, None])
