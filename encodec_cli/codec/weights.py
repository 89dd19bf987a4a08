"""Where model weights come from: a registry of the official files and their resolution.

Order: an explicit file (`--weights`) > $ECDC_WEIGHTS_DIR > torch hub's checkpoint folder
(shared with Meta's encodec package) > a verified download into that folder.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import typing as tp
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import MismatchError, WeightsError

ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"


@dataclass(frozen=True)
class Checkpoint:
    filename: str

    @property
    def sha256_prefix(self) -> str:
        return self.filename.rsplit("-", 1)[1].split(".")[0]

    @property
    def url(self) -> str:
        return os.environ.get("ECDC_WEIGHTS_URL", ROOT_URL).rstrip("/") + "/" + self.filename


REGISTRY: tp.Dict[str, Checkpoint] = {
    "encodec_24khz": Checkpoint("encodec_24khz-d7cc33bc.th"),
    "encodec_48khz": Checkpoint("encodec_48khz-7e698e3e.th"),
    "encodec_lm_24khz": Checkpoint("encodec_lm_24khz-1608e3c0.th"),
    "encodec_lm_48khz": Checkpoint("encodec_lm_48khz-7add9fc3.th"),
}
LM_OF = {"encodec_24khz": "encodec_lm_24khz", "encodec_48khz": "encodec_lm_48khz"}  # codec -> its LM


def lm_name(codec: str) -> str:
    """The checkpoint name of codec `codec`'s language model."""
    return LM_OF[codec]


def option_for(name: str, cli: bool = True) -> str:
    """What gives checkpoint `name` another file: the command-line option, or the options' field."""
    if name in LM_OF.values():
        return "--lm-weights" if cli else "lm_weights"
    return "--weights" if cli else "weights"


def weights_error(say: tp.Callable[[bool], str], kind: tp.Type[WeightsError] = WeightsError) -> WeightsError:
    """The error whose message `say(cli)` names the command's options (cli) or the API's fields."""
    return kind(say(False), cli=say(True))


T = tp.TypeVar("T")
_LOADED: tp.Dict[tp.Tuple[tp.Any, ...], tp.Any] = {}


def cached(key: tp.Tuple[tp.Any, ...], load: tp.Callable[[], T]) -> T:
    """What `load()` gives, made once per process for each key: models stay loaded from
    one file of a batch to the next."""
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def loaded(prefix: tp.Tuple[tp.Any, ...]) -> tp.List[tp.Tuple[tp.Tuple[tp.Any, ...], tp.Any]]:
    """The (key, value) pairs made so far whose keys start with `prefix`."""
    return [(k, v) for k, v in _LOADED.items() if k[:len(prefix)] == prefix]


def hub_dir() -> Path:
    """torch.hub's checkpoint folder, computed as torch does, without importing torch."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


@dataclass(frozen=True)
class Resolved:
    path: Path
    fingerprint: bytes  # first 8 bytes of the file's sha256, recorded in .ecdc headers


def resolve(name: str, explicit: tp.Optional[Path] = None, download_bars: bool = True) -> Resolved:
    """Find (or fetch) the checkpoint `name` and fingerprint it."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist")
        return Resolved(path, bytes.fromhex(file_digest(path)[:16]))
    ck = REGISTRY[name]
    env = os.environ.get("ECDC_WEIGHTS_DIR")
    folders = ([Path(env)] if env else []) + [hub_dir()]
    for folder in folders:
        path = folder / ck.filename
        if path.is_file():
            return _verified(path, name)
    target = folders[0]
    _download(name, target, download_bars)
    return _verified(target / ck.filename, name)


def _verified(path: Path, name: str) -> Resolved:
    ck = REGISTRY[name]
    digest = file_digest(path)
    if not digest.startswith(ck.sha256_prefix):
        raise weights_error(lambda cli: (
            f"{path} does not match its official name (sha256 {digest[:8]}, expected {ck.sha256_prefix}): "
            f"a damaged download (delete it, and it is fetched again) or other weights (pass those with "
            f"{option_for(name, cli)}{' FILE' if cli else '='} instead)"))
    return Resolved(path, bytes.fromhex(digest[:16]))


def _missing(name: str, folder: Path, why: str) -> WeightsError:
    ck = REGISTRY[name]
    return weights_error(lambda cli: f"cannot get weights {ck.filename} ({why}); download {ck.url} into "
                                     f"{folder}/ or pass {option_for(name, cli)}{' FILE' if cli else '='}")


