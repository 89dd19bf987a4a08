"""EnCodec networks: SEANet encoder/decoder and residual vector quantizer.

Module names mirror the official checkpoints, so their state dicts load strictly;
weight norm is folded into plain weights once, at load time.

The causal 24 kHz networks run in streaming mode: each convolution and LSTM keeps
the state it needs between calls of `step(x, final)`, and a whole input given as one
final step is computed exactly like the reference does on the whole file.
The 48 kHz networks are not causal (time-group norm over a whole segment) and run
with `forward` on one segment at a time.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..specs import SPECS, ModelSpec
from . import products
from .products import columns, rows
from .quantizer import ResidualVectorQuantizer, _Codebook

# ---------------------------------------------------------------- padding rules

def extra_padding(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last convolution window full (reference rule)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding (the reference's rule, also for inputs shorter than the padding)."""
    if not left and not right:
        return x
    length = x.shape[-1]
    if length <= max(left, right):  # reflect over zeros appended first, as the reference does
        extra = max(left, right) - length + 1
        padded = F.pad(F.pad(x, (0, extra)), (left, right), "reflect")
        return padded[..., :padded.shape[-1] - extra]
    # the same values as F.pad(..., "reflect"), several times faster on CPU
    parts = [x[..., 1:left + 1].flip(-1)] if left else []
    parts.append(x)
    if right:
        parts.append(x[..., length - right - 1:length - 1].flip(-1))
    return torch.cat(parts, -1)


# ---------------------------------------------------------------- layers

class _Params(nn.Module):
    """The parameters of one convolution, named as in the checkpoints."""

    def __init__(self, shape: tp.Tuple[int, int, int], bias_size: int, weight_norm: bool):
        super().__init__()
        if weight_norm:
            self.weight_g = nn.Parameter(torch.ones(shape[0], 1, 1))
            self.weight_v = nn.Parameter(torch.zeros(shape))
        else:
            self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(bias_size))

    def fold(self) -> None:
        if hasattr(self, "weight_g"):
            weight = torch._weight_norm(self.weight_v.data, self.weight_g.data, 0)
            del self.weight_g, self.weight_v
            self.weight = nn.Parameter(weight.contiguous())


class _NormConv(nn.Module):
    def __init__(self, shape, bias_size, norm: str, transposed: bool):
        super().__init__()
        # the checkpoints call the inner module 'conv' or 'convtr'
        self._pname = "convtr" if transposed else "conv"
        self.add_module(self._pname, _Params(shape, bias_size, weight_norm=(norm == "weight_norm")))
        self.norm = nn.GroupNorm(1, bias_size) if norm == "time_group_norm" else None

    @property
    def params(self) -> _Params:
        return self._modules[self._pname]


