"""Coverage-guided fuzzing of the readers (atheris, libFuzzer): any input must parse or raise
ecdc's own error (`EcdcError`); anything else is a bug, and each one found becomes a test.

    python scripts/fuzz.py TARGET --seconds N [--corpus DIR]   # TARGET: v0 v1 live salvage info
    python scripts/fuzz.py seeds DIR                            # write the seed corpus

The seed corpus is the golden files of every format (formats/golden), each also cut at a
few places: small valid files of each kind, and the cut recordings salvage is for. No model
is loaded: LM-coded packets are read as records, raw and live-raw ones decoded.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_INPUT = 1 << 16


def _load() -> None:
    """The readers, imported here so that fuzzing can instrument them (and nothing else)."""
    global EcdcError, live, recovery, v0, v1, describe, open_reader, read_header, Input
    from encodec_cli.errors import EcdcError
    from encodec_cli.formats import live, recovery, v0, v1
    from encodec_cli.formats.reader import describe, open_reader, read_header
    from encodec_cli.formats.records import Input


def _header(data: bytes):
    inp = Input(io.BytesIO(data))
    return inp, read_header(inp)


def target_v0(data: bytes) -> None:
    inp = Input(io.BytesIO(data))
    h = v0.read_header(inp)
    if h.coder == "raw":
        for _ in open_reader(inp, h):
            pass
    else:
        v0.describe(inp, h)


def target_v1(data: bytes) -> None:
    inp, h = _header(data)
    if h.version == v1.VERSION:
        for _ in v1.Reader(inp, h):
            pass


def target_live(data: bytes) -> None:
    inp, h = _header(data)
    if h.version == v1.LIVE_VERSION:
        for _ in live.Reader(inp, h, live.Uniform(h.n_codebooks), keep_cut=bool(data[-1] & 1)):
            pass


def target_salvage(data: bytes) -> None:
    inp, h = _header(data)
    if h.version == v1.LIVE_VERSION:
        items = recovery.salvage_live(inp, h, live.Uniform(h.n_codebooks))
    elif h.version == v1.VERSION:
        items = recovery.salvage_v1(inp, h)
    else:
        return
    for _ in items:
        pass


def target_info(data: bytes) -> None:
    describe(io.BytesIO(data))


TARGETS = {"v0": target_v0, "v1": target_v1, "live": target_live, "salvage": target_salvage, "info": target_info}


def one_input(target):
    def test(data: bytes) -> None:
        try:
            target(data)
        except EcdcError:
            pass
    return test


def write_seeds(folder: Path) -> int:
    """The golden files, and each cut at a quarter, a half and near its end."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted((ROOT / "formats" / "golden").glob("*.ecdc")):
        data = path.read_bytes()
        for name, cut in ((path.stem, len(data)), (f"{path.stem}-q", len(data) // 4),
                          (f"{path.stem}-h", len(data) // 2), (f"{path.stem}-e", len(data) - 7)):
            (folder / name).write_bytes(data[:cut])
            count += 1
    return count


def fuzz(name: str, seconds: int, corpus: Path) -> None:
    import atheris

    if not corpus.exists() or not any(corpus.iterdir()):
        write_seeds(corpus)
    work = Path(tempfile.mkdtemp(prefix=f"ecdc-fuzz-{name}-"))
    try:
        for seed in corpus.iterdir():
            shutil.copy(seed, work / seed.name)
        args = [sys.argv[0], f"-max_total_time={seconds}", f"-max_len={MAX_INPUT}", "-rss_limit_mb=2048",
                "-timeout=20", "-print_final_stats=1", str(work)]
        with atheris.instrument_imports(include=["encodec_cli"]):  # their coverage guides the inputs
            _load()
        atheris.Setup(args, one_input(TARGETS[name]))
        atheris.Fuzz()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "seeds"])
    parser.add_argument("folder", nargs="?", help="seeds: where to write the corpus")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--corpus", type=Path, default=None, help="seed corpus (default: written afresh)")
    args = parser.parse_args()
    if args.target == "seeds":
        _load()
        print(f"{write_seeds(Path(args.folder or 'fuzz-seeds'))} seeds")
        return
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="ecdc-seeds-"))
    fuzz(args.target, args.seconds, corpus)


if __name__ == "__main__":
    main()
