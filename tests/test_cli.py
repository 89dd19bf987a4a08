"""The ecdc command line, in process: round trips, odd inputs, batches and bad input."""
from __future__ import annotations

import io
import json
import os
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from encodec_cli.audio import files as A
from encodec_cli.audio import pipes
from encodec_cli.cli import main
from encodec_cli.codec import streaming as C
from encodec_cli.codec.models import SPECS
from encodec_cli.codec.weights import REGISTRY
from encodec_cli.entropy import lmcoder
from encodec_cli.entropy.lmcoder import LMEncoder, load_lm
from encodec_cli.formats import v1 as F
from encodec_cli.formats.reader import describe
from encodec_cli.formats.records import Header
from encodec_cli.testing import likely_codes, model_state

from .conftest import tone, write_audio

BANDWIDTHS = [("24khz", b) for b in (1.5, 3, 6, 12, 24)] + [("48khz", b) for b in (3, 6, 12, 24)]


def run(*args, ok=True, stdin=None):
    """ecdc in process. Given --weights for compress or decompress, it also gets --lm-weights
    of the same folder (random checkpoints under their official names), as for a user whose
    weights folder holds both checkpoints, unless --raw or --lm-weights is given."""
    args = [str(a) for a in args]
    if (args and args[0] in ("compress", "decompress") and "--weights" in args
            and "--raw" not in args and "--lm-weights" not in args):
        path = Path(args[args.index("--weights") + 1])
        lm = path.name.split("-")[0].replace("encodec_", "encodec_lm_")
        if lm in REGISTRY:
            args += ["--lm-weights", str(path.parent / REGISTRY[lm].filename)]
    result = CliRunner().invoke(main, args, input=stdin)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def weights_for(model, checkpoints):
    return checkpoints[f"encodec_{model}"]


def read_codes(path: Path) -> np.ndarray:
    """The codes of a file; an LM-coded one is decoded with the random LM of the session."""
    with open(path, "rb") as f:
        reader = F.Reader.open(f)
        packets = list(reader)
    h = reader.header
    if h.coder == "raw":
        return np.concatenate([p.codes for p in packets])
    folder = Path(random_checkpoints["encodec_24khz"]).parent
    lm, _ = load_lm(h.model, folder / REGISTRY[h.model.replace("encodec_", "encodec_lm_")].filename,
                    h.n_codebooks, download_bars=False)
    return np.concatenate(lmcoder.LMDecoder(lm, SPECS[h.model], h.n_codebooks).decode_many(packets))


random_checkpoints: dict = {}


@pytest.fixture(autouse=True)
def _known_checkpoints(checkpoints):
    random_checkpoints.update(checkpoints)


def assert_one_line_error(result, pattern: str):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert pattern in lines[0], lines[0]


def listing(folder: Path) -> set:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("model,bw", BANDWIDTHS)
def test_round_trip_every_bandwidth(tmp_path, checkpoints, model, bw):
    """The file path gives exactly the codes and audio of the model run directly."""
    spec = SPECS[f"encodec_{model}"]
    w = weights_for(model, checkpoints)
    src = write_audio(tmp_path / "in.wav", 1.3, spec.sample_rate, spec.channels, "FLOAT")
    run("compress", src, "-b", bw, "--model", model, "--weights", w, "-q")
    codec = C.load_codec(spec.name, w)
    wav = sf.read(src, dtype="float32", always_2d=True)[0].T.copy()
    expected = list(C.encode(codec, [wav], spec.codebooks_for(bw)))
    codes = read_codes(tmp_path / "in.ecdc")
    np.testing.assert_array_equal(codes, np.concatenate([p.codes for p in expected]))
    assert codes.shape[1] == spec.codebooks_for(bw)
    run("decompress", tmp_path / "in.ecdc", "-o", tmp_path / "out.wav", "--weights", w,
        "--bits", "float", "-q")
    out, rate = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    direct = np.concatenate(list(C.decode(codec, expected)), -1)[:, :wav.shape[1]].T
    assert rate == spec.sample_rate and out.shape == wav.T.shape
    np.testing.assert_allclose(out, direct, atol=1e-6)


