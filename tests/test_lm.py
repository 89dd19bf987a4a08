"""The language model: the float LM against the reference, the integer LM (coder 3) against
the float LM, its golden frequencies, the range coder, and its portability."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encodec_cli import testing as random_weights
from encodec_cli.codec.lm import DIM, MAX_PERIOD, build_lm
from encodec_cli.codec.models import SPECS
from encodec_cli.codec.weights import REGISTRY
from encodec_cli.entropy import intlm, intmath, lmloops
from encodec_cli.entropy.lmcoder import LMDecoder, LMEncoder, load_lm
from encodec_cli.errors import CorruptError
from encodec_cli.formats import v1 as F
from encodec_cli.formats.records import Header, Packet
from encodec_cli.testing import POSITION_BLOCK, FloatLMState, likely_codes

from .conftest import GOLDEN
from .test_models import manifest

FORMATS = Path(__file__).resolve().parents[1] / "formats" / "golden"


random_lm = functools.lru_cache(maxsize=None)(random_weights.random_lm)  # float, one per model
int_lm = functools.lru_cache(maxsize=None)(random_weights.random_int_lm)  # coder 3's
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_lm_state_dict_matches_official_manifest(name):
    lm_name = name.replace("encodec_", "encodec_lm_")
    expected = manifest()[REGISTRY[lm_name].filename]
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in build_lm(name).state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_lm_probabilities_match_reference(name):
    gold = np.load(GOLDEN / f"lm_{name}.npz")
    codes, steps = gold["codes"], gold["steps"].tolist()
    state = FloatLMState(random_lm(name), codes.shape[1])
    got = []
    for t in range(len(codes)):
        p = state.step()[0]
        if t in steps:
            got.append(p.numpy())
        state.push(torch.from_numpy(codes[t].astype(np.int64)))
    err = np.abs(np.stack(got) - gold["probs"]).max()
    assert err <= 1e-5, err


def test_positions_are_exact_and_memory_stays_flat():
    """Hours into a stream, the position table is still one block (it once grew with the stream)."""
    lm = FloatLMState(random_lm("encodec_24khz"), 8)
    half = DIM // 2
    scale = MAX_PERIOD ** (torch.arange(half) / (half - 1))
    for offset in (0, POSITION_BLOCK - 1, POSITION_BLOCK, 540_000):  # 540,000 frames: 2 hours
        phase = torch.tensor([offset]) / scale
        expected = torch.cat([torch.cos(phase), torch.sin(phase)])[None]
        torch.testing.assert_close(lm.position(offset), expected, rtol=0, atol=1e-6)
        assert lm._positions.shape == (POSITION_BLOCK, DIM)


# ---------------------------------------------------------------- the integer LM (coder 3)

def test_tables_are_the_specified_ones():
    """SHA-256 of each table as big-endian int64, as formats/ecdc-v1.md gives them."""
    def digest(a):
        return hashlib.sha256(np.ascontiguousarray(a, ">i8").tobytes()).hexdigest()[:16]
    assert digest(intmath.exp_table()) == "d2d65fd0b8f67c76"
    assert digest(intmath.gelu_table()) == "110d6593111a93c2"
    assert digest(intmath.rotation_table()) == "f8174c8952f3a0d5"
    exp = intmath.exp_table()
    assert exp[0] == 1 << 30 and exp[1024] == round(2**30 / math.e) and exp[-1] == 0
    gelu = intmath.gelu_table()
    assert gelu[192] == 0 and gelu[192 + 32] == round(2**20 * 0.8413447460685429)  # gelu(1) = Phi(1)
    # the sinusoids agree with float math to the last Q10 bit
    p = np.array([0, 1, 7, 1000, 65535, 540_000, 2**32 - 1])  # up to 1.8 years at 24 kHz
    phase = p[:, None] / 10000 ** (np.arange(100) / 99)
    expected = np.concatenate([np.cos(phase), np.sin(phase)], 1) * 1024
    assert np.abs(intmath.positions(p) - expected).max() <= 0.51


def test_compiled_positions_equal_numpy_positions():
    """intlm.positions (compiled), the encoder's and the decoder's, is intmath.positions."""
    p = np.concatenate([np.arange(3000), np.random.default_rng(3).integers(0, 2**32, 2000), [2**32 - 1]])
    np.testing.assert_array_equal(intlm.positions(p), intmath.positions(p))
    for bad in (-1, 2**32):
        with pytest.raises(ValueError):
            intlm.positions(np.array([0, bad]))


def test_tables_equal_their_decimal_definitions():
    """The float64 estimates, recomputed near ties, give every entry as 60-digit decimal
    arithmetic does, and an estimate near a tie is replaced by the exact value."""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 60
        step, v, exp = (Decimal(-1) / 1024).exp(), Decimal(1 << 30), []
        for _ in range(intmath.EXP_SIZE):
            exp.append(intmath._round_dec(v))
            v *= step
        xs = [Decimal(k) / 32 for k in range(-192, 193)]
        gelu = [intmath._round_dec(x * intmath._phi_cdf(x) * (1 << 20)) for x in xs]
    assert intmath.exp_table().tolist() == exp
    assert intmath.gelu_table().tolist() == gelu + gelu[-1:]
    exact = [Decimal("2.4999999"), Decimal("3.5000001"), Decimal("7.2"), Decimal("-0.5000001")]
    estimate = np.array([2.5, 3.4996, 7.2, -0.4999])  # the first two and the last off by < margin
    assert intmath._rne_checked(estimate, exact.__getitem__).tolist() == [2, 4, 7, -1]
    assert intmath._rne_checked(estimate, exact.__getitem__, margin=1e-5).tolist() == [2, 3, 7, 0]


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_integer_lm_follows_the_float_lm(name):
    """Same network: the KL divergence from the float LM's probabilities is tiny."""
    flm, ilm = random_lm(name), int_lm(name)
    codes = likely_codes(ilm, 8, 60)
    fs, st = FloatLMState(flm, 8), ilm.start(8, 1, 60)
    kl = []
    for t in range(60):
        p = fs.step()[0].double().numpy()
        g = st.step()[0] + 1.0
        q = g / g.sum(-1, keepdims=True)
        kl.append((p * (np.log(p) - np.log(q))).sum(-1).mean())
        fs.push(torch.from_numpy(codes[t].astype(np.int64)))
        st.push(codes[t][None])
    assert np.mean(kl) < 1e-3, np.mean(kl)