class SConv1d(nn.Module):
    """Conv1d with the reference's padding rules; streams when causal."""

    live = False  # set while a live stream is coded (codec.streaming.live_steps): small steps

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, causal: bool = False, norm: str = "weight_norm"):
        super().__init__()
        self.conv = _NormConv((cout, cin, kernel_size), cout, norm, transposed=False)
        self.kernel_size, self.stride, self.dilation, self.causal = kernel_size, stride, dilation, causal
        self.k_eff = (kernel_size - 1) * dilation + 1
        self.padding_total = self.k_eff - stride
        self.reset()

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        p = self.conv.params
        cout, cin, k = p.weight.shape
        if self.dilation == 1 and cout <= 2 and self.stride == 1 and cin > 2:
            # audio out: a GEMM per tap is ~3x faster than the conv kernel
            n = x.shape[-1] - k + 1
            y = torch.matmul(p.weight[:, :, 0], x[..., :n]).add_(p.bias[:, None])
            for j in range(1, k):
                y.add_(torch.matmul(p.weight[:, :, j], x[..., j:j + n]))
        elif self.dilation == 1 and (cin <= 2 or self.live) and k > 1:
            # audio in, or a live step's few samples: one GEMM over unfolded windows is
            # ~10x faster than the conv kernel
            cols = x.unfold(-1, k, self.stride)  # [B, cin, T, k]
            cols = cols.permute(0, 1, 3, 2).reshape(x.shape[0], cin * k, -1)
            y = columns(p.weight.view(cout, cin * k), p.bias, cols, self.live)
        elif self.live and k == 1 and self.stride == 1:
            y = columns(p.weight.view(cout, cin), p.bias, x, True)
        else:
            y = F.conv1d(x, p.weight, p.bias, self.stride, 0, self.dilation)
        if self.conv.norm is not None:
            y = self.conv.norm(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt = self.padding_total
        extra = extra_padding(x.shape[-1], self.kernel_size, self.stride, pt)
        if self.causal:
            x = pad1d_reflect(x, pt, extra)
        else:
            right = pt // 2
            x = pad1d_reflect(x, pt - right, right + extra)
        return self._conv(x)

    def _nothing(self, x: torch.Tensor) -> torch.Tensor:
        """An output of no frames (the input does not yet fill a window)."""
        return x.new_empty(x.shape[0], self.conv.params.bias.shape[0], 0)

    def reset(self) -> None:
        self._buf: tp.Optional[torch.Tensor] = None
        self._total = 0
        self._started = False

    def step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        assert self.causal
        if self.k_eff == 1 and self.stride == 1:  # no state: the same as forward
            return self._conv(x) if x.shape[-1] else self._nothing(x)
        pt = self.padding_total
        self._total += x.shape[-1]
        buf = x if self._buf is None else torch.cat([self._buf, x], -1)
        if not self._started:
            if buf.shape[-1] <= pt:
                if not final:
                    self._buf = buf
                    return self._nothing(buf)
                self._buf = None
                return self.forward(buf)
            if pt:
                buf = torch.cat([buf[..., 1:pt + 1].flip(-1), buf], -1)
            self._started = True
        if final:
            extra = extra_padding(self._total, self.kernel_size, self.stride, pt)
            if extra:
                buf = torch.cat([buf, buf[..., -extra - 1:-1].flip(-1)], -1)
        n = (buf.shape[-1] - self.k_eff) // self.stride + 1 if buf.shape[-1] >= self.k_eff else 0
        self._buf = buf[..., n * self.stride:].clone()  # not a view: frees this step's input
        if n == 0:
            return self._nothing(buf)
        return self._conv(buf[..., :(n - 1) * self.stride + self.k_eff])


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d with the reference's trimming; streams when causal."""

    live = False  # set while a live stream is coded (codec.streaming.live_steps)

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int,
                 causal: bool = False, norm: str = "weight_norm"):
        super().__init__()
        self.convtr = _NormConv((cin, cout, kernel_size), cout, norm, transposed=True)
        self.kernel_size, self.stride, self.causal = kernel_size, stride, causal
        self._w_rows: tp.Optional[torch.Tensor] = None
        self.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.convtr.params
        y = F.conv_transpose1d(x, p.weight, p.bias, self.stride)
        if self.convtr.norm is not None:
            y = self.convtr.norm(y)
        pt = self.kernel_size - self.stride
        right = pt if self.causal else pt // 2
        return y[..., pt - right:y.shape[-1] - right]

    def reset(self) -> None:
        self._tail: tp.Optional[torch.Tensor] = None

    def step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        # The last kernel - stride outputs overlap the next call's; the reference trims
        # them at the end of the stream, so the final call just drops its tail.
        assert self.causal and self.convtr.norm is None
        p = self.convtr.params
        if x.shape[-1] == 0:
            return x.new_empty(x.shape[0], p.bias.shape[0], 0)
        y = self._few(x) if self.live and x.shape[0] == 1 and x.shape[-1] <= 512 else \
            F.conv_transpose1d(x, p.weight, None, self.stride)
        if self._tail is not None:
            y[..., :self._tail.shape[-1]] += self._tail
        n = x.shape[-1] * self.stride
        self._tail = y[..., n:].clone()
        return y[..., :n] + p.bias[:, None]

    def _few(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution of a few frames as one product and an overlap-add
        (torch's kernel for it is ~5x slower on one frame)."""
        w = self.convtr.params.weight                    # [cin, cout, k]
        cin, cout, k = w.shape
        t, s = x.shape[-1], self.stride
        if k % s:
            return F.conv_transpose1d(x, w, None, s)
        if self._w_rows is None:  # [cout * k, cin]: a row per output tap, for fewkernel
            self._w_rows = w.reshape(cin, cout * k).t().contiguous()
        taps = rows(self._w_rows, None, x[0].t(), w.reshape(cin, cout * k)).reshape(t, cout, k)  # [t, cout, k]
        y = x.new_zeros(1, cout, (t - 1) * s + k)
        for j in range(0, k, s):  # tap block j of input i lands at i*s + j
            y[0, :, j:j + t * s] += taps[:, :, j:j + s].permute(1, 0, 2).reshape(cout, t * s)
        return y


class SLSTM(nn.Module):
    """Two-layer LSTM with a skip connection, in convolutional layout."""

    SHORT = 8  # frames: oneDNN's LSTM costs ~5 ms a call whatever its length; live steps are 1-2 frames
    live = False  # set while a live stream is coded (codec.streaming.live_steps)

    def __init__(self, dim: int, num_layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)
        self._weights: tp.Optional[tuple] = None  # fewkernel's arrays, made at the first live step
        self.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)

    def reset(self) -> None:
        self._state: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None

    def step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x
        x = x.permute(2, 0, 1)
        if self.live and x.shape[0] <= self.SHORT and x.shape[1] == 1:
            y = self._short(x)
        else:
            y, self._state = self.lstm(x, self._state)
        return (y + x).permute(1, 2, 0)

    def _short(self, x: torch.Tensor) -> torch.Tensor:
        """The LSTM over a few frames of one stream, step by step in plain matrix products
        (the same function as torch's, rounded differently in the last bits)."""
        lstm, layers = self.lstm, self.lstm.num_layers
        if self._state is None:
            zero = x.new_zeros(layers, 1, lstm.hidden_size)
            self._state = (zero, zero.clone())
        kernel = products._fewkernel()
        if kernel is not None:  # the whole recurrence in one compiled call, state updated in place
            if self._weights is None:
                self._weights = tuple(tuple(getattr(lstm, f"{name}_l{i}").numpy() for i in range(layers))
                                      for name in ("weight_ih", "weight_hh"))
                self._weights += (tuple((getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}")).numpy()
                                        for i in range(layers)),)
            out = torch.empty(x.shape[0], lstm.hidden_size)
            kernel.lstm(*self._weights, x.reshape(x.shape[0], -1).contiguous().numpy(),
                        *(part.view(layers, -1).numpy() for part in self._state), out.numpy())
            return out[:, None]
        hs, cs = [], []
        for i in range(layers):
            h, c = self._state[0][i], self._state[1][i]
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{i}"), getattr(lstm, f"weight_hh_l{i}")
            bias = getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}")
            gates_x = rows(w_ih, bias, x.reshape(-1, x.shape[-1]))
            out = []
            for t in range(x.shape[0]):
                gi, gf, gg, go = rows(w_hh, gates_x[t], h).chunk(4, 1)
                c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
                h = torch.sigmoid(go) * torch.tanh(c)
                out.append(h)
            x = torch.stack(out)
            hs.append(h)
            cs.append(c)
        self._state = (torch.stack(hs), torch.stack(cs))
        return x