ODD = {
    "8k_mono": (8000, 1, "PCM_16", 1.0),
    "44k_stereo": (44100, 2, "PCM_16", 1.0),
    "6_channels": (48000, 6, "PCM_16", 0.5),
    "24_bit": (22050, 1, "PCM_24", 0.7),
    "float": (16000, 2, "FLOAT", 0.7),
}


@pytest.mark.parametrize("case", list(ODD))
@pytest.mark.parametrize("model", ["24khz", "48khz"])
def test_odd_inputs_restore_rate_channels_length(tmp_path, checkpoints, case, model):
    rate, channels, subtype, seconds = ODD[case]
    src = write_audio(tmp_path / "in.flac" if subtype != "FLOAT" else tmp_path / "in.wav",
                      seconds, rate, channels, subtype)
    w = weights_for(model, checkpoints)
    run("compress", src, "-o", tmp_path / "x.ecdc", "--model", model, "--weights", w, "-q")
    run("decompress", tmp_path / "x.ecdc", "-o", tmp_path / "out.flac", "--weights", w, "-q")
    info = sf.info(tmp_path / "out.flac")
    assert (info.samplerate, info.channels, info.frames) == (rate, channels, sf.info(src).frames)
    assert info.subtype == ("PCM_24" if subtype == "PCM_24" else "PCM_16")  # the original's depth; FLAC has no float
    run("decompress", tmp_path / "x.ecdc", "-o", tmp_path / "native.wav", "--weights", w,
        "--model-format", "-q")
    spec = SPECS[f"encodec_{model}"]
    native = sf.info(tmp_path / "native.wav")
    assert (native.samplerate, native.channels) == (spec.sample_rate, spec.channels)
    with open(tmp_path / "x.ecdc", "rb") as f:
        h, end = describe(f)[:2]
    assert native.frames == end.num_samples == h.num_samples


