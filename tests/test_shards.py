"""A corpus as Parquet shards (`ecdc codes -r -o OUT/ --parquet`): loaded by pyarrow and
`datasets` without ecdc, rows equal to each file's codes, shards cut by count and size,
a killed run resumed to the same bytes, bad inputs reported while the rest go on, and a
shard decoded back to audio files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encodec_cli import api
from encodec_cli.api import CodesOptions, DecompressOptions
from encodec_cli.jobs.shards import share

from .conftest import write_audio

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

LENGTHS = (1.0, 2.5, 0.4, 3.0, 1.7, 0.9)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six clips in two folders, at two rates, one of them stereo, and a file that is not audio."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "b").mkdir()
    for i, seconds in enumerate(LENGTHS):
        folder = root / ("b" if i % 2 else "")
        write_audio(folder / f"clip{i}.wav", seconds, 16000 if i % 3 else 24000, channels=1 + (i == 4), seed=i)
    (root / "b" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root


def ecdc(*args, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "encodec_cli", *map(str, args)], capture_output=True, text=True)
    assert not check or p.returncode in (0, 1), p.stderr
    return p


def weights(checkpoints, model: str = "encodec_24khz") -> list:
    return ["--weights", checkpoints[model], "--lm-weights", checkpoints[model.replace("encodec_", "encodec_lm_")]]


def test_shards_load_in_pyarrow_and_hold_each_files_codes(checkpoints, corpus, tmp_path):
    p = ecdc("codes", corpus, "-r", "-o", tmp_path / "out", "--parquet", "--shard-rows", "4", "-b", "3", "-q",
             "--manifest", tmp_path / "m.jsonl", *weights(checkpoints))
    assert p.returncode == 1 and "broken.wav" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / n) for n in names])
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == ["clip0.wav", "clip2.wav", "clip4.wav", "b/clip1.wav", "b/clip3.wav",
                                         "b/clip5.wav"]
    meta = json.loads(pq.read_schema(tmp_path / "out" / names[0]).metadata[b"ecdc"])
    assert (meta["model"], meta["bandwidth"], meta["codebooks"], meta["frame_rate"]) == ("encodec_24khz", 3.0, 4, 75)
    assert table.schema.field("codes").type == pa.list_(pa.list_(pa.uint16()), 4)
    opts = CodesOptions(bandwidth=3.0, weights=checkpoints["encodec_24khz"])
    for row in rows:
        expected = api.encode_file(str(corpus / row["path"]), opts.encoding())
        codes = np.array(row["codes"], np.uint16)
        assert np.array_equal(codes, expected.codes) and row["frames"] == expected.frames
        assert (row["sample_rate"], row["channels"], row["num_samples"]) == (
            expected.source_sample_rate, expected.source_channels, expected.source_num_samples)
        assert row["duration"] == pytest.approx(expected.duration) and row["scales"] is None
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines].count("error") == 1 and len(lines) == 7
    assert {x["output"] for x in lines if x["status"] == "ok"} == {str(tmp_path / "out" / n) for n in names}


def test_datasets_loads_the_shards(checkpoints, corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    ecdc("codes", corpus / "b", "-r", "-o", tmp_path / "out", "--parquet", "-q", *weights(checkpoints))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 3 and ds.features["codes"].length == 8
    opts = CodesOptions(weights=checkpoints["encodec_24khz"]).encoding()
    first = api.encode_file(str(corpus / "b" / "clip1.wav"), opts)
    assert ds[0]["path"] == "clip1.wav" and np.array_equal(np.array(ds[0]["codes"]), first.codes)


def test_48khz_rows_keep_their_segments_and_decode_back_to_files(checkpoints, corpus, tmp_path):
    p = ecdc("codes", corpus, "-r", "-o", tmp_path / "out", "--parquet", "--model", "48khz", "-q",
             "--jobs", "2", *weights(checkpoints, "encodec_48khz"))
    assert p.returncode == 1
    (shard,) = (tmp_path / "out").iterdir()
    row = pq.read_table(shard).to_pylist()[4]  # 3 s: four segments
    expected = api.encode_file(str(corpus / "b" / "clip3.wav"), CodesOptions(
        model="encodec_48khz", weights=checkpoints["encodec_48khz"]).encoding())
    assert row["path"] == "b/clip3.wav" and row["segment_frames"] == [150, 150, 150, 5]
    assert row["segment_frames"] == expected.segment_frames.tolist() and row["scales"] == expected.scales.tolist()
    assert np.array_equal(np.array(row["codes"]), expected.codes)
    p = ecdc("decompress", shard, "-o", tmp_path / "wavs", "-q", *weights(checkpoints, "encodec_48khz"))
    assert p.returncode == 0, p.stderr
    written = sorted(str(f.relative_to(tmp_path / "wavs")) for f in (tmp_path / "wavs").rglob("*.wav"))
    assert written == ["b/clip1.wav", "b/clip3.wav", "b/clip5.wav", "clip0.wav", "clip2.wav", "clip4.wav"]
    got, rate = _read(tmp_path / "wavs" / "b" / "clip3.wav")
    wav, _ = api.decode(expected, DecompressOptions(weights=checkpoints["encodec_48khz"]))
    assert rate == 24000 and got.shape == wav.shape and np.abs(got - wav).max() < 1 / 2 ** 14


def _read(path):
    import soundfile as sf

    x, rate = sf.read(path, dtype="float32", always_2d=True)
    return x, rate


def test_a_killed_run_resumes_to_the_same_bytes(checkpoints, corpus, tmp_path):
    args = ["codes", corpus, "-r", "-o", None, "--parquet", "--shard-rows", "1", "-q", *weights(checkpoints)]
    clean = list(args)
    clean[4] = tmp_path / "clean"
    ecdc(*clean)
    args[4] = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "encodec_cli", *map(str, args)], stderr=subprocess.PIPE)
    first = tmp_path / "out" / "train-00000-of-00007.parquet"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    made = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".parquet")
    assert 1 <= len(made) < 7, made  # killed in the middle
    p = ecdc(*args, "--resume", "--manifest", tmp_path / "m.jsonl")
    assert p.returncode == 1 and "broken.wav" in p.stderr
    statuses = [json.loads(line)["status"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert statuses.count("skipped") >= len(made) - 1  # the broken file's shard is done again
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(tmp_path / "clean"))  # no temporaries
    for name in os.listdir(tmp_path / "clean"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name


def test_a_file_name_that_is_not_utf8_is_a_row_with_its_bytes_escaped(checkpoints, corpus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_audio(folder / "plain.wav", 0.3, 24000)
    os.rename(folder / "plain.wav", os.fsencode(folder) + b"/caf\xe9.wav")
    p = ecdc("codes", folder, "-r", "-o", tmp_path / "out", "--parquet", "-q", *weights(checkpoints))
    assert p.returncode == 0, p.stderr
    (shard,) = (tmp_path / "out").iterdir()
    assert pq.read_table(shard).column("path").to_pylist() == ["caf\\xe9.wav"]


def test_shards_are_cut_by_rows_and_by_size():
    assert share([1.0] * 5, rows=2, max_bytes=100) == [(0, 2), (2, 4), (4, 5)]
    assert share([40, 40, 40, 200, 10], rows=10, max_bytes=100) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert share([], rows=3, max_bytes=10) == []


def test_existing_shards_are_kept_unless_forced(checkpoints, corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.parquet").write_bytes(b"mine")
    p = ecdc("codes", corpus / "b" / "clip1.wav", "-o", out, "--parquet", "-q", *weights(checkpoints))
    assert p.returncode == 1 and "exists; use -f/--force" in p.stderr
    assert (out / "train-00000-of-00001.parquet").read_bytes() == b"mine"
    p = ecdc("codes", corpus / "b", "-o", out, "--parquet", "-q", *weights(checkpoints))
    assert p.returncode == 1 and "is a folder; use -r to read the files under it" in p.stderr
    (out / "train-00000-of-00001.parquet").unlink()
    (out / "train-00003-of-00005.parquet").write_bytes(b"an older run's")  # would be loaded with the new ones
    p = ecdc("codes", corpus / "b", "-r", "-o", out, "--parquet", "-q", *weights(checkpoints))
    assert p.returncode == 1 and "holds shards of another run (train-00003-of-00005.parquet)" in p.stderr
    p = ecdc("codes", corpus / "b", "-r", "-o", out, "--parquet", "-q", "-f", *weights(checkpoints))
    assert p.returncode == 1 and sorted(os.listdir(out)) == ["train-00000-of-00001.parquet"]


def test_a_bad_row_is_named_and_the_other_rows_are_written(checkpoints, corpus, tmp_path):
    ecdc("codes", corpus / "clip0.wav", corpus / "clip2.wav", "-o", tmp_path / "out", "--parquet", "-q",
         *weights(checkpoints))
    (shard,) = (tmp_path / "out").iterdir()
    table = pq.read_table(shard)
    codes = table.column("codes").combine_chunks()
    values = codes.values.values.to_numpy(zero_copy_only=False).copy()
    values[0] = 1023 + 7  # the first row's first code is out of range
    inner = pa.ListArray.from_arrays(codes.values.offsets, pa.array(values, pa.uint16()))
    bad = table.set_column(1, "codes", pa.FixedSizeListArray.from_arrays(inner, 8))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), tmp_path / "bad.parquet")
    p = ecdc("decompress", tmp_path / "bad.parquet", "-o", tmp_path / "wavs", "-q", *weights(checkpoints))
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "1 of 2 rows were not written" in p.stderr and "row 'clip0.wav'" in p.stderr and "holds 1030" in p.stderr
    assert sorted(os.listdir(tmp_path / "wavs")) == ["clip2.wav"]
    p = ecdc("decompress", tmp_path / "bad.parquet", "-o", tmp_path / "wavs", "-q", *weights(checkpoints))
    assert p.returncode == 1 and "2 of 2 rows were not written" in p.stderr  # clip2.wav is not replaced
    p = ecdc("decompress", shard, "-o", tmp_path / "wavs", "-q", *weights(checkpoints))
    assert p.returncode == 1 and "clip2.wav exists; give another name with -o OTHER, or replace it with -f" in p.stderr
    p = ecdc("decompress", shard, "-o", "-", *weights(checkpoints))
    assert p.returncode == 1 and p.stderr.endswith("a shard's rows are files: give a folder with -o, not stdout\n")


def test_without_pyarrow_the_option_says_what_to_install(corpus, tmp_path):
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from encodec_cli.cli import main\n"
            f"main(['codes', {str(corpus)!r}, '-r', '-o', {str(tmp_path / 'o')!r}, '--parquet'], prog_name='ecdc')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr == "Error: Parquet shards need pyarrow: pip install 'encodec-cli[datasets]'\n"


def test_compress_and_decompress_of_audio_never_import_pyarrow(checkpoints, tmp_path):
    code = ("import sys, numpy as np\n"
            "from encodec_cli import api\n"
            f"o = api.CompressOptions(weights={str(checkpoints['encodec_24khz'])!r}, lm=False)\n"
            "data = api.compress(np.zeros(8000, np.float32), 24000, o)\n"
            f"api.decompress(data, api.DecompressOptions(weights={str(checkpoints['encodec_24khz'])!r}))\n"
            "assert 'pyarrow' not in sys.modules, 'pyarrow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rows_are_written_as_they_come_not_collected(checkpoints, corpus, tmp_path, monkeypatch):
    """A shard is written ROW_GROUP rows at a time: its row groups show it."""
    from encodec_cli import shards
    from encodec_cli.jobs.plan import sources
    from encodec_cli.jobs.shards import run_shards

    monkeypatch.setattr(shards, "ROW_GROUP", 2)
    results = run_shards(sources([str(corpus)], "codes", True), str(tmp_path / "out"),
                         CodesOptions(weights=checkpoints["encodec_24khz"]), rows=100, max_mb=1)
    assert [r.status for r in results].count("ok") == 6 and all(r.codes is None for r in results)
    (shard,) = (tmp_path / "out").iterdir()
    assert pq.ParquetFile(shard).metadata.num_row_groups == 3
    assert pq.ParquetFile(shard).metadata.num_rows == 6
