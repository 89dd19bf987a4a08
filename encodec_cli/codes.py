"""EnCodec codes as data: the `Codes` type that `encode`, `read_codes` and `decode` trade
in, checked on creation, and its .npz layout (`ecdc codes`). No torch.

The .npz layout, also for codes that a user's own code writes (only `codes` and `model`
are required; see `Codes` for how the rest is derived):

  codes               [codebooks, frames] integers below 1024 (uint16 as ecdc writes them)
  model               'encodec_24khz' or 'encodec_48khz'
  bandwidth           kbps (float)
  num_samples         the decoded length at the model's rate
  source_sample_rate, source_channels, source_num_samples: the original audio's
  segment_frames      48 kHz: frames of each 1 s segment (int32), in order
  scales              48 kHz: each segment's scale (float32)
  weights_fingerprint the codec checkpoint's fingerprint, 16 hex digits
  sample_rate         the model's rate (written for readers; checked if present)
"""
from __future__ import annotations

import dataclasses
import io
import typing as tp
import zipfile

import numpy as np

from .errors import FormatError
from .formats import v0
from .specs import SPECS, ModelSpec


class CodesError(FormatError):
    """Codes that no model can decode: a value, shape or field is wrong (the message names it)."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Codes:
    """The codes of one clip, and what decoding them back to its audio needs.

    `codes` is [codebooks, frames] uint16 (any integer array below 1024 is taken); for the
    48 kHz model, its 1 s segments end to end, `segment_frames` and `scales` saying where
    each ends and its scale. Left out (None), the lengths are derived from the frames
    (24 kHz: frames x 320 samples; 48 kHz: the length whose segments these are), the
    bandwidth from the codebooks, and the original is taken to be at the model's rate and
    channels: what codes that a model generated need.
    """
    codes: np.ndarray
    model: str = "encodec_24khz"
    bandwidth: tp.Optional[float] = None
    num_samples: tp.Optional[int] = None          # at the model's rate
    source_sample_rate: tp.Optional[int] = None
    source_channels: tp.Optional[int] = None
    source_num_samples: tp.Optional[int] = None
    segment_frames: tp.Optional[np.ndarray] = None  # 48 kHz
    scales: tp.Optional[np.ndarray] = None          # 48 kHz
    weights_fingerprint: tp.Optional[bytes] = None  # 8 bytes, when known

    def __post_init__(self) -> None:
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)

    @property
    def spec(self) -> ModelSpec:
        return SPECS[self.model]

    @property
    def sample_rate(self) -> int:
        """The model's rate (the original's is `source_sample_rate`)."""
        return self.spec.sample_rate

    @property
    def n_codebooks(self) -> int:
        return int(self.codes.shape[0])

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def duration(self) -> float:
        """Seconds of the original audio."""
        return tp.cast(int, self.source_num_samples) / tp.cast(int, self.source_sample_rate)

    def segments(self) -> tp.List[tp.Tuple[np.ndarray, float]]:
        """48 kHz: (codes [codebooks, frames], scale) per 1 s segment; 24 kHz: one, scale 1."""
        if self.segment_frames is None or self.scales is None:
            return [(self.codes, 1.0)]
        bounds = np.concatenate([[0], np.cumsum(self.segment_frames)])
        return [(self.codes[:, a:b], float(s)) for a, b, s in zip(bounds[:-1], bounds[1:], self.scales)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Codes):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    def to_arrays(self) -> tp.Dict[str, np.ndarray]:
        """The .npz layout's arrays."""
        arrays = {"codes": self.codes, "model": np.array(self.model), "bandwidth": np.array(self.bandwidth),
                  "sample_rate": np.array(self.sample_rate), "num_samples": np.array(self.num_samples),
                  "source_sample_rate": np.array(self.source_sample_rate),
                  "source_channels": np.array(self.source_channels),
                  "source_num_samples": np.array(self.source_num_samples)}
        if self.segment_frames is not None and self.scales is not None:
            arrays["segment_frames"] = self.segment_frames
            arrays["scales"] = self.scales
        if self.weights_fingerprint is not None:
            arrays["weights_fingerprint"] = np.array(self.weights_fingerprint.hex())
        return arrays

    def save(self, fo: tp.BinaryIO) -> None:
        """Write the .npz layout (uncompressed: codes are 10 bits of entropy in 16)."""
        savez: tp.Callable[..., None] = np.savez  # (its stub reads **arrays as its keyword options)
        savez(fo, **self.to_arrays())

    @classmethod
    def load(cls, fo: tp.Union[str, tp.BinaryIO]) -> "Codes":
        """Codes from an .npz file in the layout above; a missing or wrong field is named."""
        try:
            with np.load(fo, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise CodesError(f"not a readable .npz file: {e}") from None
        return from_fields(fields)


def from_fields(fields: tp.Mapping[str, tp.Any]) -> Codes:
    """Codes from named arrays or values (an .npz's members, a table's row)."""
    for name in ("codes", "model"):
        if name not in fields:
            raise CodesError(f"the field '{name}' is missing")
    unknown = set(fields) - {f.name for f in dataclasses.fields(Codes)} - {"sample_rate"}
    if unknown:
        raise CodesError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(sorted(map(repr, unknown)))}")
    kwargs: tp.Dict[str, tp.Any] = {}
    for name, value in fields.items():
        if name in ("codes", "segment_frames", "scales") or value is None or isinstance(value, (bytes, str)):
            kwargs[name] = value
            continue
        value = np.asarray(value)
        if value.dtype == object:
            raise CodesError(f"the field '{name}' must be a number or text, not {value!r}")
        if value.shape != ():
            raise CodesError(f"the field '{name}' must be one value, not an array of shape {value.shape}")
        kwargs[name] = value.item()
    if isinstance(kwargs.get("weights_fingerprint"), str):
        try:
            kwargs["weights_fingerprint"] = bytes.fromhex(kwargs["weights_fingerprint"])
        except ValueError:
            raise CodesError("the field 'weights_fingerprint' must be 16 hex digits") from None
    rate = kwargs.pop("sample_rate", None)
    codes = Codes(**kwargs)
    if rate is not None and rate != codes.sample_rate:
        raise CodesError(f"the field 'sample_rate' says {rate} Hz, but {codes.model} runs at {codes.sample_rate} Hz")
    return codes


