"""The language model against the reference, and the LM range coder."""
from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from encodec_cli import container as F
from encodec_cli import random_weights
from encodec_cli.errors import CorruptError
from encodec_cli.lm import DIM, MAX_PERIOD, POSITION_BLOCK, LMState, build_lm
from encodec_cli.lmcoder import LMDecoder, LMEncoder
from encodec_cli.models import SPECS
from encodec_cli.random_weights import likely_codes
from encodec_cli.weights import REGISTRY

from .conftest import GOLDEN
from .test_models import manifest

FORMATS = Path(__file__).resolve().parents[1] / "formats" / "golden"


random_lm = functools.lru_cache(maxsize=None)(random_weights.random_lm)  # one per model


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
    state = random_lm(name).start(codes.shape[1])
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
    lm = random_lm("encodec_24khz")
    half = DIM // 2
    scale = MAX_PERIOD ** (torch.arange(half) / (half - 1))
    for offset in (0, POSITION_BLOCK - 1, POSITION_BLOCK, 540_000):  # 540,000 frames: 2 hours
        phase = torch.tensor([offset]) / scale
        expected = torch.cat([torch.cos(phase), torch.sin(phase)])[None]
        torch.testing.assert_close(lm.position(offset), expected, rtol=0, atol=1e-6)
        assert lm._positions.shape == (POSITION_BLOCK, DIM)


@pytest.fixture(scope="module")
def lm24():
    return random_lm("encodec_24khz")


def code_packets(encoder, parts, segments=None):
    """Encode each part as one packet and read it back as the container would give it."""
    packets = []
    for i, part in enumerate(parts):
        segs = segments[i] if segments else ((len(part), 1.0),)
        payload, flags = encoder.encode(part, segs)
        codes = part if flags else np.empty((len(part), 0), np.uint16)
        packets.append(F.Packet(codes, tuple(segs), flags, payload))
    return packets


def test_round_trip_is_smaller_than_raw_when_predictable(lm24):
    spec = SPECS["encodec_24khz"]
    codes = likely_codes(lm24, 8, 90)
    enc = LMEncoder(lm24, bytes(8), spec, 8)
    parts = [codes[:40], codes[40:]]
    packets = code_packets(enc, parts)
    assert all(p.flags == 0 for p in packets)
    assert sum(len(p.payload) for p in packets) < 0.8 * len(F.pack_codes(codes))
    dec = LMDecoder(lm24, spec, 8)
    np.testing.assert_array_equal(np.concatenate([dec.decode(p) for p in packets]), codes)


def test_unpredictable_packet_falls_back_to_raw_and_keeps_state(lm24):
    spec = SPECS["encodec_24khz"]
    likely = likely_codes(lm24, 4, 60)
    noise = np.random.default_rng(0).integers(0, 1024, (30, 4)).astype(np.uint16)
    enc = LMEncoder(lm24, bytes(8), spec, 4)
    parts = [likely[:30], noise, likely[30:]]
    packets = code_packets(enc, parts)
    assert [p.flags for p in packets] == [0, F.FLAG_RAW, 0]
    assert len(packets[1].payload) == len(F.pack_codes(noise))
    dec = LMDecoder(lm24, spec, 4)
    for packet, part in zip(packets, parts):
        np.testing.assert_array_equal(dec.decode(packet), part)


def test_48khz_restarts_the_lm_every_segment():
    lm = random_lm("encodec_48khz")
    spec = SPECS["encodec_48khz"]
    codes = likely_codes(lm, 4, 20)
    enc = LMEncoder(lm, bytes(8), spec, 4)
    one = enc.encode(codes, [(20, 1.0)])
    assert enc.encode(codes, [(20, 1.0)]) == one  # a fresh state at each segment
    both = np.concatenate([codes, codes])
    packets = code_packets(enc, [both], [((20, 1.0), (20, 1.0))])
    assert packets[0].flags == 0 and len(packets[0].payload) < 2 * len(one[0])
    np.testing.assert_array_equal(LMDecoder(lm, spec, 4).decode(packets[0]), both)


