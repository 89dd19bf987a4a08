"""The `ecdc` command line. Thin: parse, call the API, turn errors into one-line messages.

Torch is imported only by the commands that run a model, so `--help` and `info` are quick.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import typing as tp
from pathlib import Path

import click

from . import __version__, interrupts, runner
from .errors import EcdcError, OptionError

WEIGHTS = click.Path(dir_okay=False, path_type=Path)
PATHS = click.Path()  # a file or folder ('-': stdin/stdout); the shell completes file names


def _guard(fn):
    """Turn library errors into `Error: ...` and exit 1, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signals go to the main thread
            signal.signal(signal.SIGTERM, interrupts.terminate)
        try:
            return fn(*args, **kwargs)
        except EcdcError as e:
            raise click.ClickException(e.cli) from None
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away; nothing more to say
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except interrupts.Terminated:
            click.echo("Error: terminated", err=True)
            sys.exit(143)
        except OSError as e:
            raise click.ClickException(f"{e.filename + ': ' if e.filename else ''}"
                                       f"{e.strerror or e}") from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ecdc")
def main() -> None:
    """Neural audio compression with Meta's EnCodec: `ecdc compress in.wav -b 6`."""
    # a run makes some 400k objects that live as long as it does (torch, numba, the models)
    # and few after; at the default thresholds the collector walks them all again each time
    # they grow by a quarter, 0.1-0.15 s of a run (measured). Collect rarely: what is left
    # to collect is the little garbage of each block.
    gc.set_threshold(50_000, 20, 20)
    log = logging.getLogger("ecdc")  # what the library says while it works (a live decoder falling behind)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ecdc: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


COMMON = [
    click.option("-o", "--output", type=PATHS, help="Output file, folder (several inputs) or '-' for stdout."),
    click.option("--weights", type=WEIGHTS,
                 help="Model checkpoint to use instead of the official one, which is looked for in "
                      "$ECDC_WEIGHTS_DIR, then $TORCH_HOME/hub/checkpoints (~/.cache/torch/hub/"
                      "checkpoints), then downloaded there."),
    click.option("--lm-weights", type=WEIGHTS, help="Language model checkpoint to use instead of the official one."),
    click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes."),
    None,  # --threads: said per command (_threads)
    click.option("-j", "--jobs", type=int, default=1, show_default=True,
                 help="Files processed in parallel, one process each (with --cluster local: workers)."),
    click.option("-r", "--recursive", is_flag=True,
                 help="Folder inputs: process the files under them, mirroring the tree under -o."),
    click.option("--resume", is_flag=True,
                 help="Skip outputs that already exist complete and valid (re-run a killed job)."),
    click.option("--manifest", type=click.Path(dir_okay=False),
                 help="Append one JSON line per input (source, output, status, error, seconds, "
                      "bytes, kbps, wall_s) to this file."),
    click.option("--cluster", metavar="ADDRESS",
                 help="Run the files as Ray tasks: 'local', 'auto', ray://host:port or host:port "
                      "(needs pip install 'encodec-cli[ray]'; workers must see the same paths)."),
]


def _threads(reads_ecdc: bool):
    help = "Torch threads per file."
    if reads_ecdc:
        help += (" Reading an LM-coded file of Meta's encodec (format 0): the threads it was written with "
                 "(if not given: torch's default, as encodec ran).")
    return click.option("--threads", type=int, default=1, show_default=True, help=help)


def _common(reads_ecdc: bool):
    """The options every file command takes; `reads_ecdc`: its inputs are .ecdc files."""
    def decorate(fn):
        for option in reversed(COMMON):
            fn = (option or _threads(reads_ecdc))(fn)
        return fn
    return decorate


@main.command(short_help="Compress audio files to .ecdc.")
@click.argument("inputs", nargs=-1, required=True, type=PATHS)
@click.option("-b", "--bandwidth", type=float, default=6.0, show_default=True,
              help="Target kbps: 1.5, 3, 6, 12, 24 (24khz); 3, 6, 12, 24 (48khz).")
@click.option("--model", type=click.Choice(["24khz", "48khz"]), default="24khz", show_default=True,
              help="24khz: mono, speech and general audio; 48khz: stereo music.")
@click.option("--lm/--raw", default=True, show_default=True,
              help="--lm: range-code the codes with EnCodec's language model (smaller files); "
                   "--raw: 10 bits per code (faster, no language model to download).")
@click.option("--live", is_flag=True,
              help="A live stream: each frame (24khz, 13 ms) or 1 s segment (48khz) is written as soon "
                   "as it is coded, for a decoder at the other end of a pipe or socket.")
