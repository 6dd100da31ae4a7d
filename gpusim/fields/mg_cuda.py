"""CUDA twin of :mod:`gpusim.fields.mg_cpu`: the same functions and signatures on CuPy arrays.

The kernels are ``kernels/multigrid.cu`` (compiled by CuPy with ``--fmad=false``); each mirrors the numba
helper of the same name, so a steady solve gives the same bits on both backends. Maxima are taken by
CuPy's ``max``, exact and NaN-propagating like the CPU twin's, hence order-free.
"""

from __future__ import annotations

import numpy as np

from .. import kernelsrc
from .mg_cpu import KCAP

_THREADS = 256
_module = None


def __getattr__(name):
    # ``xp`` is CuPy, imported only when a CUDA run asks for it (the module imports without CuPy)
    if name == "xp":
        import cupy

        return cupy
    raise AttributeError(name)


def _kernel(name):
    global _module
    if _module is None:
        _module = kernelsrc.raw_module("multigrid.cu")
    return _module.get_function(name)


def _launch(name, n_threads, args):
    blocks = max(1, -(-int(n_threads) // _THREADS))
    _kernel(name)((blocks,), (_THREADS,), args)


def _dims(a):
    nz, ny, nx = a.shape
    return np.int32(nz), np.int32(ny), np.int32(nx)


def _u8(a):
    import cupy

    a = cupy.ascontiguousarray(a)
    if a.dtype == cupy.bool_:
        return a.view(cupy.uint8)
    return a if a.dtype == cupy.uint8 else a.astype(cupy.uint8)


def _f32(a):
    import cupy

    return cupy.ascontiguousarray(a, dtype=cupy.float32)


def rates(u, coef, bct, vessel, n_tumor, n_tcell, src, flags, newton, k, b):
    """See :func:`gpusim.fields.mg_cpu.rates`."""
    import cupy

    args = (
        u, cupy.asarray(coef, cupy.float64), cupy.asarray(bct, cupy.float64), _u8(vessel),
        _u8(n_tumor), _u8(n_tcell), _f32(src), np.int32(flags), np.int32(bool(newton)), k, b,
        *_dims(u),
    )
    _launch("mg_rates", u.size, args)


def smooth(u, b, k, rz, ry, rx, dmask, sweeps, parity=0, exchange=None):
    """See :func:`gpusim.fields.mg_cpu.smooth`: one launch per colour, red first; the kernel's
    ``colour`` carries the box's ``parity`` (it updates the voxels with (z+y+x+colour) even)."""
    nz, ny, nx = _dims(u)
    n = int(nz) * int(ny) * ((int(nx) + 1) // 2)
    for _ in range(int(sweeps)):
        for colour in (0, 1):
            if exchange is not None:
                exchange(u, colour)
            args = (
                u, b, k, np.float64(rz), np.float64(ry), np.float64(rx), np.int32(dmask),
                np.int32((colour + parity) & 1), nz, ny, nx,
            )
            _launch("mg_smooth_colour", n, args)


def restrict(u, b, k, rz, ry, rx, dmask, bc, kc, cz, cy, cx, vol):
    """See :func:`gpusim.fields.mg_cpu.restrict`."""
    args = (
        u, b, k, np.float64(rz), np.float64(ry), np.float64(rx), np.int32(dmask), bc, kc, cz, cy, cx,
        np.float64(vol), np.float64(KCAP), *_dims(u), *_dims(bc),
    )
    _launch("mg_restrict", bc.size, args)


def prolong_add(uc, u, pz, wz, py, wy, px, wx):
    """See :func:`gpusim.fields.mg_cpu.prolong_add`."""
    args = (uc, u, pz, wz, py, wy, px, wx, *_dims(uc), *_dims(u))
    _launch("mg_prolong_add", u.size, args)


def coarse_solve(u, b, k, rz, ry, rx, dmask):
    """See :func:`gpusim.fields.mg_cpu.coarse_solve` (one thread: at most 8 unknowns)."""
    args = (u, b, k, np.float64(rz), np.float64(ry), np.float64(rx), np.int32(dmask), *_dims(u))
    _kernel("mg_coarse_solve")((1,), (1,), args)


def clamp_change(u, u_prev, inner=None):
    """See :func:`gpusim.fields.mg_cpu.clamp_change` (the whole array projected, maxima over ``inner``)."""
    import cupy

    d = cupy.empty_like(u)
    _launch("mg_clamp_change", u.size, (u, u_prev, d, np.int64(u.size)))
    sl = (slice(None),) * 3 if inner is None else tuple(inner)
    dm, um = cupy.stack([d[sl].max(), u[sl].max()]).get().tolist()
    return float(dm), float(um)


def residual_max(u, b, k, rz, ry, rx, dmask, inner=None):
    """See :func:`gpusim.fields.mg_cpu.residual_max`."""
    import cupy

    r = cupy.empty_like(u)
    args = (u, b, k, np.float64(rz), np.float64(ry), np.float64(rx), np.int32(dmask), r, *_dims(u))
    _launch("mg_residual_abs", u.size, args)
    sl = (slice(None),) * 3 if inner is None else tuple(inner)
    rm, bm = cupy.stack([r[sl].max(), cupy.abs(b[sl]).max()]).get().tolist()
    return float(rm), float(bm)


def load(c, u):
    """``u = float64(c)`` (exact)."""
    u[...] = c


def store(u, c):
    """``c = float32(u)``, rounded to nearest."""
    c[...] = u.astype(c.dtype)
