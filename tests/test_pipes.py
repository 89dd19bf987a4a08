"""Real processes through pipes, as people use ecdc in shells."""
from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encodec_cli.audio import pipes
from encodec_cli.codec.weights import REGISTRY

from .conftest import tone, write_audio

ECDC = [sys.executable, "-m", "encodec_cli"]


def both(w: Path) -> list:
    """--weights and the LM checkpoint beside it (random checkpoints under official names)."""
    lm = w.name.split("-")[0].replace("encodec_", "encodec_lm_")
    return ["--weights", str(w), "--lm-weights", str(w.parent / REGISTRY[lm].filename)]


def env():
    e = dict(os.environ)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def interruptible() -> None:
    """Ctrl-C reaches the child as in a terminal, even when this suite runs in the background
    (where a shell starts it with SIGINT ignored, which children inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_shell_pipeline(tmp_path, w24):
    src = write_audio(tmp_path / "a.wav", 2.0, 44100, 2)
    wargs = " ".join(both(w24))
    cmd = (f"cat {src} | {sys.executable} -m encodec_cli compress - -o - {wargs} -q "
           f"| {sys.executable} -m encodec_cli decompress - -o - {wargs} -q > {tmp_path}/b.wav")
    subprocess.run(cmd, shell=True, check=True, env=env(), timeout=120)
    out = sf.info(tmp_path / "b.wav")
    assert (out.samplerate, out.channels, out.frames) == (44100, 2, 88200)
    # same codes as through files
    subprocess.run(ECDC + ["compress", str(src), "-o", str(tmp_path / "f.ecdc"), *both(w24), "-q"],
                   check=True, env=env(), timeout=120)
    subprocess.run(ECDC + ["decompress", str(tmp_path / "f.ecdc"), "-o", str(tmp_path / "f.wav"),
                           *both(w24), "-q"], check=True, env=env(), timeout=120)
    a, _ = sf.read(tmp_path / "b.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "f.wav", dtype="int16")
    np.testing.assert_array_equal(a, b)


def test_flac_on_stdin_is_spooled(tmp_path, w24):
    src = write_audio(tmp_path / "a.flac", 1.0, 16000)
    with open(src, "rb") as f:
        p = subprocess.run(ECDC + ["compress", "-", "-o", str(tmp_path / "x.ecdc"), *both(w24), "-q"],
                           stdin=f, env=env(), timeout=120, capture_output=True)
    assert p.returncode == 0, p.stderr
    r = subprocess.run(ECDC + ["info", "--json", str(tmp_path / "x.ecdc")], capture_output=True, text=True)
    assert '"source_sample_rate": 16000' in r.stdout


def _wav_header(rate: int) -> bytes:
    import io
    buf = io.BytesIO()
    pipes.WavPipeSink(buf, rate, 1, "16").close()  # the header alone (unknown length)
    return buf.getvalue()


def _read_available(fd: int, wait: float, enough: int) -> bytes:
    data, end = b"", time.time() + wait
    while time.time() < end and len(data) < enough:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("coder", ["--lm", "--raw"])
def test_output_flows_before_input_ends(w24, coder):
    """Packets come out while the input is still open: a live stream, not a file (the LM
    coder's batches to a pipe grow from one packet)."""
    weights = both(w24) if coder == "--lm" else ["--weights", str(w24)]
    p = subprocess.Popen(ECDC + ["compress", "-", "-o", "-", *weights, "-q", coder],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        x = np.round(tone(20.0, 24000)[:, 0] * 32767).astype("<i2").tobytes()
        p.stdin.write(_wav_header(24000) + x)
        p.stdin.flush()
        enough = 65 + 2 * 6000  # the header and two 8 s packets of 6000 bytes
        early = _read_available(p.stdout.fileno(), 60, enough)
        assert early.startswith(b"\x89ECDC"), p.stderr.read() if p.poll() is not None else early[:20]
        assert len(early) >= enough
        p.stdin.close()
        rest = p.stdout.read()
        assert p.wait(60) == 0
        assert len(rest) > 0
    finally:
        p.kill()


def test_decompress_from_a_pipe_plays_after_the_first_packet(w24, checkpoints):
    """An LM-coded stream of three packets (8, 8 and 1 s), every one range coded: audio comes out once
    the first packet has arrived, while the others have not (no batch of 8 is waited for)."""
    from encodec_cli import api
    from encodec_cli.formats import v1

    data = api.compress(tone(17.0, 24000), 24000, api.CompressOptions(
        bandwidth=1.5, weights=w24, lm_weights=checkpoints["encodec_lm_24khz"], raw_fallback=False))
    second = list(v1.Reader.open(io.BytesIO(data)))[1].offset
    p = subprocess.Popen(ECDC + ["decompress", "-", "-o", "-", *both(w24), "-q"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        p.stdin.write(data[:second])  # the header and the first packet only
        p.stdin.flush()
        early = _read_available(p.stdout.fileno(), 60, 44 + 2 * 24000 * 6)  # WAV header and 6 s of audio
        assert early.startswith(b"RIFF") and len(early) >= 44 + 2 * 24000 * 6, len(early)
        p.stdin.write(data[second:])
        p.stdin.close()
        rest = p.stdout.read()
        assert p.wait(60) == 0
        assert len(early) + len(rest) == 44 + 2 * 24000 * 17
    finally:
        p.kill()


def test_error_in_pipeline_is_one_line(tmp_path):
    p = subprocess.run(ECDC + ["decompress", "-", "-o", "-"], input=b"garbage bytes",
                       capture_output=True, env=env(), timeout=60)
    assert p.returncode == 1
    assert p.stderr.decode().strip() == "Error: stdin is not an .ecdc file (no ecdc signature at the start)"
    assert p.stdout == b""


def test_refuses_binary_to_terminal_only_when_terminal(tmp_path):
    # stdout is a pipe here: allowed
    src = write_audio(tmp_path / "a.wav", 0.1, 24000)
    p = subprocess.run(ECDC + ["compress", str(src), "-o", "-", "--weights", "/nonexistent"],
                       capture_output=True, env=env(), timeout=60)
    assert p.stderr.decode().startswith("Error: weights file /nonexistent does not exist")


def test_help_and_info_do_not_import_torch(tmp_path):
    golden = os.path.join(os.path.dirname(__file__), "..", "formats", "golden", "v1_raw_24khz.ecdc")
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from encodec_cli.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0\n"
        f"r = CliRunner().invoke(main, ['info', '--json', {golden!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "ok", p.stderr


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"),
                                           (signal.SIGINT, 130, "interrupted")])
def test_killed_run_leaves_no_file(tmp_path, w24, sig, code, word):
    """`kill` or Ctrl-C mid-file: one error line, and neither output nor temporary file."""
    src = write_audio(tmp_path / "in.wav", 120.0, 24000)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen(ECDC + ["compress", str(src), "-o", str(out / "in.ecdc"), *both(w24),
                                 "-q"], stderr=subprocess.PIPE, env=env(), preexec_fn=interruptible)
    deadline = time.monotonic() + 60
    while not any(out.iterdir()):  # the temporary output exists: the run is under way
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code
    assert err.decode().strip().splitlines() == [f"Error: {word}"]
    assert list(out.iterdir()) == []


_SPOOL_RACE = """
import os, signal, sys, tempfile, threading, time
from encodec_cli.audio import files
worker = threading.Thread(target=threading.Event().wait, daemon=True)
worker.start()
made = tempfile.mkstemp
def mkstemp(**kw):  # Ctrl-C the moment the spool exists, before its name is returned
    fd, name = made(**kw)
    signal.pthread_kill(worker.ident, signal.SIGINT)  # as a terminal's may: to another thread
    for _ in range(20):  # Python code runs on (as mkstemp's own does) while that thread takes it
        time.sleep(0.01)
    return fd, name
tempfile.mkstemp = mkstemp
try:
    files.open_source("-")
except KeyboardInterrupt:
    print(os.listdir(tempfile.gettempdir()))
"""


def test_ctrl_c_as_the_stdin_spool_is_created_removes_it(tmp_path):
    """A Ctrl-C that lands between the spool file's creation and its name reaching ecdc
    (once in hundreds of runs of the test below) still removes it: signals wait there, also
    where another thread takes the signal (a mask of the main thread's let it through)."""
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    p = subprocess.run([sys.executable, "-c", _SPOOL_RACE], input=b"fLaC" + bytes(4000), capture_output=True,
                       env=dict(env(), TMPDIR=str(spool_dir)), preexec_fn=interruptible, timeout=120)
    assert p.stdout.decode().strip() == "[]", (p.stdout, p.stderr[-2000:])


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_stdin_spool_is_removed(tmp_path, w24, sig, code):
    """A FLAC on stdin is spooled to a temporary file first; an interrupt removes it."""
    src = write_audio(tmp_path / "a.flac", 2.0, 24000)
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    p = subprocess.Popen(ECDC + ["compress", "-", "-o", str(tmp_path / "x.ecdc"), *both(w24), "-q"],
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env(), TMPDIR=str(spool_dir)),
                         preexec_fn=interruptible)
    p.stdin.write(src.read_bytes()[:4096])  # the rest never comes: ecdc waits, spooling
    p.stdin.flush()
    deadline = time.time() + 60
    while not list(spool_dir.glob("ecdc-stdin-*")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(spool_dir.glob("ecdc-stdin-*")), "no spool file appeared"
    p.send_signal(sig)
    assert p.wait(60) == code
    assert list(spool_dir.iterdir()) == [] and not (tmp_path / "x.ecdc").exists()
    p.stdin.close()


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"),
                                           (signal.SIGINT, 130, "interrupted")])
