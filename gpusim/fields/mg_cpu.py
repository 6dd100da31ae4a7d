"""numba CPU kernels of the steady-state multigrid solver (:mod:`gpusim.fields.steady`).

Operator of a level with per-axis couplings ``rz, ry, rx`` (1/min, ``D/h_axis^2``) and homogeneous
boundaries (the fine level's Dirichlet values are folded into its right side ``b``)::

    (k_i + w_i) u_i - off_i = b_i
    off_i = sum of r_a * u_nb over the interior neighbours
    w_i   = sum of r_a over the interior neighbours + (r_a + r_a) per Dirichlet face (ghost 2*bc - u)

Every per-voxel formula is one helper below, evaluated in float64 in the order written (directions x-,
x+, y-, y+, z-, z+; faces z_lo, z_hi, y_lo, y_hi, x_lo, x_hi are bits 0..5 of ``dmask``).
``kernels/multigrid.cu`` mirrors each helper line by line and is compiled with ``--fmad=false``, so the
two backends produce the same bits. Each output element is written by one thread from values no other
thread writes in the same pass (red-black colouring), so the result does not depend on the thread
count either. Helpers that take arrays are inlined at the numba IR level: called as functions they
cost an array reference count per call (measured 30x slower residuals).
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
from numba import prange
from numba.extending import register_jitable

from . import layout as L

xp = np

COARSE_MAX = 8  # the coarsest level has at most 2 cells per axis; it is solved directly
# A voxel cannot remove more than its neighbours deliver: seen from the coarse grid, a strong sink in
# one voxel (an O2 vessel voxel: k = 1e4/min against w = 6*RD = 2.7e3/min) absorbs like a rate of at
# most w/(6*G0) = 0.66*w, G0 = 0.2527 the 7-point lattice Green's function at the origin. Averaging the
# raw k made the coarse grid absorb 6x too much near vessels: V-cycles contracted only 0.53x per cycle
# (linear O2 problem, 64^3); capping each child's k at KCAP*w before averaging gives 0.15-0.2x (0.5:
# 0.3x, 1.0: 0.2x, 1.5: 0.35x measured). Uniform rates below the cap (all tumour uptake) are unchanged.
KCAP = 0.66
# Levels smaller than this run on one thread: waking the pool costs more than the work there, and on a
# loaded 2-core machine every parallel region can wait a scheduler slice (measured: a 16^3 sweep took
# 0.98 ms on 2 threads vs 0.18 ms on 1). The thread count never changes the result.
SERIAL_BELOW = 32 * 32 * 32


@contextmanager
def _threads_for(n_voxels):
    if n_voxels >= SERIAL_BELOW:
        yield
        return
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


# ---- per-voxel helpers (the one definition of each formula) ------------------------------------


@register_jitable(inline="always")
def rate_k(vf, ntf, ncf, c, coef):
    """Diagonal rate (1/min) of layout.py at concentration ``c`` (>= 0)."""
    return ((coef[L.LAM] + vf * coef[L.KV]) + (ntf * coef[L.VT]) / (coef[L.KMT] + c)) + (
        ncf * coef[L.VC]
    ) / (coef[L.KMC] + c)


@register_jitable(inline="always")
def rate_s(vf, ntf, srcv, coef):
    """Source (unit/min) of layout.py."""
    return (vf * coef[L.KV_CS] + ntf * coef[L.SEC_T]) + srcv


@register_jitable(inline="always")
def newton_rates(vf, ntf, ncf, srcv, c, coef):
    """Newton linearisation of the uptake f(c) = V c/(Km + c) at ``c`` (>= 0): (k, s).

    f(x) ~ f'(c) x - (f'(c) c - f(c)) with f'(c) = V Km/(Km + c)^2 and f'(c) c - f(c) = -V c^2/(Km + c)^2:
    the derivative goes on the diagonal, the remainder is subtracted from the source.
    """
    dt = coef[L.KMT] + c
    dc = coef[L.KMC] + c
    qt = (ntf * coef[L.VT]) / (dt * dt)
    qc = (ncf * coef[L.VC]) / (dc * dc)
    cc = c * c
    k = ((coef[L.LAM] + vf * coef[L.KV]) + qt * coef[L.KMT]) + qc * coef[L.KMC]
    s = (rate_s(vf, ntf, srcv, coef) - qt * cc) - qc * cc
    return k, s


@register_jitable(inline="always")
def face_rhs(z, y, x, nz, ny, nx, bct):
    """Dirichlet terms (RD+RD)*bc of the faces touching (z, y, x); ``bct`` is 0 at zero-flux faces."""
    t = 0.0
    if x == 0:
        t += bct[4]
    if x == nx - 1:
        t += bct[5]
    if y == 0:
        t += bct[2]
    if y == ny - 1:
        t += bct[3]
    if z == 0:
        t += bct[0]
    if z == nz - 1:
        t += bct[1]
    return t


@register_jitable(inline="always")
def stencil(u, z, y, x, rz, ry, rx, dmask):
    """(off, w) of the level operator at (z, y, x)."""
    nz, ny, nx = u.shape
    off = 0.0
    w = 0.0
    if x > 0:
        off += rx * u[z, y, x - 1]
        w += rx
    elif dmask & 16:
        w += rx + rx
    if x < nx - 1:
        off += rx * u[z, y, x + 1]
        w += rx
    elif dmask & 32:
        w += rx + rx
    if y > 0:
        off += ry * u[z, y - 1, x]
        w += ry
    elif dmask & 4:
        w += ry + ry
    if y < ny - 1:
        off += ry * u[z, y + 1, x]
        w += ry
    elif dmask & 8:
        w += ry + ry
    if z > 0:
        off += rz * u[z - 1, y, x]
        w += rz
    elif dmask & 1:
        w += rz + rz
    if z < nz - 1:
        off += rz * u[z + 1, y, x]
        w += rz
    elif dmask & 2:
        w += rz + rz
    return off, w


@register_jitable(inline="always")
def capped_rate(k, w):
    """The child's rate as the coarse grid sees it: at most KCAP*w (see KCAP)."""
    cap = w * KCAP
    r = k
    if cap < k:
        r = cap
    return r