def _stepped(lm, codes, first):
    n_q, first = codes.shape[1], np.array([first])
    state = lm.start(n_q, 1, len(codes), first)
    out = []
    for frame in codes:
        out.append(state.step()[0])
        state.push(frame[None])
    return np.stack(out)


@pytest.mark.parametrize("name, n_q, frames, first", [
    ("encodec_24khz", 2, 400, 0),              # 1.5 kbps, past the 263-frame window
    ("encodec_24khz", 8, 600, 540_000),        # 6 kbps, a packet two hours into a file
    ("encodec_24khz", 32, 120, 2**32 - 200),   # 24 kbps, at the last positions there are
    ("encodec_48khz", 4, 150, 0),              # 3 kbps, a 1 s segment
    ("encodec_48khz", 16, 150, 0),             # 24 kbps
])
def test_one_pass_equals_stepping(name, n_q, frames, first):
    """The encoder's one causal pass over known codes (IntLM.known) gives exactly the
    frequencies that stepping gives a decoder, in blocks of any size, alone or stacked
    with other streams."""
    lm = int_lm(name)
    rng = np.random.default_rng(n_q)
    codes = rng.integers(0, 1024, (frames, n_q))
    if n_q == 8:  # codes the model finds likely (sharp distributions), then noise
        codes[:200] = likely_codes(lm, n_q, 200, first=list(range(n_q)))
    stepped = _stepped(lm, codes, first)
    for block in (intlm.PASS_BLOCK, 64, frames):
        blocks = list(lm.known(codes, first, block))
        assert [len(b) for b in blocks[:-1]] == [block] * (len(blocks) - 1)
        np.testing.assert_array_equal(np.concatenate(blocks), stepped)
    other = rng.integers(0, 1024, (frames, n_q))
    stacked = list(lm.known(np.stack([other, codes]), first))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in stacked]), stepped)


