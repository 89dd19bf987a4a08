"""Live recordings that end badly: a stream cut short, a damaged block, a recording stopped
by a signal. What was recorded is kept, and said."""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from encodec_cli import api
from encodec_cli.audio.arrays import ArraySource
from encodec_cli.formats import live
from encodec_cli.formats.reader import describe, read_header
from encodec_cli.formats.records import Input
from encodec_cli.options import CompressOptions, DecompressOptions
from encodec_cli.pipeline import compress_stream

from .conftest import tone

SECONDS = 10.0  # two 24 kHz units: 0-8 s and 8-10 s


def _stream(checkpoints, lm: bool, model: str = "encodec_24khz", seconds: float = SECONDS) -> bytes:
    rate, channels = (24000, 1) if model == "encodec_24khz" else (48000, 2)
    lm_name = model.replace("encodec_", "encodec_lm_")
    opts = CompressOptions(model=model, bandwidth=6.0, live=True, lm=lm, weights=checkpoints[model],
                           lm_weights=checkpoints[lm_name] if lm else None)
    buf = io.BytesIO()
    compress_stream(ArraySource(tone(seconds, rate, channels), rate), buf, opts)
    return buf.getvalue()


def _weights(checkpoints, model="encodec_24khz"):
    return ["--weights", str(checkpoints[model]), "--lm-weights",
            str(checkpoints[model.replace("encodec_", "encodec_lm_")])]


def _ecdc(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "encodec_cli", *map(str, args)], input=stdin,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def raw24(checkpoints):
    return _stream(checkpoints, lm=False)


@pytest.fixture(scope="module")
def lm24(checkpoints):
    return _stream(checkpoints, lm=True)


def _decoded(data: bytes, checkpoints, **kw) -> np.ndarray:
    opts = DecompressOptions(weights=checkpoints["encodec_24khz"], lm_weights=checkpoints["encodec_lm_24khz"],
                             model_format=True, **kw)
    return api.decompress(data, opts)[0][:, 0]


