"""Weight resolution: explicit file > $ECDC_WEIGHTS_DIR > torch hub folder > verified download."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from encodec_cli.codec import weights as W
from encodec_cli.errors import WeightsError


def fake_checkpoint(folder: Path, content: bytes = b"weights!") -> W.Checkpoint:
    """A registry entry whose name carries the sha256 prefix of `content`, like the official ones."""
    digest = hashlib.sha256(content).hexdigest()[:8]
    ck = W.Checkpoint(f"encodec_24khz-{digest}.th")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ck.filename).write_bytes(content)
    return ck


@pytest.fixture()
def registry(monkeypatch, tmp_path):
    ck = fake_checkpoint(tmp_path / "served")
    monkeypatch.setitem(W.REGISTRY, "encodec_24khz", ck)
    return ck


def test_hub_dir_follows_torch_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert W.hub_dir() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.hub_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"


def test_explicit_file_wins(tmp_path, registry, monkeypatch):
    mine = tmp_path / "finetuned.th"
    mine.write_bytes(b"my own")
    monkeypatch.setenv("ECDC_WEIGHTS_DIR", str(tmp_path / "served"))
    r = W.resolve("encodec_24khz", mine)
    assert r.path == mine and r.fingerprint == hashlib.sha256(b"my own").digest()[:8]
    with pytest.raises(WeightsError, match="does not exist"):
        W.resolve("encodec_24khz", tmp_path / "missing.th")


def test_env_dir_before_hub(tmp_path, registry, monkeypatch):
    hub = W.hub_dir()
    fake_checkpoint(hub)
    monkeypatch.setenv("ECDC_WEIGHTS_DIR", str(tmp_path / "served"))
    assert W.resolve("encodec_24khz").path == tmp_path / "served" / registry.filename
    monkeypatch.delenv("ECDC_WEIGHTS_DIR")
    assert W.resolve("encodec_24khz").path == hub / registry.filename


def test_damaged_cached_file(tmp_path, registry, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / registry.filename).write_bytes(b"half a downl")
    monkeypatch.setenv("ECDC_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError, match="does not match its official name.*delete it.*weights=") as e:
        W.resolve("encodec_24khz")
    assert "pass those with --weights FILE instead" in e.value.cli  # as the command line says it


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_verified_into_hub(registry, server, monkeypatch):
    url, _ = server
    monkeypatch.setenv("ECDC_WEIGHTS_URL", url)
    r = W.resolve("encodec_24khz", download_bars=False)
    assert r.path == W.hub_dir() / registry.filename
    assert r.path.read_bytes() == b"weights!"
    assert [p.name for p in W.hub_dir().iterdir()] == [registry.filename]  # no .part left


def test_download_into_env_dir(registry, server, monkeypatch, tmp_path):
    url, _ = server
    monkeypatch.setenv("ECDC_WEIGHTS_URL", url)
    monkeypatch.setenv("ECDC_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert W.resolve("encodec_24khz", download_bars=False).path == tmp_path / "mine" / registry.filename


def test_download_with_wrong_checksum_leaves_nothing(registry, server, monkeypatch):
    url, root = server
    (root / registry.filename).write_bytes(b"tampered")
    monkeypatch.setenv("ECDC_WEIGHTS_URL", url)
    with pytest.raises(WeightsError, match="wrong checksum"):
        W.resolve("encodec_24khz", download_bars=False)
    assert not W.hub_dir().exists() or list(W.hub_dir().iterdir()) == []


def test_offline_error_names_file_url_and_folder(registry):
    with pytest.raises(WeightsError) as info:
        W.resolve("encodec_24khz", download_bars=False)
    msg = info.value.cli
    assert registry.filename in msg and registry.url in msg
    assert str(W.hub_dir()) in msg and "--weights" in msg and "\n" not in msg
    assert str(info.value).endswith("or pass weights=")  # the API's field


def test_missing_on_server(registry, server, monkeypatch):
    url, root = server
    shutil.rmtree(root)
    root.mkdir()
    monkeypatch.setenv("ECDC_WEIGHTS_URL", url)
    with pytest.raises(WeightsError, match="download failed"):
        W.resolve("encodec_24khz", download_bars=False)


def test_official_registry():
    assert {c.filename for c in W.REGISTRY.values()} == {
        "encodec_24khz-d7cc33bc.th", "encodec_48khz-7e698e3e.th",
        "encodec_lm_24khz-1608e3c0.th", "encodec_lm_48khz-7add9fc3.th"}
    assert W.REGISTRY["encodec_48khz"].sha256_prefix == "7e698e3e"


def test_checkpoints_load_with_weights_only(tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.th")
    with pytest.raises(WeightsError, match="cannot load weights"):
        W.load_state_dict(tmp_path / "evil.th")


def test_first_default_run_downloads_codec_and_language_model(server, monkeypatch, tmp_path, checkpoints):
    """`ecdc compress in.wav` with nothing cached fetches both checkpoints (LM coding is the
    default); `--raw` needs only the codec's."""
    from click.testing import CliRunner

    from encodec_cli.cli import main

    from .conftest import write_audio

    url, root = server
    root.mkdir(parents=True, exist_ok=True)
    for name in ("encodec_24khz", "encodec_lm_24khz"):
        data = checkpoints[name].read_bytes()
        ck = W.Checkpoint(f"{name}-{hashlib.sha256(data).hexdigest()[:8]}.th")
        (root / ck.filename).write_bytes(data)
        monkeypatch.setitem(W.REGISTRY, name, ck)
    monkeypatch.setenv("ECDC_WEIGHTS_URL", url)
    src = write_audio(tmp_path / "in.wav", 0.5, 24000)
    result = CliRunner().invoke(main, ["compress", str(src), "-o", str(tmp_path / "raw.ecdc"), "--raw", "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in W.hub_dir().iterdir()) == [W.REGISTRY["encodec_24khz"].filename]
    result = CliRunner().invoke(main, ["compress", str(src), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in W.hub_dir().iterdir()) == sorted(
        W.REGISTRY[n].filename for n in ("encodec_24khz", "encodec_lm_24khz"))
    result = CliRunner().invoke(main, ["decompress", str(tmp_path / "in.ecdc"), "-o", str(tmp_path / "out.wav"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.wav").exists()


def test_weights_of_the_other_model_are_named(tmp_path, checkpoints):
    from encodec_cli.codec.lm import build_lm
    from encodec_cli.codec.models import build_model

    state = W.load_state_dict(checkpoints["encodec_48khz"])
    with pytest.raises(WeightsError, match="holds the weights of encodec_48khz.*check weights") as e:
        W.load_strict(build_model("encodec_24khz"), state, Path("x.th"), "encodec_24khz")
    assert e.value.cli.endswith("which is not the model needed here; check --weights")
    state = W.load_state_dict(checkpoints["encodec_lm_24khz"])
    with pytest.raises(WeightsError, match="holds the weights of encodec_lm_24khz, a language model") as e:
        W.load_strict(build_model("encodec_24khz"), state, Path("x.th"), "encodec_24khz")
    assert e.value.cli.endswith("it goes to --lm-weights, not --weights")
    with pytest.raises(WeightsError, match="holds the weights of encodec_lm_24khz"):
        W.load_strict(build_lm("encodec_48khz"), state, Path("x.th"))


@pytest.mark.parametrize("content", [b"hello world", b"", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_checkpoint(tmp_path, content):
    (tmp_path / "x.th").write_bytes(content)
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint, or a damaged one"):
        W.load_state_dict(tmp_path / "x.th")


def test_missing_language_model_names_its_flag(monkeypatch):
    with pytest.raises(WeightsError) as e:
        W.resolve("encodec_lm_24khz", download_bars=False)
    assert e.value.cli.endswith("or pass --lm-weights FILE") and str(e.value).endswith("or pass lm_weights=")
    with pytest.raises(WeightsError) as e:
        W.resolve("encodec_24khz", download_bars=False)
    assert e.value.cli.endswith("or pass --weights FILE") and str(e.value).endswith("or pass weights=")


def test_failed_download_leaves_no_empty_folders(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "fresh" / "torch"))
    with pytest.raises(WeightsError, match="download failed"):
        W.resolve("encodec_24khz", download_bars=False)
    assert not (tmp_path / "fresh").exists()
