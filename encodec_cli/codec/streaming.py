"""Streaming encode/decode of model-rate audio with a loaded EnCodec model.

`encode` turns an iterator of [channels, n] float32 blocks into code packets as soon as
they can be computed; `decode` turns packets back into audio blocks. Memory stays flat:
the 24 kHz model keeps only its convolution and LSTM state between chunks, the 48 kHz
model a few 1 s segments (their LSTM steps run as one batch) and the overlap-add tail.
"""
from __future__ import annotations

import contextlib
import gc
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..codec import weights as W
from .models import SLSTM, EncodecModel, ModelSpec, SConv1d, SConvTranspose1d, build_model

CHUNK_FRAMES = 100       # encoder input per step, 24 kHz model (it divides a packet's 600)
DECODE_FRAMES = 100      # decoder input per step, 24 kHz model
SEGMENT_BATCH = 4        # 48 kHz segments whose LSTM steps run as one batch


@dataclass
class CodePacket:
    codes: np.ndarray    # [frames, codebooks] uint16
    scale: float = 1.0


@dataclass
class Codec:
    model: EncodecModel
    fingerprint: bytes

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec


def load_codec(name: str, weights: tp.Optional[Path] = None, download_bars: bool = True,
               side: str = "both", codebooks: tp.Optional[int] = None) -> Codec:
    """Resolve, load strictly and fold the weights of model `name` (once per process).

    A process that only compresses or only decompresses needs part of the model: `side`
    "encoder" or "decoder" keeps that side and the quantizer, and `codebooks` keeps the
    quantizer's first codebooks only (a quarter of them at 6 kbps). A model loaded before
    serves any request that it covers.
    """
    for (*_, has_side, has_codebooks), codec in W.loaded(("codec", name, weights)):
        all_needed = has_codebooks is None or (codebooks is not None and has_codebooks >= codebooks)
        if has_side in ("both", side) and all_needed:
            return codec

    def prune(model: EncodecModel) -> None:
        if side != "both":
            setattr(model, "decoder" if side == "encoder" else "encoder", None)
        if codebooks is not None:
            model.quantizer.keep(codebooks)

    return W.cached(("codec", name, weights, side, codebooks), lambda: Codec(*W.load_model(
        name, lambda: build_model(name), weights, download_bars, mmap=True, prune=prune, unmap=True)))


def _codes(model: EncodecModel, emb: torch.Tensor, n_q: int) -> np.ndarray:
    return model.quantizer.encode(emb, n_q)[0].t().numpy().astype(np.uint16)


@torch.inference_mode()
def encode(codec: Codec, blocks: tp.Iterable[np.ndarray], n_q: int) -> tp.Iterator[CodePacket]:
    model, spec = codec.model, codec.spec
    if spec.causal:
        yield from _encode_stream(model, blocks, n_q, CHUNK_FRAMES * spec.hop_length)
    else:
        yield from _encode_segments(model, blocks, n_q)


def _rebuffer(blocks: tp.Iterable[np.ndarray], size: int, step: tp.Optional[int] = None
              ) -> tp.Iterator[tp.Tuple[np.ndarray, bool]]:
    """Windows of `size` samples every `step` (default: size) as the input arrives.

    Yields (window, after_end) pairs: once the input has ended, the windows left (shorter,
    same stepping, as the reference's segment loop) come with after_end=True.
    """
    step = step or size
    buf: tp.Optional[np.ndarray] = None
    for block in blocks:
        buf = block if buf is None else np.concatenate([buf, block], axis=-1)
        while buf.shape[-1] >= size:
            yield buf[:, :size], False
            buf = buf[:, step:]
    while buf is not None and buf.shape[-1] > 0:
        yield buf[:, :size], True
        buf = buf[:, step:]


def _encode_stream(model, blocks, n_q, chunk) -> tp.Iterator[CodePacket]:
    enc = model.encoder
    enc.reset()
    rest = np.zeros((model.spec.channels, 0), np.float32)
    for window, last in _rebuffer(blocks, chunk):
        if last:  # the shorter rest of the input closes the stream below
            rest = window
            break
        emb = enc.step(torch.from_numpy(np.ascontiguousarray(window))[None], final=False)
        if emb.shape[-1]:
            yield CodePacket(_codes(model, emb, n_q))
    emb = enc.step(torch.from_numpy(np.ascontiguousarray(rest))[None], final=True)
    if emb.shape[-1]:
        yield CodePacket(_codes(model, emb, n_q))