@_common(reads_ecdc=False)
@_guard
def compress(inputs, output, bandwidth, model, lm, live, weights, lm_weights, force, quiet, threads, jobs,
             recursive, resume, manifest, cluster):
    """Compress audio files or folders (-r) (WAV, FLAC, OGG, ...; '-' for stdin) to .ecdc.
    An .npz of codes (as `ecdc codes` writes, or a model generates) is packed without the
    encoder, at its own model and bandwidth.

    With --raw, --lm-weights is accepted and not used (the language model is not loaded)."""
    from .options import MODELS, CompressOptions

    if any(i.lower().endswith(".npz") for i in inputs):
        given = [o for o, p in (("-b", "bandwidth"), ("--model", "model"), ("--live", "live"))
                 if click.get_current_context().get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{given[0]} does not apply to .npz codes, which keep their own model and "
                                   f"bandwidth")

    opts = CompressOptions(bandwidth=bandwidth, model=MODELS[model], weights=weights, lm=lm, live=live,
                           lm_weights=lm_weights if lm else None, threads=threads, download_bars=not quiet)
    _usage(opts.check, "'-b' / '--bandwidth'")
    with interrupts.ending_live_input() if live else contextlib.nullcontext():
        runner.execute("compress", inputs, output, opts, force, quiet, threads, jobs, recursive, resume,
                       manifest, cluster)


@main.command(short_help="Decompress .ecdc files to audio.")
@click.argument("inputs", nargs=-1, required=True, type=PATHS)
@click.option("--bits", type=click.Choice(["16", "24", "float"]),
              help="Sample format of the output (default: the original's, 16 if unknown).")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac", "aiff", "au", "caf", "w64", "rf64",
                                                    "ogg", "opus", "mp3"], case_sensitive=False),
              help="Output format (default: the -o extension, else wav); sets the extension of "
                   "outputs named by ecdc.")
@click.option("--model-format", is_flag=True,
              help="Keep the model's sample rate and channels instead of restoring the original's.")
@click.option("--start", "start", metavar="TIME",
              help="Decode from this time: seconds (90.5) or [h:]mm:ss[.ms] (1:30.5).")
@click.option("--duration", metavar="TIME", help="Decode this long (from --start).")
@click.option("--end", "end", metavar="TIME", help="Decode up to this time (instead of --duration).")
@click.option("--salvage", is_flag=True,
              help="A damaged or cut file: decode every intact packet, silence where packets are lost (each "
                   "lost range named on stderr), write the output, exit 1.")
@_common(reads_ecdc=True)
@_guard
def decompress(inputs, output, bits, fmt, model_format, start, duration, end, salvage, weights, lm_weights, force,
               quiet, threads, jobs, recursive, resume, manifest, cluster):
    """Decompress .ecdc files or folders (-r) ('-' for stdin) to WAV, FLAC, OGG, Opus, AIFF, ...
    (by --format or extension; stdout: WAV unless --format says). Also reads the .ecdc files
    of Meta's encodec (format 0)."""
    from .formats.seek import parse_time
    from .options import DecompressOptions

    if duration is not None and end is not None:
        raise click.UsageError("give --duration or --end, not both")
    first = _usage(lambda: parse_time(start), "'--start'") if start is not None else 0.0
    last = first + _usage(lambda: parse_time(duration), "'--duration'") if duration is not None else (
        _usage(lambda: parse_time(end), "'--end'") if end is not None else None)
    if last is not None and last < first:
        raise click.UsageError(f"the range ends ({last:g} s) before it starts ({first:g} s)")
    if resume and (first or last is not None):
        raise click.UsageError("--resume cannot tell a range's output from a whole file's")
    if salvage and (first or last is not None):
        raise click.UsageError("--salvage decodes whole files: leave out --start, --duration and --end")
    opts = DecompressOptions(weights=weights, lm_weights=lm_weights, model_format=model_format, bits=bits,
                             format=fmt, start=first, end=last, lm_threads=_explicit_threads(threads),
                             threads=threads, salvage=salvage, download_bars=not quiet)
    runner.execute("decompress", inputs, output, opts, force, quiet, threads, jobs, recursive, resume,
                   manifest, cluster)


T = tp.TypeVar("T")


def _usage(check: tp.Callable[[], T], param: str) -> T:
    """check(), its OptionError turned into click's usage error (exit 2) for `param`."""
    try:
        return check()
    except OptionError as e:
        raise click.BadParameter(str(e), param_hint=param) from None