@pytest.mark.parametrize("signal", ["one_sample", "silence"])
def test_one_sample_and_silence(tmp_path, checkpoints, signal):
    x = np.zeros((1, 1) if signal == "one_sample" else (24000, 1), np.float32)
    if signal == "one_sample":
        x[0] = 0.5
    sf.write(tmp_path / "in.wav", x, 24000)
    w = checkpoints["encodec_24khz"]
    run("compress", tmp_path / "in.wav", "--weights", w, "-q")
    assert read_codes(tmp_path / "in.ecdc").shape == (len(x) // 320 + (len(x) % 320 > 0), 8)
    run("decompress", tmp_path / "in.ecdc", "-o", tmp_path / "out.wav", "--weights", w, "-q")
    out, _ = sf.read(tmp_path / "out.wav")
    assert len(out) == len(x) and np.isfinite(out).all()


def test_several_files_into_folder_and_next_to_inputs(tmp_path, checkpoints):
    w = checkpoints["encodec_24khz"]
    srcs = [write_audio(tmp_path / f"f{i}.wav", 0.5 + i * 0.2, 24000, seed=i) for i in range(3)]
    (tmp_path / "out").mkdir()
    run("compress", *srcs, "-o", tmp_path / "out", "--weights", w, "-q")
    assert listing(tmp_path / "out") == {"f0.ecdc", "f1.ecdc", "f2.ecdc"}
    run("compress", *srcs, "--weights", w, "-q")
    for i in range(3):
        assert (tmp_path / f"f{i}.ecdc").read_bytes() == (tmp_path / "out" / f"f{i}.ecdc").read_bytes()
    ecdcs = sorted((tmp_path / "out").iterdir())
    run("decompress", *ecdcs, "--weights", w, "-q")
    for i in range(3):
        assert sf.info(tmp_path / "out" / f"f{i}.wav").frames == sf.info(srcs[i]).frames


def test_jobs_give_the_same_files(tmp_path, checkpoints):
    w = checkpoints["encodec_24khz"]
    srcs = [write_audio(tmp_path / f"f{i}.wav", 0.6, 24000, seed=i) for i in range(3)]
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
    run("compress", *srcs, "-o", tmp_path / "one", "--weights", w, "-q")
    run("compress", *srcs, "-o", tmp_path / "two", "--weights", w, "-q", "--jobs", "2")
    for i in range(3):
        assert (tmp_path / "one" / f"f{i}.ecdc").read_bytes() == (tmp_path / "two" / f"f{i}.ecdc").read_bytes()


def test_info_human_and_json(tmp_path, checkpoints):
    w = checkpoints["encodec_24khz"]
    src = write_audio(tmp_path / "in.wav", 2.0, 44100, 2)
    run("compress", src, "-b", "3", "--weights", w, "-q")
    text = run("info", tmp_path / "in.ecdc").output
    assert "encodec_24khz" in text and "3 kbps nominal, 4 codebooks" in text
    assert "44100 Hz, 2 channels, 88200 samples" in text and "kbps achieved" in text
    data = json.loads(run("info", "--json", tmp_path / "in.ecdc").output)
    size = (tmp_path / "in.ecdc").stat().st_size
    assert data["size_bytes"] == size and data["coder"] == "lm" and data["frames"] == 150  # the default coder
    assert data["achieved_kbps"] == pytest.approx(size * 8 / 2.0 / 1000, rel=1e-3)


def test_lm_round_trip_and_info(tmp_path, checkpoints):
    w, lw = checkpoints["encodec_24khz"], checkpoints["encodec_lm_24khz"]
    src = write_audio(tmp_path / "in.wav", 1.5, 24000)
    run("compress", src, "-o", tmp_path / "raw.ecdc", "--weights", w, "--raw", "-q")
    run("compress", src, "-o", tmp_path / "lm.ecdc", "--weights", w, "--lm-weights", lw, "-q")  # the default
    np.testing.assert_array_equal(read_codes(tmp_path / "raw.ecdc"), read_codes(tmp_path / "lm.ecdc"))
    data = json.loads(run("info", "--json", tmp_path / "lm.ecdc").output)
    assert data["coder"] == "lm" and data["lm_fingerprint"]
    for name in ("raw", "lm"):
        run("decompress", tmp_path / f"{name}.ecdc", "--weights", w, "--lm-weights", lw, "-q")
    assert (tmp_path / "raw.wav").read_bytes() == (tmp_path / "lm.wav").read_bytes()


def lm_coded_file(path: Path, checkpoints) -> np.ndarray:
    """An LM-coded file whose packets really are range coded (codes the LM likes)."""
    w, lw = checkpoints["encodec_24khz"], checkpoints["encodec_lm_24khz"]
    codec = C.load_codec("encodec_24khz", w)
    lm, lm_fp = load_lm("encodec_24khz", lw, 4)
    codes = likely_codes(lm, 4, 80)
    spec = SPECS["encodec_24khz"]
    h = Header(model=spec.name, coder="lm", n_codebooks=4, bandwidth=3.0, sample_rate=24000, channels=1,
               source_sample_rate=24000, source_channels=1, num_samples=None, source_num_samples=None,
               weights_fingerprint=codec.fingerprint, lm_fingerprint=lm_fp)
    with open(path, "wb") as f:
        writer = F.Writer(f, h)
        enc = LMEncoder(lm, lm_fp, spec, 4)
        for part in (codes[:40], codes[40:]):
            payload, flags = enc.encode(part, [(len(part), 1.0)])
            assert flags == 0
            writer.write_packet([(len(part), 1.0)], payload, flags)
        writer.finish(80 * 320, 80 * 320)
    return codes


def test_lm_decoder_with_other_arithmetic_stops_cleanly(tmp_path, checkpoints, monkeypatch):
    lm_coded_file(tmp_path / "x.ecdc", checkpoints)
    args = ("decompress", tmp_path / "x.ecdc", "-o", tmp_path / "x.wav",
            "--weights", checkpoints["encodec_24khz"], "--lm-weights", checkpoints["encodec_lm_24khz"])
    run(*args)
    os.unlink(tmp_path / "x.wav")
    original = lmcoder.model_probabilities
    monkeypatch.setattr(lmcoder, "model_probabilities", lambda g: np.roll(original(g), 1, axis=-1))
    assert_one_line_error(run(*args, ok=False), "fail their checksum")
    assert listing(tmp_path) == {"x.ecdc"}


def test_damaged_lm_words_give_one_line_error(tmp_path, checkpoints):
    """A packet whose range coder words were altered (record CRC made to match again)."""
    lm_coded_file(tmp_path / "x.ecdc", checkpoints)
    data = bytearray((tmp_path / "x.ecdc").read_bytes())
    reader = F.Reader.open(io.BytesIO(bytes(data)))
    packet = next(iter(reader))
    head = 5 + 2 + 6 * len(packet.segments)          # record head, packet head, segment table
    at = packet.offset + head + 4 + 2                   # inside the first range coder word
    data[at] ^= 0x40
    size = int.from_bytes(data[packet.offset + 1:packet.offset + 5], "big")
    end = packet.offset + 5 + size
    data[end:end + 4] = zlib.crc32(bytes(data[packet.offset:end])).to_bytes(4, "big")
    (tmp_path / "y.ecdc").write_bytes(bytes(data))
    result = run("decompress", tmp_path / "y.ecdc", "-o", tmp_path / "y.wav", "--weights",
                 checkpoints["encodec_24khz"], "--lm-weights", checkpoints["encodec_lm_24khz"], ok=False)
    assert_one_line_error(result, "LM packet 1")
    assert not (tmp_path / "y.wav").exists()


# ---------------------------------------------------------------- bad input

@pytest.fixture()
def ecdc_file(tmp_path, checkpoints) -> Path:
    src = write_audio(tmp_path / "in.wav", 1.0, 24000)
    run("compress", src, "--weights", checkpoints["encodec_24khz"], "-q")
    os.unlink(src)
    return tmp_path / "in.ecdc"


def test_missing_input(tmp_path, checkpoints):
    assert_one_line_error(run("compress", tmp_path / "nope.wav", ok=False), "does not exist")
    assert_one_line_error(run("decompress", tmp_path / "nope.ecdc", ok=False), "does not exist")
    assert listing(tmp_path) == set()


def test_unreadable_and_empty_audio(tmp_path, checkpoints):
    w = checkpoints["encodec_24khz"]
    (tmp_path / "text.wav").write_text("hello, not audio")
    (tmp_path / "zero.wav").write_bytes(b"")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 24000)
    before = listing(tmp_path)
    assert_one_line_error(run("compress", tmp_path / "text.wav", "--weights", w, ok=False),
                          "cannot read audio from")
    assert_one_line_error(run("compress", tmp_path / "zero.wav", "--weights", w, ok=False),
                          "cannot read audio from")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("model", ["24khz", "48khz"])
