"""Version 0: the .ecdc files of Meta's encodec 0.1.1, read, described and converted.

The golden files in formats/golden/v0_*.ecdc were written by the reference package itself
(scripts/make_v0_golden.py) on the session's seeded random weights; tests/golden/
v0_reference.npz holds its codes and its decoded audio.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from encodec_cli import api
from encodec_cli.cli import main
from encodec_cli.errors import EcdcError, FormatError, TruncatedError
from encodec_cli.formats import v0
from encodec_cli.formats.reader import describe
from encodec_cli.specs import SPECS

from .conftest import GOLDEN, ROOT

FORMATS = ROOT / "formats" / "golden"
REFERENCE = np.load(GOLDEN / "v0_reference.npz")
NAMES = ["v0_raw_24khz", "v0_raw_48khz", "v0_lm_24khz", "v0_lm_48khz"]


def model_of(name: str) -> str:
    return "encodec_24khz" if "24khz" in name else "encodec_48khz"


def options(checkpoints, name: str, **kw) -> api.DecompressOptions:
    model = model_of(name)
    lm = model.replace("encodec_", "encodec_lm_")
    # the golden LM files were written with one torch thread
    return api.DecompressOptions(weights=checkpoints[model], lm_weights=checkpoints[lm], download_bars=False,
                                 lm_threads=1, **kw)


def golden(name: str) -> bytes:
    return (FORMATS / f"{name}.ecdc").read_bytes()


def reference_codes(name: str) -> np.ndarray:
    return REFERENCE[f"{name}_codes"]


def as_array(codes) -> np.ndarray:
    """read_codes' result as [codebooks, frames], segments end to end."""
    return codes.codes


def cdf_digests_match(name: str, checkpoints) -> bool:
    """Whether this machine's float LM gives the reference's quantized CDFs (golden digests),
    stepping over the reference's codes segment by segment."""
    from encodec_cli.entropy.reference_lm import ReferenceCdfs, load_float_lm

    model = model_of(name)
    lm = ReferenceCdfs(load_float_lm(model, checkpoints[model.replace("encodec_", "encodec_lm_")], False), 1)
    codes = reference_codes(name).T
    digests, row = [], 0
    for n in REFERENCE[f"{name}_segment_frames"]:
        state = lm.start(codes.shape[1])
        for t in range(n):
            digests.append(hashlib.sha256(state.cdfs().astype(">i8").tobytes()).hexdigest()[:16])
            state.push(codes[row + t])
        row += n
    return digests == list(REFERENCE[f"{name}_cdf_sha256"])


@pytest.mark.parametrize("name", NAMES)
def test_golden_v0_files_decode_to_the_reference(name, checkpoints):
    """Codes identical to the reference's, audio within 1e-4 of its decoder's output."""
    opts = options(checkpoints, name)
    try:
        codes = api.read_codes(FORMATS / f"{name}.ecdc", opts)
        exact = np.array_equal(as_array(codes), reference_codes(name))
    except EcdcError:
        exact = False
    if not exact and "lm" in name and not cdf_digests_match(name, checkpoints):
        pytest.skip("this machine rounds the reference's float LM otherwise than the one that wrote "
                    "the golden file: such files cannot be decoded here (that is why ecdc has coder 3)")
    assert exact
    assert codes.weights_fingerprint is None and codes.n_codebooks == reference_codes(name).shape[0]
    wav, rate = api.decompress(golden(name), opts)
    assert rate == SPECS[model_of(name)].sample_rate
    assert len(wav) == int(REFERENCE[f"{name}_length"])
    expected = REFERENCE[f"{name}_audio"]
    np.testing.assert_allclose(wav.T[:, ::int(REFERENCE["stride"])], expected, atol=1e-4, rtol=0)


def test_48khz_codes_come_per_segment_with_scales(checkpoints):
    header = api.read_codes(FORMATS / "v0_raw_48khz.ecdc")
    codes = header.segments()
    assert [c.shape for c, _ in codes] == [(4, n) for n in REFERENCE["v0_raw_48khz_segment_frames"]]
    assert all(c.dtype == np.uint16 for c, _ in codes)
    assert all(s > 0 for _, s in codes) and len({s for _, s in codes}) == len(codes)
    assert header.model == "encodec_48khz" and header.bandwidth == 6.0