@register_jitable(inline="always")
def prolong_at(uc, z, y, x, pz, wz, py, wy, px, wx):
    """Coarse-to-fine value at fine (z, y, x): linear along x, then y, then z.

    Per axis, fine index ``i`` takes ``w[i, 0]*C[p[i, 0]] + w[i, 1]*C[p[i, 1]]`` (tables from
    ``steady.transfer_tables``, the ghost's sign folded into the weight).
    """
    iz = pz[z, 0]
    jz = pz[z, 1]
    iy = py[y, 0]
    jy = py[y, 1]
    ix = px[x, 0]
    jx = px[x, 1]
    ax = wx[x, 0]
    bx = wx[x, 1]
    p00 = ax * uc[iz, iy, ix] + bx * uc[iz, iy, jx]
    p01 = ax * uc[iz, jy, ix] + bx * uc[iz, jy, jx]
    p10 = ax * uc[jz, iy, ix] + bx * uc[jz, iy, jx]
    p11 = ax * uc[jz, jy, ix] + bx * uc[jz, jy, jx]
    q0 = wy[y, 0] * p00 + wy[y, 1] * p01
    q1 = wy[y, 0] * p10 + wy[y, 1] * p11
    return wz[z, 0] * q0 + wz[z, 1] * q1


@register_jitable
def max_nan(m, d):
    """max that keeps a NaN once seen (as numpy's and cupy's ``max`` do)."""
    r = m
    if d > m or d != d:
        r = d
    return r


@register_jitable(inline="always")
def max_of_parts(part):
    """Column maxima of the per-line partial maxima ``part[line, 0..1]``."""
    m0 = 0.0
    m1 = 0.0
    for line in range(part.shape[0]):
        m0 = max_nan(m0, part[line, 0])
        m1 = max_nan(m1, part[line, 1])
    return m0, m1


# ---- kernels: thin loops over (z, y) lines around the helpers ---------------------------------


@numba.njit(parallel=True, cache=True)
def _rates(u, coef, bct, vessel, n_tumor, n_tcell, src, flags, newton, k, b):
    nz, ny, nx = u.shape
    has_v = (flags & L.HAS_VESSEL) != 0
    has_t = (flags & L.HAS_TUMOR) != 0
    has_c = (flags & L.HAS_TCELL) != 0
    has_s = (flags & L.HAS_SRC) != 0
    for line in prange(nz * ny):
        z = line // ny
        y = line - z * ny
        for x in range(nx):
            c = u[z, y, x]
            if c < 0.0:
                c = 0.0
            vf = np.float64(vessel[z, y, x]) if has_v else 0.0
            ntf = np.float64(n_tumor[z, y, x]) if has_t else 0.0
            ncf = np.float64(n_tcell[z, y, x]) if has_c else 0.0
            sv = np.float64(src[z, y, x]) if has_s else 0.0
            if newton:
                kk, ss = newton_rates(vf, ntf, ncf, sv, c, coef)
            else:
                kk = rate_k(vf, ntf, ncf, c, coef)
                ss = rate_s(vf, ntf, sv, coef)
            k[z, y, x] = kk
            b[z, y, x] = ss + face_rhs(z, y, x, nz, ny, nx, bct)


