"""Live streams (format version 2): the exact arithmetic coder, golden bytes, the pipeline
end to end through pipes, damage and cuts, any bytes, other CPUs' kernels."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encodec_cli.audio.arrays import ArraySink, ArraySource
from encodec_cli.entropy.lmcoder import LiveModel
from encodec_cli.errors import CorruptError, EcdcError, FormatError, TruncatedError
from encodec_cli.formats import arith, live, v1
from encodec_cli.formats.reader import describe, read_header
from encodec_cli.formats.records import Header, Input
from encodec_cli.options import CompressOptions, DecompressOptions
from encodec_cli.pipeline import compress_stream, decompress_stream, read_packets
from encodec_cli.specs import SPECS
from encodec_cli.testing import random_int_lm

from .conftest import tone

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "formats" / "golden"
LIVE_GOLDEN = ["v2_live_lm_24khz", "v2_live_raw_24khz", "v2_live_lm_48khz"]


class Trickle:
    """Bytes handed out a few at a time, as a slow pipe would."""

    def __init__(self, data: bytes, step: int):
        self.data, self.pos, self.step = data, 0, step

    def available(self, at: int) -> int:
        return max(0, self.pos - at)

    def view(self, at: int, n: int) -> bytes:
        return self.data[at:at + n]

    def more(self) -> bool:
        if self.pos >= len(self.data):
            return False
        self.pos = min(len(self.data), self.pos + self.step)
        return True


def _models(rng, n):
    out = []
    for _ in range(n):
        g = rng.integers(0, 1000, 1024) ** int(rng.integers(1, 3))
        g = g * (arith.TOTAL - 1024) // max(1, g.sum())
        g[0] += arith.TOTAL - 1024 - g.sum()
        out.append(live.cumulative(g[None])[0])
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 5))
def test_arithmetic_coder_round_trips_whatever_the_byte_arrival(seed, n, step):
    rng = np.random.default_rng(seed)
    models = _models(rng, n)
    symbols = [int(rng.choice(1024, p=np.diff(c) / arith.TOTAL)) for c in models]
    enc = arith.ArithEncoder()
    marks = []
    for c, s in zip(models, symbols):
        enc.encode(int(c[s]), int(c[s + 1] - c[s]))
        marks.append(enc.mark())
    enc.seal()
    tail = bytes(rng.integers(0, 256, 6).astype(np.uint8))  # whatever follows a seal
    dec = arith.ArithDecoder(Trickle(bytes(enc.out) + tail, step), 0)
    assert [dec.decode(c) for c in models] == symbols
    dec.seal()
    assert dec.position == len(enc.out)


def test_seal_is_the_shortest_byte_string_inside_the_interval():
    enc = arith.ArithEncoder()
    enc.encode(0, arith.TOTAL // 2)      # [0, 1/2): one byte 0x00 .. 0x7F; the seal is 00 (cell [0, 1/256))
    enc.seal()
    assert bytes(enc.out) == b"\x00"
    enc = arith.ArithEncoder()
    enc.encode(arith.TOTAL // 4, arith.TOTAL // 2)  # [1/4, 3/4)
    enc.seal()
    assert bytes(enc.out) == b"\x40"
    enc = arith.ArithEncoder()
    enc.encode(1, 1)  # [2^-24, 2^-23): bytes 00 00 01 .. are settled, nothing more needed
    assert bytes(enc.out) == b"\x00\x00\x01"
    enc.seal()
    assert bytes(enc.out) == b"\x00\x00\x01"


def _golden_model(h: Header):
    spec = SPECS[h.model]
    if h.coder == "raw":
        return live.Uniform(h.n_codebooks)
    return LiveModel(random_int_lm(h.model), h.lm_fingerprint, spec, h.n_codebooks)


def _read(data: bytes, step: int = 1 << 16):
    inp = Input(io.BytesIO(data))
    h = read_header(inp)
    reader = live.Reader(inp, h, _golden_model(h))
    return h, reader, list(reader)


@pytest.mark.parametrize("name", LIVE_GOLDEN)
def test_golden_live_streams_read_and_write_the_same_bytes(name):
    data = (GOLDEN / f"{name}.ecdc").read_bytes()
    doc = json.loads((GOLDEN / f"{name}.codes.json").read_text())
    h, reader, packets = _read(data)
    assert h.version == 2 and h.coder == doc["header"]["coder"] and h.n_codebooks == doc["header"]["codebooks"]
    codes = np.concatenate([p.codes for p in packets])
    assert codes.tolist() == [f for p in doc["packets"] for f in p["codes"]]
    assert reader.num_samples == doc["end"]["num_samples"] and reader.end.frames == len(codes)
    if not SPECS[h.model].causal:
        assert [p.segments for p in packets] == [tuple(map(tuple, p["segments"])) for p in doc["packets"]]
    if name == "v2_live_lm_24khz":
        assert reader.blocks == 8 + 1 + 1  # 600 frames in 8 blocks of 75, a unit of 12, the end
    # writing the same codes gives the same bytes
    buf = io.BytesIO()
    w = live.Writer(buf, h, _golden_model(h))
    if SPECS[h.model].causal:
        last = reader.num_samples - (len(codes) - 1) * 320
        if name == "v2_live_lm_24khz":
            w.write_frames(codes[:-1])
            w.write_frames(codes[-1:], last_valid=last)
        else:
            w.write_frames(codes)
    else:
        for p in packets:
            w.write_segment(p.codes, p.segments[0][1])
    w.finish(reader.num_samples, reader.source_num_samples)
    assert buf.getvalue() == data


def test_golden_live_stream_has_a_checksum_every_second():
    """v2_live_raw_24khz: 80 frames: a block of 75, then 5 and 'no more frames'; then the
    end record, each with its CRC, so damage anywhere stops the read within a second."""
    data = (GOLDEN / "v2_live_raw_24khz.ecdc").read_bytes()
    _, reader, _ = _read(data)
    assert reader.blocks == 2 + 1


@pytest.mark.parametrize("name, every", [("v2_live_raw_24khz", 7), ("v2_live_lm_48khz", 97)])
def test_every_cut_stops_with_our_error_after_the_audio_before_it(name, every):
    data = (GOLDEN / f"{name}.ecdc").read_bytes()
    full = sum(p.frames for p in _read(data)[2])
    header = len(v1.header_bytes(read_header(Input(io.BytesIO(data)))))
    for cut in list(range(header, len(data), every)) + [len(data) - 1]:
        inp = Input(io.BytesIO(data[:cut]))
        h = read_header(inp)
        got = 0
        with pytest.raises(TruncatedError):
            for p in live.Reader(inp, h, _golden_model(h)):
                got += p.frames
        assert got <= full


def test_a_damaged_byte_is_caught_within_its_block():
    data = (GOLDEN / "v2_live_raw_24khz.ecdc").read_bytes()
    header = len(v1.header_bytes(read_header(Input(io.BytesIO(data)))))
    for pos in range(header, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises((CorruptError, TruncatedError, FormatError)):
            _read(bytes(bad))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_after_a_live_header_decode_or_raise_our_error(data):
    head = (GOLDEN / "v2_live_raw_24khz.ecdc").read_bytes()
    h = read_header(Input(io.BytesIO(head)))
    start = len(v1.header_bytes(h))
    for blob in (data, head[start:start + 40] + data):
        try:
            _read(v1.header_bytes(h) + blob)
        except EcdcError:
            pass


def test_old_readers_refuse_live_streams_and_info_reads_the_end():
    data = (GOLDEN / "v2_live_lm_48khz.ecdc").read_bytes()
    assert data[8] == 2  # version 2: a version-1 reader stops at "unsupported .ecdc format version 2"
    inp = Input(io.BytesIO(data))
    with pytest.raises(FormatError, match="live stream"):
        v1.Reader(inp, read_header(inp))
    d = describe(io.BytesIO(data))
    assert d.end.frames == 190 and d.size == len(data) and d.header.version == 2


def _opts(checkpoints, model: str, **kw):
    return dict(weights=checkpoints[model], lm_weights=checkpoints[model.replace("encodec_", "encodec_lm_")], **kw)


@pytest.mark.parametrize("model, bw, lm", [("encodec_24khz", 1.5, True), ("encodec_24khz", 6.0, False),
                                           ("encodec_48khz", 3.0, True)])
def test_live_stream_has_the_codes_of_file_mode(checkpoints, model, bw, lm):
    spec = SPECS[model]
    x = tone(2.3, spec.sample_rate, spec.channels)
    files = {}
    for is_live in (False, True):
        fo = io.BytesIO()
        o = CompressOptions(bandwidth=bw, model=model, lm=lm, live=is_live, raw_fallback=False,
                            **_opts(checkpoints, model))
        compress_stream(ArraySource(x, spec.sample_rate), fo, o)
        files[is_live] = fo.getvalue()
    assert files[True][8] == 2 and files[False][8] == 1
    do = DecompressOptions(**_opts(checkpoints, model))
    codes = {}
    for is_live, data in files.items():
        reader, packets = read_packets(io.BytesIO(data), do)
        codes[is_live] = np.concatenate([p.codes for p in packets])
        assert reader.num_samples == len(x)
    assert np.array_equal(codes[True], codes[False])


def _ecdc(*args):
    return [sys.executable, "-m", "encodec_cli", *map(str, args)]


def test_decoded_audio_comes_out_while_the_input_is_still_coming(checkpoints, tmp_path):
    """The README's pipeline, live: the decoder has written audio of the first second before
    the encoder's input has ended (here: before its second half is even written)."""
    w = ["--weights", checkpoints["encodec_24khz"], "--lm-weights", checkpoints["encodec_lm_24khz"]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    enc = subprocess.Popen(_ecdc("compress", "-", "-o", "-", "--live", "-q", "-b", "3", *w),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    dec = subprocess.Popen(_ecdc("decompress", "-", "-o", "-", "-q", *w), stdin=enc.stdout,
                           stdout=subprocess.PIPE, env=env)
    enc.stdout.close()
    pcm = (tone(4.0, 24000)[:, 0] * 32767).astype("<i2").tobytes()
    head = v1_wav_head(24000)
    enc.stdin.write(head + pcm[:len(pcm) // 2])
    enc.stdin.flush()
    got = b""
    deadline = time.monotonic() + 120
    while len(got) < 44 + 2 * 24000 and time.monotonic() < deadline:  # a second of audio
        chunk = os.read(dec.stdout.fileno(), 65536)
        if not chunk:
            break
        got += chunk
    assert len(got) >= 44 + 2 * 24000, "no audio before the input ended"
    enc.stdin.write(pcm[len(pcm) // 2:])
    enc.stdin.close()
    got += dec.stdout.read()
    assert enc.wait() == 0 and dec.wait() == 0
    assert len(got) == 44 + len(pcm)  # exactly the input's length


def v1_wav_head(rate: int) -> bytes:
    import struct
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", 0xFFFFFFFF)


def _errors(stderr: bytes) -> str:
    """stderr without the note a slow start gives (numba compiling on a machine's first run)."""
    return "\n".join(line for line in stderr.decode().strip().splitlines() if "preparing the live stream" not in line)


def test_cut_live_stream_says_where_it_ends_after_its_audio(checkpoints, tmp_path):
    wav = tmp_path / "a.wav"
    import soundfile as sf
    sf.write(wav, tone(3.0, 24000), 24000)
    w = ["--weights", checkpoints["encodec_24khz"], "--lm-weights", checkpoints["encodec_lm_24khz"]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    stream = subprocess.run(_ecdc("compress", wav, "-o", "-", "--live", "-q", "--raw", *w), capture_output=True,
                            env=env, check=True).stdout
    cut = stream[:len(stream) * 2 // 3]
    p = subprocess.run(_ecdc("decompress", "-", "-o", "-", "-q", *w), input=cut, capture_output=True, env=env)
    assert p.returncode == 1
    err = _errors(p.stderr)
    note, error = err.splitlines()
    assert note.startswith("note: stdin: damaged: from 2.") and "truncated live stream" in note
    assert error == "Error: stdin: the file is cut or damaged, and the audio on stdout ends where it does (see above)"
    assert len(p.stdout) > 44 + 2 * 24000  # the audio before the cut came out first
    out = subprocess.run(_ecdc("info", "-"), input=stream, capture_output=True, env=env, check=True).stdout.decode()
    assert "2 (live stream" in out and "3.000 s" in out
    conv = tmp_path / "c.ecdc"
    (tmp_path / "s.ecdc").write_bytes(stream)
    subprocess.run(_ecdc("convert", tmp_path / "s.ecdc", "-o", conv, "-q", *w), check=True, env=env)
    assert conv.read_bytes()[8] == 1
    # a range of a recorded stream: exactly as long as asked, the audio of the converted file
    for src, out in ((tmp_path / "s.ecdc", tmp_path / "r1.wav"), (conv, tmp_path / "r2.wav")):
        subprocess.run(_ecdc("decompress", src, "-o", out, "--start", "1.25", "--duration", "1", "-q", *w),
                       check=True, env=env)
    r1, r2 = sf.read(tmp_path / "r1.wav")[0], sf.read(tmp_path / "r2.wav")[0]
    assert len(r1) == len(r2) == 24000 and np.abs(r1 - r2).max() <= 2 / 32768
    p = subprocess.run(_ecdc("decompress", tmp_path / "s.ecdc", "-o", tmp_path / "x.wav", "--salvage", *w),
                       capture_output=True, env=env)
    assert p.returncode == 0 and not p.stderr  # an intact stream salvages to itself
    assert len(sf.read(tmp_path / "x.wav")[0]) == 3 * 24000


_PORTABLE = """
import io, json, os, sys, hashlib, numpy as np
from encodec_cli.formats import live
from encodec_cli.formats.records import Input
from encodec_cli.formats.reader import read_header
from encodec_cli.entropy.lmcoder import LiveModel, load_lm
from encodec_cli.specs import SPECS
out = {}
weights = json.loads(sys.argv[1])
for path in sys.argv[2:]:
    inp = Input(io.BytesIO(open(path, "rb").read()))
    h = read_header(inp)
    lm = load_lm(h.model, weights[h.model], h.n_codebooks, download_bars=False)[0]
    m = LiveModel(lm, h.lm_fingerprint, SPECS[h.model], h.n_codebooks)
    codes = np.concatenate([p.codes for p in live.Reader(inp, h, m)])
    out[path] = hashlib.sha256(codes.astype(">u2").tobytes()).hexdigest()
print(json.dumps(out))
"""


@pytest.mark.parametrize("kernels", [{"ATEN_CPU_CAPABILITY": "default"},
                                     {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "SSE41",
                                      "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
                                     {"NUMBA_CPU_NAME": "generic"}])
def test_live_lm_streams_decode_under_other_kernels(kernels, checkpoints):
    """The golden LM streams (seeded LM, seed 1234: the checkpoints' own) decode to their
    codes, also with numba's loops built for a generic x86-64 instead of this CPU; the LM is
    loaded from the checkpoint file, since torch.randn draws other numbers under other
    kernels."""
    paths = [str(GOLDEN / f"{n}.ecdc") for n in ("v2_live_lm_24khz", "v2_live_lm_48khz")]
    weights = {m: str(checkpoints[m.replace("encodec_", "encodec_lm_")]) for m in ("encodec_24khz", "encodec_48khz")}
    env = dict(os.environ, **kernels, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", _PORTABLE, json.dumps(weights), *paths], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout)
    for path in paths:
        doc = json.loads(Path(path[:-5] + ".codes.json").read_text())
        codes = np.array([f for pk in doc["packets"] for f in pk["codes"]], np.uint16)
        import hashlib
        assert got[path] == hashlib.sha256(codes.astype(">u2").tobytes()).hexdigest()


def test_a_decoder_that_falls_behind_says_so_once(monkeypatch, caplog):
    from encodec_cli import pipeline

    class Reader:
        waited = 0.0

    now = [100.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: now[0])
    pace = pipeline._Pace(Reader())
    now[0] += 2.5
    with caplog.at_level("WARNING", logger="ecdc"):
        pace.check(2.4)              # 2.5 s of work for 2.4 s of audio: within 5%
        assert not caplog.records
        now[0] += 2.0
        pace.check(3.0)              # 4.5 s for 3 s: behind
        pace.check(3.1)
    assert len(caplog.records) == 1 and "slower than real time" in caplog.records[0].getMessage()
    waiting = Reader()
    waiting.waited = 9.0             # the time went to waiting for input: not the decoder's fault
    pace = pipeline._Pace(waiting)
    now[0] += 10.0
    caplog.clear()
    with caplog.at_level("WARNING", logger="ecdc"):
        pace.check(3.0)
    assert not caplog.records


_WARM = """
import json, sys
from encodec_cli.codec import fewkernel, streaming as C
codec = C.load_codec("encodec_24khz", sys.argv[1])
kernels = (fewkernel.affine, fewkernel.lstm, fewkernel.nearest)
before = [len(k.signatures) for k in kernels]
C.warm_live(codec, 8, encoder=sys.argv[2] == "encoder")
print(json.dumps([before, [len(k.signatures) for k in kernels]]))
"""


@pytest.mark.parametrize("side, ready", [("encoder", [1, 1, 1]), ("decoder", [1, 1, 0])])
def test_warm_live_readies_every_kernel_a_live_step_takes(checkpoints, side, ready):
    """In a fresh process, warming a live 24 kHz encoder (decoder) compiles or loads each
    fewkernel function its steps call, a block's one or two frames included; before it,
    the first block of a stream paid that (seconds, on a machine's first run)."""
    p = subprocess.run([sys.executable, "-c", _WARM, str(checkpoints["encodec_24khz"]), side],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout) == [[0, 0, 0], ready]


def test_live_pipeline_warms_its_kernels_before_the_audio(checkpoints, monkeypatch):
    """compress warms its encoder before it reads the first block; decompress warms its
    decoder before it decodes the first frame."""
    from encodec_cli.codec import streaming as C

    events = []
    monkeypatch.setattr(C, "warm_live", lambda codec, n_q, encoder: events.append(("warm", encoder)))
    decode = C.decode
    monkeypatch.setattr(C, "decode", lambda *a, **k: (events.append(("decode", None)), decode(*a, **k))[1])

    class Source(ArraySource):
        def blocks(self):
            for block in super().blocks():
                events.append(("block", None))
                yield block

    fo = io.BytesIO()
    compress_stream(Source(tone(0.5, 24000), 24000), fo,
                    CompressOptions(bandwidth=6.0, live=True, **_opts(checkpoints, "encodec_24khz")))
    assert events[:2] == [("warm", True), ("block", None)]
    events.clear()
    fo.seek(0)
    sink = ArraySink(1)
    decompress_stream(fo, lambda *a: sink, DecompressOptions(**_opts(checkpoints, "encodec_24khz")))
    assert events == [("warm", False), ("decode", None)] and len(sink.samples()) == 12000


def test_a_slow_live_start_says_why_once(checkpoints, monkeypatch, caplog):
    """A machine's first run compiles the live kernels for seconds before any audio: past
    SLOW_START the user is told why, once a process however many parts are slow; a quick
    start says nothing."""
    from encodec_cli import pipeline
    from encodec_cli.codec import streaming as C

    warm = C.warm_live
    monkeypatch.setattr(C, "warm_live", lambda *a, **k: (time.sleep(0.3), warm(*a, **k))[1])
    for slow_start, said in ((60.0, 0), (0.05, 1)):
        pipeline._tell_slow_start.cache_clear()
        monkeypatch.setattr(pipeline, "SLOW_START", slow_start)
        caplog.clear()
        with caplog.at_level("WARNING", logger="ecdc"):
            fo = io.BytesIO()
            compress_stream(ArraySource(tone(0.3, 24000), 24000), fo,
                            CompressOptions(bandwidth=6.0, live=True, **_opts(checkpoints, "encodec_24khz")))
            fo.seek(0)
            decompress_stream(fo, lambda *a: ArraySink(1), DecompressOptions(**_opts(checkpoints, "encodec_24khz")))
        told = [r.getMessage() for r in caplog.records if "first run" in r.getMessage()]
        assert len(told) == said and all("numba compiles its kernels" in m for m in told)


def test_a_slow_lm_start_for_a_file_says_why_once(checkpoints, monkeypatch, caplog):
    """An LM-coded file's first run on a machine compiles numba's loops for seconds before
    any coding: past SLOW_START the user is told why, once a process each way; the loops are
    compiled or loaded as the coder loads (not inside the first packet); a quick start says
    nothing."""
    from encodec_cli import pipeline
    from encodec_cli.entropy import intlm, lmcoder

    load = lmcoder.load_lm
    monkeypatch.setattr(lmcoder, "load_lm", lambda *a, **k: (time.sleep(0.3), load(*a, **k))[1])
    steps: list = []
    start = intlm.IntLM.start
    monkeypatch.setattr(intlm.IntLM, "start", lambda self, *a, **k: steps.append(a[1]) or start(self, *a, **k))
    for slow_start, said in ((60.0, 0), (0.05, 2)):
        pipeline._tell_slow_start.cache_clear()
        monkeypatch.setattr(pipeline, "SLOW_START", slow_start)
        caplog.clear()
        steps.clear()
        with caplog.at_level("WARNING", logger="ecdc"):
            fo = io.BytesIO()
            compress_stream(ArraySource(tone(0.3, 24000), 24000), fo,
                            CompressOptions(bandwidth=6.0, raw_fallback=False, **_opts(checkpoints, "encodec_24khz")))
            pipeline._tell_slow_start.cache_clear()  # a decompressing process of its own
            fo.seek(0)
            decompress_stream(fo, lambda *a: ArraySink(1), DecompressOptions(**_opts(checkpoints, "encodec_24khz")))
        told = [r.getMessage() for r in caplog.records if "first run" in r.getMessage()]
        assert len(told) == said and all("numba compiles its loops" in m for m in told)
        assert steps[:2] == [1, 2]  # the decoder's warm-up: one stream, then two
