"""Pairing inputs with outputs: files, or folder trees walked and mirrored."""
from __future__ import annotations

import os
import typing as tp

from ..audio.extensions import is_audio_name
from ..errors import OptionError

SUFFIX = {"compress": ".ecdc", "decompress": ".wav", "convert": ".ecdc", "codes": ".npz"}  # by command


def _wanted(kind: str, path: str) -> bool:
    ecdc = os.path.splitext(path)[1].lower() == ".ecdc"
    return is_audio_name(path) if kind == "compress" else (ecdc or is_audio_name(path)) if kind == "codes" else ecdc


def _walk(folder: str, kind: str) -> tp.Iterator[str]:
    """The files under `folder` that command `kind` takes, in a stable order; hidden ones left out."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if _wanted(kind, path) and not name.startswith("."):
                yield path


def _text(name: str) -> str:
    """`name` as UTF-8 text: the bytes of a name that is not UTF-8 escaped (\\xe9)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def sources(inputs: tp.Sequence[str], kind: str, recursive: bool) -> tp.List[tp.Tuple[str, str]]:
    """(file, its path under its folder input, '/' between folders) of each input file:
    the rows of a table (`ecdc codes --parquet`). A name that is not UTF-8 is given with its
    bytes escaped (caf\\xe9.wav), as a table's text must be. Two files may not have one row path."""
    if "-" in inputs:
        raise OptionError("shards are written from files: '-' (stdin) cannot be an input")
    pairs = []
    for src in inputs:
        if os.path.isdir(src):
            if not recursive:
                raise OptionError(f"{src} is a folder; use -r to read the files under it")
            pairs += [(path, _text(os.path.relpath(path, src).replace(os.sep, "/"))) for path in _walk(src, kind)]
        else:
            pairs.append((src, _text(os.path.basename(src))))
    first: tp.Dict[str, str] = {}
    for src, row in pairs:
        if row in first:
            raise OptionError(f"{first[row]} and {src} would both be row {row}; give them in separate runs")
        first[row] = src
    if not pairs:
        raise OptionError(f"no audio or .ecdc files under {', '.join(inputs)}")
    return pairs


def to_folder(inputs: tp.Sequence[str], output: tp.Optional[str]) -> bool:
    """Whether `output` names a folder, created as needed: with several inputs, a folder
    input (-r), a trailing slash, or an existing folder."""
    if output is None or output == "-":
        return False
    return (len(inputs) > 1 or any(i != "-" and os.path.isdir(i) for i in inputs)
            or output.endswith(("/", os.sep)) or os.path.isdir(output))


def plan(inputs: tp.Sequence[str], output: tp.Optional[str], kind: str,
         recursive: bool = False, suffix: tp.Optional[str] = None) -> tp.List[tp.Tuple[str, str]]:
    """Pair each input file with its output path.

    A folder input (with `recursive`) stands for the audio files under it (compress) or
    the .ecdc files (decompress); their tree is mirrored under `output`, or they are
    written next to themselves. `output` is a folder by the rule of `to_folder`; it, and the
    folders of a mirrored tree, are made by `run_batch(..., make_folders=True)`.
    Outputs named here end in `suffix` (default .ecdc, or .wav for decompress).
    """
    suffix = suffix or SUFFIX[kind]
    folders = [i for i in inputs if i != "-" and os.path.isdir(i)]
    if folders and not recursive:
        raise OptionError(f"{folders[0]} is a folder; use -r to {kind} the files under it")
    if "-" in inputs and len(inputs) > 1:
        raise OptionError("'-' (stdin) cannot be one of several inputs")
    if output == "-" and (len(inputs) > 1 or folders):
        raise OptionError("-o - (stdout) takes a single input")
    to_dir = to_folder(inputs, output)
    folder = output or ""  # to_dir: a folder was named
    if to_dir and os.path.exists(folder) and not os.path.isdir(folder):
        raise OptionError(f"-o {output} is a file, but {len(inputs)} inputs need a folder: give one (-o out/)")
    if to_dir and not os.path.isdir(folder) and (folder.endswith(suffix) or _wanted("compress", folder)):
        raise OptionError(f"-o {output} names a file, but {len(inputs)} inputs need a folder: give one "
                          f"(-o out/)")
    pairs = []
    for src in inputs:
        if src in folders:
            for path in _walk(src, kind):
                root, name = os.path.split(path)
                base = os.path.join(folder, os.path.relpath(root, src)) if to_dir else root
                pairs.append((path, os.path.normpath(os.path.join(base, os.path.splitext(name)[0] + suffix))))
            continue
        stem = os.path.splitext(os.path.basename(src))[0] + suffix
        if kind == "decompress" and src.lower().endswith(".parquet"):
            # a shard's rows go under a folder: -o, or one named as the shard beside it
            if output == "-":
                raise OptionError(f"{src}: a shard's rows are files: give a folder with -o, not stdout")
            pairs.append((src, output if output is not None else os.path.splitext(src)[0]))
            continue
        if to_dir:
            dst = os.path.join(folder, stem)
        elif output is not None:
            dst = output
        elif src == "-":
            dst = "-"
        else:
            dst = os.path.join(os.path.dirname(src), stem)
        pairs.append((src, dst))
    first: tp.Dict[str, str] = {}
    for src, dst in pairs:
        if dst in first and not src.lower().endswith(".parquet"):
            raise OptionError(f"{first[dst]} and {src} would both write {dst}; rename one, or give "
                              f"them separately with -o")
        first[dst] = src
    if folders and not pairs:
        what = {"compress": "audio", "codes": "audio or .ecdc"}.get(kind, ".ecdc")
        raise OptionError(f"no {what} files under {', '.join(folders)}")
    return pairs