def test_interrupted_jobs_stop_and_clean_up(tmp_path, w24, sig, code, word):
    """--jobs 2: after the signal no queued file is started, the workers stop, and no
    temporary file is left."""
    srcs = [write_audio(tmp_path / f"f{i}.wav", 8.0, 24000, seed=i) for i in range(8)]
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen(ECDC + ["compress", *map(str, srcs), "-o", str(out), "--weights", str(w24),
                                 "--raw", "-q", "--jobs", "2"], stderr=subprocess.PIPE, env=env(),
                         preexec_fn=interruptible)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.ecdc")):  # the first file is done, others are queued
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code
    assert err.decode().strip().splitlines()[-1] == f"Error: {word}"
    done = sorted(x.name for x in out.iterdir())
    time.sleep(3)  # nothing goes on in the background
    assert sorted(x.name for x in out.iterdir()) == done
    assert all(name.endswith(".ecdc") and not name.startswith(".") for name in done)
    assert len(done) < len(srcs)


def _chunks(wav: bytes) -> dict:
    """RIFF size, data size and data of a WAV."""
    import struct

    at, chunks = 12, {"riff": struct.unpack_from("<I", wav, 4)[0]}
    while at + 8 <= len(wav):
        name, size = wav[at:at + 4], struct.unpack_from("<I", wav, at + 4)[0]
        if name == b"data":
            chunks["data_size"], chunks["data"] = size, wav[at + 8:]
            break
        at += 8 + size + (size & 1)
    return chunks