def _explicit_threads(threads: int) -> tp.Optional[int]:
    """--threads if given: the float LM of format-0 files then runs with it (else with
    torch's default, as Meta's encodec did)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source("threads")
    return threads if source == ParameterSource.COMMANDLINE else None


@main.command(short_help="Re-container .ecdc files (format 0 to 1, raw <-> LM).")
@click.argument("inputs", nargs=-1, required=True, type=PATHS)
@click.option("--lm/--raw", "lm", default=None,
              help="Coder of the new file (default: raw stays raw, LM-coded becomes the portable LM coder).")
@click.option("--in-place", is_flag=True, help="Replace each input by its conversion (once checked).")
@click.option("--salvage", is_flag=True,
              help="A cut or damaged file (an interrupted live recording): keep what comes before the "
                   "damage, say where it ends, exit 1.")
@_common(reads_ecdc=True)
@_guard
def convert(inputs, output, lm, in_place, salvage, weights, lm_weights, force, quiet, threads, jobs, recursive,
            resume, manifest, cluster):
    """Re-container .ecdc files without touching the audio: Meta's encodec files (format 0) to
    format 1, or raw to LM-coded and back. Each new file is decoded and checked to give the
    same codes before it is written. --weights: the codec weights to record for format-0
    files (which do not say theirs); --threads: the threads Meta's encodec ran with when it
    wrote an LM-coded file (default: torch's default here)."""
    from .options import ConvertOptions

    if in_place and output is not None:
        raise click.UsageError("give -o or --in-place, not both")
    if output is None and not in_place and "-" not in inputs:
        raise click.UsageError("convert needs -o OUT (a file, or a folder for several inputs) or --in-place")
    coder = None if lm is None else ("lm" if lm else "raw")
    if salvage and in_place:
        raise click.UsageError("--salvage cannot replace its input: give -o")
    opts = ConvertOptions(coder=coder, weights=weights, lm_weights=lm_weights, salvage=salvage,
                          lm_threads=_explicit_threads(threads), threads=threads, download_bars=not quiet)
    runner.execute("convert", inputs, output, opts, force or in_place, quiet, threads, jobs, recursive, resume,
                   manifest, cluster, in_place)


@main.command(short_help="Codes of audio or .ecdc files: .npz, or Parquet shards.")
@click.argument("inputs", nargs=-1, required=True, type=PATHS)
@click.option("-b", "--bandwidth", type=float, default=6.0, show_default=True,
              help="Audio inputs: kbps, as for compress (.ecdc inputs keep their own).")
@click.option("--model", type=click.Choice(["24khz", "48khz"]), default="24khz", show_default=True,
              help="Audio inputs: the model, as for compress.")
@click.option("--parquet", is_flag=True,
              help="Write Parquet shards to the folder -o (train-00000-of-00012.parquet, ...), one row per "
                   "file, for pyarrow and Hugging Face datasets (needs pip install 'encodec-cli[datasets]').")
@click.option("--shard-rows", type=int, default=1000, show_default=True, help="--parquet: files per shard at most.")
@click.option("--shard-mb", type=float, default=256, show_default=True,
              help="--parquet: MB of codes (uint16) per shard at most.")
@_common(reads_ecdc=True)
@_guard
def codes(inputs, output, bandwidth, model, parquet, shard_rows, shard_mb, weights, lm_weights, force, quiet,
          threads, jobs, recursive, resume, manifest, cluster):
    """The codes of audio files (encoded, as compress would store them) or .ecdc files (read;
    LM-coded ones load the LM), as NumPy .npz: `codes` [codebooks, frames] uint16, `model`,
    `bandwidth`, the lengths and the original's rate and channels; 48 kHz also
    `segment_frames` and `scales`. With --parquet, a corpus in Parquet shards instead."""
    from .options import MODELS, CodesOptions

    opts = CodesOptions(bandwidth=bandwidth, model=MODELS[model], weights=weights, lm_weights=lm_weights,
                        lm_threads=_explicit_threads(threads), threads=threads, download_bars=not quiet)
    _usage(opts.check, "'-b' / '--bandwidth'")
    if parquet:
        if output is None or output == "-":
            raise click.UsageError("--parquet writes shards to a folder: give -o OUT/")
        runner.shards(inputs, output, opts, force, quiet, threads, jobs, recursive, resume, manifest, cluster,
                shard_rows, shard_mb)
        return
    runner.execute("codes", inputs, output, opts, force, quiet, threads, jobs, recursive, resume, manifest, cluster)


@main.command("eval", short_help="Measure each bandwidth's quality and cost, next to Opus.")
@click.argument("source", metavar="IN", type=PATHS)
@click.option("-b", "--bandwidth", "bandwidths", type=float, multiple=True,
              help="kbps to try; repeat for several (default: all of the model's).")
@click.option("--model", type=click.Choice(["24khz", "48khz"]), default="24khz", show_default=True,
              help="The model to evaluate, as for compress.")
@click.option("--lm/--raw", default=True, show_default=True, help="The coder, as for compress.")
@click.option("--plot", metavar="FILE.png",
              help="Draw rate-quality curves and mel spectrograms to this image (.png, .svg, .pdf).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows as JSON: codec, bandwidth (asked), kbps (achieved), si_snr, "
                   "mel_distance, stoi, seconds {encode, decode}, bytes.")
@click.option("--keep", type=click.Path(path_type=Path), metavar="DIR",
              help="Keep each coded file and its decoded WAV in this folder, to listen to.")
@click.option("--opus/--no-opus", default=True, show_default=True,
              help="Compare with Opus at 6, 12 and 24 kbps (and the other bandwidths asked for from 6 up).")
@click.option("--weights", type=WEIGHTS, help="Model checkpoint, as for compress.")
@click.option("--lm-weights", type=WEIGHTS, help="Language model checkpoint, as for compress.")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads for ecdc.")
@click.option("-f", "--force", is_flag=True, help="Overwrite the plot and kept files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes.")
@_guard
def eval_(source, bandwidths, model, lm, plot, as_json, keep, opus, weights, lm_weights, threads, force, quiet):
    """Measure what each bandwidth costs on IN, next to Opus: achieved kbps, SI-SNR, mel
    distance, STOI and seconds each way, compared with IN at its own rate and channels.
    Needs pip install 'encodec-cli[eval]'."""
    from .evaluation.report import EvalOptions, check_extra
    from .options import MODELS

    check_extra(plot is not None)
    if threads < 1:
        raise click.UsageError("--threads takes a positive number")
    opts = EvalOptions(model=MODELS[model], bandwidths=tuple(bandwidths), lm=lm, weights=weights,
                       lm_weights=lm_weights if lm else None, threads=threads, opus=opus, keep=keep,
                       force=force, download_bars=not quiet)
    _usage(opts.targets, "'-b' / '--bandwidth'")  # a bandwidth the model lacks stops us here
    fmt = _plot_format(plot, force) if plot is not None else None
    _evaluate(source, opts, plot, fmt, as_json, quiet)


def _plot_format(plot: str, force: bool) -> str:
    from .evaluation.plot import formats
    from .outputs import check_output

    ext = os.path.splitext(plot)[1].lstrip(".").lower()
    if ext not in formats():
        names = ", ".join("." + k for k in sorted(formats()))
        raise OptionError(f"--plot {plot}: give a file name ending in one of {names}"
                          + (f" (matplotlib cannot write .{ext})" if ext else ""))
    check_output(plot, force)
    return ext


def _evaluate(source, opts, plot, fmt, as_json, quiet) -> None:
    from tqdm import tqdm

    from .evaluation import report as E

    runs = len(opts.targets()) + (len(opts.opus_targets()) if opts.opus else 0)
    with tqdm(total=runs, unit="run", disable=quiet or not sys.stderr.isatty(), desc="eval",
              file=sys.stderr, leave=False) as bar:
        report = E.evaluate(source, opts, step=lambda label: (bar.set_postfix_str(label), bar.update()))
    if not quiet:
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in report.rows], indent=2))
    else:
        click.echo(E.describe(report))
        click.echo(E.table(report))
    if plot is not None:
        from .evaluation.plot import write
        from .outputs import atomic_path

        with atomic_path(plot, opts.force) as tmp:
            write(report, tmp, fmt)


@main.command(short_help="Describe .ecdc files without decoding them.")
@click.argument("files", nargs=-1, required=True, type=PATHS)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON for scripts (an object; a list of them for several files).")
@_guard
def info(files, as_json):
    """Describe .ecdc files without decoding them."""
    from .info import describe_file, rows
    from .jobs.task import named

    runner.no_terminal_input(files, "info")
    described, failures = [], []
    for file in files:
        try:
            described.append(describe_file(file))
        except EcdcError as e:
            if len(files) == 1:
                raise click.ClickException(named(e.cli, file, "-")) from None
            failures.append(named(e.cli, file, "-"))
    if as_json:
        click.echo(json.dumps(described[0] if len(files) == 1 else described, indent=2))
    else:
        for i, data in enumerate(described):
            if len(files) > 1:
                click.echo(("\n" if i else "") + f"{'file:':<11}{data['file']}")
            for key, value in rows(data):
                click.echo(f"{key + ':':<11}{value}")
    if failures:
        for line in failures[:-1]:
            click.echo(f"Error: {line}", err=True)
        raise click.ClickException(failures[-1])