def test_empty_audio_gives_a_valid_empty_file(tmp_path, checkpoints, model):
    """Archives hold empty files too: they compress, and decompress to empty audio."""
    sf.write(tmp_path / "empty.wav", np.zeros((0, 2)), 44100)
    w = weights_for(model, checkpoints)
    run("compress", tmp_path / "empty.wav", "--model", model, "--weights", w, "-q")
    data = json.loads(run("info", "--json", tmp_path / "empty.ecdc").output)
    assert (data["frames"], data["packets"], data["source_samples"]) == (0, 0, 0)
    run("decompress", tmp_path / "empty.ecdc", "-o", tmp_path / "out.wav", "--weights", w, "-q")
    info = sf.info(tmp_path / "out.wav")
    assert (info.frames, info.samplerate, info.channels) == (0, 44100, 2)


def test_not_ecdc(tmp_path, checkpoints):
    src = write_audio(tmp_path / "in.wav", 0.2, 24000)
    assert_one_line_error(run("decompress", src, "-o", tmp_path / "o.wav", ok=False),
                          "not an .ecdc file")
    assert_one_line_error(run("info", src, ok=False), "not an .ecdc file")
    assert listing(tmp_path) == {"in.wav"}


def test_truncated_ecdc(ecdc_file, checkpoints):
    data = ecdc_file.read_bytes()
    ecdc_file.write_bytes(data[:len(data) - 30])
    r = run("decompress", ecdc_file, "--weights", checkpoints["encodec_24khz"], ok=False)
    assert_one_line_error(r, "truncated file")
    assert listing(ecdc_file.parent) == {"in.ecdc"}


def test_corrupted_ecdc_names_the_byte(ecdc_file, checkpoints):
    data = bytearray(ecdc_file.read_bytes())
    data[200] ^= 0xFF
    ecdc_file.write_bytes(bytes(data))
    r = run("decompress", ecdc_file, "--weights", checkpoints["encodec_24khz"], ok=False)
    assert_one_line_error(r, "fails its CRC-32 check")
    assert "at byte" in r.stderr
    assert listing(ecdc_file.parent) == {"in.ecdc"}


