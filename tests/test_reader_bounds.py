"""Readers trust no length field: every header field that the specification fixes for a
model is checked, and what a reader derives from a length is bounded by what the file can
hold, so a crafted file is one error line, never a hang or a memory error."""
from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import zlib
from dataclasses import replace

import numpy as np
import pytest

from encodec_cli import api
from encodec_cli.errors import CorruptError, EcdcError
from encodec_cli.formats import recovery, v1
from encodec_cli.formats.records import Header, Input
from encodec_cli.options import CompressOptions, DecompressOptions
from encodec_cli.specs import SPECS

from .conftest import tone

HEADER = Header(model="encodec_24khz", coder="raw", n_codebooks=8, bandwidth=6.0, sample_rate=24000, channels=1,
                source_sample_rate=44100, source_channels=2, num_samples=24000, source_num_samples=44100,
                weights_fingerprint=bytes(8))


def _read(h: Header) -> Header:
    return v1.read_header(Input(io.BytesIO(v1.header_bytes(h))))


def test_a_sound_header_reads_back():
    assert _read(HEADER) == HEADER


@pytest.mark.parametrize("change, field", [
    (dict(model="encodec_48khz"), "sample_rate"),             # 24000 Hz does not fit the 48 kHz model
    (dict(sample_rate=255), "sample_rate"),
    (dict(channels=2), "channels"),
    (dict(n_codebooks=3), "codebooks"),
    (dict(bandwidth=12.0), "bandwidth"),
    (dict(source_channels=5000), "source_channels"),
    (dict(source_sample_rate=2_000_000), "source_rate"),
    (dict(source_num_samples=10**12), "lengths disagree"),
])
def test_header_fields_the_spec_fixes_are_checked(change, field):
    with pytest.raises(CorruptError, match=field):
        _read(replace(HEADER, **change))


def test_the_end_record_lengths_must_fit_the_frames(checkpoints):
    opts = CompressOptions(lm=False, weights=checkpoints["encodec_24khz"])
    data = bytearray(api.compress(tone(1.0, 24000), 24000, opts))
    # the end record: type 2, then frames, samples, source samples, packets; claim 2^40 samples
    at = len(data) - 4 - 28
    assert data[at - 5] == v1.RECORD_END
    frames, _, _, packets = struct.unpack_from(">QQQI", data, at)
    struct.pack_into(">QQQI", data, at, frames, 1 << 40, 1 << 40, packets)
    struct.pack_into(">I", data, len(data) - 4, zlib.crc32(bytes(data[at - 5:len(data) - 4])))
    h = v1.read_header(Input(io.BytesIO(bytes(data))))
    with pytest.raises(CorruptError, match="disagree"):
        list(v1.Reader(Input(io.BytesIO(bytes(data[len(v1.header_bytes(h)):])), len(v1.header_bytes(h))), h))


@pytest.mark.parametrize("model", ["encodec_24khz", "encodec_48khz"])
def test_salvage_of_a_header_claiming_near_2_64_samples_is_quick_and_bounded(model):
    spec = SPECS[model]
    h = replace(HEADER, model=model, sample_rate=spec.sample_rate, channels=spec.channels,
                n_codebooks=spec.codebooks_for(6.0), num_samples=2**64 - 2, source_num_samples=None)
    data = v1.header_bytes(h) + b"\x01\x00\x00\x00\x05junk!"  # a damaged first record
    inp = Input(io.BytesIO(data))
    header = v1.read_header(inp)
    gaps = list(recovery.salvage_v1(inp, header))
    assert len(gaps) == 1
    assert gaps[0].frames is None  # the claimed length is more than the file can hold: not used


def test_the_lazy_layout_equals_the_packets_ecdc_writes():
    spec = SPECS["encodec_48khz"]
    layout = recovery.Layout(spec, 2**64 - 2)
    packets, frames, segments = layout.span(0, 3)
    assert (packets, segments) == (3, 24) and frames == 24 * 150
    assert layout.span(layout.packets - 1, None)[0] == 1


def test_a_crafted_length_on_the_command_line_is_one_line(tmp_path, checkpoints):
    fingerprint = hashlib.sha256(checkpoints["encodec_24khz"].read_bytes()).digest()[:8]
    h = replace(HEADER, num_samples=2**64 - 2, source_num_samples=None, weights_fingerprint=fingerprint)
    (tmp_path / "x.ecdc").write_bytes(v1.header_bytes(h) + b"\x01\x00\x00\x00\x05junk!")
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "decompress", tmp_path / "x.ecdc", "-o",
                        tmp_path / "x.wav", "--salvage", "-q", "--weights", checkpoints["encodec_24khz"]],
                       capture_output=True, timeout=120)
    err = p.stderr.decode().strip().splitlines()
    assert p.returncode == 1 and len(err) == 2 and "damaged: from 0.000 s" in err[0], err
    assert err[1].startswith("Error: ")


@pytest.mark.parametrize("live", [False, True])
def test_codes_of_a_file_written_to_a_pipe_know_its_length(live, checkpoints, tmp_path):
    opts = CompressOptions(lm=False, live=live, weights=checkpoints["encodec_24khz"])
    x = tone(1.0, 24000)

    class Pipe(io.BytesIO):  # what a pipe is to the writer: not seekable
        def seekable(self):
            return False

    pipe = Pipe()
    from encodec_cli.audio.arrays import ArraySource
    from encodec_cli.pipeline import compress_stream

    compress_stream(ArraySource(x, 24000), pipe, opts)
    buf = io.BytesIO(pipe.getvalue())
    h = api.read_codes(buf, DecompressOptions())
    assert h.num_samples == 24000 and h.source_num_samples == 24000
    (tmp_path / "a.ecdc").write_bytes(pipe.getvalue())
    api.codes_file(str(tmp_path / "a.ecdc"), str(tmp_path / "a.npz"))
    with np.load(tmp_path / "a.npz") as z:
        assert int(z["num_samples"]) == 24000


def test_any_error_is_ours():
    with pytest.raises(EcdcError):
        _read(replace(HEADER, bandwidth=7.0))
