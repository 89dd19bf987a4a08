"""Torch's thread count: set for a block, or for the process before torch is imported.
Imports no torch itself."""
from __future__ import annotations

import contextlib
import os
import sys
import typing as tp

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# as they were when ecdc started (set_threads changes them before torch is imported)
STARTUP = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}


def startup_environment() -> tp.Dict[str, str]:
    """This process's environment with the thread variables as they were at its start."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(STARTUP)
    return env


@contextlib.contextmanager
def torch_threads(n: tp.Optional[int]) -> tp.Iterator[None]:
    """Torch's thread count set to `n` for the block (None: left as it is), then restored."""
    import torch

    before = torch.get_num_threads()
    change = bool(n) and n != before
    if n and change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def set_threads(threads: int) -> None:
    """Torch's thread count for this process; before torch is imported, through the
    variables it reads then (so that errors found without a model come without the ~1 s
    of importing torch)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