def test_streams_stepped_together_each_get_their_own():
    """Streams stepped together each get what they get alone, each from its own position;
    the window moves back to its buffer's front, and short streams get a short buffer.
    Streams dropped on the way (State.keep) leave the others as they were."""
    lm = int_lm("encodec_24khz")
    rng = np.random.default_rng(5)
    for batch, frames, drops in ((7, 300, {150: [0, 2, 3, 5, 6], 290: [1, 2, 4]}), (2, 20, {})):
        first = rng.integers(0, 1 << 30, batch)
        together = lm.start(4, batch, frames, first)
        alone = [lm.start(4, 1, frames, first[i:i + 1]) for i in range(batch)]
        assert together.keys.shape[-1] == min(frames, lm.past_context) + 1 + together.SLACK
        for t in range(frames):
            if t in drops:  # across a position block (POS_BLOCK) and a move of the window
                together.keep(np.array(drops[t]))
                alone = [alone[i] for i in drops[t]]
                assert together.keys.shape[1] == len(alone)
                assert all(a.flags.c_contiguous for a in (together.keys, together.values, together.exps))
            got = together.step()
            for i, state in enumerate(alone):
                np.testing.assert_array_equal(got[i], state.step()[0], err_msg=str(t))
            codes = got.argmax(-1) if t % 3 else rng.integers(0, 1024, (len(alone), 4))
            together.push(codes)
            for i, state in enumerate(alone):
                state.push(codes[i:i + 1])


def _split_reference(parts):
    """The specification's split of projections [R, 3 * D] into heads: clamp to +-2**20,
    then per head mantissas of at most 2**9, 2**10, 2**10 (rounded shifts) and exponents."""
    parts = np.clip(parts, -intmath.ACT_LIMIT, intmath.ACT_LIMIT).reshape(len(parts), 3, intlm.HEADS, intlm.HEAD_DIM)
    mant, exps = np.zeros(parts.shape, np.int64), np.zeros(parts.shape[:3], np.int64)
    for (r, part, h), _ in np.ndenumerate(exps):
        v, bits = [int(x) for x in parts[r, part, h]], intmath.QKV_BITS[part]
        e = 0
        while max(map(abs, v)) >= 1 << (bits + e):
            e += 1
        mant[r, part, h] = [(x + (1 << e >> 1)) >> e for x in v]
        exps[r, part, h] = e
    return mant, exps


def test_cache_holds_extreme_keys_and_values_exactly():
    """lmloops.split stores a decoder's key and value mantissas as int16 and the keys'
    powers of two apart. On projections from 0 to beyond the clamp at ACT_LIMIT, with
    heads whose largest value rounds up to a mantissa of 2**10, it stores exactly the
    specification's integers."""
    rng = np.random.default_rng(9)
    rows = 48
    parts = np.round(rng.standard_normal((rows, 3 * DIM)) * 2.0 ** rng.integers(0, 21, (rows, 1)))
    parts[0] = 0
    heads = parts.reshape(rows, 3, intlm.HEADS, intlm.HEAD_DIM)
    e = rng.integers(1, 11, (rows, 3, intlm.HEADS))
    top = (1 << (10 + e)) - 1                        # rounds up to 2**10 * 2**e: a mantissa of 2**10
    keep = np.abs(heads).max(axis=3) < top           # heads not already larger
    heads[..., 0] = np.where(keep, top, heads[..., 0])
    parts[1] = intmath.ACT_LIMIT * 4                 # clamped
    parts = parts.astype(np.int64)
    mant, exps = _split_reference(parts)
    # as a product's sums: 16 * hi + lo, scaled by 2**0, bias 0
    sums = np.concatenate([np.zeros_like(parts), parts]).astype(np.int32)
    queries = np.empty((1, intlm.HEADS, rows, intlm.HEAD_DIM), np.float32)
    keys, values = (np.zeros((1, intlm.HEADS, intlm.HEAD_DIM, rows), np.int16) for _ in range(2))
    scales, vexps = np.zeros((1, intlm.HEADS, rows), np.float32), np.zeros((1, intlm.HEADS, rows), np.int64)
    lmloops.split(sums, np.ones(rows), np.ones(3 * DIM), np.zeros(3 * DIM, np.int64), 1, 0, queries, keys, scales,
                  values, vexps)
    assert np.abs(mant[:, 1:]).max() == 1 << 10 and exps[:, 1:].max() == 11
    np.testing.assert_array_equal(keys[0], mant[:, 1].transpose(1, 2, 0))
    np.testing.assert_array_equal(values[0], mant[:, 2].transpose(1, 2, 0))
    np.testing.assert_array_equal(scales[0], np.ldexp(1.0, exps[:, 1].T))
    np.testing.assert_array_equal(vexps[0], exps[:, 2].T)
    np.testing.assert_array_equal(queries[0], np.ldexp(mant[:, 0], exps[:, 0, :, None] - intmath.Q).transpose(1, 0, 2))


