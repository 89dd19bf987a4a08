"""Many files at once: folder trees, resumable jobs, a manifest, local or Ray executors.

`plan` pairs inputs (files, or folders walked with `recursive`) with outputs, mirroring
folder trees; `run_batch` processes the pairs on local processes or a Ray cluster and
returns one `FileResult` per pair, written to a JSON-lines manifest as each one finishes.
With `resume`, outputs that already exist and are complete and valid are skipped.
"""
from __future__ import annotations

import concurrent.futures as cf
import glob
import json
import os
import time
import typing as tp
from dataclasses import asdict, dataclass

from ..errors import EcdcError, OptionError

# extensions of the formats libsndfile reads (headerless RAW excluded)
AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".mp3", ".voc", ".sd2", ".paf",
                    ".svx", ".nist", ".sph", ".ircam", ".sf", ".mat", ".pvf", ".xi", ".htk",
                    ".sds", ".avr", ".wve", ".mpc"}
SUFFIX = {"compress": ".ecdc", "decompress": ".wav", "convert": ".ecdc", "codes": ".npz"}


@dataclass
class FileResult:
    """What happened to one input. `bytes` and `kbps` are the .ecdc file's (the output of
    compress, the input of decompress); `seconds` is the audio's duration."""
    source: str
    output: str
    status: str                     # 'ok', 'skipped' or 'error'
    error: tp.Optional[str] = None  # the one-line message
    seconds: float = 0.0
    bytes: int = 0
    kbps: tp.Optional[float] = None
    wall_s: float = 0.0
    clipped: int = 0

    def manifest_line(self) -> str:
        data = asdict(self)
        del data["clipped"]
        return json.dumps(data)


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


def complete(kind: str, src: str, dst: str, opts) -> bool:
    """Whether `dst` is a finished, valid output of `src` under `opts` (for --resume)."""
    from ..formats import v1 as container

    if dst == "-" or not os.path.isfile(dst):
        return False
    try:
        if kind == "compress":
            with open(dst, "rb") as f:
                h, _, _ = container.describe(f)   # every CRC and the end record
            return (h.model == opts.model and abs(h.bandwidth - opts.bandwidth) < 1e-9
                    and h.coder == ("lm" if opts.lm else "raw"))
        if kind == "convert":
            with open(dst, "rb") as f:
                h, _, _ = container.describe(f)
            with open(src, "rb") as f:
                source = container.open_reader(f).header
            return h.version == container.VERSION and h.coder == (opts.coder or source.coder)
        if kind == "codes":
            import numpy as np

            with np.load(dst) as data:  # a zip: every member's CRC is checked as it is read
                return all(data[k] is not None for k in data.files)
        import soundfile as sf

        with open(src, "rb") as f:
            h, end, _ = container.describe(f)
        info = sf.info(dst)
        if opts.model_format:
            expected = (h.sample_rate, h.channels, end.num_samples)
        else:
            expected = (h.source_sample_rate, h.source_channels, end.source_num_samples)
        return (info.samplerate, info.channels, info.frames) == expected
    except Exception:  # unreadable, truncated or damaged: do it again
        return False


def _ecdc_size(kind: str, src: str, dst: str) -> int:
    path = dst if kind in ("compress", "convert") else src
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0


def _finish(r: FileResult, kind: str) -> FileResult:
    r.bytes = _ecdc_size(kind, r.source, r.output)
    r.kbps = round(r.bytes * 8 / r.seconds / 1000, 3) if r.seconds and r.bytes else None
    return r


def skipped(kind: str, src: str, dst: str) -> FileResult:
    from ..formats import v1 as container

    seconds = 0.0
    try:
        with open(dst if kind in ("compress", "convert") else src, "rb") as f:
            h, end, _ = container.describe(f)
        seconds = end.num_samples / h.sample_rate
    except Exception:
        pass
    return _finish(FileResult(src, dst, "skipped", seconds=seconds), kind)


