"""`ecdc eval`: each metric on signals with known answers, Opus next to ecdc, the JSON rows,
the plot, the `eval` extra."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from encodec_cli.cli import main
from encodec_cli.evaluation import metrics as M
from encodec_cli.evaluation import opus as O
from encodec_cli.evaluation import report as E
from encodec_cli.formats.v1 import MAGIC

from .conftest import tone, write_audio

pytest.importorskip("pystoi", reason="the eval extra: pip install 'encodec-cli[eval]'")
KEYS = {"codec", "bandwidth", "kbps", "si_snr", "mel_distance", "stoi", "seconds", "bytes"}


def noise(n: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels))


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voiced bursts (harmonics of a gliding pitch, syllable envelopes) and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 30) if k * 150 < rate / 2)
    syllables = np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None) ** 2
    return (0.2 * voice * syllables + 0.002 * rng.standard_normal(len(t)))[:, None]


# ---------------------------------------------------------------- SI-SNR

@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 30.0])
def test_si_snr_of_signal_plus_noise_at_a_set_level(snr):
    x = tone(1.0, 16000)[:, 0].astype(np.float64)
    x -= x.mean()
    e = noise(len(x))[:, 0]
    e -= e.mean()
    e -= (e @ x) / (x @ x) * x                  # orthogonal to the signal
    e *= np.sqrt((x @ x) / (e @ e) / 10 ** (snr / 10))
    assert M.si_snr(x, x + e) == pytest.approx(snr, abs=1e-9)
    assert M.si_snr(x, 0.25 * (x + e)) == pytest.approx(snr, abs=1e-9)  # scale-invariant
    assert M.si_snr(x, x + e + 0.5) == pytest.approx(snr, abs=1e-9)     # offsets removed


def test_si_snr_edges():
    x = tone(0.5, 16000, channels=2)
    assert M.si_snr(x, x) == M.SI_SNR_CAP
    assert M.si_snr(np.zeros_like(x), x) is None                      # silent reference
    assert M.si_snr(x, np.zeros_like(x)) == -M.SI_SNR_CAP
    y = x.copy()
    y[:, 1] = 0                                                         # one channel lost: half the energy
    assert M.si_snr(x, y) == pytest.approx(0.0, abs=0.1)
    with pytest.raises(ValueError, match="differ in shape"):
        M.si_snr(x, x[:-1])


# ---------------------------------------------------------------- mel spectrograms

def test_mel_filterbank_is_htk_triangles():
    rate, n_fft = 16000, 4096
    fb = M.mel_filterbank(rate, n_fft, 40)
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42) / 2595) - 1)
    assert fb.shape == (40, n_fft // 2 + 1)
    # filter m: 1 at its centre, falling linearly to 0 at its neighbours' centres
    for m in range(40):
        lo, mid, hi = edges[m:m + 3]
        triangle = np.where(freqs < mid, (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))
        np.testing.assert_allclose(fb[m], np.clip(triangle, 0, None), atol=1e-9)
        assert abs(freqs[fb[m].argmax()] - mid) <= rate / n_fft
    # neighbouring triangles add up to 1 between the first and the last centre
    inner = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb.sum(axis=0)[inner], 1.0, atol=1e-9)


@pytest.mark.parametrize("n_fft", [64, 512, 2048])
def test_normalized_stft_gives_white_noise_its_variance_in_every_bin(n_fft):
    v = 0.04
    x = np.sqrt(v) * noise(200_000, seed=n_fft)[:, 0]
    power = np.concatenate([c ** 2 for c in M._mel_chunks(x, np.eye(n_fft // 2 + 1), n_fft, n_fft // 4)])
    assert len(power) == 1 + len(x) // (n_fft // 4)                 # centred frames
    assert power[:, 1:-1].mean() == pytest.approx(v, rel=0.02)      # same for every window size


def test_mel_distance_known_values():
    rate = 24000
    x = tone(2.0, rate)
    y = x + 0.01 * noise(len(x), 1)
    assert M.mel_distance(x, x, rate) == 0.0
    d = M.mel_distance(x, y, rate)
    assert d > 0
    assert M.mel_distance(y, x, rate) == pytest.approx(d, rel=1e-12)           # symmetric
    assert M.mel_distance(3 * x, 3 * y, rate) == pytest.approx(3 * d, rel=1e-6)  # linear in level
    assert M.mel_distance(x, x + 0.1 * noise(len(x), 1), rate) > 5 * d      # grows with the error
    # means, not sums: stationary noise against silence gives the same value for 2 s and 4 s
    long = 0.1 * noise(4 * rate, 2)
    short_d = M.mel_distance(long[: 2 * rate], np.zeros((2 * rate, 1)), rate)
    assert M.mel_distance(long, np.zeros_like(long), rate) == pytest.approx(short_d, rel=0.02)


def test_mel_distance_against_a_direct_computation():
    """The paper's formula written out with a plain DFT matrix, for one scale mix."""
    rate = 8000
    x, y = 0.3 * noise(3000, 3), 0.3 * noise(3000, 4)
    terms = []
    for i in range(5, 12):
        n, hop = 2 ** i, 2 ** i // 4
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
        dft = np.exp(-2j * np.pi * np.outer(np.arange(n // 2 + 1), np.arange(n)) / n)
        fb = M.mel_filterbank(rate, n, 64)

        def spec(s):
            p = np.pad(s[:, 0], n // 2, mode="reflect")
            frames = np.stack([p[t * hop:t * hop + n] for t in range(1 + len(s) // hop)])
            return np.abs(frames * w @ dft.T) / np.sqrt((w ** 2).sum()) @ fb.T

        d = spec(x) - spec(y)
        terms.append(np.abs(d).mean() + np.sqrt((d ** 2).mean()))
    assert M.mel_distance(x, y, rate) == pytest.approx(np.mean(terms), rel=1e-9)


# ---------------------------------------------------------------- STOI

def test_stoi():
    rate = 16000
    x = speechlike(3.0, rate)
    assert M.stoi(x, x, rate) == pytest.approx(1.0, abs=1e-6)
    light = M.stoi(x, x + 0.05 * noise(len(x), 5), rate)
    heavy = M.stoi(x, x + 0.5 * noise(len(x), 5), rate)
    assert 0 < heavy < light < 1
    assert M.stoi(x[::2], x[::2], rate // 2) is None               # 8 kHz: below STOI's rate
    assert M.stoi(x[:2000], x[:2000], rate) is None                # 0.125 s: too short to measure


# ---------------------------------------------------------------- Opus

def _check_opus(backend, rate):
    x = np.repeat(speechlike(2.0, rate), 2, axis=1)
    x[:, 1] *= 0.5
    coded = backend.code(x, rate, 24.0)
    y = E._fit(coded.audio, len(x))
    assert abs(len(coded.audio) - len(x)) <= rate // 100 and y.shape == x.shape
    lags = range(-20, 21)
    corr = [np.dot(x[100:-100, 0], y[100 + k:len(y) - 100 + k, 0]) for k in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 3                     # in time with the input (0.06 ms)
    assert M.si_snr(x, y) > 10.0
    assert 20 < len(coded.data) * 8 / 2.0 / 1000 < 40                # about 24 kbps
    assert coded.data[:4] == b"OggS"


def test_opus_through_libsndfile():
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Ogg/Opus")
    for rate in (48000, 44100):
        _check_opus(O.LibsndfileOpus(), rate)


def test_opus_through_opus_tools():
    found = O.find_opus()
    if not isinstance(found, O.OpusTools):
        pytest.skip("opusenc/opusdec not on the PATH")
    for rate in (48000, 44100):
        _check_opus(found, rate)


# ---------------------------------------------------------------- the command

def _eval(tmp_path, w24, *args, input_=None):
    src = input_ or write_audio(tmp_path / "in.wav", 2.0, 24000)
    return CliRunner().invoke(main, ["eval", str(src), "--weights", str(w24), "--raw", "-q", *map(str, args)])


def test_eval_json_rows_with_opus(tmp_path, w24):
    if O.find_opus() is None:
        pytest.skip("no Opus here")
    r = _eval(tmp_path, w24, "-b", "1.5", "-b", "6", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [(row["codec"], row["bandwidth"]) for row in rows] == [
        ("ecdc", 1.5), ("ecdc", 6.0), ("opus", 6.0), ("opus", 12.0), ("opus", 24.0)]
    for row in rows:
        assert set(row) == KEYS
        assert set(row["seconds"]) == {"encode", "decode"} and min(row["seconds"].values()) >= 0
        assert row["kbps"] == pytest.approx(row["bytes"] * 8 / 2.0 / 1000, abs=1e-3)
        assert isinstance(row["si_snr"], float) and row["mel_distance"] > 0
        assert row["stoi"] is None or -1 <= row["stoi"] <= 1   # a mean of correlations
    raw = {row["bandwidth"]: row["kbps"] for row in rows if row["codec"] == "ecdc"}
    assert 1.5 < raw[1.5] < 2.1 and 6.0 < raw[6.0] < 6.6            # 10 bits a code, and a header
    # Opus at the same input tracks it; at 24 kbps it is far closer than at 6
    opus = {row["bandwidth"]: row for row in rows if row["codec"] == "opus"}
    assert opus[24.0]["mel_distance"] < opus[6.0]["mel_distance"]


def test_eval_table_and_stoi_below_10_khz(tmp_path, w24):
    src = write_audio(tmp_path / "phone.wav", 2.0, 8000)
    r = _eval(tmp_path, w24, "-b", "3", "--no-opus", input_=src)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("phone.wav: 2.00 s, 8000 Hz mono; encodec_24khz (raw coder)")
    assert lines[1].split() == ["codec", "asked", "kbps", "SI-SNR", "mel", "dist", "STOI", "encode", "decode"]
    row = lines[3].split()
    assert row[:2] == ["ecdc", "3"] and row[5] == "-"                # no STOI at 8 kHz
    assert len(lines) == 4


def test_eval_without_opus_says_how_to_get_it(tmp_path, w24, monkeypatch):
    monkeypatch.setattr(O, "find_opus", lambda: None)
    src = write_audio(tmp_path / "in.wav", 1.0, 24000)
    r = CliRunner().invoke(main, ["eval", str(src), "--weights", str(w24), "--raw", "-b", "1.5", "--json"])
    assert r.exit_code == 0, r.output
    assert "note: no Opus to compare with: Opus rows need opusenc/opusdec" in r.stderr
    assert [row["codec"] for row in json.loads(r.stdout)] == ["ecdc"]


def test_eval_stereo_44k_input_is_compared_as_it_is(tmp_path, w24):
    """The 24 kHz model is mono: a stereo 44.1 kHz input comes back at 44.1 kHz in two equal
    channels, and is measured against both of its own."""
    src = write_audio(tmp_path / "st.wav", 1.5, 44100, channels=2)
    report = E.evaluate(str(src), E.EvalOptions(bandwidths=(24.0,), lm=False, weights=w24, opus=False,
                                                keep=tmp_path / "keep"))
    assert (report.sample_rate, report.channels) == (44100, 2)
    kept, rate = sf.read(tmp_path / "keep" / "st-ecdc-24kbps.wav", always_2d=True)
    assert rate == 44100 and kept.shape == (int(1.5 * 44100), 2)
    np.testing.assert_array_equal(kept[:, 0], kept[:, 1])
    x, _ = sf.read(src, always_2d=True)
    assert report.rows[0].si_snr == pytest.approx(M.si_snr(x, kept), abs=0.05)  # measured on what is kept
    assert (tmp_path / "keep" / "st-ecdc-24kbps.ecdc").read_bytes().startswith(MAGIC)


def test_eval_keep_and_force(tmp_path, w24):
    keep = tmp_path / "listen"
    r = _eval(tmp_path, w24, "-b", "1.5", "--no-opus", "--keep", keep)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in keep.iterdir()) == ["in-ecdc-1.5kbps.ecdc", "in-ecdc-1.5kbps.wav"]
    again = _eval(tmp_path, w24, "-b", "1.5", "--no-opus", "--keep", keep)
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [f"Error: {keep / 'in-ecdc-1.5kbps.ecdc'} exists; "
                                                  f"use -f/--force to overwrite"]
    assert _eval(tmp_path, w24, "-b", "1.5", "--no-opus", "--keep", keep, "-f").exit_code == 0


def test_eval_plot_is_an_image_of_the_expected_size(tmp_path, w24):
    from matplotlib.image import imread

    from encodec_cli.evaluation import plot

    png = tmp_path / "out.png"
    r = _eval(tmp_path, w24, "-b", "1.5", "-b", "24", "--plot", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(png)
    n = 3 + (2 if O.find_opus() else 0)        # the input, ecdc's lowest and highest, Opus's
    report = E.Report(source="in.wav", sample_rate=24000, channels=1, duration=2.0, model="encodec_24khz",
                      coder="raw", opus=None, rows=[], spectrograms=[None] * n, notes=[])
    assert image.shape[:2] == plot.size_px(report)[::-1] == (int(100 * (4.8 + 1.8 * n)), 1200)
    assert image[..., :3].std() > 0.1                     # something is drawn
    assert not list(tmp_path.glob(".out.png.*"))          # no temporary left


def test_eval_refuses_before_any_work(tmp_path, w24):
    src = write_audio(tmp_path / "in.wav", 1.0, 24000)
    png = tmp_path / "old.png"
    png.write_bytes(b"")
    for args, message in [(["-b", "5"], "encodec_24khz supports 1.5, 3, 6, 12, 24 kbps, not 5.0"),
                          (["--model", "48khz", "-b", "1.5"], "encodec_48khz supports 3, 6, 12, 24 kbps, not 1.5")]:
        r = CliRunner().invoke(main, ["eval", str(src), "--weights", str(tmp_path / "none.th"), *args])
        assert r.exit_code == 2 and f"Error: Invalid value for '-b' / '--bandwidth': {message}" in r.output
    cases = [
        (["--plot", tmp_path / "figure.xyz"], "Error: --plot "),
        (["--plot", png], f"Error: {png} exists; use -f/--force to overwrite"),
        (["--keep", src], f"Error: --keep {src}: not a folder"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, ["eval", str(src), "--weights", str(tmp_path / "none.th"), *map(str, args)])
        assert r.exit_code == 1 and r.output.startswith(message), (args, r.output)
        assert len(r.output.strip().splitlines()) == 1
    silent = tmp_path / "empty.wav"
    sf.write(silent, np.zeros((0, 1)), 24000)
    r = CliRunner().invoke(main, ["eval", str(silent), "--weights", str(w24)])
    assert r.exit_code == 1 and r.output.strip() == f"Error: {silent} has no audio to evaluate"


def test_eval_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    src = write_audio(tmp_path / "in.wav", 1.0, 24000)
    monkeypatch.setitem(sys.modules, "pystoi", None)           # import pystoi fails
    r = CliRunner().invoke(main, ["eval", str(src)])
    assert r.exit_code == 1
    assert r.output == "Error: ecdc eval needs pystoi: pip install 'encodec-cli[eval]'\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(main, ["eval", str(src), "--plot", str(tmp_path / "p.png")])
    assert r.output == "Error: ecdc eval needs pystoi and matplotlib: pip install 'encodec-cli[eval]'\n"


def test_compress_and_decompress_never_import_the_extra(tmp_path, w24):
    src = write_audio(tmp_path / "in.wav", 1.0, 24000)
    code = ("import sys\n"
            "from encodec_cli.cli import main\n"
            "for args in (['compress', sys.argv[1], '-o', sys.argv[2], '--raw', '--weights', sys.argv[3], '-q'],\n"
            "             ['decompress', sys.argv[2], '-o', sys.argv[4], '--weights', sys.argv[3], '-q']):\n"
            "    try:\n"
            "        main(args)\n"
            "    except SystemExit as e:\n"
            "        assert not e.code, e.code\n"
            "loaded = [m for m in ('matplotlib', 'pystoi', 'scipy', 'numba') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    p = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "a.ecdc"), str(w24),
                        str(tmp_path / "b.wav")], capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b.wav").exists()


def test_eval_48khz_lm_rows_match_what_the_files_decode_to(tmp_path, checkpoints):
    """The default LM coder and the 48 kHz model: each row is measured on the audio its kept
    .ecdc file decompresses to, and its kbps is that file's size."""
    from encodec_cli.api import DecompressOptions, decompress

    src = write_audio(tmp_path / "music.wav", 1.5, 48000, channels=2)
    opts = E.EvalOptions(model="encodec_48khz", bandwidths=(3.0, 12.0), lm=True, weights=checkpoints["encodec_48khz"],
                         lm_weights=checkpoints["encodec_lm_48khz"], opus=False, keep=tmp_path / "k")
    report = E.evaluate(str(src), opts)
    assert [(r.codec, r.bandwidth) for r in report.rows] == [("ecdc", 3.0), ("ecdc", 12.0)]
    assert report.coder == "lm" and [s.label.split(" (")[0] for s in report.spectrograms] == [
        "input", "ecdc at 3 kbps", "ecdc at 12 kbps"]
    x, _ = sf.read(src, dtype="float32", always_2d=True)
    for r in report.rows:
        data = (tmp_path / "k" / f"music-ecdc-{r.bandwidth:g}kbps.ecdc").read_bytes()
        assert r.bytes == len(data) and r.kbps == pytest.approx(len(data) * 8 / 1.5 / 1000)
        y, rate = decompress(data, DecompressOptions(weights=checkpoints["encodec_48khz"],
                                                     lm_weights=checkpoints["encodec_lm_48khz"]))
        assert rate == 48000 and y.shape == x.shape
        # (eval decoded with one torch thread, this test with torch's default: the last bits differ)
        assert r.si_snr == pytest.approx(M.si_snr(x, y), abs=1e-3)
        assert r.mel_distance == pytest.approx(M.mel_distance(x, y, 48000), rel=1e-5)