def test_unknown_version(ecdc_file, checkpoints):
    data = bytearray(ecdc_file.read_bytes())
    data[8] = 9
    ecdc_file.write_bytes(bytes(data))
    r = run("decompress", ecdc_file, "--weights", checkpoints["encodec_24khz"], ok=False)
    assert_one_line_error(r, "unsupported .ecdc format version 9")


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("other") / "other-24khz.th"
    torch.save(model_state("encodec_24khz", seed=99), path)
    return path


def test_wrong_weights(ecdc_file, other_weights):
    r = run("decompress", ecdc_file, "--weights", other_weights, ok=False)
    assert_one_line_error(r, "compressed with other weights")
    assert listing(ecdc_file.parent) == {"in.ecdc"}


def test_weights_of_another_model(tmp_path, checkpoints):
    src = write_audio(tmp_path / "in.wav", 0.2, 24000)
    r = run("compress", src, "--weights", checkpoints["encodec_48khz"], ok=False)
    assert_one_line_error(r, "holds the weights of encodec_48khz, which is not the model needed here")
    assert listing(tmp_path) == {"in.wav"}


@pytest.mark.parametrize("model,bw", [("24khz", 5), ("48khz", 1.5), ("24khz", 48)])
def test_unsupported_bandwidth(tmp_path, model, bw):
    src = write_audio(tmp_path / "in.wav", 0.2, 24000)
    r = run("compress", src, "--model", model, "-b", bw, ok=False)
    assert r.exit_code == 2 and "Error: Invalid value for '-b' / '--bandwidth': encodec_" in r.stderr  # usage
    assert "kbps, not" in r.stderr
    assert listing(tmp_path) == {"in.wav"}


def test_existing_output_needs_force(ecdc_file, checkpoints):
    w = checkpoints["encodec_24khz"]
    out = ecdc_file.parent / "in.wav"
    out.write_bytes(b"precious")
    r = run("decompress", ecdc_file, "--weights", w, ok=False)
    assert_one_line_error(r, "exists; give another name with -o OTHER, or replace it with -f")  # audio
    assert out.read_bytes() == b"precious"
    r = run("compress", write_audio(out.with_name("x.wav"), 0.1, 24000), "-o", ecdc_file, ok=False)
    assert_one_line_error(r, "exists; use -f/--force to overwrite")
    run("decompress", ecdc_file, "--weights", w, "-f", "-q")
    assert sf.info(out).frames == 24000


def test_offline_without_weights_says_what_to_do(tmp_path):
    src = write_audio(tmp_path / "in.wav", 0.2, 24000)
    r = run("compress", src, "-q", ok=False)
    assert_one_line_error(r, "encodec_24khz-d7cc33bc.th")
    line = r.stderr
    assert "http://127.0.0.1:9/encodec/encodec_24khz-d7cc33bc.th" in line
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in line and "--weights" in line
    assert listing(tmp_path) == {"in.wav", "torch-home"} or listing(tmp_path) == {"in.wav"}


def test_usage_errors_are_click_errors(tmp_path):
    r = run("compress", ok=False)
    assert r.exit_code == 2
    r = run("compress", tmp_path / "a.wav", tmp_path / "b.wav", "-o", tmp_path / "x.ecdc", ok=False)
    assert_one_line_error(r, "x.ecdc names a file, but 2 inputs need a folder")


def test_clipping_is_counted_and_saturates(tmp_path):
    sink = A.FileSink(str(tmp_path / "c.wav"), 8000, 1, "16", "WAV")
    sink.write(np.array([[1.5], [-2.0], [0.5]], np.float32))
    sink.close()
    assert sink.clipped == 2
    data, _ = sf.read(tmp_path / "c.wav", dtype="int16")
    assert data.tolist() == [32767, -32768, 16384]
    buf = io.BytesIO()
    pipe = pipes.WavPipeSink(buf, 8000, 1, "16")
    pipe.write(np.array([[1.5], [-2.0]], np.float32))
    assert pipe.clipped == 2 and buf.getvalue()[-4:] == np.array([32767, -32768], "<i2").tobytes()


