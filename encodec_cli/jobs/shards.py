"""A corpus into Parquet shards (`ecdc codes -o OUT/ --parquet`): the files are shared
among shards before any work, by count and by the size of their codes, so that a shard's
rows, name and bytes depend only on the inputs; files are coded by any executor, and
their rows written in order, a shard at a time, each renamed into place when whole.
`--resume` keeps the shards that are whole and whose inputs are the same."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import typing as tp

from ..errors import OptionError
from ..outputs import atomic_path
from ..specs import SPECS
from .run import Manifest
from .task import FileResult, duration, remove_stale_parts

WINDOW_PER_JOB = 8  # files started ahead of the first unfinished one, per process
SHARD = re.compile(r"train-\d{5}-of-\d{5}\.parquet")


def share(sizes: tp.Sequence[float], rows: int, max_bytes: float) -> tp.List[tp.Tuple[int, int]]:
    """[start, stop) of each shard: at most `rows` files, and no more than `max_bytes` of
    codes unless one file alone is more."""
    bounds, start, total = [], 0, 0.0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= rows or total + size > max_bytes):
            bounds.append((start, i))
            start, total = i, 0.0
        total += size
    if start < len(sizes):
        bounds.append((start, len(sizes)))
    return bounds


def plan_digest(names: tp.Sequence[str], opts) -> str:
    """What a shard's rows depend on: its files' row paths, the model and bandwidth, the
    weights given."""
    what = {"rows": list(names), "model": opts.model, "bandwidth": opts.bandwidth,
            "weights": str(opts.weights) if opts.weights else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def whole(path: str, digest: str) -> bool:
    """Whether shard `path` is complete, of the same plan, and had no failed inputs."""
    from ..shards import read_meta

    try:
        meta = read_meta(path)
    except Exception:
        return False
    return meta.get("plan") == digest and meta.get("failed") == []


def run_shards(sources: tp.Sequence[tp.Tuple[str, str]], folder: str, opts, *, rows: int, max_mb: float,
               force: bool = False, resume: bool = False, jobs: int = 1, threads: int = 1,
               cluster: tp.Optional[str] = None, manifest: tp.Optional[str] = None,
               on_result: tp.Optional[tp.Callable[[FileResult], None]] = None,
               progress: tp.Optional[tp.Callable[[float], None]] = None,
               durations: tp.Optional[tp.Sequence[tp.Optional[float]]] = None) -> tp.List[FileResult]:
    """Write the codes of (file, row path) pairs as Parquet shards in `folder`; returns each
    file's result, in order. `opts`: CodesOptions; `durations`: each file's seconds, if the
    caller has them (else read from the files' headers)."""
    from ..shards import pyarrow, shard_name

    pyarrow()
    opts.check()
    if rows < 1 or max_mb <= 0:
        raise OptionError("--shard-rows and --shard-mb take positive numbers")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OptionError(f"-o {folder} is a file; shards need a folder (-o out/)")
    spec = SPECS[opts.model]
    per_second = spec.frame_rate * spec.codebooks_for(opts.bandwidth) * 2  # bytes of uint16 codes
    if durations is None:
        durations = [duration("rows", src, opts) for src, _ in sources]
    sizes = [(d or 0.0) * per_second for d in durations]
    bounds = share(sizes, rows, max_mb * 1e6)
    names = [os.path.join(folder, shard_name(k, len(bounds))) for k in range(len(bounds))]
    digests = [plan_digest([row for _, row in sources[a:b]], opts) for a, b in bounds]
    os.makedirs(folder, exist_ok=True)
    _check_folder(folder, names, force, resume)
    book = Manifest(manifest)
    results: tp.Dict[int, FileResult] = {}

    def done(i: int, r: FileResult) -> None:
        r.codes = None
        results[i] = r
        book.write(r)
        if on_result:
            on_result(r)

    try:
        todo = []
        for k, (a, b) in enumerate(bounds):
            if resume and whole(names[k], digests[k]):
                for i in range(a, b):
                    done(i, FileResult(source=sources[i][0], output=names[k], status="skipped",
                                       seconds=round(sizes[i] / per_second, 6)))
                    if progress:
                        progress(sizes[i] / per_second)
            else:
                todo.append(k)
        remove_stale_parts(names[k] for k in todo)
        items = [(i, sources[i][0], names[k]) for k in todo for i in range(*bounds[k])]
        here = cluster is None and (jobs == 1 or len(items) <= 1)
        running = _executor(items, opts, jobs, threads, cluster, progress if here else None)
        with contextlib.closing(running):
            _write(running, items, sources, bounds, names, digests, opts, done, None if here else progress)
    finally:
        book.close()
    return [results[i] for i in sorted(results)]


def _check_folder(folder: str, names: tp.Sequence[str], force: bool, resume: bool) -> None:
    """Shards there already are replaced only with -f (--resume keeps the whole ones); shards
    of another run (another count) would be loaded with these by `OUT/*.parquet`: they are
    refused, or with -f removed."""
    ours = {os.path.basename(n) for n in names}
    others = sorted(n for n in os.listdir(folder) if SHARD.fullmatch(n) and n not in ours)
    if others and not force:
        raise OptionError(f"{folder} holds shards of another run ({others[0]}{', ...' if len(others) > 1 else ''}), "
                          f"which would be loaded with these; remove them, or use -f/--force to replace them")
    for name in others:
        os.unlink(os.path.join(folder, name))
    if not force and not resume:
        for name in names:
            if os.path.lexists(name):
                raise OptionError(f"{name} exists; use -f/--force to overwrite, or --resume to keep the whole shards")


def _executor(items, opts, jobs: int, threads: int, cluster, progress):
    if cluster is not None:
        from .cluster import run_on_ray

        return run_on_ray(items, "rows", opts, True, cluster, jobs, threads, window=WINDOW_PER_JOB * jobs)
    if progress is not None or jobs == 1 or len(items) <= 1:
        from .local import run_here

        return run_here(items, "rows", opts, True, threads, False, progress)
    from .local import run_in_pool

    return run_in_pool(items, "rows", opts, True, jobs, threads, False, window=WINDOW_PER_JOB * jobs)


class _Open:
    """The shard being written: its writer on a temporary name, and the inputs that failed."""

    def __init__(self, name: str, opts, digest: str):
        from ..shards import ShardWriter

        self._publish = atomic_path(name, True)
        self.writer = ShardWriter(self._publish.__enter__(), opts.model, opts.bandwidth, digest)
        self.failed: tp.List[str] = []

    def close(self) -> None:
        """Complete: renamed into place."""
        self.writer.close(self.failed)
        self._publish.__exit__(None, None, None)

    def abandon(self, e: BaseException) -> None:
        """Not complete: the temporary file is removed."""
        self._publish.__exit__(type(e), e, e.__traceback__)


def _write(running, items, sources, bounds, names, digests, opts, done, progress) -> None:
    """Rows in the order of `items`, as their results come (in any order), into the shards."""
    from ..errors import EcdcError

    waiting: tp.Dict[int, FileResult] = {}
    order = [i for i, _, _ in items]
    shard_of = {i: k for k, (a, b) in enumerate(bounds) for i in range(a, b)}
    position = 0
    shard: tp.Optional[_Open] = None
    try:
        for i, r in running:
            waiting[i] = r
            while position < len(order) and order[position] in waiting:
                i = order[position]
                r = waiting.pop(i)
                k = shard_of[i]
                shard = shard or _Open(names[k], opts, digests[k])
                if r.status == "ok":
                    try:
                        shard.writer.append(sources[i][1], r.codes)
                    except EcdcError as e:
                        r.status, r.error = "error", f"{sources[i][0]}: {e}"
                if r.status != "ok":
                    shard.failed.append(sources[i][1])
                if progress:
                    progress(r.seconds)
                done(i, r)
                position += 1
                if i == bounds[k][1] - 1:  # the shard's last file: it is whole
                    shard.close()
                    shard = None
    except BaseException as e:
        if shard is not None:
            shard.abandon(e)
        raise
