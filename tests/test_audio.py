"""Audio plumbing: the WAV pipe reader and writer, channel mapping, exact lengths."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from encodec_cli.audio import blocks as B
from encodec_cli.audio import files as A
from encodec_cli.audio import pipes
from encodec_cli.errors import AudioError

from .conftest import tone


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_wav_pipe_reader_matches_libsndfile(tmp_path, subtype, channels):
    path = tmp_path / "x.wav"
    sf.write(path, tone(0.3, 8000, channels), 8000, subtype=subtype)
    expected, _ = sf.read(path, dtype="float32", always_2d=True)
    data = path.read_bytes()
    src = pipes.WavPipeSource(io.BytesIO(data[4:]), data[:4])
    assert (src.sample_rate, src.channels, src.frames) == (8000, channels, len(expected))
    got = np.concatenate(list(src.blocks()))
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_wav_pipe_reader_streams_unknown_length():
    buf = io.BytesIO()
    sink = pipes.WavPipeSink(buf, 16000, 2, "16")
    x = tone(0.5, 16000, 2)
    sink.write(x)
    data = buf.getvalue() + b"\x01"  # a dangling byte of a partial frame is ignored
    src = pipes.WavPipeSource(io.BytesIO(data[4:]), data[:4])
    assert src.frames is None
    got = np.concatenate(list(src.blocks()))
    np.testing.assert_allclose(got, np.floor(x * 32768) / 32768, atol=1e-7)


def test_wav_pipe_reader_rejects_other_streams():
    with pytest.raises(AudioError, match="not a WAV stream"):
        pipes.WavPipeSource(io.BytesIO(b"xxxxWAVX"), b"RIFF")


@pytest.mark.parametrize("bits", ["16", "24", "float"])
def test_wav_pipe_writer_is_read_by_libsndfile(tmp_path, bits):
    buf = io.BytesIO()
    sink = pipes.WavPipeSink(buf, 22050, 2, bits)
    x = tone(0.2, 22050, 2)
    sink.write(x[:1000])
    sink.write(x[1000:])
    (tmp_path / "p.wav").write_bytes(buf.getvalue())
    got, rate = sf.read(tmp_path / "p.wav", dtype="float32", always_2d=True)
    assert rate == 22050 and got.shape == x.shape
    np.testing.assert_allclose(got, x, atol=1e-4 if bits == "16" else 1e-6)


def test_channel_mapping():
    x = np.array([[1.0, 0.0, 0.5, 0.5]], np.float32)
    np.testing.assert_allclose(B.to_channels(x, 1), [[0.5]])
    np.testing.assert_allclose(B.to_channels(x, 2), [[0.5, 0.5]])
    np.testing.assert_allclose(B.to_channels(x[:, :1], 2), [[1.0, 1.0]])
    np.testing.assert_allclose(B.to_channels(x[:, :2], 2), [[1.0, 0.0]])


def test_fit_length_trims_and_pads_with_late_total():
    blocks = [np.ones((100, 2), np.float32)] * 3
    known = {}
    gen = B.fit_length(iter(blocks), lambda: known.get("n"), 50, 2)
    first = next(gen)
    assert len(first) == 50  # the rest held back while the length is unknown
    known["n"] = 280
    assert sum(len(b) for b in gen) + len(first) == 280
    padded = np.concatenate(list(B.fit_length(iter(blocks), lambda: 330, 50, 2)))
    assert len(padded) == 330 and padded[300:].sum() == 0


def test_resampler_stream_equals_one_shot():
    x = tone(1.0, 44100)
    whole = np.concatenate(list(B.converted([x], 44100, 24000, 1)))
    parts = np.concatenate(list(B.converted([x[i:i + 999] for i in range(0, len(x), 999)],
                                            44100, 24000, 1)))
    assert abs(len(whole) - 24000) <= 1 and whole.shape == parts.shape
    np.testing.assert_allclose(whole, parts, atol=1e-5)


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW"])
def test_g711_wav_on_stdin_reads_as_from_a_path(tmp_path, subtype):
    x = tone(0.3, 8000, 2)
    sf.write(tmp_path / "g.wav", x, 8000, subtype=subtype)
    data = (tmp_path / "g.wav").read_bytes()
    piped = pipes.WavPipeSource(io.BytesIO(data[4:]), data[:4])
    from_path = A.FileSource(str(tmp_path / "g.wav"))
    np.testing.assert_array_equal(np.concatenate(list(piped.blocks())), np.concatenate(list(from_path.blocks())))
    from_path.close()
