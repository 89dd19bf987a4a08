"""Running a batch: --resume, the manifest, and the choice of executor (this process,
local processes, or a Ray cluster). Imports the per-file task; nothing imports back."""
from __future__ import annotations

import contextlib
import typing as tp

from ..errors import OptionError
from .local import run_here, run_in_pool
from .task import FileResult, Kind, complete, remove_stale_parts, skipped


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


def run_batch(pairs: tp.Sequence[tp.Tuple[str, str]], kind: Kind, opts, *, force: bool = False,
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
        items = [(i, *pairs[i]) for i in todo]
        here = cluster is None and (jobs == 1 or len(todo) <= 1)
        if cluster is not None:
            from .cluster import run_on_ray

            running = run_on_ray(items, kind, opts, force, cluster, jobs, threads, make_folders)
        elif here:
            running = run_here(items, kind, opts, force, threads, make_folders, progress)
        else:
            running = run_in_pool(items, kind, opts, force, jobs, threads, make_folders)
        with contextlib.closing(running):  # an interrupted executor stops its workers at once
            for i, r in running:
                done(i, r, stream=here)
    finally:
        book.close()
    return [results[i] for i in sorted(results)]