@contextlib.contextmanager
def _frozen() -> tp.Iterator[None]:
    """While a live stream runs, what the process made before it (torch, numba, the models:
    some 260,000 objects) is out of the garbage collector's view, so that its rare full
    collections no longer take some 0.15 s, a pause in the audio."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def live_steps(codec: Codec) -> tp.Iterator[None]:
    """While it lasts, the model's LSTMs and convolutions step short inputs in plain matrix
    products (fast for the frame or two of a live step; file mode keeps torch's kernels)."""
    modules = [m for m in codec.model.modules() if isinstance(m, (SLSTM, SConv1d, SConvTranspose1d))]
    for m in modules:
        m.live = True
    try:
        yield
    finally:
        for m in modules:
            m.live = False


@torch.inference_mode()
def warm_live(codec: Codec, n_q: int, encoder: bool) -> None:
    """Pay a live 24 kHz stream's first-call costs now, before its audio comes: numba
    compiling the codec's kernels (seconds, on a machine's first run) or loading them from
    its cache, and the quantizer's tables of `n_q` codebooks. The encoder's steps, or the
    decoder's: each path that a live step takes, for the first frames and a block's one or two."""
    model, spec = codec.model, codec.spec
    if not spec.causal:
        return
    with live_steps(codec):
        for frames in (8, 1, 2):  # the first output waits for 7 frames (the reflection padding)
            if encoder:
                model.quantizer.encode_few(
                    model.encoder.step(torch.zeros(1, spec.channels, frames * spec.hop_length), final=False), n_q)
            else:
                model.decoder.step(model.quantizer.decode_few(np.zeros((frames, n_q), np.int64)), final=False)
        (model.encoder if encoder else model.decoder).reset()


@torch.inference_mode()
def encode_live(codec: Codec, blocks: tp.Iterable[np.ndarray], n_q: int
                ) -> tp.Iterator[tp.Tuple[CodePacket, bool]]:
    """As `encode`, each block's codes as soon as they exist: (packet, final). 24 kHz: the
    encoder steps on each block as it comes; final: the packet of the input's end. 48 kHz:
    each segment once its input is complete."""
    model, spec = codec.model, codec.spec
    if not spec.causal:
        for packet in _encode_segments(model, blocks, n_q, batch_size=1):
            yield packet, False
        return
    enc = model.encoder
    enc.reset()
    with live_steps(codec):
        with _frozen():
            for block in blocks:
                emb = enc.step(torch.from_numpy(np.ascontiguousarray(block))[None], final=False)
                if emb.shape[-1]:
                    yield CodePacket(model.quantizer.encode_few(emb, n_q).astype(np.uint16)), False
        emb = enc.step(torch.zeros(1, spec.channels, 0), final=True)
    yield CodePacket(model.quantizer.encode_few(emb, n_q).astype(np.uint16)), True


def _encode_segments(model, blocks, n_q, batch_size: int = SEGMENT_BATCH) -> tp.Iterator[CodePacket]:
    spec = model.spec
    batch: tp.List[np.ndarray] = []
    for window, _ in _rebuffer(blocks, spec.segment_length, spec.segment_stride):
        batch.append(np.ascontiguousarray(window))
        if len(batch) == batch_size:
            yield from _encode_batch(model, batch, n_q)
            batch = []
    yield from _encode_batch(model, batch, n_q)


def _encode_batch(model, windows: tp.List[np.ndarray], n_q: int) -> tp.Iterator[CodePacket]:
    xs, scales = [], []
    for window in windows:
        x = torch.from_numpy(window)[None]
        mono = x.mean(dim=1, keepdim=True)
        rms = 1e-8 + mono.pow(2).mean(dim=2, keepdim=True).sqrt()
        xs.append(x / rms)
        scales.append(float(rms))
    for emb, scale in zip(model.encoder.forward_many(xs), scales):
        yield CodePacket(_codes(model, emb, n_q), scale)


@torch.inference_mode()
def decode(codec: Codec, packets: tp.Iterable[CodePacket], weight_length: tp.Optional[int] = None,
           live: bool = False) -> tp.Iterator[np.ndarray]:
    """Model-rate audio blocks [channels, n]; the end may overshoot the true length.

    48 kHz: `weight_length` is the overlap-add window's length when the packets do not
    start with the file's first segment (whose length sets it). `live`: each packet's
    audio as soon as it is decoded, not in steps sized for speed."""
    if codec.spec.causal and live:
        with live_steps(codec):
            with _frozen():
                yield from _decode_stream(codec.model, packets, 1, codec.model.quantizer.decode_few)
    elif codec.spec.causal:
        yield from _decode_stream(codec.model, packets, DECODE_FRAMES)
    else:
        yield from _decode_segments(codec.model, packets, weight_length, 1 if live else SEGMENT_BATCH)


def _embed(model, codes: np.ndarray) -> torch.Tensor:
    return model.quantizer.decode(torch.from_numpy(codes.astype(np.int64).T)[None])


def _decode_stream(model, packets, step: int = DECODE_FRAMES, embed=None) -> tp.Iterator[np.ndarray]:
    embed = embed or (lambda codes: _embed(model, codes))
    dec = model.decoder
    dec.reset()
    pending = np.zeros((0, 0), np.uint16)
    for packet in packets:
        pending = np.concatenate([pending, packet.codes]) if len(pending) else packet.codes
        while len(pending) >= step:  # fixed steps: flat memory, cache-sized work
            n = len(pending) if step == 1 else step
            y = dec.step(embed(pending[:n]), final=False)
            pending = pending[n:]
            if y.shape[-1]:
                yield y[0].numpy()
    emb = embed(pending) if len(pending) else torch.zeros(1, model.spec.dimension, 0)
    y = dec.step(emb, final=True)
    if y.shape[-1]:
        yield y[0].numpy()


class OverlapAdd:
    """The reference's linear overlap-add of decoded segments, emitted as it settles."""

    def __init__(self, stride: int, length: tp.Optional[int] = None):
        self.stride = stride
        self.weight: tp.Optional[torch.Tensor] = None if length is None else self._window(length)
        self.acc: tp.Optional[torch.Tensor] = None   # weighted sum from the current offset
        self.wsum: tp.Optional[torch.Tensor] = None

    def push(self, frame: torch.Tensor) -> torch.Tensor:
        n = frame.shape[-1]
        if self.weight is None:  # the reference derives the window from the first frame
            self.weight = self._window(n)
        w = self.weight[:n]
        size = n if self.acc is None else max(n, self.acc.shape[-1])
        acc = frame.new_zeros(*frame.shape[:-1], size)
        wsum = frame.new_zeros(size)
        if self.acc is not None and self.wsum is not None:
            acc[..., :self.acc.shape[-1]] += self.acc
            wsum[:self.wsum.shape[-1]] += self.wsum
        acc[..., :n] += w * frame
        wsum[:n] += w
        done = min(self.stride, size)
        self.acc, self.wsum = acc[..., done:], wsum[done:]
        return acc[..., :done] / wsum[:done]

    @staticmethod
    def _window(n: int) -> torch.Tensor:
        t = torch.linspace(0, 1, n + 2, dtype=torch.float32)[1:-1]
        return 0.5 - (t - 0.5).abs()

    def finish(self) -> torch.Tensor:
        if self.acc is None or self.wsum is None or self.acc.shape[-1] == 0:
            return torch.zeros(0)
        return self.acc / self.wsum


def _decode_segments(model, packets, weight_length=None, batch_size: int = SEGMENT_BATCH) -> tp.Iterator[np.ndarray]:
    ola = OverlapAdd(model.spec.segment_stride, weight_length)
    batch: tp.List[CodePacket] = []

    def flush() -> tp.Iterator[np.ndarray]:
        outs = model.decoder.forward_many([_embed(model, p.codes) for p in batch])
        for out, packet in zip(outs, batch):
            out = out * torch.tensor(packet.scale, dtype=torch.float32).view(-1, 1, 1)
            yield ola.push(out[0]).numpy()

    for packet in packets:
        batch.append(packet)
        if len(batch) == batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()
    rest = ola.finish()
    if rest.numel():
        yield rest.numpy()