def to_npz_bytes(codes: Codes) -> bytes:
    buf = io.BytesIO()
    codes.save(buf)
    return buf.getvalue()


# ---------------------------------------------------------------- checks

def _same(a: tp.Any, b: tp.Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(a, b)
    return bool(a == b)


def _whole(name: str, value: tp.Any, low: int = 0) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < low:
        raise CodesError(f"the field '{name}' must be a whole number of at least {low}, not {value!r}")
    return int(value)


def _checked(c: Codes) -> tp.Dict[str, tp.Any]:
    """The fields of `c` checked, converted and derived where left out."""
    if c.model not in SPECS:
        raise CodesError(f"the field 'model' must be one of {', '.join(SPECS)}, not {c.model!r}")
    spec = SPECS[c.model]
    codes = _code_array(c.codes, spec)
    k, frames = codes.shape
    bandwidth = c.bandwidth
    bandwidths = {spec.codebooks_for(b): b for b in spec.bandwidths}
    if k not in bandwidths:
        raise CodesError(f"the field 'codes' has {k} codebooks; {c.model} has "
                         f"{', '.join(map(str, bandwidths))} ({', '.join(f'{b:g}' for b in spec.bandwidths)} kbps)")
    if bandwidth is None:
        bandwidth = bandwidths[k]
    elif isinstance(bandwidth, (bool, np.bool_)) or not isinstance(bandwidth, (int, float, np.number)) \
            or float(bandwidth) != bandwidths[k]:
        raise CodesError(f"the field 'bandwidth' says {bandwidth!r} kbps, but {k} codebooks are {bandwidths[k]:g} kbps")
    out: tp.Dict[str, tp.Any] = {"codes": codes, "bandwidth": float(bandwidth)}
    if spec.causal:
        for name in ("segment_frames", "scales"):
            if getattr(c, name) is not None:
                raise CodesError(f"the field '{name}' belongs to the 48 kHz model's codes, not {c.model}'s")
        num_samples = frames * spec.hop_length if c.num_samples is None else _whole("num_samples", c.num_samples)
        if -(-num_samples // spec.hop_length) != frames:
            raise CodesError(f"the field 'num_samples' ({num_samples}) needs {-(-num_samples // spec.hop_length)} "
                             f"frames, the codes have {frames}")
    else:
        num_samples = _segments(c, spec, frames, out)
    out["num_samples"] = num_samples
    rate = spec.sample_rate if c.source_sample_rate is None else _whole("source_sample_rate", c.source_sample_rate, 1)
    channels = spec.channels if c.source_channels is None else _whole("source_channels", c.source_channels, 1)
    if rate > 1_000_000 or channels > 255:
        raise CodesError(f"the original's {rate} Hz and {channels} channels are more than the format holds")
    source = (round(num_samples * rate / spec.sample_rate) if c.source_num_samples is None
              else _whole("source_num_samples", c.source_num_samples))
    if abs(num_samples / spec.sample_rate - source / rate) > 1 + 0.01 * num_samples / spec.sample_rate:
        raise CodesError(f"the field 'source_num_samples' ({source} at {rate} Hz) is not the length of "
                         f"{num_samples} samples at {spec.sample_rate} Hz")
    out.update(source_sample_rate=rate, source_channels=channels, source_num_samples=source)
    fp = c.weights_fingerprint
    if fp is not None and (not isinstance(fp, bytes) or len(fp) != 8):
        raise CodesError("the field 'weights_fingerprint' must be 8 bytes (16 hex digits in .npz)")
    return out


def _code_array(codes: tp.Any, spec: ModelSpec) -> np.ndarray:
    try:
        codes = np.asarray(codes)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CodesError(f"the field 'codes' must be an array of integers: {e}") from None
    if codes.dtype == np.bool_ or not np.issubdtype(codes.dtype, np.integer):
        raise CodesError(f"the field 'codes' must hold integers, not {codes.dtype}")
    if codes.ndim != 2:
        raise CodesError(f"the field 'codes' must be [codebooks, frames], not of shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= spec.bins):
        bad = codes.max() if codes.max() >= spec.bins else codes.min()
        raise CodesError(f"the field 'codes' holds {bad}: codes are 0 to {spec.bins - 1}")
    return np.ascontiguousarray(codes, dtype=np.uint16)


def _segments(c: Codes, spec: ModelSpec, frames: int, out: tp.Dict[str, tp.Any]) -> int:
    """48 kHz: check the segment table and scales; the length they are the segments of."""
    if c.segment_frames is None or c.scales is None:
        raise CodesError(f"the field '{'segment_frames' if c.segment_frames is None else 'scales'}' is missing "
                         f"({spec.name} codes come in 1 s segments)")
    seg = np.asarray(c.segment_frames)
    scales = np.asarray(c.scales)
    if seg.ndim != 1 or not np.issubdtype(seg.dtype, np.integer) or (seg <= 0).any():
        raise CodesError("the field 'segment_frames' must be a list of positive whole numbers")
    if scales.shape != seg.shape or not np.issubdtype(scales.dtype, np.floating) or \
            not (np.isfinite(scales) & (scales > 0)).all():
        raise CodesError(f"the field 'scales' must be {len(seg)} positive numbers, one per segment")
    if int(seg.sum()) != frames:
        raise CodesError(f"the field 'segment_frames' adds up to {int(seg.sum())} frames, the codes have {frames}")
    stride = tp.cast(int, spec.segment_stride)
    if c.num_samples is None:
        num_samples = (len(seg) - 1) * stride + int(seg[-1]) * spec.hop_length if len(seg) else 0
    else:
        num_samples = _whole("num_samples", c.num_samples)
    if list(v0.segments(spec, num_samples)) != seg.tolist():
        raise CodesError(f"the field 'segment_frames' is not the 1 s segments of {num_samples} samples: "
                         f"every segment but the last has {-(-tp.cast(int, spec.segment_length) // spec.hop_length)} "
                         f"frames")
    out.update(segment_frames=seg.astype(np.int32), scales=scales.astype(np.float32))
    return num_samples
