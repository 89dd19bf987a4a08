"""How the command line ends on signals: SIGTERM becomes an exception, so that temporary
outputs are removed on the way out, and a live recording ends cleanly, as a whole file."""
from __future__ import annotations

import contextlib
import signal
import threading
import typing as tp


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that temporary outputs are removed."""


def terminate(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def deferred() -> tp.Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have.

    Python runs a signal's handler in the main thread, whichever thread the signal
    reached; so handlers that only take note hold a signal back where masking it in this
    thread would not (the kernel hands it to another thread, BLAS's for one, and Python
    raises in this thread at once). Outside the main thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: tp.List[tp.Tuple[int, tp.Any]] = []
    old = {sig: signal.signal(sig, lambda signum, frame: caught.append((signum, frame)))
           for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not None}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for signum, frame in caught[:1]:
            handler = old[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)  # KeyboardInterrupt, Terminated: raised here
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


@contextlib.contextmanager
def ending_live_input() -> tp.Iterator[None]:
    """Ctrl-C or SIGTERM ends a live recording where it is, as a complete file (a second
    Ctrl-C gives up)."""
    from .pipeline import LIVE_STOP

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    LIVE_STOP.requested = False  # a new recording (a library caller may run several)
    old = {sig: signal.signal(sig, lambda signum, frame: LIVE_STOP.request())
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