def _download(name: str, folder: Path, download_bars: bool) -> None:
    from tqdm import tqdm

    ck = REGISTRY[name]
    created = [p for p in [folder, *folder.parents] if not p.exists()]  # removed again on failure
    ok = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=ck.filename + ".", suffix=".part", dir=folder)
    except OSError as e:
        _remove_empty(created)
        raise _missing(name, folder, f"cannot write there: {e.strerror}") from None
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(ck.url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=ck.filename,
                      disable=not download_bars or not sys.stderr.isatty(), leave=False) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    sha.update(block)
                    bar.update(len(block))
        if not sha.hexdigest().startswith(ck.sha256_prefix):
            raise _missing(name, folder, "the download has the wrong checksum")
        os.replace(tmp, folder / ck.filename)
        ok = True
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise _missing(name, folder, f"download failed: {reason}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not ok:
            _remove_empty(created)


def _remove_empty(folders: tp.Sequence[Path]) -> None:
    """Remove the folders a failed download created, innermost first, if still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def load_model(name: str, build: tp.Callable[[], tp.Any], explicit: tp.Optional[Path] = None,
               download_bars: bool = True, mmap: bool = False,
               prune: tp.Optional[tp.Callable[[tp.Any], None]] = None, unmap: bool = False
               ) -> tp.Tuple[tp.Any, bytes]:
    """Resolve checkpoint `name`, load it strictly into `build()` and fold it.

    The module is built on the meta device and takes the loaded tensors as they are, so
    the weights are in memory once. `prune(module)` drops the parts not needed, once the
    whole checkpoint is checked and before folding (with `mmap`, their pages are never
    read). With `unmap`, the tensors still backed by the mapped file after folding are
    copied, so that the mapping and the pages that folding read are released. Returns
    (module, weights fingerprint).
    """
    import torch

    resolved = resolve(name, explicit, download_bars=download_bars)
    with torch.device("meta"):
        module = build()
    state = load_state_dict(resolved.path, mmap)
    load_strict(module, state, resolved.path, name)
    if prune is not None:
        prune(module)
    module.fold()
    if mmap and unmap:
        mapped = {t.data_ptr() for t in state.values()}
        del state
        for m in module.modules():
            for table in (m._parameters, m._buffers):
                for t in table.values():
                    if t is not None and t.data_ptr() in mapped:
                        t.data = t.data.clone()
    return module, resolved.fingerprint


def load_state_dict(path: Path, mmap: bool = False) -> tp.Dict[str, tp.Any]:
    """The checkpoint's tensors; with `mmap`, read from the file only as they are used."""
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # a legacy-format file
    except Exception as e:  # torch raises many kinds for a bad file, some of them cryptic
        import pickle
        import zipfile

        if isinstance(e, (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, IndexError, KeyError)) \
                or "weights_only" not in str(e):
            raise WeightsError(f"cannot load weights {path}: not a PyTorch checkpoint, or a damaged "
                               f"one") from None
        raise WeightsError(f"cannot load weights {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state


def identify(state: tp.Dict[str, tp.Any]) -> tp.Optional[str]:
    """The official model whose state dict has exactly these keys and shapes, if any."""
    import torch

    from .lm import build_lm
    from .models import build_model

    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    for codec, lm in LM_OF.items():
        for name, build in ((codec, build_model), (lm, build_lm)):
            with torch.device("meta"):
                module = build(codec)
            if {k: tuple(v.shape) for k, v in module.state_dict().items()} == shapes:
                return name
    return None


def load_strict(module, state: tp.Dict[str, tp.Any], path: Path, name: tp.Optional[str] = None) -> None:
    """Load `state` into `module` (checkpoint `name`'s model), reporting any key or shape
    difference in one line."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        other = identify(state)
        if other is not None and name is not None:
            def say(cli: bool) -> str:
                given, fits = option_for(name, cli), option_for(other, cli)
                if given != fits:  # a language model given as the codec, or the reverse
                    kind = "a language model" if other in LM_OF.values() else "a codec"
                    return f"{path} holds the weights of {other}, {kind}: it goes to {fits}, not {given}"
                return f"{path} holds the weights of {other}, which is not the model needed here; check {given}"
            swapped = option_for(name) != option_for(other)  # the options' fault, whatever the input
            raise weights_error(say, WeightsError if swapped else MismatchError)
        if other is not None:
            raise MismatchError(f"{path} holds the weights of {other}, which is not the model needed here")
        raise MismatchError(f"{path} does not fit this model: " + ", ".join(parts))
    # assign: the loaded tensors become the parameters (a model built on the meta device
    # then costs no second copy of the weights)
    module.load_state_dict(state, strict=True, assign=True)