def process(kind: str, src: str, dst: str, opts, force: bool, progress=None,
            make_folders: bool = False) -> FileResult:
    """Compress or decompress one file; library errors become an 'error' result.
    `make_folders`: create the output's folder first (a mirrored tree)."""
    from .. import api

    fn = {"compress": api.compress_file, "decompress": api.decompress_file,
          "convert": api.convert_file, "codes": api.codes_file}[kind]
    start = time.perf_counter()
    try:
        if make_folders and dst != "-" and os.path.dirname(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        result = fn(src, dst, opts, force=force, progress=progress)
    except EcdcError as e:
        return FileResult(src, dst, "error", str(e), wall_s=round(time.perf_counter() - start, 3))
    except BrokenPipeError:
        raise  # the reader of stdout went away: the CLI ends quietly
    except OSError as e:
        msg = f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
        return FileResult(src, dst, "error", msg, wall_s=round(time.perf_counter() - start, 3))
    r = FileResult(src, dst, "ok", seconds=round(result.seconds, 6),
                   wall_s=round(time.perf_counter() - start, 3), clipped=result.clipped)
    return _finish(r, kind)


def remove_stale_parts(outputs: tp.Iterable[str]) -> None:
    """Delete the temporary files that killed workers left beside these outputs."""
    for dst in outputs:
        if dst == "-":
            continue
        folder, name = os.path.split(os.path.abspath(dst))
        for part in glob.glob(os.path.join(glob.escape(folder), "." + glob.escape(name) + ".*.part")):
            try:
                os.unlink(part)
            except OSError:
                pass


def _stop(pool: cf.ProcessPoolExecutor, outputs: tp.Sequence[str]) -> None:
    """Cancel queued files, stop the workers (each removes its temporary output on SIGTERM)
    and remove whatever temporary files are left."""
    pool.shutdown(wait=False, cancel_futures=True)
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for proc in workers:
        proc.terminate()
    for proc in workers:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    remove_stale_parts(outputs)


def _set_threads(threads: int) -> None:
    """Torch's thread count; before torch is imported, through the variables it reads then
    (so that errors found without a model come without the ~1 s of importing torch)."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


class Manifest:
    """A JSON-lines file, one line per input, appended and flushed as each one finishes."""

    def __init__(self, path: tp.Optional[str]):
        self.fo = open(path, "a", encoding="utf-8") if path else None

    def write(self, r: FileResult) -> None:
        if self.fo:
            self.fo.write(r.manifest_line() + "\n")
            self.fo.flush()

    def close(self) -> None:
        if self.fo:
            self.fo.close()


def run_batch(pairs: tp.Sequence[tp.Tuple[str, str]], kind: str, opts, *, force: bool = False,
              resume: bool = False, jobs: int = 1, threads: int = 1, cluster: tp.Optional[str] = None,
              manifest: tp.Optional[str] = None, make_folders: bool = False,
              on_result: tp.Optional[tp.Callable[[FileResult], None]] = None,
              progress: tp.Optional[tp.Callable[[float], None]] = None) -> tp.List[FileResult]:
    """Process (source, output) pairs; returns their results in the order given.

    Executors: this process (jobs=1), `jobs` local processes, or a Ray cluster
    (`cluster`: 'local', 'auto', 'ray://host:port' or a cluster's host:port), whose
    workers must see the same paths. `progress` gets seconds of audio as files finish
    (in this process: as blocks are coded). `make_folders`: create missing output folders
    (for trees mirrored by `plan(..., recursive=True)`).
    """
    if jobs < 1 or threads < 1:
        raise OptionError("--jobs and --threads take a positive number")
    if cluster is not None and any("-" in pair for pair in pairs):
        raise OptionError("--cluster works on files: it cannot read stdin or write stdout")
    results: tp.Dict[int, FileResult] = {}
    book = Manifest(manifest)
    todo = []

    def done(i: int, r: FileResult, stream: bool = False) -> None:
        results[i] = r
        book.write(r)
        if progress and not stream:
            progress(r.seconds)
        if on_result:
            on_result(r)

    try:
        for i, (src, dst) in enumerate(pairs):
            if resume and complete(kind, src, dst, opts):
                done(i, skipped(kind, src, dst))
            else:
                todo.append(i)
        if resume:  # what an interrupted run left half-written or damaged is done again
            remove_stale_parts(pairs[i][1] for i in todo)
            force = True
        if cluster is not None:
            from .cluster import run_on_ray

            for i, r in run_on_ray([(i, *pairs[i]) for i in todo], kind, opts, force, cluster,
                                   jobs, threads, make_folders):
                done(i, r)
        elif jobs == 1 or len(todo) <= 1:
            _set_threads(threads)
            for i in todo:
                done(i, process(kind, *pairs[i], opts, force, progress, make_folders), stream=True)
        else:
            pool = cf.ProcessPoolExecutor(min(jobs, len(todo)), initializer=_set_threads,
                                          initargs=(threads,))
            try:
                futures = {pool.submit(process, kind, *pairs[i], opts, force, None, make_folders): i
                           for i in todo}
                for fut in cf.as_completed(futures):
                    done(futures[fut], fut.result())
            except BaseException:  # Ctrl-C, SIGTERM: nothing queued may still run
                _stop(pool, [pairs[i][1] for i in todo])
                raise
            pool.shutdown()
    finally:
        book.close()
    return [results[i] for i in sorted(results)]