def _step(module: nn.Module, x: torch.Tensor, final: bool) -> torch.Tensor:
    step = getattr(module, "step", None)
    return step(x, final) if step is not None else module(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, causal: bool, norm: str, dilation: int = 1):
        super().__init__()
        hidden = dim // 2
        self.block = nn.Sequential(
            nn.ELU(), SConv1d(dim, hidden, 3, dilation=dilation, causal=causal, norm=norm),
            nn.ELU(), SConv1d(hidden, dim, 1, causal=causal, norm=norm))
        self.shortcut = SConv1d(dim, dim, 1, causal=causal, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)

    def step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        h = self.block[1].step(F.elu(x), final)
        y = self.block[3].step(F.elu_(h), final)
        s = self.shortcut.step(x, final)
        assert s.shape == y.shape, "streaming branches out of step"
        return y.add_(s)


class _Streamable(nn.Module):
    model: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_many(self, xs: tp.Sequence[torch.Tensor]) -> tp.List[torch.Tensor]:
        """`forward` on independent segments, with the LSTM run on all of them as one batch.

        The LSTM is a memory-bound recurrence: a batch reads its weights once per step for
        all segments. Convolutions stay per segment, so memory does not grow.
        """
        cut = next(i for i, m in enumerate(self.model) if isinstance(m, SLSTM))
        hs = [self.model[:cut](x) for x in xs]
        if len({h.shape for h in hs}) == 1 and len(hs) > 1:
            hs = list(self.model[cut](torch.cat(hs)).split(1))
        else:
            hs = [self.model[cut](h) for h in hs]
        return [self.model[cut + 1:](h) for h in hs]

    def reset(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset"):
                m.reset()

    def step(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        for layer in self.model:
            x = _step(layer, x, final)
        return x


class SEANetEncoder(_Streamable):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        c, n, norm = spec.causal, spec.n_filters, spec.norm
        mult = 1
        layers: tp.List[nn.Module] = [SConv1d(spec.channels, n, 7, causal=c, norm=norm)]
        for ratio in reversed(spec.ratios):
            layers += [ResnetBlock(mult * n, c, norm), nn.ELU(),
                       SConv1d(mult * n, mult * n * 2, ratio * 2, stride=ratio, causal=c, norm=norm)]
            mult *= 2
        layers += [SLSTM(mult * n), nn.ELU(), SConv1d(mult * n, spec.dimension, 7, causal=c, norm=norm)]
        self.model = nn.Sequential(*layers)


class SEANetDecoder(_Streamable):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        c, n, norm = spec.causal, spec.n_filters, spec.norm
        mult = 2 ** len(spec.ratios)
        layers: tp.List[nn.Module] = [SConv1d(spec.dimension, mult * n, 7, causal=c, norm=norm),
                                      SLSTM(mult * n)]
        for ratio in spec.ratios:
            layers += [nn.ELU(),
                       SConvTranspose1d(mult * n, mult * n // 2, ratio * 2, ratio, causal=c, norm=norm),
                       ResnetBlock(mult * n // 2, c, norm)]
            mult //= 2
        layers += [nn.ELU(), SConv1d(n, spec.channels, 7, causal=c, norm=norm)]
        self.model = nn.Sequential(*layers)


class EncodecModel(nn.Module):
    """Encoder, quantizer and decoder of one official model."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.encoder = SEANetEncoder(spec)
        self.quantizer = ResidualVectorQuantizer(spec)
        self.decoder = SEANetDecoder(spec)

    def fold(self) -> None:
        """Fold weight norm and drop training buffers; call once after loading."""
        for m in list(self.modules()):
            if isinstance(m, (_Params, _Codebook)):
                m.fold()
        self.requires_grad_(False)
        self.eval()


def build_model(name: str) -> EncodecModel:
    return EncodecModel(SPECS[name])
