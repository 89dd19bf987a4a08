"""Defaults a user relies on: output names and folders, progress units, one thread."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from encodec_cli import api

from .conftest import ecdc, tone, write_audio


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