def test_a_cut_stream_decodes_to_a_file_up_to_its_cut_and_exits_1(raw24, checkpoints, tmp_path):
    cut = raw24[:len(raw24) * 6 // 10]
    (tmp_path / "rec.ecdc").write_bytes(cut)
    p = _ecdc("decompress", tmp_path / "rec.ecdc", "-o", tmp_path / "rec.wav", "--model-format",
              *_weights(checkpoints))
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "no end record: an interrupted recording" in err and "the output ends there" in err
    assert err.strip().splitlines()[-1].startswith("Error: ")
    audio, rate = sf.read(tmp_path / "rec.wav", dtype="float32")
    whole = _decoded(raw24, checkpoints)
    assert 4.0 < len(audio) / rate < 6.5
    # the same samples as the whole stream's decode, up to the cut (16-bit file)
    assert np.abs(audio - whole[:len(audio)]).max() < 1e-4


def test_info_describes_a_cut_stream_up_to_its_cut(raw24, tmp_path):
    cut = raw24[:len(raw24) // 2]
    (tmp_path / "rec.ecdc").write_bytes(cut)
    with open(tmp_path / "rec.ecdc", "rb") as f:
        d = describe(f)
    assert d.cut is not None and d.cut <= len(cut)
    assert d.end.frames % live.BLOCK_FRAMES == 0 and 0 < d.end.frames < SECONDS * 75 / 2 + 75
    p = _ecdc("info", tmp_path / "rec.ecdc")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "up to the cut" in out and f"at byte {d.cut}" in out
    info = json.loads(_ecdc("info", "--json", tmp_path / "rec.ecdc").stdout)
    assert info["cut_at_byte"] == d.cut and info["duration_s"] == d.end.frames / 75


def test_an_intact_stream_is_not_called_cut(raw24, tmp_path):
    (tmp_path / "rec.ecdc").write_bytes(raw24)
    with open(tmp_path / "rec.ecdc", "rb") as f:
        assert describe(f).cut is None


@pytest.mark.parametrize("coder", ["raw", "lm"])
def test_salvage_resumes_a_damaged_stream_at_its_next_unit(coder, raw24, lm24, checkpoints):
    data = bytearray(raw24 if coder == "raw" else lm24)
    whole = _decoded(bytes(data), checkpoints)
    data[len(data) * 3 // 10] ^= 0xFF  # inside the first unit (0-8 s)
    with pytest.raises(Exception, match="--salvage|salvage=True"):
        _decoded(bytes(data), checkpoints)
    got = _decoded(bytes(data), checkpoints, salvage=True)
    assert len(got) == len(whole)
    hop = 24000 * 8
    # the second unit decodes as in the intact stream, after the restarted decoder settles
    settled = slice(hop + 2400, len(whole))
    err = got[settled] - whole[settled]
    assert 10 * np.log10(np.sum(whole[settled] ** 2) / np.sum(err ** 2)) > 30
    assert not np.any(got[hop - 2400:hop])  # the lost end of the first unit is silence


def test_salvage_on_the_command_line_names_the_loss(raw24, checkpoints, tmp_path):
    data = bytearray(raw24)
    data[len(data) // 4] ^= 0x55
    (tmp_path / "bad.ecdc").write_bytes(bytes(data))
    p = _ecdc("decompress", tmp_path / "bad.ecdc", "-o", tmp_path / "bad.wav", "--salvage", *_weights(checkpoints))
    err = p.stderr.decode()
    assert p.returncode == 1
    assert "-8.000 s (unit 1)" in err and "silence" in err
    assert err.strip().splitlines()[-1].startswith(f"Error: {tmp_path / 'bad.ecdc'}: 1 damaged part")
    assert sf.info(tmp_path / "bad.wav").duration == pytest.approx(SECONDS)


def test_salvage_of_a_cut_stream_says_its_output_simply_ends(raw24, checkpoints, tmp_path):
    (tmp_path / "cut.ecdc").write_bytes(raw24[:len(raw24) // 2])
    p = _ecdc("decompress", tmp_path / "cut.ecdc", "-o", "-", "--salvage", *_weights(checkpoints))
    err = p.stderr.decode()
    assert p.returncode == 1 and p.stdout.startswith(b"RIFF")
    assert "silence" not in err.splitlines()[-1] and "the audio on stdout ends where it does" in err
    assert " - " not in err and "stdin" not in err


def test_convert_salvage_keeps_a_cut_recording(lm24, checkpoints, tmp_path):
    cut = lm24[:len(lm24) * 7 // 10]
    (tmp_path / "cut.ecdc").write_bytes(cut)
    p = _ecdc("convert", tmp_path / "cut.ecdc", "-o", tmp_path / "a.ecdc", *_weights(checkpoints))
    assert p.returncode == 1 and b"--salvage keeps what comes before it" in p.stderr
    assert not (tmp_path / "a.ecdc").exists()
    p = _ecdc("convert", tmp_path / "cut.ecdc", "-o", tmp_path / "a.ecdc", "--salvage", *_weights(checkpoints))
    assert p.returncode == 1 and (tmp_path / "a.ecdc").exists(), p.stderr
    h = api.read_codes(tmp_path / "a.ecdc", DecompressOptions(lm_weights=checkpoints["encodec_lm_24khz"]))
    codes = h.codes
    whole = api.read_codes(io.BytesIO(lm24), DecompressOptions(lm_weights=checkpoints["encodec_lm_24khz"])).codes
    assert 0 < codes.shape[1] < whole.shape[1]
    assert np.array_equal(codes, whole[:, :codes.shape[1]])
    assert h.num_samples == codes.shape[1] * 320


def _paced_wav(seconds_ahead: float):
    """A script writing a WAV stream with sox's placeholder length, 0.1 s every 0.1 s, forever."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
    head = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 0x7FFFF000)
    return ("import sys, time, numpy as np\n"
            f"sys.stdout.buffer.write({head!r})\n"
            "x = (np.sin(np.arange(2400) * 0.05) * 8000).astype('<i2').tobytes()\n"
            f"for _ in range({int(seconds_ahead * 10)}): sys.stdout.buffer.write(x)\n"
            "sys.stdout.flush()\n"
            "while True:\n"
            "    sys.stdout.buffer.write(x); sys.stdout.flush(); time.sleep(0.1)\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_live_recording_as_a_complete_file(sig, checkpoints, tmp_path):
    out = tmp_path / "rec.ecdc"
    source = subprocess.Popen([sys.executable, "-c", _paced_wav(2.0)], stdout=subprocess.PIPE)
    ecdc = subprocess.Popen([sys.executable, "-m", "encodec_cli", "compress", "-", "-o", out, "--live", "--raw",
                             "--weights", checkpoints["encodec_24khz"]], stdin=source.stdout,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    source.stdout.close()
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".rec.ecdc.*.part")) or os.path.getsize(
                next(tmp_path.glob(".rec.ecdc.*.part"))) < 2000:
            assert time.monotonic() < deadline and ecdc.poll() is None
            time.sleep(0.2)
        ecdc.send_signal(sig)  # the source keeps writing: the read must end all the same
        _, err = ecdc.communicate(timeout=60)
    finally:
        source.kill()
        ecdc.kill()
    assert ecdc.returncode == 0, err
    assert b"shorter than its header" not in err  # sox's placeholder is no length
    with open(out, "rb") as f:
        d = describe(f)
    assert d.cut is None and d.end.frames > 0 and not list(tmp_path.glob("*.part"))


def test_salvage_resumes_a_damaged_48khz_stream_at_its_next_segment(checkpoints):
    data = bytearray(_stream(checkpoints, lm=False, model="encodec_48khz", seconds=4.5))
    opts = DecompressOptions(weights=checkpoints["encodec_48khz"], model_format=True)
    whole = api.decompress(bytes(data), opts)[0]
    inp = Input(io.BytesIO(bytes(data)))
    h = read_header(inp)
    offsets = [p.offset for p in live.Reader(inp, h, live.Uniform(h.n_codebooks))]  # one a segment
    data[offsets[1] + 40] ^= 0xFF
    got = api.decompress(bytes(data), DecompressOptions(weights=checkpoints["encodec_48khz"], model_format=True,
                                                        salvage=True))[0]
    assert got.shape == whole.shape
    later = slice(int(3.1 * 48000), int(3.9 * 48000))  # a later segment: decoded as in the intact stream
    assert np.abs(got[later] - whole[later]).max() < 1e-5
    assert not np.any(got[int(1.2 * 48000):int(1.8 * 48000)])  # the lost segment is silence
