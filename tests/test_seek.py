"""Time ranges: `decompress --start/--duration/--end` decodes only what the range needs."""
from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from encodec_cli import api
from encodec_cli.cli import main
from encodec_cli.entropy import lmcoder
from encodec_cli.errors import OptionError
from encodec_cli.formats import seek
from encodec_cli.formats import v1 as F
from encodec_cli.formats.records import Frames

from .conftest import tone


def worst_window_snr(got: np.ndarray, ref: np.ndarray, rate: int) -> float:
    """The lowest SNR (dB) of any 100 ms window, ref being the signal."""
    win = rate // 10
    worst = np.inf
    for i in range(0, len(ref) - win + 1, win):
        err = np.sum((got[i:i + win] - ref[i:i + win]) ** 2)
        worst = min(worst, 10 * np.log10(np.sum(ref[i:i + win] ** 2) / max(err, 1e-30)))
    return worst


@pytest.fixture(scope="module")
def files(checkpoints):
    """name -> (.ecdc bytes, options, full decode): 18 s, three packets each."""
    out = {}
    for name, model, rate, channels, lm in [("24k_from_44k", "encodec_24khz", 44100, 1, False),
                                           ("24k_lm", "encodec_24khz", 24000, 1, True),
                                           ("48k", "encodec_48khz", 48000, 2, False),
                                           ("48k_from_44k", "encodec_48khz", 44100, 2, False)]:
        lm_weights = checkpoints[model.replace("encodec_", "encodec_lm_")] if lm else None
        # raw_fallback=False: every packet LM-coded (the random LM predicts badly)
        data = api.compress(tone(18.0, rate, channels, seed=3), rate,
                            api.CompressOptions(bandwidth=6.0, model=model, weights=checkpoints[model], lm=lm,
                                                lm_weights=lm_weights, raw_fallback=False, download_bars=False))
        opts = api.DecompressOptions(weights=checkpoints[model],
                                     lm_weights=checkpoints[model.replace("encodec_", "encodec_lm_")],
                                     download_bars=False)
        out[name] = (data, opts, api.decompress(data, opts)[0])
    return out


@pytest.mark.parametrize("name", ["24k_from_44k", "24k_lm", "48k", "48k_from_44k"])
@pytest.mark.parametrize("start, end", [(0.0, 1.5), (7.9123, 9.4), (16.25, None), (12.0, 25.0)])
def test_range_equals_the_same_range_of_a_full_decode(files, name, start, end):
    data, opts, full = files[name]
    part, rate = api.decompress(data, dataclasses.replace(opts, start=start, end=end))
    s0 = round(start * rate)
    s1 = len(full) if end is None else min(len(full), round(end * rate))
    assert part.shape == (s1 - s0, full.shape[1])  # exact to the sample
    ref = full[s0:s1]
    snr = min(worst_window_snr(part[:, c], ref[:, c], rate) for c in range(ref.shape[1]))
    # 48 kHz segments decode on their own: the same numbers; 24 kHz: a warmed-up decoder
    assert snr >= (60 if name.startswith("48k") else 30), snr


def test_model_format_range(files):
    data, opts, _ = files["24k_from_44k"]
    full, rate = api.decompress(data, dataclasses.replace(opts, model_format=True))
    part, rate = api.decompress(data, dataclasses.replace(opts, model_format=True, start=10.0, end=10.5))
    assert rate == 24000 and len(part) == 12000
    assert worst_window_snr(part[:, 0], full[240000:252000, 0], rate) >= 30


def test_lm_runs_only_over_the_packets_of_the_range(files, monkeypatch):
    data, opts, _ = files["24k_lm"]
    decoded = []
    real = lmcoder.LMDecoder._decode_lm

    def spy(self, packets, numbers, offsets):
        decoded.extend(numbers)
        return real(self, packets, numbers, offsets)

    monkeypatch.setattr(lmcoder.LMDecoder, "_decode_lm", spy)
    with io.BytesIO(data) as f:
        assert [p.start for p in F.Reader.open(f)] == [0, 600, 1200]  # packets of 8 s
    api.decompress(data, dataclasses.replace(opts, start=17.2, end=17.9))
    assert decoded == [3]
    decoded.clear()
    api.decompress(data, dataclasses.replace(opts, start=2.0, end=3.0))
    assert decoded == [1]


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        chunk = super().read(n)
        self.count += len(chunk)
        return chunk


