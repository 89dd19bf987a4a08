"""A batch on a Ray cluster: one actor per worker keeps its models loaded, one file a task.

Imported only with --cluster (Ray is the optional extra `encodec-cli[ray]`). Workers read and
write the same paths as the driver (shared storage). A worker that dies in the middle of a
file is restarted and the file is retried; what a killed worker left half-written (the
hidden `.part` temporary beside an output) is removed when the batch ends, or by the next
run over the same outputs.
"""
from __future__ import annotations

import os
import socket
import typing as tp

from ..errors import OptionError
from .task import FileResult, Kind, process, remove_stale_parts

RETRIES = 2  # more tries of a file whose worker died, before it is reported as failed


class _Worker:
    """Runs files one by one in a worker process; the models stay cached in the process."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)

    def run(self, kind: Kind, src: str, dst: str, opts, force: bool, make_folders: bool) -> FileResult:
        return process(kind, src, dst, opts, force, make_folders=make_folders)


def _loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return address == "local" or host in ("127.0.0.1", "localhost", "::1", "[::1]")


REACH_SECONDS = 5.0  # to open a TCP connection to a cluster's address


def _reachable(address: str) -> None:
    """Refuse at once an address where nothing listens: Ray itself retries for minutes."""
    where = address.split("://", 1)[-1]
    if not where.rstrip("]").rpartition("]")[2].count(":"):  # no port: Ray's defaults
        where += ":10001" if address.startswith("ray://") else ":6379"
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(f"--cluster {address}: give 'local', 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except OSError as e:
        why = "no answer" if isinstance(e, socket.timeout) else (e.strerror or str(e)).lower()
        raise OptionError(f"cannot reach the Ray cluster at {address}: {why}") from None


def connect(address: str, workers: int) -> None:
    if _loopback(address):
        # Ray would replace a loopback address by this machine's public one, found by
        # trying to reach a public DNS server; a cluster on the loopback needs neither.
        # (Read when Ray is first imported.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address not in ("local", "auto"):
        _reachable(address)
    import ray

    if ray.is_initialized():
        return
    kwargs: tp.Dict[str, tp.Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        if address == "local":  # a Ray instance on this machine
            ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", **kwargs)
        else:
            if _loopback(address):
                kwargs["_node_ip_address"] = "127.0.0.1"
            ray.init(address=address, **kwargs)
    except Exception as e:  # Ray raises many kinds for an unreachable cluster
        raise OptionError(f"cannot use the Ray cluster at {address}: {str(e).splitlines()[0]}") from None


def run_on_ray(items: tp.Sequence[tp.Tuple[int, str, str]], kind: Kind, opts, force: bool,
               address: str, jobs: int, threads: int, make_folders: bool = False,
               window: tp.Optional[int] = None) -> tp.Generator[tp.Tuple[int, FileResult], None, None]:
    """Yield (index, result) for each (index, source, output) as files finish; `window`: as
    for `local.run_in_pool`."""
    connect(address, jobs)
    import ray

    try:
        workers = jobs if address == "local" else max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor: tp.Any = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=RETRIES)(_Worker)
        idle = [actor.remote(threads) for _ in range(min(workers, len(items)))]
        started, running = 0, tp.cast(tp.Dict[tp.Any, tp.Tuple[tp.Any, int, int, str, str]], {})
        while started < len(items) or running:
            oldest = min((r[1] for r in running.values()), default=started)
            while idle and started < len(items) and (window is None or started < oldest + window):
                worker, (i, src, dst) = idle.pop(), items[started]
                running[worker.run.remote(kind, src, dst, opts, force, make_folders)] = (worker, started, i, src, dst)
                started += 1
            ready, _ = ray.wait(list(running), num_returns=1)
            worker, _, i, src, dst = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as e:
                result = FileResult(source=src, output=dst, status="error",
                                    error=f"the Ray worker failed {RETRIES + 1} times: "
                                          f"{str(e).strip().splitlines()[0]}")
            idle.append(worker)
            yield i, result
    finally:
        remove_stale_parts(dst for _, _, dst in items)
        if address == "local":
            ray.shutdown()
