"""CUDA twin of :mod:`gpusim.reduce` (the same scaled values, roundings and integer totals)."""

from __future__ import annotations

import math

import numpy as np

from . import reduce as _cpu
from .kernelsrc import raw_module
from .reduce import scale_exponent

__all__ = ["exact_sum", "first_nonfinite", "fixed_sum", "scale_exponent"]

_module = None


def _kernel(name):
    global _module
    if _module is None:
        _module = raw_module("reduce.cu")
    return _module.get_function(name)


def fixed_sum(a, k: int) -> int:
    """The exact integer sum of ``rint(value * 2**k)`` over the float32 CuPy array ``a``."""
    import cupy

    a = cupy.ascontiguousarray(a)
    nx = int(a.shape[-1]) if a.ndim else 1
    nlines = int(a.size) // max(nx, 1)
    lines = cupy.empty(nlines, cupy.int64)
    t = 128
    _kernel("line_fixed_sums")((-(-nlines // t),), (t,), (a, lines, np.int64(nlines), np.int32(nx),
                                                         np.float64(math.ldexp(1.0, int(k)))))
    return int(lines.sum())


def exact_sum(a, k: int | None = None) -> float:
    return _cpu.exact_sum(a, k, fixed=fixed_sum)


def first_nonfinite(a):
    import cupy

    bad = cupy.flatnonzero(~cupy.isfinite(a).ravel())
    if bad.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(int(bad[0]), a.shape))
