"""The tokenizer: `encode`/`decode` in memory, `Codes` checked on creation, and codes as
.npz files both ways through the command line (`ecdc codes`, `decompress x.npz`,
`compress x.npz`)."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from encodec_cli import api
from encodec_cli.api import CompressOptions, DecompressOptions
from encodec_cli.cli import main
from encodec_cli.codes import Codes, CodesError, from_fields
from encodec_cli.errors import MismatchError
from encodec_cli.specs import SPECS

from .conftest import tone, write_audio


def _opts(checkpoints, model: str, bandwidth: float, lm: bool = False) -> CompressOptions:
    lm_name = model.replace("encodec_", "encodec_lm_")
    return CompressOptions(model=model, bandwidth=bandwidth, weights=checkpoints[model],
                           lm_weights=checkpoints[lm_name], lm=lm, raw_fallback=False)


def _dopts(checkpoints, model: str) -> DecompressOptions:
    lm = checkpoints[model.replace("encodec_", "encodec_lm_")]
    return DecompressOptions(weights=checkpoints[model], lm_weights=lm)


@pytest.mark.parametrize("model,bandwidth", [(m, b) for m in SPECS for b in SPECS[m].bandwidths])
def test_encode_gives_the_codes_that_compress_stores(checkpoints, model, bandwidth):
    rate, channels = (22050, 1) if model == "encodec_24khz" else (44100, 2)
    x = tone(1.3, rate, channels, seed=3)
    opts = _opts(checkpoints, model, bandwidth)
    codes = api.encode(x, rate, opts)
    stored = api.read_codes(io.BytesIO(api.compress(x, rate, opts)))
    assert codes == stored
    assert codes.codes.dtype == np.uint16 and codes.n_codebooks == SPECS[model].codebooks_for(bandwidth)
    assert (codes.source_sample_rate, codes.source_channels, codes.source_num_samples) == (rate, channels, len(x))
    assert codes.bandwidth == bandwidth and codes.weights_fingerprint == stored.weights_fingerprint
    if model == "encodec_48khz":
        assert codes.segment_frames.sum() == codes.frames and len(codes.scales) == len(codes.segment_frames) == 2


@pytest.mark.parametrize("model", list(SPECS))
def test_decode_of_encode_is_decompress_of_compress(checkpoints, model):
    rate = SPECS[model].sample_rate
    x = tone(2.2, 16000, 1, seed=5)
    opts = _opts(checkpoints, model, 6.0, lm=True)
    data = api.compress(x, 16000, opts)
    codes = api.encode(x, 16000, opts)
    assert api.read_codes(io.BytesIO(data), _dopts(checkpoints, model)) == codes  # LM-coded, the same codes
    audio, out_rate = api.decode(codes, _dopts(checkpoints, model))
    expected, expected_rate = api.decompress(data, _dopts(checkpoints, model))
    assert out_rate == expected_rate == 16000 and np.array_equal(audio, expected)
    model_audio, model_rate = api.decode(codes, DecompressOptions(weights=checkpoints[model], model_format=True))
    assert model_rate == rate and model_audio.shape == (codes.num_samples, SPECS[model].channels)


def test_a_clip_has_the_same_codes_alone_in_a_list_and_from_a_tensor(checkpoints):
    torch = pytest.importorskip("torch")
    clips = [tone(s, 24000, 1, seed=i) for i, s in enumerate((0.7, 2.1, 1.0))]
    opts = _opts(checkpoints, "encodec_24khz", 1.5)
    together = api.encode(clips, 24000, opts)
    assert [api.encode(c, 24000, opts) for c in clips] == together
    assert api.encode(torch.from_numpy(clips[1].T.copy()), 24000, opts) == together[1]  # [channels, frames]
    assert api.encode(torch.from_numpy(clips[1][:, 0].copy()), 24000, opts) == together[1]
    decoded = api.decode(together, _dopts(checkpoints, "encodec_24khz"))
    assert [a.shape for a, _ in decoded] == [c.shape for c in clips]


def test_generated_codes_decode_at_the_model_rate(checkpoints):
    """Codes a model generated have no original: its rate, channels and length are the model's."""
    rng = np.random.default_rng(0)
    codes = Codes(codes=rng.integers(0, 1024, (4, 75)), model="encodec_24khz")
    assert (codes.bandwidth, codes.num_samples, codes.source_sample_rate, codes.duration) == (3.0, 24000, 24000, 1.0)
    audio, rate = api.decode(codes, DecompressOptions(weights=checkpoints["encodec_24khz"]))
    assert rate == 24000 and audio.shape == (24000, 1) and np.abs(audio).max() > 0
    seg = Codes(codes=rng.integers(0, 1024, (2, 150 + 40)), model="encodec_48khz", segment_frames=[150, 40],
                scales=[0.1, 0.2])
    assert seg.num_samples == 47520 + 40 * 320
    audio, rate = api.decode(seg, DecompressOptions(weights=checkpoints["encodec_48khz"]))
    assert rate == 48000 and audio.shape == (seg.num_samples, 2)


