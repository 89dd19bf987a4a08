"""--salvage on damaged format-1 files: every intact packet decoded, silence for the lost ones."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from encodec_cli import api
from encodec_cli.cli import main
from encodec_cli.errors import EcdcError
from encodec_cli.formats import v1

from .conftest import tone


def ecdc(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


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
