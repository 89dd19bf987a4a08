"""Whole archives: folder trees, the manifest, --resume, and the same jobs on a Ray cluster."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from encodec_cli.cli import main
from encodec_cli.jobs import plan as batch  # the public path (README)

from .conftest import write_audio

ECDC = [sys.executable, "-m", "encodec_cli"]


def weights_args(checkpoints) -> list:
    return ["--weights", str(checkpoints["encodec_24khz"]),
            "--lm-weights", str(checkpoints["encodec_lm_24khz"])]


def make_tree(root: Path, count: int = 20, broken=(3, 11, 17), seconds=0.6) -> dict:
    """A tree of short WAV/FLAC files (some broken) and files that are not audio."""
    files = {}
    for i in range(count):
        sub = root / f"d{i % 3}" / (f"e{i % 2}" if i % 4 else "")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"f{i:02d}.{'flac' if i % 5 == 0 else 'wav'}"
        if i in broken:
            path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
        else:
            write_audio(path, seconds + 0.05 * i, 24000, seed=i)
        files[path] = i not in broken
    (root / "d0" / "README.txt").write_text("not audio")
    (root / "d1" / "cover.jpg").write_bytes(b"\xff\xd8 not audio either")
    return files


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def manifest(path: Path) -> dict:
    return {json.loads(line)["source"]: json.loads(line) for line in path.read_text().splitlines()}


def outputs(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- local

def test_plan_mirrors_the_tree_and_skips_what_is_not_audio(tmp_path):
    files = make_tree(tmp_path / "in", count=6, broken=())
    pairs = batch.plan([str(tmp_path / "in")], str(tmp_path / "out"), "compress", recursive=True)
    assert sorted(src for src, _ in pairs) == sorted(str(p) for p in files)
    for src, dst in pairs:
        rel = os.path.relpath(src, tmp_path / "in")
        assert dst == str(tmp_path / "out" / (os.path.splitext(rel)[0] + ".ecdc"))
    with pytest.raises(Exception, match="is a folder; use -r"):
        batch.plan([str(tmp_path / "in")], str(tmp_path / "out"), "compress")
    with pytest.raises(Exception, match="no .ecdc files"):
        batch.plan([str(tmp_path / "in")], None, "decompress", recursive=True)


def test_tree_round_trip_with_manifest_and_errors(tmp_path, checkpoints):
    files = make_tree(tmp_path / "in", count=8, broken=(3,))
    result = run("compress", tmp_path / "in", "-r", "-o", tmp_path / "out", *weights_args(checkpoints),
                 "-q", "--manifest", tmp_path / "m.jsonl", ok=False)
    assert result.exit_code == 1 and "f03.wav" in result.stderr
    rows = manifest(tmp_path / "m.jsonl")
    assert len(rows) == len(files)
    for path, good in files.items():
        row = rows[str(path)]
        assert row["status"] == ("ok" if good else "error")
        if good:
            out = Path(row["output"])
            assert out.stat().st_size == row["bytes"] and row["seconds"] > 0.5
            assert row["kbps"] == pytest.approx(row["bytes"] * 8 / row["seconds"] / 1000, rel=1e-3)
            assert row["wall_s"] > 0 and row["error"] is None
        else:
            assert "cannot read audio" in row["error"] and not Path(row["output"]).exists()
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files
    run("decompress", tmp_path / "out", "-r", "-o", tmp_path / "back", *weights_args(checkpoints), "-q")
    for path, good in files.items():
        rel = path.relative_to(tmp_path / "in").with_suffix(".wav")
        assert (tmp_path / "back" / rel).exists() == good


def test_resume_skips_finished_outputs_and_redoes_damaged_ones(tmp_path, checkpoints):
    make_tree(tmp_path / "in", count=6, broken=())
    args = ["compress", tmp_path / "in", "-r", "-o", tmp_path / "out", *weights_args(checkpoints), "-q"]
    run(*args)
    first = outputs(tmp_path / "out")
    victims = sorted((tmp_path / "out").rglob("*.ecdc"))[:2]
    victims[0].write_bytes(victims[0].read_bytes()[:-7])            # truncated: redone
    (victims[1].parent / f".{victims[1].name}.abc.part").write_bytes(b"left by a killed run")
    victims[1].unlink()                                              # missing: done
    run(*args, "--resume", "--manifest", tmp_path / "m.jsonl")
    rows = manifest(tmp_path / "m.jsonl")
    status = {Path(r["output"]): r["status"] for r in rows.values()}
    assert status[victims[0]] == status[victims[1]] == "ok"
    assert sum(s == "skipped" for s in status.values()) == len(status) - 2
    assert outputs(tmp_path / "out") == first                        # identical, no .part left
    # other options make other files: nothing is skipped
    run(*args, "--resume", "-b", "3", "-f", "--manifest", tmp_path / "m3.jsonl")
    assert {r["status"] for r in manifest(tmp_path / "m3.jsonl").values()} == {"ok"}


def test_cluster_without_ray_says_what_to_install(tmp_path, checkpoints, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    src = write_audio(tmp_path / "a.wav", 0.3, 24000)
    result = run("compress", src, "--cluster", "local", ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: --cluster needs Ray: pip install 'encodec-cli[ray]'"


def test_cluster_refuses_stdin_and_stdout(tmp_path):
    src = write_audio(tmp_path / "a.wav", 0.2, 24000)
    for args in (["-", "-o", tmp_path / "x.ecdc"], [src, "-o", "-"]):
        result = run("compress", *args, "--raw", "--cluster", "local", ok=False)
        assert result.exit_code == 1
        assert "--cluster works on files" in result.stderr and "Traceback" not in result.output
