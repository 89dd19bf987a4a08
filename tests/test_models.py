"""Our EnCodec against the reference: strict loading and golden vectors."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import soundfile as sf
import torch

from encodec_cli.codec import streaming as C
from encodec_cli.codec.models import SPECS, build_model
from encodec_cli.codec.weights import REGISTRY, load_state_dict, load_strict
from encodec_cli.errors import WeightsError

from .conftest import GOLDEN, SHARED, shared_audio

RECORDINGS = {"encodec_24khz": "test_24k.wav", "encodec_48khz": "test_48k.wav"}


def manifest() -> dict:
    path = SHARED / "reference" / "state_dict_manifest.txt"
    if not path.exists():
        pytest.skip("reference manifest not present")
    blocks, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = blocks.setdefault(line[1:line.index("]")], {})
        elif current is not None and line.strip() and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            current[key] = (tuple(int(d) for d in shape.split("x")), dtype)
    return blocks


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_state_dict_matches_official_manifest(name):
    expected = manifest()[REGISTRY[name].filename]
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in build_model(name).state_dict().items()}
    assert ours == expected


@pytest.fixture(scope="module")
def codecs(checkpoints):
    return {name: C.load_codec(name, checkpoints[name]) for name in RECORDINGS}


def test_loading_is_strict(checkpoints, tmp_path):
    state = load_state_dict(checkpoints["encodec_24khz"])
    del state["decoder.model.0.conv.conv.bias"]
    with pytest.raises(WeightsError, match="1 missing keys"):
        load_strict(build_model("encodec_24khz"), state, tmp_path / "x.th")
    state["decoder.model.0.conv.conv.weight_g"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="does not fit"):
        load_strict(build_model("encodec_24khz"), state, tmp_path / "x.th")
    state = load_state_dict(checkpoints["encodec_48khz"])
    with pytest.raises(WeightsError, match="holds the weights of encodec_48khz"):
        load_strict(build_model("encodec_24khz"), state, tmp_path / "x.th")


def test_weight_norm_is_folded(codecs):
    names = [n for n, _ in codecs["encodec_24khz"].model.named_parameters()]
    assert names and not any("weight_g" in n or "weight_v" in n for n in names)


def test_a_side_and_its_codebooks_give_the_whole_models_codes_and_audio(checkpoints):
    """A compressing process loads the encoder and the codebooks it uses, a decompressing one
    the decoder: under half the tensors each, and the whole model's codes and audio, bit for
    bit. A model loaded before serves what it covers."""
    from encodec_cli.codec import weights as W

    name, path = "encodec_24khz", checkpoints["encodec_24khz"]
    saved = dict(W._LOADED)
    W._LOADED.clear()
    try:
        enc = C.load_codec(name, path, side="encoder", codebooks=8)
        dec = C.load_codec(name, path, side="decoder", codebooks=8)
        assert enc.model.decoder is None and dec.model.encoder is None
        assert len(enc.model.quantizer.vq.layers) == len(dec.model.quantizer.vq.layers) == 8
        assert C.load_codec(name, path, side="encoder", codebooks=4) is enc
        whole = C.load_codec(name, path)
        assert whole is not enc and C.load_codec(name, path, side="decoder", codebooks=32) is whole

        def size(codec):
            return sum(t.numel() for t in [*codec.model.parameters(), *codec.model.buffers()])

        assert size(enc) < 0.45 * size(whole) and size(dec) < 0.45 * size(whole)
        wav = sf.read(shared_audio("test_24k.wav"), dtype="float32", always_2d=True)[0].T[:, :48000].copy()
        codes = np.concatenate([p.codes for p in C.encode(enc, [wav], 8)])
        np.testing.assert_array_equal(codes, np.concatenate([p.codes for p in C.encode(whole, [wav], 8)]))
        audio = np.concatenate(list(C.decode(dec, [C.CodePacket(codes)])), -1)
        np.testing.assert_array_equal(audio, np.concatenate(list(C.decode(whole, [C.CodePacket(codes)])), -1))
        with pytest.raises(ValueError, match="holds 8 codebooks, not 16"):
            list(C.encode(enc, [wav], 16))
    finally:
        W._LOADED.clear()
        W._LOADED.update(saved)


def _encode(codec, wav: np.ndarray, whole: bool, monkeypatch) -> list:
    if whole:
        monkeypatch.setattr(C, "CHUNK_FRAMES", 10**6)
    blocks = [wav[:, i:i + 10_000] for i in range(0, wav.shape[1], 10_000)]
    return list(C.encode(codec, blocks, codec.spec.n_q))


@pytest.mark.parametrize("name", list(RECORDINGS))
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
def test_golden_codes_and_audio(codecs, name, whole, monkeypatch):
    """Same codes as the reference, and audio within 1e-4, at every bandwidth."""
    gold = np.load(GOLDEN / f"{name}.npz")
    codec = codecs[name]
    wav = sf.read(shared_audio(RECORDINGS[name]), dtype="float32", always_2d=True)[0].T.copy()
    packets = _encode(codec, wav, whole, monkeypatch)
    codes = np.concatenate([p.codes for p in packets])
    assert codes.shape == gold["codes"].shape
    same = (codes == gold["codes"]).mean()
    if whole or not SPECS[name].causal:
        assert same == 1.0
        if not SPECS[name].causal:
            assert [len(p.codes) for p in packets] == gold["segment_frames"].tolist()
            # the RMS reduction may round differently with the thread count: float32 precision
            np.testing.assert_allclose([p.scale for p in packets], gold["scales"], rtol=3e-7)
    else:
        assert same >= 0.999, f"streamed codes {same:.4%} identical"
    stride = int(gold["stride"])
    for bw in gold["bandwidths"]:
        n_q = codec.spec.codebooks_for(float(bw))
        audio = np.concatenate(list(C.decode(
            codec, [C.CodePacket(p.codes[:, :n_q], p.scale) for p in packets])), -1)
        assert audio.shape[-1] >= wav.shape[-1]
        err = np.abs(audio[:, :wav.shape[-1]][:, ::stride] - gold[f"audio_{bw:g}"]).max()
        assert err <= 1e-4, f"{bw} kbps: max error {err}"


def test_streamed_equals_whole_24khz(codecs, monkeypatch):
    """Carried conv/LSTM state: chunked encoding matches one pass over the file."""
    codec = codecs["encodec_24khz"]
    wav = sf.read(shared_audio("test_24k.wav"), dtype="float32", always_2d=True)[0].T.copy()
    streamed = np.concatenate([p.codes for p in _encode(codec, wav, False, monkeypatch)])
    whole = np.concatenate([p.codes for p in _encode(codec, wav, True, monkeypatch)])
    assert (streamed == whole).mean() >= 0.999
    a = np.concatenate(list(C.decode(codec, [C.CodePacket(whole)])), -1)
    b = np.concatenate(list(C.decode(codec, [C.CodePacket(whole[i:i + 7])
                                             for i in range(0, len(whole), 7)])), -1)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-3


@pytest.mark.parametrize("length", [1, 5, 319, 320, 321, 2000])
def test_tiny_inputs_match_whole_file_rule(codecs, length):
    """Inputs shorter than the receptive field follow the reference's padding rule."""
    codec = codecs["encodec_24khz"]
    wav = np.random.default_rng(length).standard_normal((1, length)).astype(np.float32) * 0.1
    packets = list(C.encode(codec, [wav], codec.spec.n_q))
    codes = np.concatenate([p.codes for p in packets])
    assert codes.shape == (-(-length // 320), codec.spec.n_q)
    with torch.inference_mode():
        ref = codec.model.quantizer.encode(codec.model.encoder(torch.from_numpy(wav)[None]),
                                           codec.spec.n_q)[0].T.numpy()
    np.testing.assert_array_equal(codes, ref)


def test_few_column_products_match_blas():
    """fewkernel's products (live steps of 1-3 frames) equal BLAS's to float32 rounding;
    wider inputs are left to BLAS."""
    from encodec_cli.codec import products

    fk = products._fewkernel()
    if fk is None:
        pytest.skip("numba cannot run here")
    rng = np.random.default_rng(5)
    for m, n in [(2048, 512), (512, 4096), (7, 3)]:
        w = torch.from_numpy(rng.standard_normal((m, n), dtype=np.float32))
        b = torch.from_numpy(rng.standard_normal(m, dtype=np.float32))
        for t in (1, 2, 3):
            x = torch.from_numpy(rng.standard_normal((t, n), dtype=np.float32))
            exact = x.double() @ w.double().t() + b.double()
            out = np.zeros((t, m), np.float32)
            fk.affine(w.numpy(), x.numpy(), b.numpy(), out)
            assert (torch.from_numpy(out).double() - exact).abs().max() <= 1e-6 * n ** 0.5 * exact.abs().max()
            assert torch.equal(products.rows(w, b, x), torch.from_numpy(out))
            assert torch.equal(products.rows(w, None, x), products.rows(w, torch.zeros(m), x))
    x = torch.from_numpy(rng.standard_normal((4, n), dtype=np.float32))
    assert torch.equal(products.rows(w, b, x), torch.addmm(b, x, w.t()))  # BLAS's own


def test_live_quantizer_gives_the_codes_of_file_mode(codecs, monkeypatch):
    """A live step's quantizer: fewkernel's nearest codewords are the reference rule's, and
    decode_few's embeddings are decode's, bit for bit."""
    from encodec_cli.codec import products

    q = codecs["encodec_24khz"].model.quantizer
    emb = torch.from_numpy(np.random.default_rng(6).standard_normal((1, 128, 40), dtype=np.float32))
    calls: list = []  # without numba: the torch rule itself
    with torch.inference_mode():
        ref = q.encode(emb, 32)[0].t().numpy()
        for n_q in (32, 8, 2):
            if products._fewkernel() is not None:
                assert np.array_equal(q.encode_few(emb, n_q), ref[:, :n_q])
            assert q.encode_few(emb[..., :0], n_q).shape == (0, n_q)
        monkeypatch.setattr(products, "_fewkernel", lambda: calls.append(1))
        assert np.array_equal(q.encode_few(emb, 8), ref[:, :8]) and calls == [1]
        for n_q in (32, 8, 1):  # and back: decode's sum, bit for bit
            assert torch.equal(q.decode_few(ref[:, :n_q]), q.decode(torch.from_numpy(ref[:, :n_q].T)[None]))


def test_live_lstm_kernel_carries_torch_lstm_state(codecs):
    """fewkernel's LSTM over frames 1, 2 and 3 at a time equals torch's LSTM over all 6."""
    from encodec_cli.codec import products
    from encodec_cli.codec.models import SLSTM

    if products._fewkernel() is None:
        pytest.skip("numba cannot run here")
    lstm = next(m for m in codecs["encodec_24khz"].model.decoder.modules() if isinstance(m, SLSTM))
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((1, 512, 6), dtype=np.float32))
    with torch.inference_mode():
        whole = lstm(x)
        lstm.reset()
        lstm.live = True
        try:
            parts = [lstm.step(x[..., a:b], final=False) for a, b in ((0, 1), (1, 3), (3, 6))]
        finally:
            lstm.live = False
            lstm.reset()
    assert (torch.cat(parts, -1) - whole).abs().max() <= 1e-5


@pytest.mark.parametrize("kernel", [True, False], ids=["fewkernel", "blas"])
def test_live_steps_give_the_golden_codes_and_audio(codecs, kernel, monkeypatch):
    """Live steps (20 ms blocks in; one or two frames at a time out) give the reference's
    codes and its audio within 1e-4, with fewkernel's products and without numba."""
    from encodec_cli.codec import products

    frames = 225  # 3 s: the causal networks' first frames do not depend on what follows
    calls = []
    if kernel:
        fk = products._fewkernel()
        if fk is None:
            pytest.skip("numba cannot run here")

        class Counted:  # the kernels, each call noted (with its rows); compiled code is not touched
            FEW = fk.FEW

            def __getattr__(self, name):
                return lambda *a: (calls.append((name, len(a[1]) if name == "affine" else 0)),
                                   getattr(fk, name)(*a))

        monkeypatch.setattr(products, "_fewkernel", Counted)
    else:
        monkeypatch.setattr(products, "_fewkernel", lambda: None)
    gold = np.load(GOLDEN / "encodec_24khz.npz")
    codec = codecs["encodec_24khz"]
    wav = sf.read(shared_audio(RECORDINGS["encodec_24khz"]), dtype="float32", always_2d=True)[0].T
    wav = np.ascontiguousarray(wav[:, :frames * 320])
    stream = C.encode_live(codec, [wav[:, i:i + 480] for i in range(0, wav.shape[1], 480)], codec.spec.n_q)
    packets = [next(stream)[0]]
    assert gc.get_freeze_count() > 10_000  # what came before the stream is out of the collector's view
    packets += [p for p, _ in stream]
    assert gc.get_freeze_count() == 0
    assert {len(p.codes) for p in packets[1:-1]} == {1, 2}  # the first waits for its padding
    codes = np.concatenate([p.codes for p in packets])[:frames - 2]
    assert (codes == gold["codes"][:frames - 2]).mean() >= 0.999
    stride, n = int(gold["stride"]), (frames - 1) * 320
    for bw in (1.5, 24.0):
        n_q = codec.spec.codebooks_for(bw)
        live = [C.CodePacket(gold["codes"][j:k, :n_q])  # frames 1 then 2 at a time, as live
                for s in range(0, frames, 3) for j, k in ((s, s + 1), (s + 1, s + 3))]
        audio = np.concatenate(list(C.decode(codec, live, live=True)), -1)
        err = np.abs(audio[:, :n:stride] - gold[f"audio_{bw:g}"][:, :-(-n // stride)]).max()
        assert err <= 1e-4, f"{bw} kbps: max error {err}"
    assert not kernel or {("affine", 1), ("affine", 2), ("lstm", 0), ("nearest", 0)} <= set(calls)
