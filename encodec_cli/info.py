"""What `ecdc info` shows of a file: its description (JSON), and the same as text rows.
Reads every record's checksum, loads no model, imports no torch."""
from __future__ import annotations

import os
import sys
import typing as tp

from .errors import OptionError
from .formats.reader import describe

MIN_RATE_SECONDS = 1.0  # shorter files show their duration instead of a bit rate


def describe_file(file: str) -> dict:
    """What `ecdc info --json` prints of one file ('-': stdin)."""
    if file != "-" and os.path.isdir(file):
        raise OptionError(f"{file} is a folder, not an .ecdc file")
    if file != "-" and not os.path.isfile(file):
        raise OptionError(f"{file} does not exist")
    with (open(file, "rb") if file != "-" else sys.stdin.buffer) as f:
        h, end, size, coded, cut = describe(f)
    seconds = end.num_samples / h.sample_rate
    v1 = h.version > 0  # format 0 (Meta's encodec) records neither the original nor the weights
    return {
        "file": file,
        "model": h.model, "sample_rate": h.sample_rate, "channels": h.channels,
        "bandwidth_kbps": h.bandwidth, "codebooks": h.n_codebooks, "coder": h.coder,
        "duration_s": round(seconds, 6), "frames": end.frames,
        "packets": end.packets if v1 and h.version != 2 else None,
        "source_sample_rate": h.source_sample_rate if v1 else None,
        "source_channels": h.source_channels if v1 else None,
        "source_samples": end.source_num_samples if v1 else None, "size_bytes": size,
        "achieved_kbps": round(size * 8 / seconds / 1000, 3) if seconds else None,  # (its header counts too)
        "weights_fingerprint": h.weights_fingerprint.hex() if v1 else None,
        "lm_fingerprint": h.lm_fingerprint.hex() if h.coder == "lm" and v1 else None,
        "format_version": h.version,
        "range_coded_packets": coded,
        "cut_at_byte": cut,
    }


def rows(d: dict) -> tp.List[tp.Tuple[str, str]]:
    ch = {1: "mono", 2: "stereo"}
    seconds = d["duration_s"]
    if seconds >= MIN_RATE_SECONDS:
        kbps = f"{d['achieved_kbps']:.2f} kbps achieved"
    else:  # the header's bytes would make the rate meaningless
        kbps = f"{seconds * 1000:.3g} ms of audio" if seconds else "empty"
    frames = f"{d['frames']} frame{'' if d['frames'] == 1 else 's'}"
    if d["format_version"] == 0:
        return [
            ("format", "0 (Meta's encodec 0.1.1)"),
            ("model", f"{d['model']} ({d['sample_rate']} Hz, {ch[d['channels']]})"),
            ("bandwidth", f"{d['bandwidth_kbps']:g} kbps nominal, {d['codebooks']} codebooks"),
            ("coder", "raw (10 bits per code)" if d["coder"] == "raw" else
             "lm (encodec's float LM: decodes only where floats round as where it was written; "
             "`ecdc convert` it there)"),
            ("duration", f"{seconds:.3f} s ({frames})"),
            ("original", "unknown (format 0 does not record the original's rate, channels or bit depth)"),
            ("size", f"{d['size_bytes']} bytes, {kbps}"),
            ("weights", "not recorded (format 0)"),
            ("checksums", "none (format 0)"),
        ]
    live = d["format_version"] == 2
    if live:
        coder = "raw (10 bits per code, arithmetic coded)" if d["coder"] == "raw" else \
            "lm (language-model arithmetic coding)"
    else:
        coder = "raw (10 bits per code)" if d["coder"] == "raw" else _lm_coder(d)
    cut = d.get("cut_at_byte")
    duration = f"{seconds:.3f} s ({frames})" + (" up to the cut" if cut is not None else "")
    checks = ("checksums", "the end record checked; each block's is checked as it is decoded") if live \
        else ("packets", str(d["packets"]))
    if cut is not None:
        checks = ("cut", f"at byte {cut}: the stream stops there, without its end record (an interrupted "
                         f"recording); decompress writes the audio before it, convert --salvage keeps it")
    return [
        ("format", "2 (live stream: ecdc compress --live)" if live else str(d["format_version"])),
        ("model", f"{d['model']} ({d['sample_rate']} Hz, {ch[d['channels']]})"),
        ("bandwidth", f"{d['bandwidth_kbps']:g} kbps nominal, {d['codebooks']} codebooks"),
        ("coder", coder),
        ("duration", duration),
        ("original", f"{d['source_sample_rate']} Hz, {d['source_channels']} channel"
                     f"{'s' if d['source_channels'] > 1 else ''}, {d['source_samples']} "
                     f"sample{'' if d['source_samples'] == 1 else 's'}"),
        ("size", f"{d['size_bytes']} bytes, {kbps}"),
        checks,
        ("weights", d["weights_fingerprint"]),
    ]


def _lm_coder(d: dict) -> str:
    coded, packets = d["range_coded_packets"], d["packets"]
    if coded == packets:
        return f"lm (language-model range coding{', every packet' if packets else ''})"
    return (f"lm (language-model range coding): {coded} of {packets} packets range coded, the other "
            f"{packets - coded} stored raw (the LM did not make them smaller)")