def test_integer_square_root_is_exact():
    """LayerNorm's r: the float root, corrected by one either way."""
    rng = np.random.default_rng(0)
    n = rng.integers(1, 1 << 31, 3000)
    t = np.concatenate([n * n - 1, n * n, n * n + 1, rng.integers(0, 1 << 62, 3000), [0, (1 << 52) - 1]])
    assert [lmloops._isqrt(int(v)) for v in t] == [math.isqrt(int(v)) for v in t]


def test_compiled_shortcuts_give_the_specified_integers():
    """The loops' float shortcuts and packed halves against the specification's integer
    formulas written out in Python integers (formats/ecdc-v1.md), on edge cases the golden
    vectors may not reach: shifts up to 48 either way, the GELU table's ends, inputs at
    the bounds of their bits, masked keys, weights that round to 0, rows of a lone key."""
    rng = np.random.default_rng(5)
    # a product's output: floor((16 hi + lo) * 2**k + 1/2) + bias
    hi, lo = rng.integers(-(1 << 26), 1 << 26, 3000), rng.integers(-8, 8, 3000)
    k, bias = rng.integers(-50, 12, 3000), rng.integers(-(1 << 20), 1 << 20, 3000)
    for a, b, kk, c in zip(hi, lo, k, bias):
        p = np.array([[a], [b]], np.int32)
        acc = 16 * int(a) + int(b)
        want = (acc << int(kk) if kk >= 0 else (acc + (1 << int(-kk) >> 1)) >> int(-kk)) + int(c)
        assert lmloops._value(p, 1, 0, 0, math.ldexp(1.0, int(kk)), int(c)) == want
    # a product's input: shifted within 2**bits, as halves 16 hi + lo
    for bits in (7, 9):
        for scale in (0, 1, 5, 12, 30):
            row = rng.integers(-(1 << (bits + scale)), 1 << (bits + scale), 200)
            row[0] = (1 << (bits + scale)) - 1  # rounds up to 2**bits
            h, lw = np.zeros(200, np.int8), np.zeros(200, np.int8)
            e = int(math.log2(lmloops._to_input(row, bits, h, lw)))
            assert max(map(abs, row.tolist())) < 1 << (bits + e) and (e == 0 or max(map(abs, row.tolist())) >=
                                                                      1 << (bits + e - 1))
            want = [(int(x) + (1 << e >> 1)) >> e for x in row]
            assert (16 * h.astype(np.int64) + lw).tolist() == want
            assert lw.min() >= -8 and lw.max() <= 7 and np.abs(h).max() <= 1 << (bits - 4)
    g, edge = intmath.gelu_table(), intmath.GELU_EDGE
    base, slope = intmath.gelu_tables()
    for x in np.concatenate([rng.integers(-2 * edge, 2 * edge, 3000), np.arange(-edge - 40, -edge + 40),
                             np.arange(edge - 40, edge + 40)]).tolist():
        u = min(max(x, -edge), edge) + edge
        i, f = u >> 5, u & 31
        want = x if x > edge else (int(g[i]) * (32 - f) + int(g[i + 1]) * f + (1 << 14)) >> 15
        assert lmloops._gelu(x, base, slope) == want
    # attention weights: scores (float32 products times the keys' 2**ek), softmax in Q13,
    # then shifted to the largest value exponent; keys outside lo .. hi weigh 0
    exp = [int(v) for v in intmath.exp_table()]
    table = intlm._exp32()
    for width in (1, 7, 300):
        scores = rng.integers(-(1 << 23), 1 << 23, (1, 40, width)).astype(np.float32)
        ek = rng.integers(-10, 18, (1, width))
        exps = rng.integers(0, 12, (1, width))
        lo_, hi_ = rng.integers(0, width, 40), None
        hi_ = np.minimum(width, lo_ + rng.integers(1, width + 1, 40))
        weights, tops = np.empty((1, 40, width), np.float32), np.empty((1, 40), np.int64)
        lmloops.softmax(scores, np.ldexp(np.float32(1), ek).astype(np.float32), lo_, hi_, exps, table, weights, tops)
        for r in range(40):
            cols = range(lo_[r], hi_[r])
            z = {j: math.floor(int(scores[0, r, j]) * 2.0 ** int(ek[0, j]) + 0.5) for j in cols}
            top = max(z.values())
            e = {j: exp[min(top - z[j], intmath.EXP_SIZE - 1)] for j in cols}
            inv = (1 << 43) // sum(e.values())
            m = max(int(exps[0, j]) for j in cols)
            want = [0] * width
            for j in cols:
                w, sh = (e[j] * inv + (1 << 29)) >> 30, m - int(exps[0, j])
                want[j] = (w + (1 << sh >> 1)) >> sh
            assert weights[0, r].tolist() == want and tops[0, r] == m


