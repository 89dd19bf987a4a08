"""What ecdc says: errors that name their file, notes that fit what happened, help and
completion that match the options, progress in the units documented, no progress bars in
logs."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from encodec_cli import api
from encodec_cli.audio.files import source_bits
from encodec_cli.cli import main
from encodec_cli.codec import weights as W
from encodec_cli.evaluation import metrics as M
from encodec_cli.info import rows

from .conftest import tone, write_audio


def ecdc(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("n", [1, 240, 1600])
def test_stoi_of_a_few_samples_is_null(n):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert M.stoi(x, x, 16000) is None


def test_stoi_of_silence_is_null():
    assert M.stoi(np.zeros(48000, np.float32), np.zeros(48000, np.float32), 16000) is None


def test_info_on_a_damaged_file_names_it(tmp_path):
    from encodec_cli.formats import v1
    from tests.test_reader_bounds import HEADER

    head = bytearray(v1.header_bytes(HEADER))
    head[20] ^= 1
    (tmp_path / "x.ecdc").write_bytes(bytes(head))
    r = ecdc("info", tmp_path / "x.ecdc", ok=False)
    assert r.exit_code == 1 and r.output.startswith(f"Error: {tmp_path / 'x.ecdc'}: corrupted")
    (tmp_path / "y.ecdc").write_bytes(b"hello")
    r = ecdc("info", tmp_path / "y.ecdc", ok=False)
    assert r.output.startswith(f"Error: {tmp_path / 'y.ecdc'}: not an .ecdc file")


def test_info_calls_a_cut_file_truncated_as_decompress_does(tmp_path, checkpoints):
    write_audio(tmp_path / "a.wav", 1.0, 24000)
    ecdc("compress", tmp_path / "a.wav", "--raw", "--weights", checkpoints["encodec_24khz"])
    data = (tmp_path / "a.ecdc").read_bytes()
    (tmp_path / "cut.ecdc").write_bytes(data[:len(data) - 20])
    info = ecdc("info", tmp_path / "cut.ecdc", ok=False).output
    dec = ecdc("decompress", tmp_path / "cut.ecdc", "--weights", checkpoints["encodec_24khz"], ok=False).output
    assert "truncated" in info and "truncated" in dec and "corrupted" not in info


def test_a_batch_with_other_weights_names_each_input(tmp_path, checkpoints):
    for name in ("a", "b"):
        write_audio(tmp_path / f"{name}.wav", 0.3, 24000, seed=len(name))
        ecdc("compress", tmp_path / f"{name}.wav", "--raw", "--weights", checkpoints["encodec_24khz"])
    other = tmp_path / "other.th"
    other.write_bytes(checkpoints["encodec_24khz"].read_bytes() + b"")
    import torch

    state = torch.load(other, weights_only=True)
    torch.save(state, other)  # the same architecture, another file: another fingerprint
    digest = hashlib.sha256(checkpoints["encodec_24khz"].read_bytes()).digest()
    assert hashlib.sha256(other.read_bytes()).digest() != digest
    r = ecdc("decompress", tmp_path / "a.ecdc", tmp_path / "b.ecdc", "-o", tmp_path / "out", "--weights", other,
             ok=False)
    lines = [line for line in r.output.splitlines() if "other weights" in line]
    assert len(lines) == 2 and str(tmp_path / "a.ecdc") in lines[0] and str(tmp_path / "b.ecdc") in lines[1]


def test_a_mixed_batch_names_the_input_that_does_not_fit_the_weights(tmp_path, checkpoints):
    write_audio(tmp_path / "a.wav", 0.3, 24000)
    ecdc("compress", tmp_path / "a.wav", "--raw", "--weights", checkpoints["encodec_24khz"])
    write_audio(tmp_path / "s.wav", 0.3, 48000, channels=2)
    ecdc("compress", tmp_path / "s.wav", "--raw", "--model", "48khz", "--weights", checkpoints["encodec_48khz"])
    r = ecdc("decompress", tmp_path / "a.ecdc", tmp_path / "s.ecdc", "-o", tmp_path / "out",
             "--weights", checkpoints["encodec_24khz"], ok=False)
    assert r.exit_code == 1
    assert f"Error: {tmp_path / 's.ecdc'}: " in r.output and "encodec_24khz" in r.output


def test_compress_help_says_threads_without_format_0():
    text = ecdc("compress", "--help").output
    assert "Torch threads per file." in text and "format 0" not in text
    assert "format 0" in ecdc("decompress", "--help").output


@pytest.mark.parametrize("words", [["compress", "spee"], ["decompress", "x.ecdc", "-o", "spee"], ["info", "spee"]])
def test_shell_completion_completes_file_names(words, tmp_path):
    env = dict(os.environ, _ECDC_COMPLETE="bash_complete", COMP_WORDS=" ".join(["ecdc", *words]),
               COMP_CWORD=str(len(words)))
    p = subprocess.run([sys.executable, "-c", "from encodec_cli.cli import main; main(prog_name='ecdc')"],
                       env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.stdout.splitlines()[0].startswith("file,"), p.stdout


def test_a_download_bar_stays_out_of_a_log(tmp_path, monkeypatch, capsys):
    """A download's progress bar is drawn on a terminal only (stderr here is captured)."""
    import urllib.request

    data = b"x" * 3_000_000

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(data))}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(data))
    with pytest.raises(Exception, match="wrong checksum"):
        W._download("encodec_24khz", tmp_path, download_bars=True)
    assert "\r" not in capsys.readouterr().err


def test_progress_gets_increments_that_add_up_to_the_duration(tmp_path, checkpoints):
    write_audio(tmp_path / "a.wav", 3.0, 24000)
    steps = []
    api.compress_file(str(tmp_path / "a.wav"), str(tmp_path / "a.ecdc"),
                      api.CompressOptions(lm=False, weights=checkpoints["encodec_24khz"]), progress=steps.append)
    assert len(steps) > 1 and all(s > 0 for s in steps)
    assert sum(steps) == pytest.approx(3.0) and max(steps) < 3.0


def test_info_of_a_one_sample_file_says_it_plainly(tmp_path, checkpoints):
    data = api.compress(np.zeros(1, np.float32), 24000, api.CompressOptions(lm=False,
                                                                           weights=checkpoints["encodec_24khz"]))
    (tmp_path / "one.ecdc").write_bytes(data)
    text = ecdc("info", tmp_path / "one.ecdc").output
    assert "(1 frame)" in text and "1 sample\n" in text and "kbps achieved" not in text and "0.042 ms of audio" in text
    d = json.loads(ecdc("info", "--json", tmp_path / "one.ecdc").output)
    assert dict(rows(d))["duration"].startswith("0.000 s (1 frame)")


@pytest.mark.parametrize("subtype, kept", [("PCM_U8", "16"), ("PCM_S8", "16"), ("PCM_16", "16"),
                                           ("PCM_24", "24"), ("PCM_32", "float"), ("FLOAT", "float")])
def test_the_bit_depth_kept_is_the_one_the_readme_says(subtype, kept):
    assert source_bits(subtype) == kept
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "8-bit input comes back as 16-bit, 32-bit integer input as float" in " ".join(readme.split())


def test_one_sample_compresses(checkpoints):
    data = api.compress(tone(0.001, 24000)[:1], 24000, api.CompressOptions(lm=False,
                                                                          weights=checkpoints["encodec_24khz"]))
    assert len(api.decompress(data, api.DecompressOptions(weights=checkpoints["encodec_24khz"]))[0]) == 1