def test_non_finite_input_samples(tmp_path, checkpoints):
    x = tone(0.5, 24000)
    x[100:200] = np.nan
    x[300] = np.inf
    sf.write(tmp_path / "nan.wav", x, 24000, subtype="FLOAT")
    w = checkpoints["encodec_24khz"]
    run("compress", tmp_path / "nan.wav", "--weights", w, "-q")
    run("decompress", tmp_path / "nan.ecdc", "-o", tmp_path / "out.wav", "--bits", "float", "--weights", w, "-q")
    out, _ = sf.read(tmp_path / "out.wav")
    assert len(out) == len(x) and np.isfinite(out).all()
    sink = A.FileSink(str(tmp_path / "c.wav"), 8000, 1, "16", "WAV")
    sink.write(np.array([[np.nan], [0.5]], np.float32))
    sink.close()
    assert sink.clipped == 1 and sf.read(tmp_path / "c.wav", dtype="int16")[0].tolist() == [0, 16384]


def test_help_lists_every_option():
    text = run("compress", "--help").output
    for opt in ("--bandwidth", "--model", "--weights", "--lm", "--lm-weights", "--force",
                "--quiet", "--output", "--threads", "--jobs"):
        assert opt in text
    text = run("decompress", "--help").output
    for opt in ("--bits", "--model-format", "--weights", "--force"):
        assert opt in text


def test_tone_helper_is_deterministic():
    np.testing.assert_array_equal(tone(0.1, 8000, 2), tone(0.1, 8000, 2))


# ---------------------------------------------------------------- outputs

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path, checkpoints, umask):
    src = write_audio(tmp_path / "in.wav", 0.3, 24000)
    old = os.umask(umask)
    try:
        run("compress", src, "--weights", checkpoints["encodec_24khz"], "--raw", "-q")
        run("decompress", tmp_path / "in.ecdc", "-o", tmp_path / "out.wav",
            "--weights", checkpoints["encodec_24khz"], "-q")
    finally:
        os.umask(old)
    for name in ("in.ecdc", "out.wav"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_force_keeps_the_mode_and_the_symlink(tmp_path, checkpoints):
    src = write_audio(tmp_path / "in.wav", 0.3, 24000)
    w = checkpoints["encodec_24khz"]
    real = tmp_path / "store" / "real.ecdc"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    (tmp_path / "link.ecdc").symlink_to(real)
    run("compress", src, "-o", tmp_path / "link.ecdc", "-f", "--weights", w, "--raw", "-q")
    assert (tmp_path / "link.ecdc").is_symlink() and real.read_bytes().startswith(b"\x89ECDC")
    assert real.stat().st_mode & 0o777 == 0o640
    assert listing(real.parent) == {"real.ecdc"}


@pytest.mark.parametrize("output, message", [("", "the output path is empty"),
                                             ("newdir/x.ecdc", "folder ")])
def test_bad_output_paths_fail_first_and_name_the_path(tmp_path, checkpoints, monkeypatch, output, message):
    monkeypatch.chdir(tmp_path)
    src = write_audio(tmp_path / "in.wav", 0.3, 24000)
    from encodec_cli.codec import streaming as codec

    monkeypatch.setattr(codec, "load_codec", lambda *a, **k: pytest.fail("work done before the check"))
    result = run("compress", src, "-o", output, "--weights", checkpoints["encodec_24khz"], ok=False)
    assert_one_line_error(result, message)
    assert ".part" not in result.stderr and listing(tmp_path) == {"in.wav"}


def test_output_that_is_the_input_is_refused(tmp_path, checkpoints):
    src = write_audio(tmp_path / "x.wav", 0.3, 24000)
    before = src.read_bytes()
    result = run("compress", src, "-o", src, "-f", "--weights", checkpoints["encodec_24khz"], ok=False)
    assert_one_line_error(result, "is the input")
    assert src.read_bytes() == before


def test_messages_say_what_is_wrong(tmp_path, checkpoints):
    (tmp_path / "folder").mkdir()
    assert_one_line_error(run("info", tmp_path / "folder", ok=False), "is a folder, not an .ecdc file")
    a, b = (write_audio(tmp_path / f"{n}.wav", 0.2, 24000) for n in "ab")
    assert_one_line_error(run("compress", a, b, "-o", "-", ok=False), "-o - (stdout) takes a single input")
    r = run("compress", a, "-b", "6.0000001", ok=False)
    assert r.exit_code == 2 and "not 6.0000001" in r.stderr


def test_impossible_format_and_full_disk_are_one_line_errors(tmp_path, checkpoints, monkeypatch):
    w = checkpoints["encodec_24khz"]
    src = write_audio(tmp_path / "in.wav", 0.5, 24000)
    run("compress", src, "--weights", w, "--raw", "-q")
    r = run("decompress", tmp_path / "in.ecdc", "-o", tmp_path / "x.flac", "--bits", "float", "--weights", w,
            ok=False)
    assert_one_line_error(r, "FLAC cannot hold float samples; use --bits 16 or 24")

    def full(self, data):
        raise sf.LibsndfileError(2, "Error writing: ")  # what libsndfile reports when the disk is full

    monkeypatch.setattr(sf.SoundFile, "write", full)
    r = run("decompress", tmp_path / "in.ecdc", "-o", tmp_path / "y.wav", "--weights", w, ok=False)
    assert_one_line_error(r, f"cannot write {tmp_path / 'y.wav'}: the disk is full")
    assert listing(tmp_path) == {"in.wav", "in.ecdc"}


def test_lm_weights_with_raw_are_accepted_and_not_loaded(tmp_path, checkpoints):
    """Scripts that always pass both weights options need not special-case --raw."""
    src = write_audio(tmp_path / "a.wav", 0.2, 24000)
    run("compress", src, "--raw", "--weights", checkpoints["encodec_24khz"], "--lm-weights", tmp_path / "none.th")
    with open(tmp_path / "a.ecdc", "rb") as f:
        assert describe(f)[0].coder == "raw"


def test_decompress_refuses_to_write_to_a_terminal(tmp_path, checkpoints):
    import pty
    import subprocess

    w = checkpoints["encodec_24khz"]
    src = write_audio(tmp_path / "a.wav", 0.2, 24000)
    run("compress", src, "--weights", w, "--raw", "-q")
    leader, follower = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "encodec_cli", "decompress", str(tmp_path / "a.ecdc"),
                            "-o", "-", "--weights", str(w)], stdout=follower, stderr=subprocess.PIPE,
                           timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert p.returncode == 1
    assert p.stderr.decode().strip() == "Error: refusing to write WAV data to a terminal; use -o FILE or a pipe"