def test_read_codes_of_raw_files_imports_no_torch():
    script = ("import sys; from encodec_cli.api import read_codes\n"
              "for name in sys.argv[1:]:\n"
              "    codes = read_codes(name)\n"
              "assert 'torch' not in sys.modules, 'torch imported'\n"
              "print(codes.segments()[0][0].shape)")
    out = subprocess.run([sys.executable, "-c", script, str(FORMATS / "v0_raw_24khz.ecdc"),
                          str(FORMATS / "v1_raw_24khz.ecdc"), str(FORMATS / "v0_raw_48khz.ecdc")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(4, 150)"


def reference_bitpacker(values, bits: int) -> bytes:
    """formats/ecdc-v0.md: values added least significant bit first, bytes flushed as filled."""
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc += v << n
        n += bits
        while n >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            n -= 8
    if n:
        out.append(acc)
    return bytes(out)


@pytest.mark.parametrize("count", [1, 3, 8, 1001])
def test_unpack_lsb_matches_the_bit_packer(count):
    values = np.random.default_rng(count).integers(0, 1024, count)
    np.testing.assert_array_equal(v0.unpack_lsb(reference_bitpacker(values.tolist(), 10), count), values)


def test_frame_counts_are_the_encoders_not_the_references_float_formula():
    """For 450 of the first 3 million lengths the reference's decoder counts one frame too
    many and runs off its own files; the encoder wrote ceil(n / 320)."""
    spec = SPECS["encodec_24khz"]
    assert math.ceil(6720 / 24000 * 75) == 22
    assert list(v0.segments(spec, 6720)) == [21]
    assert list(v0.segments(SPECS["encodec_48khz"], 120062)) == [150, 150, 79]
    assert list(v0.segments(spec, 0)) == []
    for model in ("encodec_24khz", "encodec_48khz"):  # describe's sums, without the loop
        for length in (1, 319, 320, 47520, 48000, 48001, 95041, 120062, 1_000_001):
            frames = list(v0.segments(SPECS[model], length))
            assert v0._summary(SPECS[model], length, lambda n: 3 * n + 1) == (
                len(frames), sum(frames), sum(3 * n + 1 for n in frames)), (model, length)


def test_a_crafted_huge_length_costs_no_time():
    data = v0_file({"m": "encodec_48khz", "al": 10**15, "nc": 2, "lm": False}, bytes(1000))
    with pytest.raises(TruncatedError, match="its codes need"):
        describe(io.BytesIO(data))
    with pytest.raises(FormatError, match="scale 0.0"):  # the zeros after the metadata
        api.read_codes(io.BytesIO(data))


def v0_file(meta: dict, body: bytes = b"") -> bytes:
    data = json.dumps(meta).encode()
    return b"ECDC" + bytes([0]) + len(data).to_bytes(4, "big") + data + body


def test_raw_v0_file_of_every_length_checks_its_size(checkpoints):
    """A raw file from this module's own packer (per the spec) reads back; a missing or an
    extra byte is reported."""
    codes = np.random.default_rng(1).integers(0, 1024, (7, 2)).astype(np.uint16)  # 7 frames, 1.5 kbps
    length = 7 * 320 - 5
    data = v0_file({"m": "encodec_24khz", "al": length, "nc": 2, "lm": False},
                   reference_bitpacker(codes.reshape(-1).tolist(), 10))
    h = api.read_codes(io.BytesIO(data))
    np.testing.assert_array_equal(h.codes, codes.T)
    assert (h.bandwidth, h.num_samples, h.weights_fingerprint) == (1.5, length, None)
    with pytest.raises(TruncatedError, match="truncated"):
        api.read_codes(io.BytesIO(data[:-1]))
    with pytest.raises(FormatError, match="unexpected data after the last frame"):
        api.read_codes(io.BytesIO(data + b"\0"))
    with pytest.raises(TruncatedError, match="truncated file: .* its codes need"):
        describe(io.BytesIO(data[:-1]))


@pytest.mark.parametrize("meta, message", [
    ({"m": "encodec_12khz", "al": 10, "nc": 2, "lm": False}, "unknown model"),
    ({"m": "encodec_24khz", "al": 10, "nc": 7, "lm": False}, "out of range"),
    ({"m": "encodec_48khz", "al": 10, "nc": 3, "lm": False}, "out of range"),
    ({"m": "encodec_24khz", "al": -1, "nc": 2, "lm": False}, "out of range"),
    ({"m": "encodec_24khz", "al": 10, "nc": 2}, "out of range"),
    ([1, 2], "not a JSON object"),
])
def test_bad_metadata_is_one_line(meta, message, tmp_path):
    path = tmp_path / "bad.ecdc"
    path.write_bytes(v0_file(meta, bytes(100)))
    for command in (["info", path], ["decompress", path, "-o", tmp_path / "x.wav"]):
        result = CliRunner().invoke(main, [str(a) for a in command])
        assert result.exit_code == 1
        assert re.fullmatch(rf"Error: .*{message}.*\n", result.output), result.output
    assert not (tmp_path / "x.wav").exists()


def test_other_version_bytes_are_refused(tmp_path):
    data = bytearray(golden("v0_raw_24khz"))
    data[4] = 1
    with pytest.raises(FormatError, match="unsupported version 1 of Meta's encodec format"):
        api.read_codes(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("damage", ["cut", "extra", "flip"])
def test_damaged_lm_file_is_reported_in_one_line(damage, checkpoints, tmp_path):
    data = bytearray(golden("v0_lm_24khz"))
    if damage == "cut":
        data = data[:-40]
    elif damage == "extra":
        data += b"\x00"
    else:
        data[len(data) // 2] ^= 0x10
    path = tmp_path / "damaged.ecdc"
    path.write_bytes(bytes(data))
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(main, ["decompress", str(path), "-o", str(out), "--threads", "1",
                                       "--weights", str(checkpoints["encodec_24khz"]),
                                       "--lm-weights", str(checkpoints["encodec_lm_24khz"])])
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: .*damaged.ecdc: (the LM-coded data of segment 1 (ends before its last frame|cannot be "
                        r"decoded)|unexpected data after the last frame) at byte \d+: a damaged file, or one "
                        r"written with other torch threads or another kind of CPU \(read with 1 thread; .*"
                        r"try --threads N\)\n", result.output), result.output
    assert not out.exists()


def test_info_says_format_0_and_what_it_cannot_know():
    result = CliRunner().invoke(main, ["info", str(FORMATS / "v0_lm_24khz.ecdc")])
    assert result.exit_code == 0
    rows = dict(line.split(":", 1) for line in result.output.splitlines())
    assert rows["format"].strip() == "0 (Meta's encodec 0.1.1)"
    assert rows["original"].strip().startswith("unknown")
    assert "not recorded" in rows["weights"]
    assert "float LM" in rows["coder"]
    result = CliRunner().invoke(main, ["info", "--json", str(FORMATS / "v0_raw_48khz.ecdc")])
    d = json.loads(result.output)
    assert (d["format_version"], d["frames"], d["size_bytes"]) == (0, 379, 1974)
    assert d["source_sample_rate"] is None and d["weights_fingerprint"] is None
    assert d["duration_s"] == round(120062 / 48000, 6)


# ---------------------------------------------------------------- convert

def convert(*args, ok=True):
    result = CliRunner().invoke(main, ["convert", "-q", *[str(a) for a in args]])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def file_codes(path, checkpoints, name) -> np.ndarray:
    return as_array(api.read_codes(path, options(checkpoints, name)))


@pytest.mark.parametrize("name", ["v0_raw_24khz", "v0_raw_48khz"])
def test_convert_v0_to_v1_keeps_codes_and_records_the_weights(name, checkpoints, tmp_path):
    model = model_of(name)
    out = tmp_path / "new.ecdc"
    convert(FORMATS / f"{name}.ecdc", "-o", out, "--weights", checkpoints[model])
    with open(out, "rb") as f:
        h, end = describe(f)[:2]
    assert (h.version, h.coder, h.num_samples) == (1, "raw", int(REFERENCE[f"{name}_length"]))
    digest = hashlib.sha256(Path(checkpoints[model]).read_bytes()).digest()[:8]
    assert h.weights_fingerprint == digest
    np.testing.assert_array_equal(file_codes(out, checkpoints, name), reference_codes(name))
    a, _ = api.decompress(out.read_bytes(), options(checkpoints, name))
    b, _ = api.decompress(golden(name), options(checkpoints, name))
    np.testing.assert_array_equal(a, b)
    # to the LM coder and back: the raw file again, byte for byte
    lm = checkpoints[model.replace("encodec_", "encodec_lm_")]
    convert(out, "-o", tmp_path / "lm.ecdc", "--lm", "--lm-weights", lm)
    convert(tmp_path / "lm.ecdc", "-o", tmp_path / "raw.ecdc", "--raw", "--lm-weights", lm)
    assert (tmp_path / "raw.ecdc").read_bytes() == out.read_bytes()


def test_convert_lm_v0_to_the_portable_coder(checkpoints, tmp_path):
    name = "v0_lm_24khz"
    out = tmp_path / "new.ecdc"
    result = convert(FORMATS / f"{name}.ecdc", "-o", out, "--threads", "1", "--weights",
                     checkpoints["encodec_24khz"], "--lm-weights", checkpoints["encodec_lm_24khz"], ok=False)
    if result.exit_code and not cdf_digests_match(name, checkpoints):
        pytest.skip("this machine rounds the reference's float LM otherwise")
    assert result.exit_code == 0, result.output
    with open(out, "rb") as f:
        assert describe(f)[0].coder == "lm"
    np.testing.assert_array_equal(file_codes(out, checkpoints, name), reference_codes(name))


def test_convert_in_place_and_checked_before_it_replaces(checkpoints, tmp_path, monkeypatch):
    path = tmp_path / "old.ecdc"
    path.write_bytes(golden("v0_raw_24khz"))
    assert "--in-place" in convert(path, ok=False).output  # no -o: says how
    monkeypatch.setattr(api, "codes_digest", lambda f, opts: b"not the same")
    result = convert(path, "--in-place", "--weights", checkpoints["encodec_24khz"], ok=False)
    assert result.exit_code == 1 and "does not decode to the codes" in result.output
    assert path.read_bytes() == golden("v0_raw_24khz")  # untouched
    assert sorted(os.listdir(tmp_path)) == ["old.ecdc"]  # no temporary file left
    monkeypatch.undo()
    convert(path, "--in-place", "--weights", checkpoints["encodec_24khz"])
    with open(path, "rb") as f:
        assert describe(f)[0].version == 1
    np.testing.assert_array_equal(file_codes(path, checkpoints, "v0_raw_24khz"),
                                  reference_codes("v0_raw_24khz"))


def test_convert_to_stdout_is_checked_then_sent(checkpoints, tmp_path, monkeypatch, capfd):
    """`-o -`: the same bytes as to a file, and nothing at all when the check fails."""
    w = str(checkpoints["encodec_24khz"])
    convert(FORMATS / "v0_raw_24khz.ecdc", "-o", tmp_path / "file.ecdc", "--weights", w)
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "convert", "-q", "-", "-o", "-", "--weights", w],
                       input=golden("v0_raw_24khz"), capture_output=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == (tmp_path / "file.ecdc").read_bytes()
    monkeypatch.setattr(api, "codes_digest", lambda f, opts: b"not the same")
    with pytest.raises(FormatError, match="does not decode to the codes"):
        api.convert_file(str(FORMATS / "v0_raw_24khz.ecdc"), "-", api.ConvertOptions(weights=Path(w)))
    assert capfd.readouterr().out == ""


def test_convert_batch_mirrors_a_tree(checkpoints, tmp_path):
    src = tmp_path / "old"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.ecdc").write_bytes(golden("v0_raw_24khz"))
    (src / "two.ecdc").write_bytes(golden("v0_raw_48khz"))
    (tmp_path / "new").mkdir()
    convert(src, "-r", "-o", tmp_path / "new", "-j", "2", "--weights", checkpoints["encodec_24khz"],
            "--manifest", tmp_path / "m.jsonl", ok=False)
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    status = {Path(r["source"]).name: (r["status"], r["error"]) for r in lines}
    assert status["one.ecdc"] == ("ok", None)
    # the 48 kHz file needs 48 kHz weights: one file fails, alone, in one line
    assert status["two.ecdc"][0] == "error" and "weights" in status["two.ecdc"][1]
    assert (tmp_path / "new" / "a" / "one.ecdc").exists() and not (tmp_path / "new" / "two.ecdc").exists()


# ---------------------------------------------------------------- codes

def test_codes_command_writes_npz(tmp_path):
    out = tmp_path / "c.npz"
    result = CliRunner().invoke(main, ["codes", str(FORMATS / "v0_raw_48khz.ecdc"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as d:
        np.testing.assert_array_equal(d["codes"], reference_codes("v0_raw_48khz"))
        assert d["segment_frames"].tolist() == REFERENCE["v0_raw_48khz_segment_frames"].tolist()
        assert d["scales"].dtype == np.float32 and str(d["model"]) == "encodec_48khz"
    out = tmp_path / "d.npz"
    CliRunner().invoke(main, ["codes", str(FORMATS / "v1_raw_24khz.ecdc"), "-o", str(out)])
    with np.load(out) as d:
        codes = api.read_codes(FORMATS / "v1_raw_24khz.ecdc").codes
        np.testing.assert_array_equal(d["codes"], codes)
        assert "scales" not in d.files and d["codes"].dtype == np.uint16


_DECODE = """
import hashlib, sys, torch
from encodec_cli.api import DecompressOptions, read_codes
torch.set_num_threads(int(sys.argv[3]))
codes = read_codes(sys.argv[1], DecompressOptions(lm_weights=sys.argv[2], download_bars=False)).codes
print(hashlib.sha256(codes.astype(">u2").tobytes()).hexdigest())
"""


def test_converted_lm_file_decodes_under_other_kernels(checkpoints, tmp_path):
    """Converted where it was written, a reference LM file becomes portable: other kernels
    and thread counts decode the same codes."""
    out = tmp_path / "portable.ecdc"
    result = convert(FORMATS / "v0_lm_24khz.ecdc", "-o", out, "--threads", "1", "--weights",
                     checkpoints["encodec_24khz"], "--lm-weights", checkpoints["encodec_lm_24khz"], ok=False)
    if result.exit_code and not cdf_digests_match("v0_lm_24khz", checkpoints):
        pytest.skip("this machine rounds the reference's float LM otherwise")
    expected = hashlib.sha256(reference_codes("v0_lm_24khz").astype(">u2").tobytes()).hexdigest()
    for env, threads in [({"ATEN_CPU_CAPABILITY": "default"}, 3),
                         ({"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                           "ATEN_CPU_CAPABILITY": "avx2"}, 1)]:
        proc = subprocess.run([sys.executable, "-c", _DECODE, str(out), str(checkpoints["encodec_lm_24khz"]),
                               str(threads)], env={**os.environ, **env}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == expected, env


def test_any_damage_to_a_raw_v0_file_is_an_ecdc_error():
    """Seeded mutations and cuts: every outcome is codes or the library's own error."""
    data = golden("v0_raw_48khz")
    rng = np.random.default_rng(7)
    for _ in range(300):
        damaged = bytearray(data)
        for i in rng.integers(0, len(data), rng.integers(1, 4)):
            damaged[i] = rng.integers(0, 256)
        damaged = bytes(damaged[:rng.integers(5, len(data) + 2)])
        for read in (lambda b: api.read_codes(io.BytesIO(b)), lambda b: describe(io.BytesIO(b))):
            try:
                read(damaged)
            except EcdcError:
                pass
