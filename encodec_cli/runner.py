"""The command line's batch runs: files paired with outputs and run by an executor under
a progress bar, their notes said as they finish, and the errors said at the end (one line
each, the last as the exit's message)."""
from __future__ import annotations

import sys
import typing as tp

import click

from .errors import OptionError

if tp.TYPE_CHECKING:
    from .jobs.task import Kind


def execute(kind: Kind, inputs, output, opts, force, quiet, threads, jobs, recursive=False,
            resume=False, manifest=None, cluster=None, in_place=False) -> None:
    """Run command `kind` over its inputs, each paired with its output."""
    from tqdm import tqdm

    from .jobs import plan as P
    from .jobs import run as R
    from .jobs import task as T
    from .jobs.task import FileResult

    if threads < 1 or jobs < 1:
        raise click.UsageError("--threads and --jobs take a positive number")
    if cluster is not None:
        check_ray()
    no_terminal_input(inputs, kind)
    fmt = getattr(opts, "format", None)
    plan = P.plan(inputs, output, kind, recursive, "." + fmt if fmt else None)
    if any(d == "-" for _, d in plan) and sys.stdout.isatty():
        what = {"decompress": "WAV data", "codes": "NumPy data"}.get(kind, "compressed data")
        raise OptionError(f"refusing to write {what} to a terminal; use -o FILE or a pipe")
    if in_place:
        plan = [(s, s) for s, _ in plan]
    durations = [T.duration(kind, s, opts) for s, _ in plan]
    # files that cannot be read have no duration, and fail without adding any audio
    total = sum(d for d in durations if d) or None
    show = not quiet and sys.stderr.isatty() and all(d != "-" for _, d in plan)

    with tqdm(total=total, unit="s", disable=not show, desc=kind, file=sys.stderr,
              bar_format=bar_format(total)) as bar:
        def note(r: FileResult) -> None:
            source = "stdin" if r.source == "-" else r.source
            lines = [f"{source}: {line}" for line in r.notes]  # damage is said even with -q
            if r.clipped:
                lines.append(f"{'stdout' if r.output == '-' else r.output}: {r.clipped} samples clipped to full scale")
            for line in lines:
                if not quiet or line.startswith(f"{source}: damaged: "):
                    tqdm.write(f"note: {line}", file=sys.stderr)

        results = R.run_batch(plan, kind, opts, force=force, resume=resume, jobs=jobs,
                              threads=threads, cluster=cluster, manifest=manifest,
                              make_folders=recursive or P.to_folder(inputs, output), on_result=note,
                              progress=lambda seconds: advance(bar, seconds))
    fail_on(results)


def no_terminal_input(inputs, kind: str) -> None:
    """'-' with a terminal on stdin would wait for keystrokes (and eat the next command)."""
    if "-" in inputs and sys.stdin.isatty():
        what = "audio" if kind == "compress" else ".ecdc data"
        raise OptionError(f"refusing to read {what} from a terminal; pipe it in (... | ecdc {kind} -) "
                          f"or give a file name")


def advance(bar, seconds: float) -> None:
    """Move the bar by `seconds`, never past its total: float steps can add up to a hair more
    than the total (600.0000000000008 of 600 s), and tqdm would warn."""
    if bar.total:
        seconds = min(seconds, bar.total - bar.n)
    if seconds > 0:
        bar.update(seconds)


def bar_format(total: tp.Optional[float]) -> str:
    """Seconds of audio as whole numbers, with or without a known total (stdin)."""
    if total:
        return "{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]"
    return "{desc}: {n:.0f} s audio [{elapsed}]"


def check_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise OptionError("--cluster needs Ray: pip install 'encodec-cli[ray]'")


def shards(inputs, output, opts, force, quiet, threads, jobs, recursive, resume, manifest, cluster, rows, mb):
    """`ecdc codes --parquet`: the inputs' codes as Parquet shards in folder `output`."""
    from tqdm import tqdm

    from .jobs import plan as P
    from .jobs import task as T
    from .jobs.shards import run_shards
    from .shards import pyarrow

    pyarrow()  # the extra's one-line message before any work
    if threads < 1 or jobs < 1:
        raise click.UsageError("--threads and --jobs take a positive number")
    if cluster is not None:
        check_ray()
    sources = P.sources(inputs, "codes", recursive)
    durations = [T.duration("rows", s, opts) for s, _ in sources]
    total = sum(d for d in durations if d) or None
    with tqdm(total=total, unit="s", disable=quiet or not sys.stderr.isatty(), desc="codes", file=sys.stderr,
              bar_format=bar_format(total)) as bar:
        def note(r: T.FileResult) -> None:
            if not quiet:
                for line in r.notes:
                    tqdm.write(f"note: {r.source}: {line}", file=sys.stderr)

        results = run_shards(sources, output, opts, rows=rows, max_mb=mb, force=force, resume=resume, jobs=jobs,
                             threads=threads, cluster=cluster, manifest=manifest, on_result=note,
                             progress=lambda seconds: advance(bar, seconds), durations=durations)
    fail_on(results)


def fail_on(results) -> None:
    failures = [str(r.error) for r in results if r.status == "error"]  # each names its file
    if failures:
        for line in failures[:-1]:
            click.echo(f"Error: {line}", err=True)
        raise click.ClickException(failures[-1])