def _frequencies(logits):
    """lmloops.frequencies of Q10 logits [R, 1024] (as a product's sums: 16 * 0 + lo)."""
    logits = np.asarray(logits)
    p = np.concatenate([np.zeros_like(logits), logits]).astype(np.int32)
    out = np.empty(logits.shape, np.float32)
    lmloops.frequencies(p, np.ones(len(logits)), np.ones(1024), np.zeros(1024, np.int64), intlm._exp32(), out)
    return out.astype(np.int64)


def test_frequencies_sum_exactly_and_every_symbol_gets_one():
    g = _frequencies([[0] * 1024, [5 << 10] + [-(40 << 10)] * 1023, list(range(1024))])
    assert (g.sum(-1) == intmath.FREQ_TOTAL).all() and (g >= 0).all()
    assert g[0].min() >= intmath.FREQ_TOTAL // 1024 - 1          # uniform
    assert g[1, 0] == intmath.FREQ_TOTAL and g[1, 1:].max() == 0  # certain: others keep only the +1


def _frequency_digest(g):
    return hashlib.sha256(np.ascontiguousarray(g, ">u4").tobytes()).hexdigest()


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_golden_frequencies(name):
    """The exact frequencies of formats/golden/coder3_frequencies.json, every run."""
    doc = json.loads((FORMATS / "coder3_frequencies.json").read_text())[name]
    codes = np.array(doc["codes"], np.uint16)
    state = int_lm(name).start(doc["codebooks"], 1, len(codes), np.array([doc["first_position"]]))
    steps = {s["step"]: s for s in doc["steps"]}
    for t in range(len(codes)):
        g = state.step()[0]
        if t in steps:
            assert g[:, :8].tolist() == steps[t]["first"]
            assert _frequency_digest(g) == steps[t]["sha256"], t
        state.push(codes[t][None])


def code_packets(encoder, parts, segments=None):
    """Encode the parts as packets of one batch, read back as the container gives them
    (the first one at frame `encoder.frames` of the file)."""
    segs = [tuple(segments[i]) if segments else ((len(p), 1.0),) for i, p in enumerate(parts)]
    start = encoder.frames
    packets = []
    for i, ((payload, flags), part, seg) in enumerate(zip(encoder.encode_many(list(zip(parts, segs))),
                                                          parts, segs)):
        codes = part if flags else np.empty((len(part), 0), np.uint16)
        packets.append(Packet(codes=codes, segments=seg, flags=flags, payload=payload, start=start, index=i + 1))
        start += len(part)
    return packets


@pytest.fixture(scope="module")
def lm24():
    return int_lm("encodec_24khz")


def test_round_trip_is_smaller_than_raw_when_predictable(lm24):
    spec = SPECS["encodec_24khz"]
    codes = likely_codes(lm24, 8, 90)
    packets = code_packets(LMEncoder(lm24, bytes(8), spec, 8), [codes[:40], codes[40:]])
    assert all(p.flags == 0 for p in packets)
    assert sum(len(p.payload) for p in packets) < 0.8 * len(F.pack_codes(codes))
    decoded = LMDecoder(lm24, spec, 8).decode_many(packets)
    np.testing.assert_array_equal(np.concatenate(decoded), codes)


def test_packets_are_independent_whatever_the_batching(lm24):
    """A packet's bytes depend only on its codes and its first frame's position in the file,
    not on which packets share its batch; a decoder may group them otherwise, or seek."""
    spec = SPECS["encodec_24khz"]
    parts = [likely_codes(lm24, 4, n, first=[n, 1, 2, 3]) for n in (30, 12, 30, 21)]
    together = code_packets(LMEncoder(lm24, bytes(8), spec, 4), parts)
    assert all(p.flags == 0 for p in together)
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
    for part, packet, offset in zip(parts, together, offsets):
        enc = LMEncoder(lm24, bytes(8), spec, 4)
        enc.frames = int(offset)  # as if the earlier packets had been coded
        assert code_packets(enc, [part])[0].payload == packet.payload
    elsewhere = LMEncoder(lm24, bytes(8), spec, 4)
    elsewhere.frames = 1000
    assert code_packets(elsewhere, parts[:1])[0].payload != together[0].payload  # positions count
    dec = LMDecoder(lm24, spec, 4)
    np.testing.assert_array_equal(dec.decode(together[2]), parts[2])  # a seek to packet 3
    np.testing.assert_array_equal(dec.decode_many([together[3], together[1]])[1], parts[1])
    moved = dataclasses.replace(together[2], start=together[2].start + 1)
    with pytest.raises(CorruptError, match="checksum|cannot be decoded"):
        dec.decode(moved)  # a packet decodes only at its own position
    dec = LMDecoder(lm24, spec, 4)
    for got, part in zip(dec.decode_many(together[:1]) + dec.decode_many(together[1:]), parts):
        np.testing.assert_array_equal(got, part)


