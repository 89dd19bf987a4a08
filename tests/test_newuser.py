"""Defects a new user met (issue 18): each test fails without its fix."""
from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from encodec_cli import api
from encodec_cli.cli import main
from encodec_cli.errors import EcdcError, OptionError, WeightsError
from encodec_cli.formats import v1

from .conftest import tone, write_audio

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ROOT / "formats" / "golden"


def ecdc(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def weights(checkpoints):
    return ["--weights", str(checkpoints["encodec_24khz"]), "--lm-weights", str(checkpoints["encodec_lm_24khz"])]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- safety

def test_a_fifo_is_written_into_not_replaced(here, weights):
    write_audio(here / "a.wav", 0.5, 24000)
    os.mkfifo("pipe")
    got = {}
    reader = threading.Thread(target=lambda: got.update(data=open("pipe", "rb").read()))
    reader.start()
    ecdc("compress", "a.wav", "-o", "pipe", "--raw", *weights[:2])  # no -f needed: nothing is replaced
    reader.join(30)
    assert stat.S_ISFIFO(os.stat("pipe").st_mode)
    assert got["data"].startswith(v1.MAGIC)


def test_a_device_node_is_written_into_not_replaced(here, weights):
    write_audio(here / "a.wav", 0.5, 24000)
    try:
        os.mknod("null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # another /dev/null
    except PermissionError:
        pytest.skip("mknod needs root")
    for command in (["compress", "a.wav", "--raw", *weights[:2]],):
        ecdc(*command, "-o", "null", "-f")
        assert stat.S_ISCHR(os.stat("null").st_mode)
    ecdc("compress", "a.wav", "-o", "a.ecdc", "--raw", *weights[:2])
    ecdc("decompress", "a.ecdc", "-o", "null", "-f", *weights[:2])
    assert stat.S_ISCHR(os.stat("null").st_mode) and not list(here.glob(".null*"))


def test_the_distribution_is_encodec_cli():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "encodec-cli"', text, re.M)
    for path in (ROOT / "encodec_cli").rglob("*.py"):
        assert "'ecdc[" not in path.read_text(), path  # that package is another project


def test_readme_installs_the_cpu_build_first():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Install", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0].startswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert lines[1].startswith("pip install .")


def test_an_existing_audio_output_suggests_another_name_first(here, weights):
    write_audio(here / "speech.wav", 0.3, 24000)
    ecdc("compress", "speech.wav", "--raw", *weights[:2])
    r = ecdc("decompress", "speech.ecdc", *weights[:2], ok=False)
    assert r.exit_code == 1
    assert r.output == "Error: speech.wav exists; give another name with -o OTHER, or replace it with -f\n"


# ---------------------------------------------------------------- messages

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


# ---------------------------------------------------------------- behaviour

def test_an_output_without_extension_is_wav(here, weights):
    write_audio(here / "a.wav", 0.2, 24000)
    ecdc("compress", "a.wav", "--raw", *weights[:2])
    ecdc("decompress", "a.ecdc", "-o", "noext", *weights[:2])
    assert sf.info("noext").format == "WAV"


def test_one_rule_for_output_folders(here, weights):
    for name in ("a", "b"):
        write_audio(here / f"{name}.wav", 0.2, 24000)
    ecdc("compress", "a.wav", "b.wav", "-o", "new/", "--raw", *weights[:2])  # several inputs: made
    assert sorted(p.name for p in (here / "new").iterdir()) == ["a.ecdc", "b.ecdc"]
    ecdc("compress", "a.wav", "-o", "one/", "--raw", *weights[:2])            # a trailing slash: made
    assert (here / "one" / "a.ecdc").exists()
    ecdc("decompress", "new/a.ecdc", "new/b.ecdc", "-o", "back", *weights[:2])
    assert sorted(p.name for p in (here / "back").iterdir()) == ["a.wav", "b.wav"]
    r = ecdc("compress", "a.wav", "b.wav", "-o", "single.ecdc", "--raw", ok=False)
    assert r.output == "Error: -o single.ecdc names a file, but 2 inputs need a folder: give one (-o out/)\n"
    assert not (here / "single.ecdc").exists()


def test_the_progress_counts_the_lm_coding(checkpoints):
    """Three quarters of the bar for reading and the encoder, a quarter for the LM's coding,
    which comes after, a second of audio (one 75-frame block of the LM's pass) at a time."""
    calls = []
    x = tone(12.0, 24000)
    opts = api.CompressOptions(weights=checkpoints["encodec_24khz"], lm_weights=checkpoints["encodec_lm_24khz"])
    from encodec_cli.audio.arrays import ArraySource
    from encodec_cli.pipeline import compress_stream

    compress_stream(ArraySource(x, 24000), io.BytesIO(), opts, progress=calls.append)
    done = np.cumsum(calls)
    assert done[-1] == pytest.approx(12.0, rel=0.02)
    assert calls.count(75 / 75 * 0.25) >= 10  # 12 s: blocks of 75 frames, the last of each packet shorter


def test_the_api_runs_one_thread_by_default(tmp_path, checkpoints):
    code = ("import sys, torch, numpy as np\n"
            "from pathlib import Path\n"
            "from encodec_cli import api\n"
            "from encodec_cli.audio.arrays import ArraySource\n"
            "from encodec_cli.pipeline import compress_stream\n"
            "import io\n"
            "torch.set_num_threads(2)\n"
            "seen = set()\n"
            "for n in (1, 2):\n"
            "    opts = api.CompressOptions(weights=Path(sys.argv[1]), lm=False, threads=n)\n"
            "    compress_stream(ArraySource(np.zeros(4800, np.float32), 24000), io.BytesIO(), opts,\n"
            "                    progress=lambda s: seen.add((n, torch.get_num_threads())))\n"
            "print(sorted(seen), torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code, str(checkpoints["encodec_24khz"])], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[(1, 1), (2, 2)] 2"
    assert api.CompressOptions().threads == api.DecompressOptions().threads == 1


# ---------------------------------------------------------------- salvage

def _decode(path: str, weights, *extra):
    r = ecdc("decompress", path, "-o", path + ".wav", "-f", *weights, *extra, ok=False)
    audio = sf.read(path + ".wav", dtype="float32")[0] if os.path.exists(path + ".wav") else None
    return r, audio


@pytest.mark.parametrize("lm", [False, True])
def test_salvage_decodes_the_intact_packets(here, checkpoints, weights, lm):
    """17 s: packets 1-3 (8, 8 and 1 s). Packet 2 damaged, then the file cut inside packet 3."""
    data = api.compress(tone(17.0, 24000), 24000, api.CompressOptions(
        bandwidth=1.5, weights=checkpoints["encodec_24khz"], lm=lm, lm_weights=checkpoints["encodec_lm_24khz"],
        raw_fallback=False))
    Path("whole.ecdc").write_bytes(data)
    full = _decode("whole.ecdc", weights)[1]
    packets = list(v1.Reader.open(io.BytesIO(data)))
    damaged = bytearray(data)
    damaged[packets[1].offset + 30] ^= 0x55
    Path("bad.ecdc").write_bytes(bytes(damaged))
    Path("cut.ecdc").write_bytes(data[:packets[2].offset + 40])

    r, _ = _decode("bad.ecdc", weights)
    assert r.exit_code == 1 and "(--salvage decodes what is intact)" in r.output and not os.path.exists("bad.ecdc.wav")
    with pytest.raises(EcdcError, match=r"\(salvage=True decodes what is intact\)$"):
        api.decompress(bytes(damaged), api.DecompressOptions(weights=checkpoints["encodec_24khz"],
                                                             lm_weights=checkpoints["encodec_lm_24khz"]))
    r, audio = _decode("bad.ecdc", weights, "--salvage")
    assert r.exit_code == 1
    assert "note: bad.ecdc: damaged: 8.000-16.000 s (packet 2): record 2 at byte" in r.output
    assert r.output.strip().endswith("Error: bad.ecdc: 1 damaged part of the file, 8.000 s of silence in "
                                     "bad.ecdc.wav where audio was lost (listed above)")
    rate = 24000
    assert audio.shape == full.shape
    np.testing.assert_array_equal(audio[:8 * rate - 2000], full[:8 * rate - 2000])
    assert not audio[8 * rate:16 * rate].any()
    later = slice(16 * rate + rate // 4, 17 * rate)  # the decoder restarts after the gap: past its warm-up
    err = np.sum((audio[later] - full[later]) ** 2) / np.sum(full[later] ** 2)
    assert err < 1e-3, err  # later audio keeps its time

    r, audio = _decode("cut.ecdc", weights, "--salvage")
    assert r.exit_code == 1 and "damaged: 16.000-17.000 s (packet 3): the file is cut inside record 3" in r.output
    assert audio.shape == full.shape and not audio[16 * rate:].any()
    np.testing.assert_array_equal(audio[:8 * rate - 2000], full[:8 * rate - 2000])


def test_salvage_of_a_piped_file_cut_before_its_lengths(here, checkpoints, weights):
    data = api.compress(tone(12.0, 24000), 24000, api.CompressOptions(weights=checkpoints["encodec_24khz"], lm=False))
    header = v1.Reader.open(io.BytesIO(data)).header
    import dataclasses

    piped = v1.header_bytes(dataclasses.replace(header, num_samples=None, source_num_samples=None))
    packets = list(v1.Reader.open(io.BytesIO(data)))
    Path("p.ecdc").write_bytes(piped + data[len(piped):packets[1].offset + 10])
    r, audio = _decode("p.ecdc", weights, "--salvage")
    assert r.exit_code == 1 and "the output ends there (the file does not say how long it was)" in r.output
    assert "silence" not in r.output and "p.ecdc.wav ends where it does" in r.output
    assert len(audio) == 8 * 24000


# ---------------------------------------------------------------- bad input, said

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
    assert "_ECDC_COMPLETE=bash_source ecdc" in (ROOT / "README.md").read_text()
