"""Time ranges: which frames to decode for a range of output samples, and time parsing.

The 24 kHz decoder is causal and keeps state (convolutions, an LSTM); started WARMUP_SECONDS
before a range with zeroed state, it matches a full decode within the range (README:
worst 100 ms window). The 48 kHz model decodes each 1 s segment on its own, so a range
starts at the first segment that reaches it and is exact. The resampler (soxr) is started
RESAMPLER_MARGIN before the range, at a sample where both rates meet on whole samples, so
that its filter has the same input and phase as in a full decode.
"""
from __future__ import annotations

import math
import re
import typing as tp
from dataclasses import dataclass

from ..errors import OptionError
from ..specs import ModelSpec
from .records import Frames

WARMUP_SECONDS = 1.0
RESAMPLER_MARGIN = 0.1
DECODER_MARGIN = 4  # frames decoded past a range's end (the decoder's look-ahead)


@dataclass(frozen=True, kw_only=True)
class Span:
    """What to decode for the output samples [start, end) at the output rate."""
    start: int                  # first output sample
    end: tp.Optional[int]       # past the last one (None: to the end of the file)
    model_start: int            # first model-rate sample kept (fed to the resampler)
    model_end: tp.Optional[int]  # model-rate samples needed, exclusive (None: all)
    first_frame: int            # first frame decoded
    decode_start: int           # model-rate sample at which the decoder's output begins
    last_frame: tp.Optional[int]  # frames needed, exclusive (None: all)
    weight_length: tp.Optional[int] = None  # 48 kHz: the overlap-add window's length

    @property
    def frames(self) -> Frames:
        """The frames a reader must give."""
        return Frames(self.first_frame, self.last_frame)


WHOLE = Span(start=0, end=None, model_start=0, model_end=None, first_frame=0, decode_start=0, last_frame=None)


def span_for(spec: ModelSpec, out_rate: int, start: int, end: tp.Optional[int]) -> Span:
    """The span of output samples [start, end) (at `out_rate`; None: to the end)."""
    if start == 0 and end is None:
        return WHOLE
    model, hop = spec.sample_rate, spec.hop_length
    margin = 0 if out_rate == model else int(RESAMPLER_MARGIN * model)
    grid = model // math.gcd(model, out_rate)  # model samples on which both rates meet
    wanted = start * model // out_rate
    model_start = max(0, wanted - margin) // grid * grid
    model_end = None if end is None else -(-end * model // out_rate) + margin
    if spec.causal:
        first = max(0, model_start - int(WARMUP_SECONDS * model)) // hop
        last = None if model_end is None else -(-model_end // hop) + DECODER_MARGIN
        return Span(start=start, end=end, model_start=model_start, model_end=model_end,
                    first_frame=first, decode_start=first * hop, last_frame=last)
    length, stride = spec.segment_samples, spec.segment_step
    full = -(-length // hop)  # frames of every segment but the last
    segment = max(0, (model_start - length) // stride + 1)  # the first one reaching model_start
    last = None if model_end is None else -(-model_end // stride) * full
    return Span(start=start, end=end, model_start=model_start, model_end=model_end,
                first_frame=segment * full, decode_start=segment * stride, last_frame=last,
                weight_length=full * hop if segment else None)


_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


def parse_time(text: str) -> float:
    """Seconds from '90', '90.5', '1:30', '1:02:03.25' ([h:]mm:ss[.ms])."""
    t = text.strip()
    m = _CLOCK.match(t)
    try:
        if m:
            hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
            if seconds >= 60 or (m.group(1) and minutes >= 60):
                raise ValueError
            value = hours * 3600 + minutes * 60 + seconds
        else:
            value = float(t)
    except ValueError:
        raise OptionError(f"invalid time {text!r}: give seconds (90.5) or [h:]mm:ss[.ms] (1:30.5)") from None
    if not math.isfinite(value) or value < 0:
        raise OptionError(f"invalid time {text!r}: it must be zero or more seconds")
    return value