def test_decoder_stops_stepping_streams_that_ended(lm24, monkeypatch):
    """Packets of unequal lengths decoded together: once the shorter ones end, the LM
    steps only the others (where that saves more than copying their caches)."""
    spec = SPECS["encodec_24khz"]
    lengths = (30, 12, 30, 16, 29)
    parts = [likely_codes(lm24, 4, n, first=[n, 1, 2, 3]) for n in lengths]
    packets = code_packets(LMEncoder(lm24, bytes(8), spec, 4), parts)
    stepped = []
    monkeypatch.setattr(intlm.State, "step", lambda self, step=intlm.State.step: stepped.append(self.batch)
                        or step(self))
    for got, part in zip(LMDecoder(lm24, spec, 4).decode_many(packets), parts):
        np.testing.assert_array_equal(got, part)
    # 12 steps of 5 streams, 4 of 4, 14 of 3: the one that ends a step before the last stays
    assert stepped == [5] * 12 + [4] * 4 + [3] * 14


def test_unpredictable_packet_falls_back_to_raw_and_costs_no_lm_work(lm24, monkeypatch):
    spec = SPECS["encodec_24khz"]
    likely = likely_codes(lm24, 4, 30)
    noise = np.random.default_rng(0).integers(0, 1024, (30, 4)).astype(np.uint16)
    packets = code_packets(LMEncoder(lm24, bytes(8), spec, 4), [likely, noise])
    assert [p.flags for p in packets] == [0, F.FLAG_RAW]
    assert len(packets[1].payload) == len(F.pack_codes(noise))
    monkeypatch.setattr(intlm.State, "step", lambda self: pytest.fail("LM stepped for a raw packet"))
    np.testing.assert_array_equal(LMDecoder(lm24, spec, 4).decode(packets[1]), noise)


def test_pass_runs_segments_of_one_length_together(monkeypatch):
    """IntLM.known over streams stacked [S, frames, n_q] gives each stream what it gets
    alone, and LMEncoder stacks a 48 kHz packet's consecutive segments of one length; the
    packet decodes."""
    lm, spec = int_lm("encodec_48khz"), SPECS["encodec_48khz"]
    codes = np.random.default_rng(11).integers(0, 1024, (3, 150, 4))
    together = list(lm.known(codes))
    assert [b.shape for b in together] == [(3, 75, 4, 1024)] * 2
    for j in range(3):
        np.testing.assert_array_equal(np.concatenate([b[j] for b in together]),
                                      np.concatenate(list(lm.known(codes[j]))))
    lengths = (20, 20, 7, 20, 20)
    parts = [likely_codes(lm, 4, n, first=[5 * i, 1, 2, 3]) for i, n in enumerate(lengths)]
    segments = [[(n, 1.0) for n in lengths]]
    shapes = []
    monkeypatch.setattr(intlm.IntLM, "known", lambda self, c, *a, known=intlm.IntLM.known: shapes.append(c.shape)
                        or known(self, c, *a))
    packet = code_packets(LMEncoder(lm, bytes(8), spec, 4), [np.concatenate(parts)], segments)[0]
    assert shapes == [(2, 20, 4), (1, 7, 4), (2, 20, 4)]
    assert packet.flags == 0
    np.testing.assert_array_equal(LMDecoder(lm, spec, 4).decode(packet), np.concatenate(parts))


