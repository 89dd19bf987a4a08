"""Shared fixtures: full-size seeded random checkpoints, made once per test session."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from encodec_cli.cli import main
from encodec_cli.testing import write_checkpoints

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = Path(__file__).parent / "golden"


def pytest_configure(config) -> None:
    """With pytest-xdist (-n N): before the workers start, numba's loops are compiled once
    into their cache if it is empty (a fresh checkout), and each worker's torch runs one
    thread, so that N workers on N cores do not oversubscribe them."""
    if hasattr(config, "workerinput"):
        import torch

        torch.set_num_threads(1)
        return
    package = ROOT / "encodec_cli"
    cold = not any(package.glob("*/__pycache__/*.nbi"))
    if getattr(config.option, "numprocesses", None) and cold:
        subprocess.run([sys.executable, str(Path(__file__).with_name("kernels_warmup.py"))], cwd=ROOT,
                       check=False, timeout=600)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    """name -> path of random checkpoints under their official file names."""
    return write_checkpoints(tmp_path_factory.mktemp("weights"), seed=1234)


@pytest.fixture(scope="session")
def w24(checkpoints) -> Path:
    return checkpoints["encodec_24khz"]


@pytest.fixture(scope="session")
def w48(checkpoints) -> Path:
    return checkpoints["encodec_48khz"]


@pytest.fixture
def weights(checkpoints) -> list:
    """The command line's options for the 24 kHz model's random checkpoints."""
    return ["--weights", str(checkpoints["encodec_24khz"]), "--lm-weights", str(checkpoints["encodec_lm_24khz"])]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A test's own folder as the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _isolated_weights(monkeypatch, tmp_path):
    """Never look at (or download into) the user's real caches during tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("ECDC_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("ECDC_WEIGHTS_URL", "http://127.0.0.1:9/encodec")


def ecdc(*args, ok=True):
    """The command line in this process (click's runner); by default it must succeed."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A reproducible signal with some structure: chirp plus noise, [frames, channels]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    base = 0.3 * np.sin(2 * np.pi * (220 + 400 * t) * t) + 0.05 * rng.standard_normal(len(t))
    return np.stack([np.roll(base, 37 * c) for c in range(channels)], 1).astype(np.float32)


def write_audio(path: Path, seconds: float, rate: int, channels: int = 1,
                subtype: str = "PCM_16", seed: int = 0) -> Path:
    sf.write(path, tone(seconds, rate, channels, seed), rate, subtype=subtype)
    return path


def shared_audio(name: str) -> Path:
    path = SHARED / "audio" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
