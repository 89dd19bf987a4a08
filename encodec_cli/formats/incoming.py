"""A stream's bytes as they arrive, for a decoder that follows them (live streams). No torch."""
from __future__ import annotations

import io
import select
import time
import typing as tp

from ..errors import TruncatedError
from .records import Input

MAX_READ = 1 << 14    # bytes asked of the input at once


class Wait(Exception):
    """The input has nothing more just now (raised only while `Incoming.nowait` is set)."""


class Incoming:
    """The input's bytes from stream offset `start`, read as they arrive.

    A buffered pipe or socket is read through its raw stream (what its buffer already
    holds taken first), so that `select` tells whether a read would wait."""

    def __init__(self, inp: Input):
        self.inp = inp
        self.start = inp.pos
        self.data = bytearray()
        self.waited = 0.0   # seconds spent waiting for input
        self.nowait = False
        fo = inp.fo
        self._fd: tp.Optional[int] = None
        self._read = getattr(fo, "read1", fo.read)
        raw = getattr(fo, "raw", None)
        if raw is not None and hasattr(fo, "peek"):
            try:
                fd = raw.fileno()
            except (OSError, ValueError, io.UnsupportedOperation):
                fd = None
            if fd is not None:
                held = fo.peek(MAX_READ)[:MAX_READ]  # its buffer (or one read, when empty)
                fo.read(len(held))
                self.data += held
                inp.pos += len(held)
                self._fd, self._read = fd, raw.read

    def available(self, at: int) -> int:
        return self.start + len(self.data) - at

    def view(self, at: int, n: int) -> bytes:
        i = at - self.start
        return bytes(self.data[i:i + n])

    def more(self) -> bool:
        if self.nowait and self._fd is not None and not select.select([self._fd], [], [], 0)[0]:
            raise Wait()
        t = time.monotonic()
        chunk = self._read(MAX_READ)
        self.waited += time.monotonic() - t
        if not chunk:
            return False
        self.data += chunk
        self.inp.pos += len(chunk)
        return True

    def need(self, at: int, n: int, what: str) -> bytes:
        while self.available(at) < n:
            if not self.more():
                raise TruncatedError(f"truncated live stream: {what} at byte {at} is cut short")
        return self.view(at, n)

    def drop(self, at: int) -> None:
        """Forget the bytes before `at`."""
        i = at - self.start
        if i > 0:
            del self.data[:i]
            self.start = at
