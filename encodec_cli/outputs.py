"""Writing outputs safely, for every command: nothing replaced unless asked (neither a file
there at the start nor one that appears while ecdc works), a temporary file moved into place
only when complete (a symlink's target replaced, the mode kept or
the umask's), and outputs that must be whole before they go to stdout."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import stat
import sys
import tempfile
import typing as tp

from .audio.extensions import is_audio_name
from .errors import OptionError


def check_output(path: str, force: bool) -> str:
    """The file that writing `path` replaces (a symlink's target), checked before any work.
    A device or a FIFO is written into, never replaced, and needs no `force`."""
    if not path:
        raise OptionError("the output path is empty")
    if path.endswith(os.sep) or os.path.isdir(path):
        raise OptionError(f"cannot write {path}: it is a folder" if os.path.isdir(path)
                          else f"cannot write {path}: folder {path} does not exist")
    target = os.path.realpath(path)  # -f on a symlink replaces the file it points to
    if special(target):
        return target
    if os.path.lexists(path) and not force:
        if is_audio_name(path):  # perhaps the original: say how to keep it first
            raise OptionError(f"{path} exists; choose another output, or pass force=True to replace it",
                              cli=f"{path} exists; give another name with -o OTHER, or replace it with -f")
        raise OptionError(f"{path} exists; pass force=True to overwrite it",
                          cli=f"{path} exists; use -f/--force to overwrite")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OptionError(f"cannot write {path}: folder {os.path.dirname(os.path.abspath(path))} "
                          f"does not exist")
    return target


def special(target: str) -> bool:
    """Whether `target` exists and is not a regular file (a device, a FIFO, a socket)."""
    try:
        return not stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        return False


def not_the_input(src: str, dst: str) -> None:
    if src != "-" and dst != "-" and os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise OptionError(f"the output {dst} is the input; choose another output",
                          cli=f"the output {dst} is the input; choose another -o")


def _new_mode(target: str) -> int:
    """The replaced file's mode, else what the umask allows (as flac and sox do)."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str, force: bool) -> tp.Iterator[str]:
    """A temporary path beside `path`, renamed onto it only if the block succeeds. Into a
    device or a FIFO (`-o /dev/null`), what the block wrote is copied instead: only a
    regular file is ever replaced."""
    target = check_output(path, force)
    if special(target):
        with _into_special(path, target) as tmp:
            yield tmp
        return
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".",
                                   suffix=".part")
    except OSError as e:
        raise OptionError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        try:
            os.chmod(tmp, _new_mode(target))
        except OSError as e:
            raise OptionError(f"cannot write {path}: {e.strerror}") from None
        publish(tmp, target, force, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def publish(tmp: str, target: str, force: bool, path: str) -> None:
    """Move the finished `tmp` to `target`. Without `force` nothing is replaced, also a file
    that another process created at `target` while this one worked: the move is a hard link
    (which fails if `target` exists) and an unlink, or renameat2's RENAME_NOREPLACE where the
    file system has no hard links."""
    try:
        if force:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise
            _rename_noreplace(tmp, target)  # FAT, some network file systems: no hard links
        else:
            os.unlink(tmp)
    except FileExistsError:
        raise OptionError(f"{path} was created by another program while ecdc worked; nothing was replaced "
                          f"(pass force=True to overwrite it)",
                          cli=f"{path} was created by another program while ecdc worked; nothing was "
                              f"replaced (use -f/--force to overwrite it)") from None
    except OSError as e:
        raise OptionError(f"cannot write {path}: {e.strerror}") from None


def _rename_noreplace(src: str, dst: str) -> None:
    """rename(2) that fails with FileExistsError if `dst` exists (Linux renameat2; elsewhere
    an exclusive create of `dst` first, then the rename over it)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "renameat2"):
        AT_FDCWD, RENAME_NOREPLACE = -100, 1
        if libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # else: the file system cannot; fall back
            raise OSError(err, os.strerror(err), dst)
    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # claims the name, or FileExistsError
    os.replace(src, dst)


@functools.lru_cache(maxsize=None)
def _libc() -> tp.Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@contextlib.contextmanager
def _through_file(name: str, out: tp.Callable[[], tp.ContextManager[tp.BinaryIO]],
                  path: tp.Optional[str] = None) -> tp.Iterator[str]:
    """A path in a temporary folder; what the block writes there is copied into `out()`
    if the block succeeds (a failed copy is 'cannot write `path`', when given)."""
    folder = tempfile.mkdtemp(prefix="ecdc-out-")
    try:
        tmp = os.path.join(folder, name)
        yield tmp
        try:
            with open(tmp, "rb") as f, out() as fo:
                shutil.copyfileobj(f, fo, 1 << 20)
                fo.flush()
        except OSError as e:
            if path is None or isinstance(e, BrokenPipeError):
                raise
            raise OptionError(f"cannot write {path}: {e.strerror}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _into_special(path: str, target: str) -> tp.ContextManager[str]:
    return _through_file("out" + os.path.splitext(path)[1], lambda: open(target, "wb"), path)


def stdout_through_file(name: str) -> tp.ContextManager[str]:
    """A path in a temporary folder; what the block writes there is copied to stdout if it
    succeeds (for outputs that need a seekable file or are checked before they go out)."""
    return _through_file(name, lambda: contextlib.nullcontext(sys.stdout.buffer))
