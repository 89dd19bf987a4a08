"""Stopping a batch: Ctrl-C or SIGTERM stops the workers at once, and nothing is published
after the signal; a cluster address where nothing listens is one line, at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import write_audio


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_parallel_batch_at_once_and_publishes_nothing_after(sig, tmp_path, checkpoints):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        write_audio(src / f"f{i:02d}.wav", 6.0, 24000, seed=i)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "encodec_cli", "compress", src, "-r", "-o", out, "--raw", "-j", "2",
                          "--weights", checkpoints["encodec_24khz"]], stderr=subprocess.PIPE,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not (out.exists() and any(n.endswith(".ecdc") for n in os.listdir(out))):
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else ""
            time.sleep(0.05)
        # as a terminal's Ctrl-C reaches the whole process group; SIGTERM, the command alone
        os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)
        at = time.monotonic()
        published = set(n for n in os.listdir(out) if n.endswith(".ecdc"))
        p.wait(30)
        took = time.monotonic() - at
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode in (130, 143), p.stderr.read()
    assert took < 3.0, took
    after = set(os.listdir(out))
    assert {n for n in after if n.endswith(".ecdc")} <= published | _finished_during(out, at)
    assert not [n for n in after if n.endswith(".part")]


def _finished_during(out, at) -> set:
    """Outputs whose rename raced the signal by less than the signal's delivery (a few ms)."""
    return {n for n in os.listdir(out) if n.endswith(".ecdc")
            and os.stat(out / n).st_mtime <= time.time() - (time.monotonic() - at) + 0.05}


def test_a_cluster_address_where_nothing_listens_is_one_line_at_once(tmp_path, checkpoints):
    pytest.importorskip("ray")
    write_audio(tmp_path / "a.wav", 0.2, 24000)
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "compress", tmp_path / "a.wav", "--raw", "--cluster",
                        "127.0.0.1:1", "--weights", checkpoints["encodec_24khz"]], capture_output=True, timeout=60)
    assert time.monotonic() - start < 20
    assert p.returncode == 1
    assert p.stderr.decode() == "Error: cannot reach the Ray cluster at 127.0.0.1:1: connection refused\n"
