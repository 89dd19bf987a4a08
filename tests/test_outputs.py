"""Publishing outputs: a finished output never replaces a file that appeared while ecdc
worked (another run, another program), unless forced."""
from __future__ import annotations

import os
import stat
import threading

import pytest

from encodec_cli import api
from encodec_cli.errors import OptionError
from encodec_cli.formats import v1
from encodec_cli.options import CompressOptions
from encodec_cli.outputs import _rename_noreplace, atomic_path, publish

from .conftest import ecdc, write_audio


def test_an_output_created_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "same.ecdc"
    with pytest.raises(OptionError, match="created by another program while ecdc worked"):
        with atomic_path(str(out), force=False) as tmp:
            open(tmp, "wb").write(b"mine")
            out.write_bytes(b"theirs")  # another run finished first
    assert out.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["same.ecdc"]  # no temporary left


def test_force_replaces_an_output_created_during_the_run(tmp_path):
    out = tmp_path / "same.ecdc"
    with atomic_path(str(out), force=True) as tmp:
        open(tmp, "wb").write(b"mine")
        out.write_bytes(b"theirs")
    assert out.read_bytes() == b"mine"


def test_two_runs_writing_one_output_one_wins_and_one_fails(tmp_path, checkpoints):
    write_audio(tmp_path / "a.wav", 1.0, 24000)
    write_audio(tmp_path / "b.wav", 1.0, 24000, seed=1)
    opts = CompressOptions(lm=False, weights=checkpoints["encodec_24khz"])
    api.compress_file(str(tmp_path / "a.wav"), str(tmp_path / "warm.ecdc"), opts)  # models loaded once
    results, start = {}, threading.Barrier(2)

    def run(name):
        start.wait()
        try:
            api.compress_file(str(tmp_path / name), str(tmp_path / "same.ecdc"), opts)
            results[name] = "ok"
        except OptionError as e:
            results[name] = str(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a.wav", "b.wav")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    outcomes = sorted(results.values(), key=lambda r: r != "ok")
    assert outcomes[0] == "ok"
    assert "exists" in outcomes[1] or "created by another program" in outcomes[1]


def test_without_hard_links_the_rename_still_refuses_to_replace(tmp_path, monkeypatch):
    src, dst = tmp_path / "tmp", tmp_path / "out"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        _rename_noreplace(str(src), str(dst))
    dst.unlink()
    monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(PermissionError(1, "no links")))
    publish(str(src), str(dst), False, "out")
    assert dst.read_bytes() == b"new" and not src.exists()



def test_a_fifo_is_written_into_not_replaced(here, weights):
    write_audio(here / "a.wav", 0.5, 24000)
    os.mkfifo("pipe")
    got = {}
    reader = threading.Thread(target=lambda: got.update(data=open("pipe", "rb").read()))
    reader.start()
    ecdc("compress", "a.wav", "-o", "pipe", "--raw", *weights[:2])  # no -f needed: nothing is replaced
    reader.join(30)
    assert stat.S_ISFIFO(os.stat("pipe").st_mode)
    assert got["data"].startswith(v1.MAGIC)


def test_a_device_node_is_written_into_not_replaced(here, weights):
    write_audio(here / "a.wav", 0.5, 24000)
    try:
        os.mknod("null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # another /dev/null
    except PermissionError:
        pytest.skip("mknod needs root")
    for command in (["compress", "a.wav", "--raw", *weights[:2]],):
        ecdc(*command, "-o", "null", "-f")
        assert stat.S_ISCHR(os.stat("null").st_mode)
    ecdc("compress", "a.wav", "-o", "a.ecdc", "--raw", *weights[:2])
    ecdc("decompress", "a.ecdc", "-o", "null", "-f", *weights[:2])
    assert stat.S_ISCHR(os.stat("null").st_mode) and not list(here.glob(".null*"))


def test_an_existing_audio_output_suggests_another_name_first(here, weights):
    write_audio(here / "speech.wav", 0.3, 24000)
    ecdc("compress", "speech.wav", "--raw", *weights[:2])
    r = ecdc("decompress", "speech.ecdc", *weights[:2], ok=False)
    assert r.exit_code == 1
    assert r.output == "Error: speech.wav exists; give another name with -o OTHER, or replace it with -f\n"
