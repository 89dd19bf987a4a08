"""numba, as ecdc's compiled loops use it (codec/fewkernel.py, entropy/lmloops.py).

Loops are compiled once per machine and cached. Loading a cached loop, numba first
"refreshes" its compiler: it imports and registers the typing and lowering of every numba
feature (typed lists and dicts, jitclass, cffi, the numpy API...), 0.2 s of every process
that runs a loop (measured, AMD EPYC), though machine code from the cache needs none of it:
only numba's runtime (the allocator the loops call). `njit` makes the cache load just that;
where the cache has no code for a call, numba compiles as always, and that refreshes.

Before compiling, numba checks for scipy's BLAS (for np.dot and np.linalg in compiled
code) by importing scipy.linalg, where scipy is installed (the `eval` extra brings it): 0.1 s
and 13 MB, measured. ecdc's loops use no linear algebra, so that check runs with
scipy.linalg hidden, unless the process has loaded it already. Compiled code that this
process defines afterwards cannot call np.dot; scipy itself imports as before.
"""
from __future__ import annotations

import sys
import types
import typing as tp

import numba as nb


def _hide_scipy_blas() -> None:
    """numba's check for scipy's BLAS, run with scipy.linalg hidden (once)."""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401  (the check runs on import)
    finally:
        del sys.modules["scipy.linalg"]


def _load_overload(cache: tp.Any, sig: tp.Any, target_context: tp.Any) -> tp.Any:
    """numba's Cache.load_overload without the compiler's refresh: machine code from the
    cache, with the runtime it calls; None where the cache has none (numba compiles next)."""
    from numba.core.runtime import rtsys

    rtsys.initialize(target_context)
    found = None
    with cache._guard_against_spurious_io_errors():
        found = cache._load_overload(sig, target_context)
    if found is None:
        _hide_scipy_blas()
    return found


def lean_loads(dispatcher: tp.Any) -> tp.Any:
    """`dispatcher` (numba.njit(cache=True)), loading from its cache without the refresh,
    where this numba has the internals for that (else as numba loads)."""
    cache: tp.Any = getattr(dispatcher, "_cache", None)
    if all(hasattr(cache, name) for name in ("load_overload", "_load_overload", "_guard_against_spurious_io_errors")):
        cache.load_overload = types.MethodType(_load_overload, cache)
    return dispatcher


def njit(**options: tp.Any) -> tp.Callable[[tp.Callable], tp.Any]:
    """numba.njit(cache=True, **options) with lean loads, or without the cache where numba
    finds no folder it can write one to (it refuses to define the function then):
    compiled in each process."""
    def wrap(f: tp.Callable) -> tp.Any:
        try:
            return lean_loads(nb.njit(cache=True, **options)(f))
        except RuntimeError:  # "cannot cache function ...: no locator available"
            _hide_scipy_blas()
            return nb.njit(**options)(f)
    return wrap


__all__ = ["lean_loads", "nb", "njit"]
