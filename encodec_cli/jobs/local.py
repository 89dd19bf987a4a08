"""The local executors: files one after another in this process, or in a pool of
processes (one thread each by default), stopped cleanly on Ctrl-C or SIGTERM."""
from __future__ import annotations

import concurrent.futures as cf
import signal
import typing as tp

from ..codec.threads import set_threads
from .task import FileResult, Kind, process, remove_stale_parts

Item = tp.Tuple[int, str, str]  # (index, source, output)


def run_here(items: tp.Sequence[Item], kind: Kind, opts, force: bool, threads: int, make_folders: bool,
             progress: tp.Optional[tp.Callable[[float], None]] = None
             ) -> tp.Generator[tp.Tuple[int, FileResult], None, None]:
    """Yield (index, result) for each item, in order; `progress` gets seconds as blocks are coded."""
    set_threads(threads)
    for i, src, dst in items:
        yield i, process(kind, src, dst, opts, force, progress, make_folders)


def run_in_pool(items: tp.Sequence[Item], kind: Kind, opts, force: bool, jobs: int, threads: int,
                make_folders: bool, window: tp.Optional[int] = None
                ) -> tp.Generator[tp.Tuple[int, FileResult], None, None]:
    """Yield (index, result) for each item as files finish in `jobs` processes. With
    `window`, an item is started only within `window` items of the first unfinished one,
    so that a consumer putting results in order holds at most that many."""
    pool = cf.ProcessPoolExecutor(min(jobs, len(items)), initializer=_worker, initargs=(threads,))
    try:
        futures: tp.Dict[cf.Future, int] = {}  # future -> position in items
        started = 0

        def start_more() -> None:
            nonlocal started
            oldest = min(futures.values(), default=started)
            while started < len(items) and (window is None or started < oldest + window):
                i, src, dst = items[started]
                futures[pool.submit(process, kind, src, dst, opts, force, None, make_folders)] = started
                started += 1

        start_more()
        while futures:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                position = futures.pop(fut)
                yield items[position][0], fut.result()
            start_more()
    except BaseException:  # Ctrl-C, SIGTERM, or the consumer stopped: nothing queued may still run
        _stop(pool, [dst for _, _, dst in items])
        raise
    pool.shutdown()


def _worker(threads: int) -> None:
    """A pool process: Ctrl-C is the parent's to handle (it stops the workers), and SIGTERM
    ends the process at once. Handlers inherited from the parent would raise inside the file
    at hand, which the pool catches as that file's error before it takes the next file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    set_threads(threads)


def _stop(pool: cf.ProcessPoolExecutor, outputs: tp.Sequence[str]) -> None:
    """Cancel queued files, stop the workers (SIGTERM ends them at once) and remove the
    temporary outputs they leave."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        proc.terminate()
    for proc in workers:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    remove_stale_parts(outputs)
