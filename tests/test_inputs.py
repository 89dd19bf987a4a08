"""What ecdc accepts as input, and how it refuses the rest: arrays and rates in the API,
file names that are not UTF-8, WAV streams with a placeholder length, audio given to
decompress, a terminal on stdin."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encodec_cli import api
from encodec_cli.audio.pipes import WavPipeSource, unknown_size
from encodec_cli.errors import EcdcError
from encodec_cli.options import CompressOptions

from .conftest import ecdc, tone, write_audio

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rate", [0, -8000, 1.5, float("nan"), "24000", True, None, 10**9])
def test_the_api_refuses_a_bad_rate_with_our_error(rate):
    with pytest.raises(EcdcError, match="sample_rate must be a whole number of Hz"):
        api.compress(np.zeros(100, np.float32), rate, CompressOptions(lm=False))


@pytest.mark.parametrize("wav, says", [
    (np.zeros((100, 0), np.float32), "no channels"),
    (np.zeros(100, bool), "not bool"),
    (np.zeros(100, np.complex64), "not complex64"),
    (np.array(["a", "b"]), "not <U1"),
    ([[0.0, 1.0], [2.0]], "array of numbers"),
    (np.zeros((2, 2, 2)), "3-D"),
])
def test_the_api_refuses_bad_samples_with_our_error(wav, says):
    with pytest.raises(EcdcError, match=says):
        api.compress(wav, 24000, CompressOptions(lm=False))


def test_decompress_of_something_not_bytes_is_our_error():
    with pytest.raises(EcdcError, match="must be the bytes of an .ecdc file"):
        api.decompress(12345)


def _wav_head(rate: int, size: int, channels: int = 1) -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", size)


@pytest.mark.parametrize("size, channels", [(0, 1), (0xFFFFFFFF, 1), (0x7FFFFFFF, 1), (0x7FFFF000, 1),
                                            (0x7FFFFFFE, 1), (0xFFFFFFFC, 2)])
def test_placeholder_wav_lengths_mean_unknown(size, channels):
    assert unknown_size(size, 2 * channels)
    head = _wav_head(8000, size, channels)
    src = WavPipeSource(io.BytesIO(head[4:] + b"\0\0" * 10), head[:4])
    assert src.frames is None


def test_a_real_wav_length_is_kept():
    assert not unknown_size(48000, 2) and not unknown_size(0x7FFF0000, 2)


def test_a_placeholder_length_from_a_pipe_gives_no_note(tmp_path, checkpoints):
    x = (tone(0.5, 24000)[:, 0] * 20000).astype("<i2").tobytes()
    wav = _wav_head(24000, 0x7FFFF000) + x  # as sox writes to a pipe
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "compress", "-", "-o", tmp_path / "a.ecdc", "--raw",
                        "--weights", checkpoints["encodec_24khz"]], input=wav, capture_output=True, timeout=120)
    assert p.returncode == 0 and b"shorter than its header" not in p.stderr, p.stderr


def test_a_file_name_that_is_not_utf8_compresses_in_a_batch(tmp_path, checkpoints):
    name = os.fsdecode(b"caf\xe9.wav")
    tree = tmp_path / "in"
    tree.mkdir()
    os.rename(write_audio(tree / "x.wav", 0.3, 24000), tree / name)
    write_audio(tree / "plain.wav", 0.3, 24000)
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        p = subprocess.run([sys.executable, "-m", "encodec_cli", "compress", tree, "-r", "-o", out, "--raw",
                            "--jobs", jobs, "--manifest", tmp_path / f"m{jobs}.jsonl",
                            "--weights", checkpoints["encodec_24khz"]], capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert sorted(os.listdir(os.fsencode(out))) == [b"caf\xe9.ecdc", b"plain.ecdc"]
        lines = [json.loads(x) for x in (tmp_path / f"m{jobs}.jsonl").read_text().splitlines()]
        assert sorted(os.fsencode(r["source"]) for r in lines) == sorted(
            [os.fsencode(str(tree / name)), os.fsencode(str(tree / "plain.wav"))])
        assert {r["status"] for r in lines} == {"ok"}
    coded = tmp_path / "out1" / name.replace(".wav", ".ecdc")
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "decompress", coded, "-o", tmp_path / name,
                        "--weights", checkpoints["encodec_24khz"]], capture_output=True, timeout=120)
    assert p.returncode == 0 and os.path.exists(tmp_path / name), p.stderr


def test_decompress_of_audio_says_it_is_audio_first(tmp_path):
    write_audio(tmp_path / "speech.wav", 0.2, 24000)
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "decompress", tmp_path / "speech.wav"],
                       capture_output=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.decode().startswith(f"Error: {tmp_path / 'speech.wav'} is audio, not an .ecdc file: "
                                        f"did you mean `ecdc compress`?")


@pytest.mark.parametrize("command", [["compress", "-"], ["decompress", "-"], ["info", "-"]])
def test_a_terminal_on_stdin_is_refused(command):
    pty = pytest.importorskip("pty")
    main, sub = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "encodec_cli", *command, "-o", "/dev/null"]
                           if command[0] != "info" else [sys.executable, "-m", "encodec_cli", *command],
                           stdin=sub, capture_output=True, timeout=60)
    finally:
        os.close(main)
        os.close(sub)
    assert p.returncode == 1
    assert p.stderr.decode().startswith("Error: refusing to read") and "from a terminal" in p.stderr.decode()



def test_nan_and_short_wavs_are_noted(here, weights):
    sf.write("nan.wav", np.full((2400, 1), np.nan, np.float32), 24000, subtype="FLOAT")
    r = ecdc("compress", "nan.wav", "--raw", *weights[:2])
    assert "note: nan.wav: 2400 samples were NaN or infinite" in r.output
    write_audio(here / "long.wav", 1.0, 24000)
    data = Path("long.wav").read_bytes()
    Path("cut.wav").write_bytes(data[:len(data) // 2])
    r = ecdc("compress", "cut.wav", "--raw", *weights[:2])
    assert re.search(r"note: cut.wav: the file is shorter than its header says \(\d+ of 24000 frames\)", r.output)
    assert "note" not in ecdc("compress", "long.wav", "--raw", *weights[:2]).output


def test_shell_completion(here):
    env = {**os.environ, "_ECDC_COMPLETE": "bash_complete", "COMP_WORDS": "ecdc comp", "COMP_CWORD": "1"}
    out = subprocess.run([sys.executable, "-c", "from encodec_cli.cli import main; main(prog_name='ecdc')"],
                         env=env, capture_output=True, text=True).stdout
    assert "compress" in out.split()[0] or "plain,compress" in out
    env.update(COMP_WORDS="ecdc decompress --sal", COMP_CWORD="2")
    out = subprocess.run([sys.executable, "-c", "from encodec_cli.cli import main; main(prog_name='ecdc')"],
                         env=env, capture_output=True, text=True).stdout
    assert "--salvage" in out
    assert "_ECDC_COMPLETE=bash_source ecdc" in (ROOT / "docs" / "commands.md").read_text()
