"""The .ecdc container: exact bytes, golden files, and every kind of damage."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encodec_cli.errors import CorruptError, EcdcError, FormatError, TruncatedError
from encodec_cli.formats import v1 as F
from encodec_cli.formats.records import Header

GOLDEN = Path(__file__).resolve().parents[1] / "formats" / "golden"
FP = bytes.fromhex("0123456789abcdef")


def header(**kw) -> Header:
    fields = dict(model="encodec_24khz", coder="raw", n_codebooks=8, bandwidth=6.0,
                  sample_rate=24000, channels=1, source_sample_rate=44100, source_channels=2,
                  num_samples=None, source_num_samples=None, weights_fingerprint=FP)
    fields.update(kw)
    return Header(**fields)


def small_file(seekable: bool = True) -> bytes:
    class Pipe(io.BytesIO):
        def seekable(self):
            return seekable

    buf = Pipe()
    w = F.Writer(buf, header())
    codes = (np.arange(30 * 8).reshape(30, 8) * 37 % 1024).astype(np.uint16)
    w.write_packet([(30, 1.0)], F.pack_codes(codes))
    w.write_packet([(5, 1.0)], F.pack_codes(codes[:5]))
    w.finish(35 * 320 - 7, 20000)
    return buf.getvalue()


def read_all(data: bytes):
    reader = F.Reader.open(io.BytesIO(data))
    packets = list(reader)
    return reader, packets


def test_pack_codes_exact_bytes():
    codes = np.array([[1023, 0], [1, 512]], np.uint16)
    assert F.pack_codes(codes) == bytes.fromhex("ffc0000600")
    np.testing.assert_array_equal(F.unpack_codes(bytes.fromhex("ffc0000600"), 2, 2), codes)


@given(st.integers(1, 40), st.integers(1, 32), st.integers(0, 2**32 - 1))
def test_pack_round_trip(frames, k, seed):
    codes = np.random.default_rng(seed).integers(0, 1024, (frames, k)).astype(np.uint16)
    data = F.pack_codes(codes)
    assert len(data) == (frames * k * 10 + 7) // 8
    np.testing.assert_array_equal(F.unpack_codes(data, frames, k), codes)


def test_header_exact_bytes():
    data = F.header_bytes(header(num_samples=480000, source_num_samples=882000))
    assert data[:8] == b"\x89ECDC\r\n\x1a" and data[8] == 1
    assert struct.unpack(">H", data[9:11])[0] == 50 and len(data) == 11 + 50 + 4
    assert data[11:14] == bytes([1, 0, 8])
    assert struct.unpack(">IIBIH", data[14:29]) == (6000, 24000, 1, 44100, 2)
    assert struct.unpack(">QQ", data[29:45]) == (480000, 882000)
    assert data[45:53] == FP and data[53:61] == bytes(8)
    assert struct.unpack(">I", data[61:])[0] == zlib.crc32(data[:61])


def test_round_trip_and_lengths_patched_when_seekable():
    reader, packets = read_all(small_file(seekable=True))
    assert reader.header.num_samples == 35 * 320 - 7
    assert reader.header.source_num_samples == 20000
    assert [p.frames for p in packets] == [30, 5]
    assert [p.segments for p in packets] == [((30, 1.0),), ((5, 1.0),)]
    assert reader.end == F.End(35, 35 * 320 - 7, 20000, 2)


def test_pipe_leaves_lengths_to_end_record():
    reader, _ = read_all(small_file(seekable=False))
    assert reader.header.num_samples is None and reader.header.source_num_samples is None
    assert reader.end.num_samples == 35 * 320 - 7


@pytest.mark.parametrize("name", ["v1_raw_24khz", "v1_raw_48khz_pipe", "v1_raw_24khz_tags", "v1_lm_24khz",
                                  "v1_lm_48khz"])
def test_golden_files_still_read(name):
    doc = json.loads((GOLDEN / f"{name}.codes.json").read_text())
    reader, packets = read_all((GOLDEN / f"{name}.ecdc").read_bytes())
    h = reader.header
    assert (h.model, h.coder, h.n_codebooks, h.bandwidth) == (
        doc["header"]["model"], doc["header"]["coder"], doc["header"]["codebooks"],
        doc["header"]["bandwidth"])
    assert (h.source_sample_rate, h.source_channels) == (
        doc["header"]["source_sample_rate"], doc["header"]["source_channels"])
    assert h.weights_fingerprint.hex() == doc["header"]["weights_fp"]
    assert h.source_bits == doc["header"].get("source_bits")                   # revision 2
    assert dict(h.tags) == doc["header"].get("tags", {})
    assert len(packets) == len(doc["packets"])
    for packet, expected in zip(packets, doc["packets"]):
        assert packet.frames == len(expected["codes"])
        assert [list(x) for x in packet.segments] == expected["segments"]
        assert packet.flags == expected["flags"]
        if h.coder == "raw" or packet.flags & F.FLAG_RAW:
            np.testing.assert_array_equal(packet.codes, np.array(expected["codes"]))
    assert reader.end.num_samples == doc["end"]["num_samples"]
    assert reader.end.source_num_samples == doc["end"]["source_samples"]


def test_not_ecdc():
    with pytest.raises(FormatError, match="not an .ecdc file"):
        read_all(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises(FormatError, match="not an .ecdc file"):
        read_all(b"")


def test_reference_encodec_file_is_named():
    with pytest.raises(FormatError, match="Meta's encodec"):
        read_all(b"ECDC\x00\x00\x00\x00\x10{}")


def test_unknown_version():
    data = bytearray(small_file())
    data[8] = 3
    with pytest.raises(FormatError, match="unsupported .ecdc format version 3"):
        read_all(bytes(data))


@pytest.mark.parametrize("coder, why", [(1, "coder 1, the language-model coder of ecdc development builds"),
                                        (2, "coder 2, the floating-point language-model coder")])
def test_retired_lm_coders_are_named(coder, why):
    """Coders 1 and 2 (float LM coders of development builds) are refused with a reason."""
    data = bytearray(small_file())
    data[12] = coder
    data[61:65] = struct.pack(">I", zlib.crc32(bytes(data[:61])))
    with pytest.raises(FormatError, match=why):
        read_all(bytes(data))


def test_coder_3_is_the_lm_coder():
    data = bytearray(small_file())
    data[12] = 3
    data[61:65] = struct.pack(">I", zlib.crc32(bytes(data[:61])))
    assert F.Reader.open(io.BytesIO(bytes(data))).header.coder == "lm"


def test_every_truncation_is_reported():
    data = small_file()
    for n in range(len(data)):
        with pytest.raises((TruncatedError, FormatError)):
            read_all(data[:n])


def test_every_bit_flip_is_caught():
    data = small_file()
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x10
        with pytest.raises(EcdcError):
            read_all(bytes(damaged))


def test_crc_error_names_record_and_offset():
    data = bytearray(small_file())
    first_record = 65
    data[first_record + 20] ^= 1
    with pytest.raises(CorruptError, match=f"record 1 at byte {first_record} fails its CRC-32"):
        read_all(bytes(data))


def test_segment_table_must_cover_the_data():
    h = header()
    buf = io.BytesIO()
    w = F.Writer(buf, h)
    w.write_packet([(150, 0.5), (4, 0.25)], F.pack_codes(np.zeros((154, 8), np.uint16)))
    w.finish(154 * 320, 154 * 320 * 44100 // 24000)
    reader, packets = read_all(buf.getvalue())
    assert packets[0].segments == ((150, 0.5), (4, 0.25)) and packets[0].frames == 154
    bad = io.BytesIO()
    w = F.Writer(bad, h)
    w.write_packet([(150, 0.5)], F.pack_codes(np.zeros((154, 8), np.uint16)))
    w.finish(1, 1)
    with pytest.raises(FormatError, match="expected"):
        read_all(bad.getvalue())


def test_trailing_data_rejected():
    with pytest.raises(FormatError, match="after the end record"):
        read_all(small_file() + b"x")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_our_error(data):
    for blob in (data, F.MAGIC + data, small_file()[:65] + data):
        try:
            read_all(blob)
        except EcdcError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.binary(min_size=1, max_size=8))
def test_mutated_files_parse_or_raise_our_error(pos, junk):
    data = bytearray(small_file())
    pos %= len(data)
    data[pos:pos + len(junk)] = junk
    try:
        read_all(bytes(data))
    except EcdcError:
        pass


def test_a_damaged_record_is_named_by_one_offset():
    """Truncated inside a record, or failing its CRC: the same record, the same byte offset."""
    data = small_file()
    reader = F.Reader.open(io.BytesIO(data))
    offsets = [p.offset for p in reader]
    second = offsets[1]
    messages = []
    for damaged in (data[:second + 9], data[:second + 9] + bytes([data[second + 9] ^ 1]) + data[second + 10:]):
        with pytest.raises(FormatError) as info:
            read_all(damaged)
        messages.append(str(info.value))
    assert all(f"record 2 at byte {second}" in m for m in messages), messages