def rates(u, coef, bct, vessel, n_tumor, n_tcell, src, flags, newton, k, b):
    """Fine level at max(u, 0): ``k`` diagonal rate, ``b`` source + Dirichlet face terms ``bct``.

    ``newton``: Newton linearisation of the uptake; else layout.py's rates (the nonlinear equation's own
    form, used for its residual).
    """
    with _threads_for(u.size):
        _rates(u, coef, bct, vessel, n_tumor, n_tcell, src, np.int64(flags), bool(newton), k, b)


@numba.njit(parallel=True, cache=True)
def _smooth_colour(u, b, k, rz, ry, rx, dmask, colour):
    nz, ny, nx = u.shape
    for line in prange(nz * ny):
        z = line // ny
        y = line - z * ny
        for x in range((z + y + colour) & 1, nx, 2):
            off, w = stencil(u, z, y, x, rz, ry, rx, dmask)
            u[z, y, x] = (b[z, y, x] + off) / (k[z, y, x] + w)


def smooth(u, b, k, rz, ry, rx, dmask, sweeps, parity=0, exchange=None):
    """``sweeps`` red-black Gauss-Seidel sweeps, red ((z+y+x) even) first.

    ``parity``: (z+y+x) & 1 of the array's first element in the whole grid, so that a box of a
    distributed level (``gpusim.parallel.steady``) colours its voxels as the whole grid does (0: the
    array is the whole grid). ``exchange``: called as ``exchange(u, colour)`` before each colour's
    half-sweep (0 red, 1 black: the distributed solve's ghost exchange; None on one process).

    Below the 32 B/voxel floor (128^3, one thread: ~8 ms a sweep, ~8 GB/s of 27): each colour reads
    every cache line for half the voxels, and a float64 division per voxel bounds the rest.
    """
    with _threads_for(u.size):
        for _ in range(int(sweeps)):
            for colour in (0, 1):
                if exchange is not None:
                    exchange(u, colour)
                _smooth_colour(u, b, k, rz, ry, rx, np.int64(dmask), np.int64((colour + parity) & 1))


@numba.njit(parallel=True, cache=True)
def _restrict(u, b, k, rz, ry, rx, dmask, bc, kc, cz, cy, cx, vol):
    nz, ny, nx = bc.shape
    nxf = u.shape[2]
    for line in prange(nz * ny):
        zc = line // ny
        yc = line - zc * ny
        # residuals of a fine line first (a plain loop), then summed into their parents: per coarse
        # cell the additions run in (z, y, x) order, as in the CUDA kernel's loops
        rl = np.empty(nxf)
        kl = np.empty(nxf)
        rs = np.zeros(nx)
        ks = np.zeros(nx)
        cnt = np.zeros(nx)
        for z in range(cz[zc, 0], cz[zc, 1] + 1):
            for y in range(cy[yc, 0], cy[yc, 1] + 1):
                for x in range(nxf):
                    off, w = stencil(u, z, y, x, rz, ry, rx, dmask)
                    kk = k[z, y, x]
                    rl[x] = (b[z, y, x] + off) - (kk + w) * u[z, y, x]
                    kl[x] = capped_rate(kk, w)
                for xc in range(nx):
                    for x in range(cx[xc, 0], cx[xc, 1] + 1):
                        rs[xc] += rl[x]
                        ks[xc] += kl[x]
                        cnt[xc] += 1.0
        for xc in range(nx):
            bc[zc, yc, xc] = rs[xc] * vol
            kc[zc, yc, xc] = ks[xc] / cnt[xc]


def restrict(u, b, k, rz, ry, rx, dmask, bc, kc, cz, cy, cx, vol):
    """Coarse right side ``bc`` = ``vol`` * sum of the children's residuals b - A u (``vol`` = fine/coarse
    cell volume: the residual is a density), coarse ``kc`` = mean of the children's capped rates.
    Children in z, y, x order; per axis ``c[i] = (first, last)`` fine index."""
    with _threads_for(u.size):
        _restrict(u, b, k, rz, ry, rx, np.int64(dmask), bc, kc, cz, cy, cx, float(vol))


@numba.njit(parallel=True, cache=True)
def _prolong_add(uc, u, pz, wz, py, wy, px, wx):
    nz, ny, nx = u.shape
    for line in prange(nz * ny):
        z = line // ny
        y = line - z * ny
        for x in range(nx):
            u[z, y, x] = u[z, y, x] + prolong_at(uc, z, y, x, pz, wz, py, wy, px, wx)


def prolong_add(uc, u, pz, wz, py, wy, px, wx):
    """``u += P uc``: add the interpolated coarse correction (tables as in :func:`prolong_at`)."""
    with _threads_for(u.size):
        _prolong_add(uc, u, pz, wz, py, wy, px, wx)


