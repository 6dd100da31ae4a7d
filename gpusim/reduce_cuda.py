"""CUDA twin of :mod:`gpusim.reduce` (same order, same float64 operations)."""

from __future__ import annotations

import numpy as np

from .kernelsrc import raw_module
from .reduce import combine

_module = None


def _kernel(name):
    global _module
    if _module is None:
        _module = raw_module("reduce.cu")
    return _module.get_function(name)


def plane_sums(a) -> np.ndarray:
    """float64 sums of each z-plane of the CuPy array ``a`` (host NumPy result)."""
    import cupy

    nz, ny, nx = a.shape
    lines = cupy.empty(nz * ny, cupy.float64)
    out = cupy.empty(nz, cupy.float64)
    t = 128
    _kernel("line_sums")((-(-nz * ny // t),), (t,), (a, lines, np.int64(nz * ny), np.int32(nx)))
    _kernel("plane_sums")((-(-nz // t),), (t,), (lines, out, np.int32(nz), np.int32(ny)))
    return out.get()


def fixed_order_sum(a) -> float:
    return combine(plane_sums(a))


def first_nonfinite(a):
    import cupy

    bad = cupy.flatnonzero(~cupy.isfinite(a).ravel())
    if bad.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(int(bad[0]), a.shape))
