"""Fixed-order float64 reductions of fields, identical on every backend and thread count (DESIGN.md §2).

The order is part of the definition: each x-line is summed from x = 0 upwards, each z-plane sums its
line sums from y = 0 upwards, and the host sums the plane sums from z = 0 upwards. The CUDA twin
(``reduce_cuda``, ``kernels/reduce.cu``) follows the same order, so timeseries compare bitwise.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def _plane_sums(a, out):
    nz, ny, nx = a.shape
    for z in numba.prange(nz):
        plane = 0.0
        for y in range(ny):
            line = 0.0
            for x in range(nx):
                line += np.float64(a[z, y, x])
            plane += line
        out[z] = plane


def plane_sums(a) -> np.ndarray:
    """float64 sums of each z-plane of the 3D array ``a`` (host NumPy result)."""
    out = np.empty(a.shape[0], np.float64)
    _plane_sums(a, out)
    return out


def combine(planes: np.ndarray) -> float:
    """Sum plane sums in z order (sequential, so the order is fixed)."""
    total = 0.0
    for v in planes.tolist():
        total += v
    return total


def fixed_order_sum(a) -> float:
    """The float64 total of ``a`` in the documented fixed order."""
    return combine(plane_sums(a))


def first_nonfinite(a):
    """The (z, y, x) index of the first NaN/Inf voxel in C order, or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(a)).ravel())
    if bad.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(bad[0], a.shape))