def test_reader_skips_earlier_packets_without_reading_them(files):
    data, _, _ = files["48k"]
    f = CountingFile(data)
    reader = F.Reader.open(f, Frames(first=2000))  # 48 kHz packets: 8 segments of 150 frames
    packets = list(reader)
    assert [p.index for p in packets] == [2, 3]
    assert packets[0].start == 1200
    first, second = list(F.Reader.open(io.BytesIO(data)))[:2]
    assert f.count <= len(data) - (second.offset - first.offset) + 200  # the first one's codes: not read
    reader = F.Reader.open(CountingFile(data), Frames(stop=1200))
    assert [p.index for p in reader] == [1]  # lengths known: no need to read to the end


def test_range_of_a_file_written_to_a_pipe(files):
    """The header does not know the length: the reader goes on to the end record."""
    data, opts, full = files["24k_from_44k"]
    with io.BytesIO(data) as f:
        header = F.Reader.open(f).header
    unknown = F.header_bytes(dataclasses.replace(header, num_samples=None, source_num_samples=None))
    assert len(unknown) == len(F.header_bytes(header))
    piped = unknown + data[len(unknown):]
    a, _ = api.decompress(piped, dataclasses.replace(opts, start=15.0, end=30.0))
    b, _ = api.decompress(data, dataclasses.replace(opts, start=15.0, end=30.0))
    np.testing.assert_array_equal(a, b)


def test_cli_range_and_stdin(files, tmp_path):
    data, opts, _ = files["24k_from_44k"]
    path = tmp_path / "in.ecdc"
    path.write_bytes(data)
    args = ["--weights", str(opts.weights), "-q", "--start", "0:09.3", "--duration", "2.5"]
    result = CliRunner().invoke(main, ["decompress", str(path), "-o", str(tmp_path / "a.wav"), *args])
    assert result.exit_code == 0, result.output
    a, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    assert rate == 44100 and len(a) == round(11.8 * 44100) - round(9.3 * 44100)
    with open(path, "rb") as f:  # a pipe: read forward, skipping
        proc = subprocess.run([sys.executable, "-m", "encodec_cli", "decompress", "-", "-o", "-", *args],
                              stdin=f, capture_output=True, check=True)
    b, _ = sf.read(io.BytesIO(proc.stdout), dtype="int16")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args, code, message", [
    (["--start", "25"], 1, "Error: a.ecdc: --start 25 s is past the end of the audio (18.000 s)"),
    # mistakes in the command line are usage errors (exit 2), found before any file is read
    (["--start", "5", "--end", "4"], 2, "Error: the range ends (4 s) before it starts (5 s)"),
    (["--start", "1:75"], 2, "Error: Invalid value for '--start': invalid time '1:75': give seconds (90.5) "
                             "or [h:]mm:ss[.ms] (1:30.5)"),
    (["--start", "-3"], 2, "Error: Invalid value for '--start': invalid time '-3': it must be zero or more seconds"),
    (["--start", "abc"], 2, "Error: Invalid value for '--start': invalid time 'abc'"),
])
def test_range_errors(files, tmp_path, monkeypatch, args, code, message):
    data, opts, _ = files["24k_from_44k"]
    monkeypatch.chdir(tmp_path)
    Path("a.ecdc").write_bytes(data)
    result = CliRunner().invoke(main, ["decompress", "a.ecdc", "-o", "out.wav", "--weights",
                                       str(opts.weights), *args])
    assert result.exit_code == code and message in result.output, result.output
    if code == 1:
        assert result.output == message + "\n"
    assert not Path("out.wav").exists()
    result = CliRunner().invoke(main, ["decompress", "a.ecdc", "--duration", "1", "--end", "2"])
    assert result.exit_code == 2 and "--duration or --end" in result.output


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90.25", 90.25), ("1:30", 90.0),
                                           ("01:02:03.5", 3723.5), ("0:00.001", 0.001), ("2:00:00", 7200.0)])
def test_parse_time(text, seconds):
    assert seek.parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "nan", "inf", "1:60", "1:60:00", "1e999"])
def test_parse_time_rejects(text):
    with pytest.raises(OptionError):
        seek.parse_time(text)


def test_plan_starts_the_resampler_on_a_common_sample():
    from encodec_cli.specs import SPECS

    for rate in (44100, 22050, 8000, 16000, 11025, 32000):
        for model in ("encodec_24khz", "encodec_48khz"):
            spec = SPECS[model]
            span = seek.span_for(spec, rate, round(73.3 * rate), None)
            assert span.model_start * rate % spec.sample_rate == 0
            assert span.model_start * rate // spec.sample_rate <= span.start
            assert span.decode_start <= span.model_start
            assert span.model_start - span.decode_start < 3 * spec.sample_rate  # bounded warm-up