def test_48khz_segments_are_streams_in_lockstep():
    """Each segment is a fresh stream: unequal segments round trip, and a segment codes the
    same whether alone or beside others."""
    lm = int_lm("encodec_48khz")
    spec = SPECS["encodec_48khz"]
    lengths = (20, 7, 20)
    parts = [likely_codes(lm, 4, n, first=[7 * i, 1, 2, 3]) for i, n in enumerate(lengths)]
    enc = LMEncoder(lm, bytes(8), spec, 4)
    packet = code_packets(enc, [np.concatenate(parts)], [[(n, 1.0) for n in lengths]])[0]
    assert packet.flags == 0
    np.testing.assert_array_equal(LMDecoder(lm, spec, 4).decode(packet), np.concatenate(parts))
    batch = lm.start(4, 3, 20)
    single = lm.start(4, 1, 20)
    for t in range(20):
        np.testing.assert_array_equal(batch.step()[2], single.step()[0])
        frame = np.stack([p[min(t, len(p) - 1)] for p in parts])
        batch.push(frame)
        single.push(frame[2:])


@pytest.mark.parametrize("name", ["v1_lm_24khz", "v1_lm_48khz"])
def test_golden_lm_file_decodes(name):
    doc = json.loads((FORMATS / f"{name}.codes.json").read_text())
    reader = F.Reader.open(io.BytesIO((FORMATS / f"{name}.ecdc").read_bytes()))
    model = reader.header.model
    dec = LMDecoder(int_lm(model), SPECS[model], reader.header.n_codebooks)
    packets = list(reader)
    assert [p.flags for p in packets] == [p["flags"] for p in doc["packets"]]
    for codes, expected in zip(dec.decode_many(packets), doc["packets"]):
        np.testing.assert_array_equal(codes, np.array(expected["codes"]))


@pytest.mark.parametrize("name", ["v1_lm_24khz", "v1_lm_48khz"])
def test_range_coder_bytes_are_stable(name):
    """An upgrade of constriction, numpy or torch that changes the bitstream is caught here."""
    reader = F.Reader.open(io.BytesIO((FORMATS / f"{name}.ecdc").read_bytes()))
    doc = json.loads((FORMATS / f"{name}.codes.json").read_text())
    model, k = reader.header.model, reader.header.n_codebooks
    enc = LMEncoder(int_lm(model), bytes(8), SPECS[model], k)
    parts = [(np.array(p["codes"], np.uint16), [tuple(x) for x in p["segments"]]) for p in doc["packets"]]
    assert enc.encode_many(parts) == [(p.payload, p.flags) for p in reader]


def test_threads_do_not_change_the_bitstream(lm24):
    spec = SPECS["encodec_24khz"]
    parts = [likely_codes(lm24, 8, 40), likely_codes(lm24, 8, 33, first=list(range(8)))]
    threads = torch.get_num_threads()
    try:
        payloads = []
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            payloads.append([p.payload for p in code_packets(LMEncoder(lm24, bytes(8), spec, 8), parts)])
    finally:
        torch.set_num_threads(threads)
    assert payloads[0] == payloads[1] == payloads[2]


# Kernel selections standing in for other CPUs (this one has AVX-512): an AVX2 laptop, no
# vector unit at all, oneDNN and MKL limited to SSE4, and all of them together.
KERNELS = {
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    # int8 products without VNNI (vpmaddubsw saturates pairs in int16): float32 products instead
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-sse42": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "all-three": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                  "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    # numba's loops built for a generic x86-64 (no AVX), numpy's without AVX-512 or AVX2
    "numba-numpy-generic": {"NUMBA_CPU_NAME": "generic",
                            "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR X86_V3"},
}