@numba.njit(cache=True)
def _coarse_solve(u, b, k, rz, ry, rx, dmask):
    # Gaussian elimination without pivoting (a diagonally dominant M-matrix), unknowns in C order of the
    # voxels, at most COARSE_MAX of them; one thread, the same loops as the CUDA twin.
    nz, ny, nx = u.shape
    n = nz * ny * nx
    a = np.zeros((COARSE_MAX, COARSE_MAX))
    rhs = np.zeros(COARSE_MAX)
    sol = np.zeros(COARSE_MAX)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                i = (z * ny + y) * nx + x
                off, w = stencil(u, z, y, x, rz, ry, rx, dmask)
                a[i, i] = k[z, y, x] + w
                rhs[i] = b[z, y, x]
                if x > 0:
                    a[i, i - 1] = -rx
                if x < nx - 1:
                    a[i, i + 1] = -rx
                if y > 0:
                    a[i, i - nx] = -ry
                if y < ny - 1:
                    a[i, i + nx] = -ry
                if z > 0:
                    a[i, i - nx * ny] = -rz
                if z < nz - 1:
                    a[i, i + nx * ny] = -rz
    for p in range(n):
        for i in range(p + 1, n):
            f = a[i, p] / a[p, p]
            for j in range(p + 1, n):
                a[i, j] = a[i, j] - f * a[p, j]
            rhs[i] = rhs[i] - f * rhs[p]
    for i in range(n - 1, -1, -1):
        s = rhs[i]
        for j in range(i + 1, n):
            s = s - a[i, j] * sol[j]
        sol[i] = s / a[i, i]
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                u[z, y, x] = sol[(z * ny + y) * nx + x]


def coarse_solve(u, b, k, rz, ry, rx, dmask):
    """Solve the coarsest level (at most 2 cells per axis) exactly into ``u``."""
    _coarse_solve(u, b, k, rz, ry, rx, np.int64(dmask))


def _bounds(shape, inner):
    """(z0, z1, y0, y1, x0, x1) of ``inner`` (slices with explicit ends; None: the whole array)."""
    if inner is None:
        return tuple(np.int64(v) for n in shape for v in (0, n))
    return tuple(np.int64(v) for sl in inner for v in (sl.start, sl.stop))


@numba.njit(parallel=True, cache=True)
def _clamp_change(u, u_prev, part, z0, z1, y0, y1, x0, x1):
    nz, ny, nx = u.shape
    for line in prange(nz * ny):
        z = line // ny
        y = line - z * ny
        inside = z0 <= z < z1 and y0 <= y < y1
        dm = 0.0
        um = 0.0
        for x in range(nx):
            v = u[z, y, x]
            if v < 0.0:
                v = 0.0
            u[z, y, x] = v
            if inside and x0 <= x < x1:
                dm = max_nan(dm, abs(v - u_prev[z, y, x]))
                um = max_nan(um, v)
            u_prev[z, y, x] = v
        part[line, 0] = dm
        part[line, 1] = um
    return max_of_parts(part)


def clamp_change(u, u_prev, inner=None):
    """Project ``u`` onto u >= 0, return (max|u - u_prev|, max u), then ``u_prev = u``.

    ``inner``: slices of the voxels the maxima are taken over (a distributed level's own voxels, not
    its ghosts); None: all. Maxima are exact, so their order does not matter.
    """
    nz, ny, _ = u.shape
    with _threads_for(u.size):
        dm, um = _clamp_change(u, u_prev, np.empty((nz * ny, 2)), *_bounds(u.shape, inner))
    return float(dm), float(um)


@numba.njit(parallel=True, cache=True)
def _residual_max(u, b, k, rz, ry, rx, dmask, part, z0, z1, y0, y1, x0, x1):
    nz, ny, nx = u.shape
    for line in prange(nz * ny):
        z = line // ny
        y = line - z * ny
        rm = 0.0
        bm = 0.0
        if z0 <= z < z1 and y0 <= y < y1:
            for x in range(x0, x1):
                off, w = stencil(u, z, y, x, rz, ry, rx, dmask)
                r = (b[z, y, x] + off) - (k[z, y, x] + w) * u[z, y, x]
                rm = max_nan(rm, abs(r))
                bm = max_nan(bm, abs(b[z, y, x]))
        part[line, 0] = rm
        part[line, 1] = bm
    return max_of_parts(part)


def residual_max(u, b, k, rz, ry, rx, dmask, inner=None):
    """(max|b - A u|, max|b|) over ``inner`` (slices; None: the whole array)."""
    nz, ny, _ = u.shape
    with _threads_for(u.size):
        rm, bm = _residual_max(u, b, k, rz, ry, rx, np.int64(dmask), np.empty((nz * ny, 2)),
                               *_bounds(u.shape, inner))
    return float(rm), float(bm)


def load(c, u):
    """``u = float64(c)`` (exact)."""
    u[...] = c


def store(u, c):
    """``c = float32(u)``, rounded to nearest (u is already clamped to >= 0)."""
    c[...] = u.astype(np.float32)