def test_48khz_segments_step_together_like_separate_streams():
    """A packet's segments run as one batch: same probabilities as one stream each, to rounding."""
    lm = random_lm("encodec_48khz")
    spec = SPECS["encodec_48khz"]
    lengths = (20, 7, 20)
    parts = [likely_codes(lm, 4, n) for n in lengths]
    for i, part in enumerate(parts):
        part[::3] = (part[::3] + 17 * i) % 1024  # streams that differ
    batch = lm.start(4, len(parts))
    singles = [lm.start(4) for _ in parts]
    for t in range(max(lengths)):
        together = batch.step()
        frames = np.stack([part[min(t, len(part) - 1)] for part in parts])
        for i, single in enumerate(singles):
            torch.testing.assert_close(together[i], single.step()[0], rtol=0, atol=1e-6)
            single.push(torch.from_numpy(frames[i].astype(np.int64)))
        batch.push(torch.from_numpy(frames.astype(np.int64)))
    # a packet of unequal segments round trips; the short one stops coding after 7 frames
    both = np.concatenate(parts)
    enc = LMEncoder(lm, bytes(8), spec, 4)
    packets = code_packets(enc, [both], [tuple((n, 1.0) for n in lengths)])
    assert packets[0].flags == 0
    np.testing.assert_array_equal(LMDecoder(lm, spec, 4).decode(packets[0]), both)


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_threads_do_not_change_the_bitstream(name):
    """More torch threads round the LM differently; the coder pins it to one."""
    lm, spec = random_lm(name), SPECS[name]
    parts = [likely_codes(lm, 4, 30), likely_codes(lm, 4, 30)[::-1].copy()]
    segments = [((30, 1.0),), ((15, 1.0), (15, 1.0))] if not spec.causal else None
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        packets = code_packets(LMEncoder(lm, bytes(8), spec, 4), parts, segments)
        torch.set_num_threads(1)
        dec = LMDecoder(lm, spec, 4)
        for packet, part in zip(packets, parts):
            assert packet.flags == 0
            np.testing.assert_array_equal(dec.decode(packet), part)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads


def test_48khz_raw_packet_needs_no_lm_work(monkeypatch):
    lm = random_lm("encodec_48khz")
    spec = SPECS["encodec_48khz"]
    noise = np.random.default_rng(1).integers(0, 1024, (40, 4)).astype(np.uint16)
    packets = code_packets(LMEncoder(lm, bytes(8), spec, 4), [noise], [((20, 1.0), (20, 1.0))])
    assert packets[0].flags == F.FLAG_RAW
    monkeypatch.setattr(LMState, "step", lambda self: pytest.fail("LM stepped for a raw packet"))
    np.testing.assert_array_equal(LMDecoder(lm, spec, 4).decode(packets[0]), noise)


@pytest.mark.parametrize("name", ["v1_lm_24khz", "v1_lm_48khz"])
def test_golden_lm_file_decodes(name):
    doc = json.loads((FORMATS / f"{name}.codes.json").read_text())
    reader = F.Reader(io.BytesIO((FORMATS / f"{name}.ecdc").read_bytes()))
    model = reader.header.model
    dec = LMDecoder(random_lm(model), SPECS[model], reader.header.n_codebooks)
    for packet, expected in zip(reader, doc["packets"]):
        np.testing.assert_array_equal(dec.decode(packet), np.array(expected["codes"]))


@pytest.mark.parametrize("name", ["v1_lm_24khz", "v1_lm_48khz"])
def test_range_coder_bytes_are_stable(name):
    """An upgrade of constriction or torch that changes the bitstream is caught here."""
    reader = F.Reader(io.BytesIO((FORMATS / f"{name}.ecdc").read_bytes()))
    doc = json.loads((FORMATS / f"{name}.codes.json").read_text())
    model, k = reader.header.model, reader.header.n_codebooks
    enc = LMEncoder(random_lm(model), bytes(8), SPECS[model], k)
    for packet, expected in zip(reader, doc["packets"]):
        codes = np.array(expected["codes"], np.uint16)
        payload, flags = enc.encode(codes, [tuple(x) for x in expected["segments"]])
        assert (payload, flags) == (packet.payload, packet.flags)


def test_perturbed_probabilities_fail_loudly(lm24, monkeypatch):
    spec = SPECS["encodec_24khz"]
    codes = likely_codes(lm24, 8, 60)
    packets = code_packets(LMEncoder(lm24, bytes(8), spec, 8), [codes])
    original = LMDecoder.probabilities

    def perturbed(self, state):
        p = original(self, state)
        noise = np.random.default_rng(int(p.flat[0] * 1e9) % 2**32).random(p.shape) * 1e-3
        return p + noise

    monkeypatch.setattr(LMDecoder, "probabilities", perturbed)
    with pytest.raises(CorruptError, match="fail their checksum"):
        LMDecoder(lm24, spec, 8).decode(packets[0])
