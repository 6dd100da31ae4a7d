"""Exact, order-free field sums for the timeseries, identical on every backend, thread count and rank
count (DESIGN.md §2: "reductions for the timeseries are exact (integer or fixed point)").

A sum is taken in fixed point: every value is scaled by ``2**k`` (exact in float64), rounded to the
nearest integer (ties to even) and the integers are added in int64. Integer addition is associative, so
the total does not depend on the order, the threads, or how the grid is split between MPI ranks: each
rank adds its own voxels and the ranks' integers are added (``MPI_SUM``). ``k`` is chosen from the
largest magnitude and the number of values so that no partial sum can overflow (``scale_exponent``);
on several ranks both are global (an exact ``MPI_MAX`` of the maxima, and the grid's voxel count), so
every rank uses the same ``k``. The rounding is the only approximation: at most half a unit of
``2**-k`` per value, i.e. below ``2**-40`` of the largest value for grids up to 2**21 voxels (1e-12
relative to the max; a float32 voxel itself carries 6e-8).

Why not float64 in a fixed voxel order (the first version): that order cannot be kept when x-lines
are split between ranks without sending the lines to one place; fixed point makes the split free.
The CUDA twin (``reduce_cuda``, ``kernels/reduce.cu``) makes the same products and roundings.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["exact_sum", "first_nonfinite", "fixed_sum", "scale_exponent"]

#: integer bits the total may use (int64 less a sign bit and one bit of margin)
TOTAL_BITS = 62


def scale_exponent(max_abs: float, n_values: int) -> int:
    """The ``k`` of a fixed-point sum of ``n_values`` values of magnitude at most ``max_abs``: each
    scaled value is below ``2**(TOTAL_BITS - bits(n_values))``, so their total stays below 2**62.
    0 for an all-zero or non-finite maximum (the sum is then 0, or not used)."""
    if not (max_abs > 0.0 and math.isfinite(max_abs)):
        return 0
    _, e = math.frexp(float(max_abs))  # max_abs < 2**e
    return TOTAL_BITS - int(n_values).bit_length() - e


@numba.njit(parallel=True, cache=True)
def _plane_fixed(a, scale, out):
    nz, ny, nx = a.shape
    for z in numba.prange(nz):
        total = np.int64(0)
        for y in range(ny):
            for x in range(nx):
                total += np.int64(np.rint(np.float64(a[z, y, x]) * scale))
        out[z] = total


def fixed_sum(a, k: int) -> int:
    """The exact integer sum over the 3D array ``a`` of ``rint(value * 2**k)`` (a Python int)."""
    a = np.asarray(a)
    if a.ndim != 3:
        a = np.ascontiguousarray(a).reshape((1, 1, -1))
    out = np.empty(a.shape[0], np.int64)
    _plane_fixed(a, math.ldexp(1.0, int(k)), out)
    return int(out.sum(dtype=np.int64))


def exact_sum(a, k: int | None = None, fixed=fixed_sum) -> float:
    """The total of ``a`` in fixed point (module docstring): ``fixed(a, k) * 2**-k`` as a float64.
    ``k``: :func:`scale_exponent` of ``a``'s own max |value| and size when None (one process); the
    global ``k`` when ``a`` is one rank's part. NaN when ``a`` holds a NaN or an infinity."""
    if k is None:
        if a.size == 0:
            return 0.0
        top = max(abs(float(a.max())), abs(float(a.min())))
        if not math.isfinite(top):
            return math.nan
        k = scale_exponent(top, a.size)
    return math.ldexp(float(fixed(a, k)), -int(k))


def first_nonfinite(a):
    """The (z, y, x) index of the first NaN/Inf voxel in C order, or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(a)).ravel())
    if bad.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(bad[0], a.shape))
