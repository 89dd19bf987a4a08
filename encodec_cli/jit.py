"""numba, as ecdc's compiled loops import it (codec/fewkernel.py, entropy/lmloops.py).

The first time numba compiles or loads a function, it checks for scipy's BLAS (for np.dot
and np.linalg in compiled code) by importing scipy.linalg, where scipy is installed (the
`eval` extra brings it): 0.1 s and 13 MB of an ecdc process, measured. ecdc's loops use no
linear algebra, so that check runs here with scipy.linalg hidden, unless the process has
loaded it already. Compiled code that this process defines afterwards cannot call np.dot;
scipy itself imports as before.
"""
from __future__ import annotations

import sys
import typing as tp

import numba as nb

if "scipy.linalg" not in sys.modules:
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401  (the check runs on import)
    finally:
        del sys.modules["scipy.linalg"]


def njit(**options: tp.Any) -> tp.Callable[[tp.Callable], tp.Any]:
    """numba.njit(cache=True, **options), or without the cache where numba finds no folder
    it can write one to (it refuses to define the function then): compiled in each process."""
    def wrap(f: tp.Callable) -> tp.Any:
        try:
            return nb.njit(cache=True, **options)(f)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return nb.njit(**options)(f)
    return wrap


__all__ = ["nb", "njit"]