@pytest.mark.parametrize("fields,message", [
    ({"codes": np.full((8, 5), 1024)}, "the field 'codes' holds 1024: codes are 0 to 1023"),
    ({"codes": np.full((8, 5), -1)}, "holds -1"),
    ({"codes": np.zeros((3, 5), np.uint16)}, "the field 'codes' has 3 codebooks; encodec_24khz has 2, 4, 8, 16, 32"),
    ({"codes": np.zeros((8, 5), np.float32)}, "the field 'codes' must hold integers, not float32"),
    ({"codes": np.zeros(40, np.uint16)}, "must be [codebooks, frames], not of shape (40,)"),
    ({"codes": np.zeros((8, 5), np.uint16), "model": "encodec_32khz"}, "the field 'model' must be one of"),
    ({"model": "encodec_24khz"}, "the field 'codes' is missing"),
    ({"codes": np.zeros((8, 5), np.uint16)}, "the field 'model' is missing"),
    ({"codes": np.zeros((8, 5), np.uint16), "bandwidth": 12.0}, "says 12.0 kbps, but 8 codebooks are 6 kbps"),
    ({"codes": np.zeros((8, 5), np.uint16), "num_samples": 5000}, "the field 'num_samples' (5000) needs 16 frames"),
    ({"codes": np.zeros((4, 5), np.uint16), "model": "encodec_48khz"}, "the field 'segment_frames' is missing"),
    ({"codes": np.zeros((4, 5), np.uint16), "model": "encodec_48khz", "segment_frames": [5], "scales": [0.0]},
     "the field 'scales' must be 1 positive numbers"),
    ({"codes": np.zeros((4, 300), np.uint16), "model": "encodec_48khz", "segment_frames": [100, 200],
      "scales": [1.0, 1.0]}, "is not the 1 s segments"),
    ({"codes": np.zeros((8, 5), np.uint16), "scales": [1.0]}, "the field 'scales' belongs to the 48 kHz model"),
    ({"codes": np.zeros((8, 5), np.uint16), "speaker": 3}, "unknown field 'speaker'"),
    ({"codes": np.zeros((8, 5), np.uint16), "source_sample_rate": 0}, "'source_sample_rate' must be a whole number"),
])
def test_invalid_codes_name_their_field(fields, message):
    if "model" not in fields and "codes" in fields and "'model' is missing" not in message:
        fields = {"model": "encodec_24khz", **fields}
    with pytest.raises(CodesError) as e:
        from_fields(fields)
    assert message in str(e.value)


