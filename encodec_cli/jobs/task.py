"""One file's work, the same whichever executor runs it: compress, decompress, convert
or export codes; whether an output is already complete (for --resume); the temporary files
a killed worker leaves behind."""
from __future__ import annotations

import errno
import glob
import json
import os
import time
import typing as tp
from dataclasses import asdict, dataclass

from ..errors import EcdcError, MismatchError, WeightsError
from ..options import Result


@dataclass(kw_only=True)
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
    notes: tp.Tuple[str, ...] = ()  # what the user should know of a file that worked (NaN input, ...)
    codes: tp.Any = None            # kind 'rows': the file's Codes, for the shard's writer

    def manifest_line(self) -> str:
        data = asdict(self)
        del data["clipped"], data["notes"], data["codes"]
        return json.dumps(data)


Kind = tp.Literal["compress", "decompress", "convert", "codes", "rows"]  # the command ('rows': codes for shards)


def complete(kind: Kind, src: str, dst: str, opts) -> bool:
    """Whether `dst` is a finished, valid output of `src` under `opts` (for --resume)."""
    from ..formats.reader import describe, read_header
    from ..formats.records import VERSION, Input

    if dst == "-" or not os.path.isfile(dst):
        return False
    try:
        if kind == "compress":
            with open(dst, "rb") as f:
                h = describe(f).header   # every CRC and the end record
            return (h.model == opts.model and abs(h.bandwidth - opts.bandwidth) < 1e-9
                    and h.coder == ("lm" if opts.lm else "raw"))
        if kind == "convert":
            with open(dst, "rb") as f:
                h = describe(f).header
            with open(src, "rb") as f:
                source = read_header(Input(f))
            return h.version == VERSION and h.coder == (opts.coder or source.coder)
        if kind == "codes":
            from ..codes import Codes

            codes = Codes.load(dst)  # a zip: every member's CRC is checked as it is read; the fields too
            if src.lower().endswith(".ecdc"):
                return True
            return codes.model == opts.model and codes.bandwidth == opts.bandwidth  # audio: encoded as asked
        import soundfile as sf

        with open(src, "rb") as f:
            h, end = describe(f)[:2]
        from ..audio.files import native

        info = sf.info(native(dst))
        if opts.model_format:
            expected = (h.sample_rate, h.channels, end.num_samples)
        else:
            expected = (h.source_sample_rate, h.source_channels, end.source_num_samples)
        return (info.samplerate, info.channels, info.frames) == expected
    except Exception:  # unreadable, truncated or damaged: do it again
        return False


def duration(kind: str, src: str, opts) -> tp.Optional[float]:
    """Seconds of audio in `src`, if cheap to know (for the progress bar)."""
    if src == "-":
        return None
    try:
        if kind == "compress" or (kind in ("codes", "rows") and not src.lower().endswith(".ecdc")):
            import soundfile as sf

            from ..audio.files import native

            return sf.info(native(src)).duration
        from ..formats.reader import read_header
        from ..formats.records import Input

        with open(src, "rb") as f:
            header = read_header(Input(f))
        n, rate = header.num_samples, header.sample_rate
        if kind == "decompress" and getattr(opts, "end", None) is not None and n is not None:
            n = min(n, round(opts.end * rate))
        if kind == "decompress" and n is not None:
            n = max(0, n - round(opts.start * rate))
        return None if n is None else n / rate
    except Exception:
        return None  # errors are reported when the file is processed


def _ecdc_size(kind: Kind, src: str, dst: str) -> int:
    path = dst if kind in ("compress", "convert") else src
    try:
        return os.path.getsize(path) if path != "-" else 0
    except OSError:
        return 0


def _finish(r: FileResult, kind: Kind) -> FileResult:
    r.bytes = _ecdc_size(kind, r.source, r.output)
    r.kbps = round(r.bytes * 8 / r.seconds / 1000, 3) if r.seconds and r.bytes else None
    return r


def skipped(kind: Kind, src: str, dst: str) -> FileResult:
    from ..formats.reader import describe

    seconds = 0.0
    try:
        with open(dst if kind in ("compress", "convert") else src, "rb") as f:
            h, end = describe(f)[:2]
        seconds = end.num_samples / h.sample_rate
    except Exception:
        pass
    return _finish(FileResult(source=src, output=dst, status="skipped", seconds=seconds), kind)


def process(kind: Kind, src: str, dst: str, opts, force: bool, progress=None,
            make_folders: bool = False) -> FileResult:
    """Run command `kind` on one file (opts: its api options); library errors become an
    'error' result whose message, as the command line says it, names the file once.
    `make_folders`: create the output's folder first (a mirrored tree)."""
    from .. import api

    start = time.perf_counter()

    def failed(message: str) -> FileResult:
        return FileResult(source=src, output=dst, status="error", error=message,
                          wall_s=round(time.perf_counter() - start, 3))

    try:
        if make_folders and dst != "-" and os.path.dirname(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        codes: tp.Any = None  # kind 'rows': the file's Codes
        if kind == "rows":  # the codes come back on the result, for the shard's writer
            codes, result = api.codes_of(src, opts, progress)
        else:
            commands: tp.Dict[str, tp.Callable[..., Result]] = {
                "compress": api.compress_file, "decompress": api.decompress_file, "convert": api.convert_file,
                "codes": api.codes_file}
            result = commands[kind](src, dst, opts, force=force, progress=progress)
    except EcdcError as e:  # a weights file that cannot be had is the same for every input
        same = isinstance(e, WeightsError) and not isinstance(e, MismatchError)
        return failed(e.cli if same else named(e.cli, src, dst))
    except BrokenPipeError:
        raise  # the reader of stdout went away: the CLI ends quietly
    except OSError as e:
        if e.filename:
            return failed(named(f"{e.filename}: {e.strerror or e}", src, dst))
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO) and dst != "-":
            return failed(f"cannot write {dst}: {e.strerror or e}")  # a full disk, mid-file
        return failed(named(str(e.strerror or e), src, dst))
    r = FileResult(source=src, output=dst, status="ok", seconds=round(result.seconds, 6),
                   wall_s=round(time.perf_counter() - start, 3), clipped=result.clipped,
                   notes=result.notes + tuple(f"damaged: {d}" for d in result.damaged),
                   codes=codes)
    if result.damaged:  # written all the same, and said: the exit code is 1
        r.status = "error"
        r.error = damage_summary(src, dst, len(result.damaged), result.silence)
    return _finish(r, kind)


def damage_summary(src: str, dst: str, parts: int, silence: float) -> str:
    """The line that ends a run whose output was written from a damaged or cut file."""
    out = "the audio on stdout" if dst == "-" else dst
    src = "stdin" if src == "-" else src
    if silence:
        return (f"{src}: {parts} damaged part{'s' if parts > 1 else ''} of the file, {silence:.3f} s of silence "
                f"in {out} where audio was lost (listed above)")
    return f"{src}: the file is cut or damaged, and {out} ends where it does (see above)"


def named(message: str, src: str, dst: str) -> str:
    """`message`, led by the input's path as given unless it names the input or output already."""
    name = "stdin" if src == "-" else src
    if name in message or (dst != "-" and dst in message):
        return message
    return f"{name}: {message}"


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
