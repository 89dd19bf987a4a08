"""The readers under coverage-guided fuzzing (scripts/fuzz.py, atheris): a few seconds of
each target, from the seed corpus; any exception but ecdc's own error fails the run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["v0", "v1", "live", "salvage", "info"])
def test_fuzzing_a_reader_briefly_finds_nothing(target):
    pytest.importorskip("atheris")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), target, "--seconds", "2"],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "stat::number_of_executed_units" in out and "Uncaught Python exception" not in out


def test_the_seed_corpus_holds_every_kind_of_file(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "seeds", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    names = {f.name for f in tmp_path.iterdir()}
    for kind in ("v0_raw_24khz", "v1_lm_48khz", "v2_live_lm_24khz", "v2_live_raw_24khz-h"):
        assert kind in names