def test_api_checks_and_scales_arrays(checkpoints):
    from encodec_cli import api
    from encodec_cli.errors import AudioError

    opts = api.CompressOptions(weights=checkpoints["encodec_24khz"], lm=False)
    x = tone(0.3, 24000)
    as_int16 = np.round(x * 32767).astype(np.int16)
    assert api.compress(as_int16, 24000, opts) == api.compress(as_int16.astype(np.float32) / 32768, 24000, opts)
    with pytest.raises(AudioError, match="look channels-first; pass \\[frames, channels\\]"):
        api.compress(np.stack([x[:, 0], x[:, 0]]), 24000, opts)
    with pytest.raises(AudioError, match="not 3-D"):
        api.compress(x[None], 24000, opts)


@pytest.mark.parametrize("total", [None, 120.0])
def test_progress_shows_whole_seconds(total):
    from tqdm import tqdm

    from encodec_cli.runner import bar_format

    line = tqdm.format_meter(12.345678, total, 3.0, prefix="compress", unit="s", bar_format=bar_format(total))
    assert re.search(r"\b12\b", line) and "12.3" not in line and "s audio" in line, line


def test_info_takes_several_files(tmp_path, checkpoints):
    w = checkpoints["encodec_24khz"]
    for i, seconds in enumerate((0.4, 0.8)):
        write_audio(tmp_path / f"f{i}.wav", seconds, 24000)
        run("compress", tmp_path / f"f{i}.wav", "--weights", w, "--raw", "-q")
    data = json.loads(run("info", "--json", tmp_path / "f0.ecdc", tmp_path / "f1.ecdc").output)
    assert [d["frames"] for d in data] == [30, 60] and data[1]["file"] == str(tmp_path / "f1.ecdc")
    text = run("info", tmp_path / "f0.ecdc", tmp_path / "f1.ecdc").output
    assert text.count("model:") == 2 and f"file:      {tmp_path / 'f1.ecdc'}" in text
    r = run("info", tmp_path / "f0.ecdc", tmp_path / "nope.ecdc", ok=False)
    assert r.exit_code == 1 and "model:" in r.output and f"Error: {tmp_path / 'nope.ecdc'} does not exist" in r.stderr