_DECODE = """
import hashlib, io, json, sys, numpy as np, torch
from encodec_cli.formats import v1 as F
from encodec_cli.formats.records import Header, Packet
from encodec_cli.entropy.lmcoder import LMDecoder, load_lm
from encodec_cli.codec.models import SPECS
out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    for threads in (1, 2, 4):
        torch.set_num_threads(threads)
        reader = F.Reader.open(io.BytesIO(data))
        model, k = reader.header.model, reader.header.n_codebooks
        lm, _ = load_lm(model, path[:-len(".ecdc")] + ".th", k, download_bars=False)
        dec = LMDecoder(lm, SPECS[model], k)
        codes = np.concatenate(dec.decode_many(list(reader)))
        out[f"{path}:{threads}"] = hashlib.sha256(codes.astype(">u2").tobytes()).hexdigest()
from encodec_cli.entropy import intlm
out["int8"] = intlm.int8_products()  # torch's int8 product, or float32 products of the same integers
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def portable_files(tmp_path_factory, checkpoints):
    """LM-coded files of both models made here under the default kernels, and their codes.

    The decoder loads the same checkpoint file (seeded torch.randn itself draws other
    numbers under other kernels)."""
    folder = tmp_path_factory.mktemp("portable")
    files = {}
    for model, k, seg in (("encodec_24khz", 8, None), ("encodec_48khz", 8, (25, 25, 10))):
        weights = folder / f"{model}.th"
        shutil.copy(checkpoints[model.replace("encodec_", "encodec_lm_")], weights)
        lm, spec = load_lm(model, weights, k, download_bars=False)[0], SPECS[model]
        parts = [likely_codes(lm, k, n, first=[n] * k) for n in (40, 25)]
        segments = [[(40, 1.0)], [(25, 1.0)]] if seg is None else [[(20, 1.0), (20, 0.5)], [(25, 1.0)]]
        packets = code_packets(LMEncoder(lm, bytes(8), spec, k), parts, segments)
        assert all(p.flags == 0 for p in packets)
        h = Header(model=model, coder="lm", n_codebooks=k, bandwidth=k * spec.frame_rate * 10 / 1000,
                   sample_rate=spec.sample_rate,
                   channels=spec.channels, source_sample_rate=spec.sample_rate, source_channels=spec.channels,
                   num_samples=None, source_num_samples=None, weights_fingerprint=bytes(8))
        buf = io.BytesIO()
        writer = F.Writer(buf, h)
        for p in packets:
            writer.write_packet(p.segments, p.payload, p.flags)
        writer.finish(65 * 320, 65 * 320)
        path = folder / f"{model}.ecdc"
        path.write_bytes(buf.getvalue())
        files[str(path)] = hashlib.sha256(np.concatenate(parts).astype(">u2").tobytes()).hexdigest()
    return files


@pytest.mark.parametrize("kernels", list(KERNELS))
def test_files_decode_under_other_kernels_and_threads(kernels, portable_files):
    env = dict(os.environ, **KERNELS[kernels], PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", _DECODE, *portable_files], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout)
    assert isinstance(got["int8"], bool)
    for path, digest in portable_files.items():
        for threads in (1, 2, 4):
            assert got[f"{path}:{threads}"] == digest, (kernels, path, threads)


def test_float_products_give_the_int8_products_sums(monkeypatch):
    """Where torch's int8 product is missing or inexact, float32 products of the same int8
    halves give the same sums (as do one stream's compiled products): the same frequencies,
    stepped and in one pass."""
    lm = int_lm("encodec_24khz")
    codes = likely_codes(lm, 8, 90)
    rng = np.random.default_rng(2)
    halves = np.concatenate([rng.integers(-32, 33, (6, 800)), rng.integers(-8, 8, (6, 800))]).astype(np.int8)
    layer = lm.layers[0].lin2
    wanted = halves.astype(np.int64) @ layer.q.numpy().T.astype(np.int64)
    results = []
    for int8 in (True, False):
        monkeypatch.setattr(intlm, "int8_products", lambda int8=int8: int8)
        np.testing.assert_array_equal(layer(halves), wanted)
        np.testing.assert_array_equal(layer(halves[5:7]), wanted[5:7])  # one stream: lmloops.rows_product
        results.append((_stepped(lm, codes, 7), np.concatenate(list(lm.known(codes, 7)))))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    monkeypatch.setattr(intlm, "int8_products", lambda: True)

    def refusing(a, b):
        raise RuntimeError("_int_mm: this shape is not supported")

    monkeypatch.setattr(torch, "_int_mm", refusing)  # a shape the kernel refuses: float32 products
    np.testing.assert_array_equal(layer(halves), wanted)


def test_loops_compile_without_a_cache_folder(monkeypatch):
    """Where numba finds no folder to write its cache to, it refuses cache=True: the loops
    are then compiled in each process instead of failing."""
    from encodec_cli import jit

    njit = jit.nb.njit

    def refusing(*args, cache=False, **kw):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return njit(*args, **kw)

    monkeypatch.setattr(jit.nb, "njit", refusing)
    twice = jit.njit(nogil=True)(lambda x: 2 * x)
    assert twice(21) == 42


def test_batches_ramp_up_for_pipes():
    """To a pipe the first packets go out one by one, then in doubling batches."""
    from encodec_cli.entropy.coders import batches

    sizes = [len(b) for b in batches(range(40), lambda _: 1, 8, ramp=True)]
    assert sizes == [1, 1, 2, 4, 8, 8, 8, 8] and sum(sizes) == 40
    assert [len(b) for b in batches(range(20), lambda _: 1, 8)] == [8, 8, 4]
    assert [len(b) for b in batches(range(6), lambda _: 3, 8)] == [3, 3]  # 48 kHz: streams count