def test_npz_codes_round_trip_through_the_command_line(checkpoints, tmp_path):
    w, lw = str(checkpoints["encodec_24khz"]), str(checkpoints["encodec_lm_24khz"])
    wav = write_audio(tmp_path / "a.wav", 2.5, 16000)
    run = CliRunner().invoke
    assert run(main, ["compress", str(wav), "--weights", w, "--lm-weights", lw, "-q"]).exit_code == 0
    # codes of the audio and of its .ecdc file are the same .npz content
    r = run(main, ["codes", str(wav), "-o", str(tmp_path / "from_audio.npz"), "--weights", w, "-q"])
    assert r.exit_code == 0, r.output
    r = run(main, ["codes", str(tmp_path / "a.ecdc"), "-o", str(tmp_path / "from_file.npz"), "--lm-weights", lw, "-q"])
    assert r.exit_code == 0, r.output
    a, b = Codes.load(str(tmp_path / "from_audio.npz")), Codes.load(str(tmp_path / "from_file.npz"))
    assert a == b and a.source_sample_rate == 16000 and a.source_num_samples == 40000
    # .npz -> audio equals .ecdc -> audio
    for src, dst in (("from_audio.npz", "x.wav"), ("a.ecdc", "y.wav")):
        r = run(main, ["decompress", str(tmp_path / src), "-o", str(tmp_path / dst), "--weights", w,
                       "--lm-weights", lw, "-q"])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "x.wav").read_bytes() == (tmp_path / "y.wav").read_bytes()
    # .npz -> .ecdc (LM-coded by default) gives the same codes back
    r = run(main, ["compress", str(tmp_path / "from_audio.npz"), "-o", str(tmp_path / "packed.ecdc"),
                   "--weights", w, "--lm-weights", lw, "-q"])
    assert r.exit_code == 0, r.output
    packed = api.read_codes(tmp_path / "packed.ecdc", DecompressOptions(lm_weights=lw))
    assert packed == a and api.read_codes(tmp_path / "a.ecdc", DecompressOptions(lm_weights=lw)) == a
    r = run(main, ["compress", str(tmp_path / "from_audio.npz"), "-b", "12", "-o", str(tmp_path / "z.ecdc")])
    assert r.exit_code == 2 and "-b does not apply to .npz codes" in r.output


def test_bad_npz_files_get_one_line_naming_file_and_field(checkpoints, tmp_path):
    w = str(checkpoints["encodec_24khz"])
    np.savez(tmp_path / "big.npz", codes=np.full((8, 10), 1024, np.int64), model="encodec_24khz")
    np.savez(tmp_path / "nomodel.npz", codes=np.zeros((8, 10), np.uint16))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    for name, says in (("big.npz", "the field 'codes' holds 1024"), ("nomodel.npz", "the field 'model' is missing"),
                       ("junk.npz", "not a readable .npz file")):
        for command in ("decompress", "compress"):
            out = "out.wav" if command == "decompress" else "out.ecdc"
            p = subprocess.run([sys.executable, "-m", "encodec_cli", command, str(tmp_path / name), "-o",
                                str(tmp_path / out), "--weights", w, "-q"], capture_output=True, text=True)
            assert p.returncode == 1 and p.stderr.startswith(f"Error: {tmp_path / name}: "), p.stderr
            assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
            assert not (tmp_path / out).exists()


def test_codes_keep_their_weights_fingerprint_and_decode_refuses_others(checkpoints):
    x = tone(0.5, 24000)
    codes = api.encode(x, 24000, _opts(checkpoints, "encodec_24khz", 6.0))
    arrays = dict(np.load(io.BytesIO(_npz(codes))))
    assert str(arrays["weights_fingerprint"]) == codes.weights_fingerprint.hex()
    other = Codes(**{**{f: getattr(codes, f) for f in ("codes", "model", "num_samples")},
                     "weights_fingerprint": bytes(8)})
    with pytest.raises(MismatchError, match="other weights"):
        api.decode(other, DecompressOptions(weights=checkpoints["encodec_24khz"]))


def _npz(codes: Codes) -> bytes:
    buf = io.BytesIO()
    codes.save(buf)
    return buf.getvalue()


def test_resume_redoes_codes_of_another_bandwidth(checkpoints, tmp_path):
    """--resume keeps an .npz of audio only if it holds the model and bandwidth asked for."""
    w = str(checkpoints["encodec_24khz"])
    wav = write_audio(tmp_path / "a.wav", 0.5, 24000)
    run = CliRunner().invoke
    assert run(main, ["codes", str(wav), "-o", str(tmp_path / "a.npz"), "-b", "3", "--weights", w, "-q"]).exit_code == 0
    for bandwidth, kept in (("3", True), ("6", False)):
        before = (tmp_path / "a.npz").stat().st_mtime_ns
        r = run(main, ["codes", str(wav), "-o", str(tmp_path / "a.npz"), "-b", bandwidth, "--weights", w, "-q",
                       "--resume"])
        assert r.exit_code == 0, r.output
        assert ((tmp_path / "a.npz").stat().st_mtime_ns == before) == kept
    assert Codes.load(str(tmp_path / "a.npz")).bandwidth == 6.0
