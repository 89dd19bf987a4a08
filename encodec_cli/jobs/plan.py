"""Pairing inputs with outputs: files, or folder trees walked and mirrored."""
from __future__ import annotations

import os
import typing as tp

from ..errors import OptionError

# extensions of the formats libsndfile reads (headerless RAW excluded)
AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".mp3", ".voc", ".sd2", ".paf",
                    ".svx", ".nist", ".sph", ".ircam", ".sf", ".mat", ".pvf", ".xi", ".htk",
                    ".sds", ".avr", ".wve", ".mpc"}
SUFFIX = {"compress": ".ecdc", "decompress": ".wav", "convert": ".ecdc", "codes": ".npz"}  # by command



def _wanted(kind: str, path: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    return ext in AUDIO_EXTENSIONS if kind == "compress" else ext == ".ecdc"


def plan(inputs: tp.Sequence[str], output: tp.Optional[str], kind: str,
         recursive: bool = False, suffix: tp.Optional[str] = None) -> tp.List[tp.Tuple[str, str]]:
    """Pair each input file with its output path.

    A folder input (with `recursive`) stands for the audio files under it (compress) or
    the .ecdc files (decompress); their tree is mirrored under `output`, or they are
    written next to themselves. Several inputs, or any folder, make `output` a folder.
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
    to_dir = output is not None and output != "-" and (len(inputs) > 1 or bool(folders) or os.path.isdir(output))
    if to_dir and not folders and not os.path.isdir(output):
        raise OptionError(f"output folder {output} does not exist")
    pairs = []
    for src in inputs:
        if src in folders:
            for root, dirs, files in os.walk(src):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(root, name)
                    if not _wanted(kind, path) or name.startswith("."):
                        continue
                    rel = os.path.relpath(root, src)
                    base = os.path.join(output, rel) if to_dir else root
                    pairs.append((path, os.path.normpath(os.path.join(base, os.path.splitext(name)[0] + suffix))))
            continue
        stem = os.path.splitext(os.path.basename(src))[0] + suffix
        if to_dir:
            dst = os.path.join(output, stem)
        elif output is not None:
            dst = output
        elif src == "-":
            dst = "-"
        else:
            dst = os.path.join(os.path.dirname(src), stem)
        pairs.append((src, dst))
    dsts = [d for _, d in pairs]
    if len(set(dsts)) != len(dsts):
        raise OptionError("two inputs would write the same output file")
    if folders and not pairs:
        raise OptionError(f"no {'audio' if kind == 'compress' else '.ecdc'} files under "
                          f"{', '.join(folders)}")
    return pairs