@pytest.mark.parametrize("ext, fmt, subtype", [("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS"),
                                               ("aiff", "AIFF", "PCM_16"), ("flac", "FLAC", "PCM_16")])
def test_decompress_writes_other_formats(tmp_path, checkpoints, ext, fmt, subtype):
    w = checkpoints["encodec_24khz"]
    src = write_audio(tmp_path / "a.wav", 0.5, 24000)
    run("compress", src, "--weights", w, "--raw", "-q")
    run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / f"b.{ext}", "--weights", w, "-q")
    info = sf.info(tmp_path / f"b.{ext}")
    assert (info.format, info.subtype, info.samplerate) == (fmt, subtype, 24000)
    assert abs(info.frames - 12000) <= (312 if ext == "opus" else 0)
    (tmp_path / "out").mkdir()
    run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / "out", "--format", ext, "--weights", w, "-q")
    assert listing(tmp_path / "out") == {f"a.{ext}"}


def test_opus_needs_an_opus_rate_and_stdout_takes_any_format(tmp_path, checkpoints):
    import subprocess

    w = checkpoints["encodec_24khz"]
    src = write_audio(tmp_path / "a.wav", 0.5, 44100)
    run("compress", src, "--weights", w, "--raw", "-q")
    r = run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / "b.opus", "--weights", w, ok=False)
    assert_one_line_error(r, "Opus stores 8, 12, 16, 24 or 48 kHz, not 44100 Hz")
    run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / "b.opus", "--model-format", "--weights", w, "-q")
    p = subprocess.run([sys.executable, "-m", "encodec_cli", "decompress", str(tmp_path / "a.ecdc"), "-o", "-",
                        "--format", "flac", "--weights", str(w), "-q"], capture_output=True, timeout=120)
    assert p.returncode == 0 and p.stdout[:4] == b"fLaC"
    (tmp_path / "c.flac").write_bytes(p.stdout)
    assert sf.info(tmp_path / "c.flac").frames == 22050


def test_source_bit_depth_and_tags_are_kept(tmp_path, checkpoints):
    w = checkpoints["encodec_24khz"]
    x = tone(0.5, 44100, 2)
    with sf.SoundFile(tmp_path / "a.flac", "w", 44100, 2, subtype="PCM_24") as f:
        f.title, f.artist = "Interview, part 1", "Zoë Example"
        f.write(x)
    sf.write(tmp_path / "b.wav", x, 44100, subtype="FLOAT")
    for name in ("a.flac", "b.wav"):
        run("compress", tmp_path / name, "--weights", w, "--raw", "-q")
    run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / "a2.flac", "--weights", w, "-q")
    run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / "a2.wav", "--weights", w, "-q")
    run("decompress", tmp_path / "b.ecdc", "-o", tmp_path / "b2.wav", "--weights", w, "-q")
    run("decompress", tmp_path / "b.ecdc", "-o", tmp_path / "b3.flac", "--weights", w, "-q")
    run("decompress", tmp_path / "a.ecdc", "-o", tmp_path / "a3.flac", "--bits", "16", "--weights", w, "-q")
    for name, subtype in (("a2.flac", "PCM_24"), ("a2.wav", "PCM_24"), ("b2.wav", "FLOAT"),
                          ("b3.flac", "PCM_16"), ("a3.flac", "PCM_16")):   # FLAC has no float: 16
        assert sf.info(tmp_path / name).subtype == subtype, name
    for name in ("a2.flac", "a2.wav"):
        with sf.SoundFile(tmp_path / name) as f:
            assert (f.title, f.artist) == ("Interview, part 1", "Zoë Example"), name
    assert json.loads(run("info", "--json", tmp_path / "a.ecdc").output)["size_bytes"] > 0
