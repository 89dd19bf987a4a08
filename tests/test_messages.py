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
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encodec_cli import api
from encodec_cli.audio.files import source_bits
from encodec_cli.codec import weights as W
from encodec_cli.errors import OptionError, WeightsError
from encodec_cli.evaluation import metrics as M
from encodec_cli.formats import v1
from encodec_cli.info import rows

from .conftest import ecdc, tone, write_audio

FORMATS = Path(__file__).resolve().parents[1] / "formats" / "golden"



@pytest.mark.parametrize("n", [1, 240, 1600])
def test_stoi_of_a_few_samples_is_null(n):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert M.stoi(x, x, 16000) is None


def test_stoi_of_silence_is_null():
    assert M.stoi(np.zeros(48000, np.float32), np.zeros(48000, np.float32), 16000) is None


def test_info_on_a_damaged_file_names_it(tmp_path):
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
def test_the_bit_depth_kept_is_the_one_the_docs_say(subtype, kept):
    assert source_bits(subtype) == kept
    docs = (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()
    assert "8-bit input comes back as 16-bit, 32-bit integer input as float" in " ".join(docs.split())


def test_one_sample_compresses(checkpoints):
    data = api.compress(tone(0.001, 24000)[:1], 24000, api.CompressOptions(lm=False,
                                                                          weights=checkpoints["encodec_24khz"]))
    assert len(api.decompress(data, api.DecompressOptions(weights=checkpoints["encodec_24khz"]))[0]) == 1


def test_the_progress_bar_never_passes_its_total():
    from tqdm import tqdm

    from encodec_cli.runner import advance

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's TqdmWarning: clamping frac to range [0, 1]
        with tqdm(total=600.0, file=io.StringIO(), mininterval=0) as bar:
            for _ in range(3):
                advance(bar, 200.0000000000003)
            assert bar.n == 600.0


def test_no_warning_reaches_a_terminal(here, checkpoints):
    """A real pseudo-terminal: --resume with every file skipped, and -j 2."""
    import fcntl
    import pty
    import struct
    import termios

    (here / "in").mkdir()
    for i in range(3):
        write_audio(here / "in" / f"{i}.wav", 0.37, 24000, seed=i)
    w = ["--weights", str(checkpoints["encodec_24khz"]), "--raw"]
    outputs = []
    for extra in (["-j", "2"], ["--resume"]):
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
        proc = subprocess.Popen([sys.executable, "-m", "encodec_cli", "compress", "in", "-r", "-o", "out", *w,
                                 *extra], stdin=follower, stdout=follower, stderr=follower, cwd=here)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(120)
        os.close(leader)
        outputs.append(b"".join(chunks).decode(errors="replace"))
        assert proc.returncode == 0, outputs[-1]
    assert all("Warning" not in out and "warn(" not in out for out in outputs), outputs
    assert "compress" in outputs[0]  # the bar was drawn


def test_weights_given_to_the_wrong_option_name_that_option(here, checkpoints):
    write_audio(here / "a.wav", 0.2, 24000)
    lm, codec = checkpoints["encodec_lm_24khz"], checkpoints["encodec_24khz"]
    r = ecdc("compress", "a.wav", "--weights", lm, "--lm-weights", lm, ok=False)
    assert r.output.strip() == (f"Error: {lm} holds the weights of encodec_lm_24khz, a language model: "
                                f"it goes to --lm-weights, not --weights")
    r = ecdc("compress", "a.wav", "--weights", codec, "--lm-weights", codec, ok=False)
    assert r.output.strip() == (f"Error: {codec} holds the weights of encodec_24khz, a codec: "
                                f"it goes to --weights, not --lm-weights")


def test_the_api_names_its_fields_not_the_options(here, checkpoints):
    write_audio(here / "a.wav", 0.2, 24000)
    lm = checkpoints["encodec_lm_24khz"]
    with pytest.raises(WeightsError) as e:
        api.compress_file("a.wav", "a.ecdc", api.CompressOptions(weights=lm, lm=False))
    assert "it goes to lm_weights, not weights" in str(e.value) and "--" not in str(e.value)
    ecdc("compress", "a.wav", "--raw", "--weights", checkpoints["encodec_24khz"])
    with pytest.raises(OptionError, match="pass force=True"):
        api.compress_file("a.wav", "a.ecdc", api.CompressOptions(lm=False))


def test_the_wrong_command_is_named(here, weights):
    write_audio(here / "a.wav", 0.2, 24000)
    ecdc("compress", "a.wav", "--raw", *weights[:2])
    for args in (["compress", "a.ecdc"], ["compress", "a.ecdc", "-o", "b.ecdc"]):
        assert ecdc(*args, *weights[:2], ok=False).output == (
            "Error: a.ecdc is an .ecdc file: did you mean `ecdc decompress`?\n")
    assert ecdc("decompress", "a.wav", "-o", "b.wav", *weights[:2], ok=False).output == (
        "Error: a.wav is audio, not an .ecdc file: did you mean `ecdc compress`?\n")
    Path("noise.bin").write_bytes(b"\x00" * 100)
    assert ecdc("decompress", "noise.bin", "-o", "b.wav", ok=False).output == (
        "Error: noise.bin is not an .ecdc file (no ecdc signature at the start)\n")


def test_two_inputs_for_one_output_are_named(here, weights):
    (here / "in").mkdir()
    write_audio(here / "in" / "song.wav", 0.2, 24000)
    sf.write(here / "in" / "song.flac", tone(0.2, 24000), 24000)
    r = ecdc("compress", "in", "-r", "-o", "out", ok=False)
    assert r.exit_code == 1 and "in/song.flac and in/song.wav would both write out/song.ecdc" in r.output


def test_each_error_names_its_file_once(here, weights):
    r = ecdc("decompress", "nothere.ecdc", ok=False)
    assert r.output == "Error: nothere.ecdc does not exist\n"
    (here / "a").mkdir()
    sf.write(here / "a" / "empty.wav", np.zeros((0, 1)), 24000)
    Path("a/empty.wav").write_bytes(b"RIFF")  # no audio in it
    r = ecdc("compress", "a/empty.wav", *weights[:2], ok=False)
    assert r.output.count("a/empty.wav") == 1, r.output
    write_audio(here / "b.wav", 0.2, 24000)
    r = ecdc("compress", "b.wav", "--manifest", "no/such/folder/m.jsonl", *weights[:2], ok=False)
    assert r.exit_code == 1 and "no/such/folder/m.jsonl" in r.output and len(r.output.splitlines()) == 1


def test_a_full_disk_names_the_output(here, weights, monkeypatch):
    import builtins
    import errno

    write_audio(here / "a.wav", 0.3, 24000)
    real_open = builtins.open

    def open_on_a_full_disk(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "w" in mode and str(path).endswith(".part"):  # the temporary output
            def write(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            f.write = write
        return f

    monkeypatch.setattr(builtins, "open", open_on_a_full_disk)
    r = ecdc("compress", "a.wav", "--raw", *weights[:2], ok=False)
    assert r.output == "Error: cannot write a.ecdc: No space left on device\n"
    assert sorted(p.name for p in here.iterdir()) == ["a.wav"]


def test_command_line_mistakes_exit_2(here, weights):
    write_audio(here / "a.wav", 0.2, 24000)
    for args in (["compress", "a.wav", "-b", "5"], ["compress", "a.wav", "-b", "abc"],
                 ["decompress", "a.ecdc", "--start", "abc"],
                 ["decompress", "a.ecdc", "--start", "10", "--end", "5"],
                 ["decompress", "a.ecdc", "--duration", "1", "--end", "2"],
                 ["decompress", "a.ecdc", "--format", "xyz"]):
        assert ecdc(*args, ok=False).exit_code == 2, args
    ecdc("compress", "a.wav", "--raw", *weights[:2])
    ecdc("decompress", "a.ecdc", "-o", "b.flac", "--format", "FLAC", *weights[:2])  # any case, as -o x.FLAC
    assert sf.info("b.flac").format == "FLAC"


def test_help_summaries_are_whole():
    out = ecdc("--help").output
    commands = out.split("Commands:", 1)[1].strip().splitlines()
    assert len(commands) == 6
    assert not any(line.rstrip().endswith("...") for line in commands), commands


def test_threads_hint_for_a_damaged_48khz_reference_lm_file(here, checkpoints):
    data = bytearray((FORMATS / "v0_lm_48khz.ecdc").read_bytes())
    data[len(data) // 3] ^= 0x10
    Path("d.ecdc").write_bytes(bytes(data))
    r = ecdc("decompress", "d.ecdc", "-o", "o.wav", "--threads", "1", "--weights", checkpoints["encodec_48khz"],
             "--lm-weights", checkpoints["encodec_lm_48khz"], ok=False)
    assert r.exit_code == 1 and "try --threads N)" in r.output, r.output
    assert "--salvage" not in r.output  # format 0 has no checksums to salvage by


def test_the_reference_lm_threads_follow_the_users_environment():
    code = ("from encodec_cli.codec.threads import set_threads; set_threads(1)\n"
            "from encodec_cli.entropy.reference_lm import reference_threads; print(reference_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    # a cluster node's OMP_NUM_THREADS=1 (torch's default here would be the cores, 2 or more)
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "1"


def test_info_counts_the_packets_range_coded(here, weights):
    write_audio(here / "a.wav", 8.5, 24000)
    ecdc("compress", "a.wav", "-b", "1.5", *weights)  # the random LM codes worse than raw: all stored raw
    out = ecdc("info", "a.ecdc").output
    assert "0 of 2 packets range coded, the other 2 stored raw" in out
    assert json.loads(ecdc("info", "a.ecdc", "--json").output)["range_coded_packets"] == 0
    data = api.compress(tone(8.5, 24000), 24000, api.CompressOptions(
        bandwidth=1.5, weights=Path(weights[1]), lm_weights=Path(weights[3]), raw_fallback=False))
    Path("b.ecdc").write_bytes(data)
    assert "lm (language-model range coding, every packet)" in ecdc("info", "b.ecdc").output