@pytest.mark.parametrize("bits", ["16", "24"])
def test_wav_on_stdout_has_real_sizes_and_the_samples_of_a_file(tmp_path, w24, bits):
    src = write_audio(tmp_path / "a.wav", 1.3, 44100, 2)
    subprocess.run(ECDC + ["compress", str(src), "-o", str(tmp_path / "a.ecdc"), "--weights", str(w24),
                           "--raw", "-q"], check=True, env=env(), timeout=120)
    pipe = subprocess.run(ECDC + ["decompress", str(tmp_path / "a.ecdc"), "-o", "-", "--bits", bits,
                                  "--weights", str(w24), "-q"], capture_output=True, env=env(), timeout=120)
    subprocess.run(ECDC + ["decompress", str(tmp_path / "a.ecdc"), "-o", str(tmp_path / "f.wav"), "--bits", bits,
                           "--weights", str(w24), "-q"], check=True, env=env(), timeout=120)
    got, want = _chunks(pipe.stdout), _chunks((tmp_path / "f.wav").read_bytes())
    frames = sf.info(src).frames
    assert got["data_size"] == frames * 2 * int(bits) // 8 == len(got["data"])
    assert got["riff"] == len(pipe.stdout) - 8
    assert got["data"] == want["data"]  # the same samples as libsndfile writes


def test_wav_header_comes_with_the_first_audio(tmp_path, w24):
    """`ecdc decompress - -o - | sox - out.wav`: sox's first read must see header and audio."""
    src = write_audio(tmp_path / "a.wav", 20.0, 24000)
    subprocess.run(ECDC + ["compress", str(src), "-o", str(tmp_path / "a.ecdc"), "--weights", str(w24),
                           "--raw", "-q"], check=True, env=env(), timeout=120)
    p = subprocess.Popen(ECDC + ["decompress", "-", "-o", "-", "--weights", str(w24), "-q"],
                         stdin=open(tmp_path / "a.ecdc", "rb"), stdout=subprocess.PIPE, env=env())
    try:
        first = os.read(p.stdout.fileno(), 1 << 16)
        assert first.startswith(b"RIFF") and len(first) > 44
        assert int.from_bytes(first[4:8], "little") == 36 + 20 * 24000 * 2  # the header knew the length
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("args", [["decompress", "missing.ecdc"], ["decompress", "garbage.ecdc"],
                                  ["compress", "missing.wav"], ["decompress", "ok.ecdc", "-o", "nodir/x.wav"]])
def test_errors_found_without_a_model_come_before_importing_torch(tmp_path, w24, args):
    (tmp_path / "garbage.ecdc").write_bytes(b"not an ecdc file at all")
    src = write_audio(tmp_path / "ok.wav", 0.2, 24000)
    subprocess.run(ECDC + ["compress", str(src), "-o", str(tmp_path / "ok.ecdc"), "--weights", str(w24),
                           "--raw", "-q"], check=True, env=env(), timeout=120)
    code = ("import sys; from encodec_cli.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                       env=env(), timeout=120)
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and lines[-1] == "False 1", p.stderr
