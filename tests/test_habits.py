"""The tree's habits, checked by the suite: the type check (mypy over encodec_cli, at the
strictness that pyproject.toml sets) and the pre-commit hooks' checks run clean."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_type_checks():
    pytest.importorskip("mypy")
    p = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is in the test extra")
    p = subprocess.run([ruff, "check", "encodec_cli", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:]


def test_no_trailing_whitespace_in_the_tracked_text():
    """What the pre-commit hook checks, over every tracked text file but the golden ones."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    bad = []
    for name in files:
        if name.startswith(("formats/golden/", "tests/golden/")) or not (ROOT / name).is_file():
            continue
        try:
            text = (ROOT / name).read_text()
        except UnicodeDecodeError:
            continue  # binary
        bad += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if re.search(r"[ \t]+$", line)]
    assert not bad, bad[:20]


def test_pre_commit_runs_the_same_checks():
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    for hook in ("id: ruff", "id: mypy", "id: trailing-whitespace"):
        assert hook in config
