"""The batch jobs of test_batch.py on a Ray cluster started here with 2 workers: the same
bytes as a local run, a worker killed mid-file, a whole job killed and resumed.

Ray's servers listen on every interface, so the cluster and the ecdc drivers run in a
network namespace of their own whose only interface is the loopback (127.0.0.1), with a
token that this test session makes. The cluster is stopped and the namespace deleted at
the end of the module.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_batch import ECDC, make_tree, manifest, outputs, weights_args

ray = pytest.importorskip("ray", reason="the Ray tests need pip install 'encodec-cli[ray]'")


NS = f"ecdc-test-{os.getpid()}"
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
RAY = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def in_ns(cmd: list) -> list:
    return ["ip", "netns", "exec", NS] + [str(c) for c in cmd]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray cluster on 127.0.0.1 with 2 worker CPUs, in its own network namespace."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the Ray tests need root and iproute2 for a private network namespace")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    env = dict(os.environ, **RAY_ENV)
    try:
        subprocess.run(in_ns(["ip", "link", "set", "lo", "up"]), check=True)
        temp = tmp_path_factory.mktemp("ray")
        subprocess.run(in_ns(RAY + ["start", "--head", "--node-ip-address", "127.0.0.1", "--port", "6390",
                                    "--num-cpus", "2", "--include-dashboard", "false",
                                    "--disable-usage-stats", "--temp-dir", temp]),
                       check=True, env=env, capture_output=True, timeout=180)
        yield "127.0.0.1:6390"
    finally:
        subprocess.run(in_ns(RAY + ["stop", "--force"]), env=env, capture_output=True, timeout=120)
        subprocess.run(["ip", "netns", "delete", NS], capture_output=True)


def ecdc(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(in_ns(ECDC + list(args)), capture_output=True, text=True,
                          env=dict(os.environ, **RAY_ENV), timeout=600, **kw)


def ecdc_background(*args) -> subprocess.Popen:
    return subprocess.Popen(in_ns(ECDC + list(args)), env=dict(os.environ, **RAY_ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, checkpoints):
    """About 20 files, 3 broken, and their outputs made locally (the expected bytes)."""
    root = tmp_path_factory.mktemp("corpus")
    files = make_tree(root / "in", count=20, broken=(3, 11, 17), seconds=1.0)
    p = subprocess.run(ECDC + [str(a) for a in ("compress", root / "in", "-r", "-o", root / "local",
                                                 *weights_args(checkpoints), "-q", "-j", "2")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1 and p.stderr.count("Error: ") == 3, p.stderr
    return root, files, outputs(root / "local")


def test_cluster_gives_the_local_bytes_and_reports_broken_files(cluster, corpus, checkpoints, tmp_path):
    root, files, expected = corpus
    p = ecdc("compress", root / "in", "-r", "-o", tmp_path / "out", *weights_args(checkpoints), "-q",
             "--cluster", cluster, "--manifest", tmp_path / "m.jsonl")
    assert p.returncode == 1 and p.stderr.count("Error: ") == 3, p.stderr
    assert outputs(tmp_path / "out") == expected
    rows = manifest(tmp_path / "m.jsonl")
    assert {Path(s) for s, r in rows.items() if r["status"] == "error"} == {p for p, ok in files.items() if not ok}
    assert sum(r["status"] == "ok" for r in rows.values()) == 17


def _workers() -> list:
    out = subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_a_killed_worker_does_not_lose_files(cluster, corpus, checkpoints, tmp_path):
    root, files, expected = corpus
    proc = ecdc_background("compress", root / "in", "-r", "-o", tmp_path / "out", *weights_args(checkpoints),
                           "-q", "--cluster", cluster, "--manifest", tmp_path / "m.jsonl")
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and proc.poll() is None:
        done = len(list((tmp_path / "out").rglob("*.ecdc"))) if (tmp_path / "out").exists() else 0
        workers = _workers()
        if done >= 2 and workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert killed is not None, "no worker was seen running"
    assert proc.returncode == 1 and err.count("Error: ") == 3, err
    assert outputs(tmp_path / "out") == expected  # every good file, intact; no .part left
    assert sum(json.loads(x)["status"] == "ok" for x in (tmp_path / "m.jsonl").read_text().splitlines()) == 17


def test_killed_job_resumes_where_it_stopped(cluster, corpus, checkpoints, tmp_path):
    root, files, expected = corpus
    args = [str(root / "in"), "-r", "-o", str(tmp_path / "out"), *weights_args(checkpoints), "-q",
            "--cluster", cluster]
    proc = ecdc_background("compress", *args)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "out").exists() and len(list((tmp_path / "out").rglob("*.ecdc"))) >= 5:
            break
        time.sleep(0.05)
    proc.kill()  # the whole job, midway
    proc.wait()
    _settled(tmp_path / "out")  # the cluster's workers outlive the driver: their files in flight land
    finished = {p for p in (tmp_path / "out").rglob("*.ecdc")}
    assert 5 <= len(finished) < 17
    p = ecdc("compress", *args, "--resume", "--manifest", tmp_path / "m.jsonl")
    assert p.returncode == 1, p.stderr
    rows = manifest(tmp_path / "m.jsonl").values()
    assert {Path(r["output"]) for r in rows if r["status"] == "skipped"} == finished
    assert sum(r["status"] == "ok" for r in rows) == 17 - len(finished), p.stderr[-2000:]
    assert outputs(tmp_path / "out") == expected


def _settled(folder: Path, seconds: float = 30) -> None:
    """Wait until nothing more is written under `folder`: the same files, of the same sizes,
    for 1 s (a killed task's temporary may stay: the next run removes it)."""
    deadline, before = time.time() + seconds, None
    while time.time() < deadline:
        now = sorted((str(p), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
        if now == before:
            return
        before = now
        time.sleep(1.0)


def test_shards_on_the_cluster_are_the_local_bytes(cluster, corpus, checkpoints, tmp_path):
    """`ecdc codes --parquet --cluster`: rows come back from the workers, the driver writes them."""
    pytest.importorskip("pyarrow")
    root, files, _ = corpus
    args = ["codes", root / "in", "-r", "--parquet", "--shard-rows", "8", *weights_args(checkpoints), "-q"]
    local = subprocess.run(ECDC + [str(a) for a in args + ["-o", tmp_path / "local"]], capture_output=True,
                           text=True, timeout=600)
    assert local.returncode == 1 and local.stderr.count("Error: ") == 3, local.stderr
    p = ecdc(*args, "-o", tmp_path / "out", "--cluster", cluster, "--manifest", tmp_path / "m.jsonl")
    assert p.returncode == 1 and p.stderr.count("Error: ") == 3, p.stderr
    assert outputs(tmp_path / "out") == outputs(tmp_path / "local")
    assert sorted(os.listdir(tmp_path / "out")) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert sum(r["status"] == "ok" for r in manifest(tmp_path / "m.jsonl").values()) == 17
