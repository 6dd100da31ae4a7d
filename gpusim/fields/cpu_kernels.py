"""numba CPU twins of the field kernels: one LOD field step and one explicit sub-step.

They equal ``fields.reference`` bitwise: the same float64 operations in the same order (``fields.layout``
documents them), fields float32 in and out, no fastmath, so no FMA contraction. Arrays are ``(z, y, x)``
C-contiguous; ``coef`` is ``float64[NCOEF]``, ``bc_type`` ``int32[6]``, ``bc_value`` ``float64[6]`` in the
substrate's unit. ``vessel``, ``n_tumor``, ``n_tcell`` (uint8) and ``src`` (float32, unit/min) are read
only where their ``layout.HAS_*`` bit is set in ``flags``; otherwise any array of that dtype may be
passed (e.g. ``np.zeros((1, 1, 1), dtype)``) and the voxel sees the reference's zero.

An absent tumour or T-cell uptake term is skipped: it is ``(0*Vmax)/(Km + c)``, +-0 for every
``c > -Km``, and a zero's sign in a diagonal rate never shows (it is added to ``B0[m] >= 1`` or to 1).
Absent source terms are kept as exact zeros: they are cheap and decide the sign of a zero result.

Speed (why the loops look as they do): a Thomas solve runs many lines in lockstep, the line index
innermost, so the recurrence vectorises over contiguous memory; the x sweep first transposes blocks of
``XBLOCK`` rows. The x and y sweeps of a z-plane run back to back while it is in cache, so a step
streams the grid twice (xy pass, z pass). The y and z sweeps are pure diffusion (layout.py): their
Thomas factors depend only on the position and are computed once per axis (the x sweep's too when
``flags == 0``). Hot loops never slice the shared arrays: a slice updates the parent's reference count
atomically, and two threads doing that on one array make the cache line ping-pong (~280 ns a slice).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from . import layout as L

assert L.NCOEF == 20, "cpu_kernels._coef_tuple lists the coefficients one by one"

XBLOCK = 64  # x-lines solved together in the x sweep (one transposed block of rows)
# prange work items, each allocating its scratch once: a fixed count, since numba.get_num_threads() in
# a kernel stops numba caching it; 64 keeps up to ~32 threads evenly loaded
NGROUPS = 64
ZCHUNK_BYTES = 1 << 20  # z sweep: lines per chunk such that its float32 y scratch is ~1 MiB (measured best)


@register_jitable
def _coef_tuple(coef):
    """The coefficients as a tuple of scalars: a value, so loops never re-load them from memory."""
    return (coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7], coef[8], coef[9],
            coef[10], coef[11], coef[12], coef[13], coef[14], coef[15], coef[16], coef[17], coef[18],
            coef[19])


@register_jitable
def voxel_rates(c, vf, ntf, ncf, srcv, cf, use_t, use_c):
    """``(k, s)`` of one voxel for the explicit step: diagonal rate (1/min), source (unit/min), float64.

    ``c`` is the voxel's value (float64 of the float32), ``vf``/``ntf``/``ncf`` the vessel flag and the
    tumour and T-cell counts as float64, ``srcv`` the source; ``cf`` the coefficient tuple; ``use_t``/
    ``use_c`` False skip the (zero) tumour/T-cell uptake terms.
    """
    k = cf[L.LAM] + vf * cf[L.KV]
    if use_t:
        k = k + (ntf * cf[L.VT]) / (cf[L.KMT] + c)
    if use_c:
        k = k + (ncf * cf[L.VC]) / (cf[L.KMC] + c)
    s = (vf * cf[L.KV_CS] + ntf * cf[L.SEC_T]) + srcv
    return k, s


@register_jitable
def lod_reaction(c, vessel_v, ntf, ncf, srcv, cf, use_t, use_c):
    """``(diag, rhs)`` the first LOD sweep adds to a voxel's row: ``gc + DT*mm`` (dimensionless) and
    ``sc + DT*q`` (unit), with the fitted decay/supply selected by the vessel mask (layout.py)."""
    on = vessel_v != 0
    gc = cf[L.G1] if on else cf[L.G0]
    sc = cf[L.SG1] if on else 0.0
    if use_t and use_c:
        mm = (ntf * cf[L.VT]) / (cf[L.KMT] + c) + (ncf * cf[L.VC]) / (cf[L.KMC] + c)
    elif use_t:
        mm = (ntf * cf[L.VT]) / (cf[L.KMT] + c)
    elif use_c:
        mm = (ncf * cf[L.VC]) / (cf[L.KMC] + c)
    else:
        mm = 0.0
    q = ntf * cf[L.SEC_T] + srcv
    return gc + cf[L.DT] * mm, sc + cf[L.DT] * q


@register_jitable
def dirichlet_rhs(d, lo, dlo, hi, dhi):
    """``d`` plus ``R2*bc`` of the line's Dirichlet end(s) (``lo``/``hi``: this row touches one)."""
    if lo:
        d = d + dlo
    if hi:
        d = d + dhi
    return d


@register_jitable
def thomas_factor(first, b, g_prev, r):
    """Pivot inverse ``w = 1/b`` (first row) or ``1/(b - R*g_prev)``, and ``g = R*w``."""
    w = 1.0 / b if first else 1.0 / (b - r * g_prev)
    return w, r * w


@register_jitable
def thomas_y(first, d, y_prev, w, r):
    """Forward value ``y = d*w`` (first row) or ``(d + R*y_prev)*w``, in float64."""
    return d * w if first else (d + r * y_prev) * w


@register_jitable
def thomas_back(y32, g, x_next):
    """Back substitution ``x = float64(y32) + g*x_next``."""
    return np.float64(y32) + g * x_next


@register_jitable
def _row_m(i, n, dir_lo, dir_hi):
    """Neighbour weight count m of row i on an n-long line (2 per Dirichlet face)."""
    m = (1 if i > 0 else 0) + (1 if i < n - 1 else 0)
    if i == 0 and dir_lo:
        m += 2
    if i == n - 1 and dir_hi:
        m += 2
    return m


@register_jitable
def _fixed_factors(n, cf, first_sweep, dir_lo, dir_hi, fix):
    """``fix[0, :n]`` = w and ``fix[1, :n]`` = g of a line without per-voxel terms: the first sweep
    adds an empty voxel's ``diag`` to ``B0[m]``, the pure-diffusion sweeps do not."""
    diag0, _ = lod_reaction(0.0, 0, 0.0, 0.0, 0.0, cf, False, False)
    for i in range(n):
        b = cf[L.B0 + _row_m(i, n, dir_lo, dir_hi)]
        if first_sweep:
            b = b + diag0
        fix[0, i], fix[1, i] = thomas_factor(i == 0, b, fix[1, i - 1] if i > 0 else 0.0, cf[L.R])


# The line solves below call one small function per row rather than nesting the row loop: measured,
# LLVM vectorises the loops in those functions ~2x better than the same loops nested (0.35 vs 0.7 ns
# per voxel and sweep). They take whole arrays plus a row index (no slices: see the module doc).


@register_jitable
def _fwd_row_fixed(a, i, lu, nl, ybuf, yv, w, r, first_sweep, rhs0, lo, dlo, hi, dhi):
    """Forward elimination of row ``i`` of ``a[:, lu:lu+nl]`` with the row's fixed factor ``w``."""
    for j in range(nl):
        d = np.float64(a[i, lu + np.uint64(j)])
        if first_sweep:
            d = d + rhs0
        y = thomas_y(i == 0, dirichlet_rhs(d, lo, dlo, hi, dhi), yv[j], w, r)
        yv[j] = y
        ybuf[i, j] = np.float32(y)


@register_jitable
def _back_row_fixed(a, i, lu, nl, ybuf, gi, yv):
    """Back substitution of row ``i`` into ``a[i, lu:lu+nl]`` with the row's fixed factor ``gi``."""
    for j in range(nl):
        x = thomas_back(ybuf[i, j], gi, yv[j])
        yv[j] = x
        a[i, lu + np.uint64(j)] = np.float32(x)


@register_jitable
def _back_row(a, i, nl, ybuf, g, yv):
    """Back substitution of row ``i`` into ``a[i, :nl]`` with per-voxel factors ``g[i]``."""
    for j in range(nl):
        x = thomas_back(ybuf[i, j], g[i, j], yv[j])
        yv[j] = x
        a[i, j] = np.float32(x)


@register_jitable
def _lines_fixed(a, l0, nl, ybuf, fix, yv, cf, first_sweep, dir_lo, dlo, dir_hi, dhi):
    """Thomas solve, in place, of the lines ``a[:, l0:l0+nl]`` (float32 (n, L)) with the per-row
    factors ``fix`` (``_fixed_factors``); ``ybuf``/``yv`` are thread-local scratch (``[i, l - l0]``)."""
    n = a.shape[0]
    lu = np.uint64(l0)  # unsigned column offset: numba adds no negative-index fix-up, loops vectorise
    _, rhs0 = lod_reaction(0.0, 0, 0.0, 0.0, 0.0, cf, False, False)
    for i in range(n):
        _fwd_row_fixed(a, i, lu, nl, ybuf, yv, fix[0, i], cf[L.R], first_sweep, rhs0,
                       i == 0 and dir_lo, dlo, i == n - 1 and dir_hi, dhi)
    for j in range(nl):
        a[n - 1, lu + np.uint64(j)] = np.float32(yv[j])
    for i in range(n - 2, -1, -1):
        _back_row_fixed(a, i, lu, nl, ybuf, fix[1, i], yv)


@register_jitable
def _fwd_row_reaction(a, i, nl, ybuf, aux, has, g, yv, cf, bm, lo, dlo, hi, dhi, use_t, use_c):
    """Forward elimination of row ``i`` of the first sweep's lines ``a[:, :nl]`` with per-voxel
    reaction terms; ``aux``/``has`` as in ``_lines_reaction``."""
    r = cf[L.R]
    vs, nt, nc, sr = aux
    iv, it, ic, isr = (i if has[0] else 0), (i if has[1] else 0), (i if has[2] else 0), (i if has[3] else 0)
    ip = max(i - 1, 0)
    for j in range(nl):
        cv = np.float64(a[i, j])
        diag, rhs = lod_reaction(cv, vs[iv, j], np.float64(nt[it, j]), np.float64(nc[ic, j]),
                                 np.float64(sr[isr, j]), cf, use_t, use_c)
        w, gi = thomas_factor(i == 0, bm + diag, g[ip, j], r)
        g[i, j] = gi
        y = thomas_y(i == 0, dirichlet_rhs(cv + rhs, lo, dlo, hi, dhi), yv[j], w, r)
        yv[j] = y
        ybuf[i, j] = np.float32(y)


@register_jitable
def _lines_reaction(a, nl, ybuf, aux, has, g, yv, cf, dir_lo, dlo, dir_hi, dhi, use_t, use_c):
    """Thomas solve, in place, of the first sweep's lines ``a[:, :nl]`` with per-voxel reaction terms.

    ``aux`` = (vessel, n_tumor, n_tcell, src) indexed like ``a`` where ``has`` says so, else one-row
    zero stand-ins (row 0); ``g`` (float64) keeps the per-voxel factors.
    """
    n = a.shape[0]
    for i in range(n):
        _fwd_row_reaction(a, i, nl, ybuf, aux, has, g, yv, cf, cf[L.B0 + _row_m(i, n, dir_lo, dir_hi)],
                          i == 0 and dir_lo, dlo, i == n - 1 and dir_hi, dhi, use_t, use_c)
    for j in range(nl):
        a[n - 1, j] = np.float32(yv[j])
    for i in range(n - 2, -1, -1):
        _back_row(a, i, nl, ybuf, g, yv)


@register_jitable
def _transpose(src, s0, dst, d0, nr, nc):
    """``dst[d0 + j, i] = src[s0 + i, j]`` for ``i < nr``, ``j < nc``, in 8x8 tiles (few cache lines)."""
    for i0 in range(0, nr, 8):
        ni = min(8, nr - i0)
        for j0 in range(0, nc, 8):
            nj = min(8, nc - j0)
            if ni == 8 and nj == 8:  # constant trip counts: unrolled
                for j in range(8):
                    for i in range(8):
                        dst[d0 + j0 + j, i0 + i] = src[s0 + i0 + i, j0 + j]
            else:
                for j in range(nj):
                    for i in range(ni):
                        dst[d0 + j0 + j, i0 + i] = src[s0 + i0 + i, j0 + j]


@register_jitable
def _flags(c, vessel, n_tumor, n_tcell, src, flags):
    """(has vessel, has tumour, has T cells, has source) from ``flags``; a present array must have the
    field's shape (the loops do not check bounds)."""
    has = ((flags & L.HAS_VESSEL) != 0, (flags & L.HAS_TUMOR) != 0,
           (flags & L.HAS_TCELL) != 0, (flags & L.HAS_SRC) != 0)
    if ((has[0] and vessel.shape != c.shape) or (has[1] and n_tumor.shape != c.shape)
            or (has[2] and n_tcell.shape != c.shape) or (has[3] and src.shape != c.shape)):
        raise ValueError("a per-voxel array whose flag is set does not have the field's shape")
    return has


@register_jitable
def _face(bc_type, bc_value, cf, face):
    """(is Dirichlet, R2*bc) of one face."""
    return bc_type[face] == L.BC_DIRICHLET, cf[L.R2] * bc_value[face]


@njit(parallel=True, cache=True)
def lod_step(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags):
    """One LOD field step of length ``coef[DT]`` (min), in place on ``c`` (float32 (nz, ny, nx), unit).

    x sweep with the reaction and sources, then y and z diffusion sweeps (layout.py).
    """
    lod_xy_pass(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags)
    lod_z_pass(c, coef, bc_type, bc_value)


@njit(parallel=True, cache=True)
def lod_xy_pass(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags):
    """The x sweep (with the reaction and sources) and the y sweep of one LOD step, in place on ``c``.
    Whole z-planes only: a distributed run calls it on z-slabs (gpusim.parallel)."""
    nz, ny, nx = c.shape
    cf = _coef_tuple(coef)
    has = _flags(c, vessel, n_tumor, n_tcell, src, flags)
    ut, uc = has[1], has[2]
    yl, ydl = _face(bc_type, bc_value, cf, 2)
    yh, ydh = _face(bc_type, bc_value, cf, 3)
    xl, xdl = _face(bc_type, bc_value, cf, 4)
    xh, xdh = _face(bc_type, bc_value, cf, 5)
    nmax = max(nx, ny, nz)
    fix = np.zeros((2, 2, nmax))  # per axis (x, y): the (w, g) of lines without per-voxel terms
    _fixed_factors(nx, cf, True, xl, xh, fix[0])
    _fixed_factors(ny, cf, False, yl, yh, fix[1])
    fx, fy = fix[0], fix[1]
    counts = (vessel, n_tumor, n_tcell)
    z8 = np.zeros((1, max(nx, ny)), np.uint8)  # stand-ins for absent per-voxel arrays: row 0
    z32 = np.zeros((1, max(nx, ny)), np.float32)
    # xy pass: groups of whole z-planes (the x and y sweeps never couple planes)
    ngr = min(nz, NGROUPS)
    for t in prange(ngr):
        bx = min(XBLOCK, ny)
        w = max(bx, nx)
        tb = np.empty((nx, bx), np.float32)
        tcounts = (np.zeros((nx, bx) if has[0] else (1, 1), np.uint8),
                   np.zeros((nx, bx) if has[1] else (1, 1), np.uint8),
                   np.zeros((nx, bx) if has[2] else (1, 1), np.uint8))
        ts = np.zeros((nx, bx) if has[3] else (1, 1), np.float32)
        xaux = (tcounts[0] if has[0] else z8, tcounts[1] if has[1] else z8, tcounts[2] if has[2] else z8,
                ts if has[3] else z32)
        g = np.empty((nx, bx) if flags != 0 else (1, 1))
        yv = np.empty(w)
        yb = np.empty((nmax, w), np.float32)
        for z in range(t * nz // ngr, (t + 1) * nz // ngr):
            p = c[z]
            for y0 in range(0, ny, bx):
                nb = min(bx, ny - y0)
                _transpose(p, y0, tb, 0, nb, nx)
                if flags == 0:
                    _lines_fixed(tb, 0, nb, yb, fx, yv, cf, True, xl, xdl, xh, xdh)
                else:
                    for k in range(3):  # the uint8 inputs: vessel, n_tumor, n_tcell
                        if has[k]:
                            _transpose(counts[k][z], y0, tcounts[k], 0, nb, nx)
                    if has[3]:
                        _transpose(src[z], y0, ts, 0, nb, nx)
                    # literal flags per call, so each compiled variant drops the divisions it need not do
                    if ut and uc:
                        _lines_reaction(tb, nb, yb, xaux, has, g, yv, cf, xl, xdl, xh, xdh, True, True)
                    elif ut:
                        _lines_reaction(tb, nb, yb, xaux, has, g, yv, cf, xl, xdl, xh, xdh, True, False)
                    elif uc:
                        _lines_reaction(tb, nb, yb, xaux, has, g, yv, cf, xl, xdl, xh, xdh, False, True)
                    else:
                        _lines_reaction(tb, nb, yb, xaux, has, g, yv, cf, xl, xdl, xh, xdh, False, False)
                _transpose(tb, 0, p, y0, nx, nb)
            _lines_fixed(p, 0, nx, yb, fy, yv, cf, False, yl, ydl, yh, ydh)


@njit(parallel=True, cache=True)
def lod_z_pass(c, coef, bc_type, bc_value):
    """The z sweep of one LOD step, in place on ``c``: every (y, x) column is one independent line, so
    a distributed run calls it on boxes that hold whole columns (gpusim.parallel)."""
    nz, ny, nx = c.shape
    cf = _coef_tuple(coef)
    zl, zdl = _face(bc_type, bc_value, cf, 0)
    zh, zdh = _face(bc_type, bc_value, cf, 1)
    fz = np.zeros((2, nz))
    _fixed_factors(nz, cf, False, zl, zh, fz)
    # lines are the columns of the (nz, ny*nx) view, in chunks of lc lines
    nl = ny * nx
    cz = c.reshape((nz, nl))
    # chunks of about ZCHUNK_BYTES, but at least ~32 of them so that every thread gets work
    lc = max(16, min(ZCHUNK_BYTES // (4 * nz), (nl + 31) // 32) // 16 * 16)
    nch = (nl + lc - 1) // lc
    ngz = min(nch, NGROUPS)
    for t in prange(ngz):
        yb = np.empty((nz, lc), np.float32)
        yv = np.empty(lc)
        for ch in range(t * nch // ngz, (t + 1) * nch // ngz):
            l0 = ch * lc
            _lines_fixed(cz, l0, min(nl, l0 + lc) - l0, yb, fz, yv, cf, False, zl, zdl, zh, zdh)


NEIGHBOUR, ZERO_FLUX_FACE, DIRICHLET_FACE = 0, 1, 2  # what lies beyond one side of a voxel


@register_jitable
def face_diff(kind, nbv, cc, bcv):
    """Neighbour difference ``c_nb - c`` (float64) with the ghost rules: 0 at a zero-flux face,
    ``d + d`` with ``d = bc - c`` at a Dirichlet face."""
    if kind == NEIGHBOUR:
        return nbv - cc
    if kind == ZERO_FLUX_FACE:
        return 0.0
    d = bcv - cc
    return d + d


@register_jitable
def explicit_voxel(cc, nb, kind, bc, vf, ntf, ncf, srcv, cf, use_t, use_c):
    """New float32 value of one voxel: ``(c + DT*(RD*lap + s)) / (1 + DT*k)`` (layout.py).

    ``cc`` is its value (float64), ``nb``/``kind``/``bc`` the neighbour values (float64; unused at a
    face), side kinds and face values in the order x-, x+, y-, y+, z-, z+.
    """
    k, s = voxel_rates(cc, vf, ntf, ncf, srcv, cf, use_t, use_c)
    lap = face_diff(kind[0], nb[0], cc, bc[0]) + face_diff(kind[1], nb[1], cc, bc[1])
    lap = lap + face_diff(kind[2], nb[2], cc, bc[2])
    lap = lap + face_diff(kind[3], nb[3], cc, bc[3])
    lap = lap + face_diff(kind[4], nb[4], cc, bc[4])
    lap = lap + face_diff(kind[5], nb[5], cc, bc[5])
    return np.float32((cc + cf[L.DT] * (cf[L.RD] * lap + s)) / (1.0 + cf[L.DT] * k))


@register_jitable
def _side(i, n, bc_type, face, lower):
    """Kind of the lower (``lower``) or upper side of index ``i`` on an axis of length ``n``."""
    if (i > 0) if lower else (i < n - 1):
        return NEIGHBOUR
    return DIRICHLET_FACE if bc_type[face] == L.BC_DIRICHLET else ZERO_FLUX_FACE


@register_jitable
def _explicit_plane(c_in, c_out, zi, bc_type, bc_value, aux, has, cf, use_t, use_c):
    """Explicit update of plane ``zi`` of ``c_in`` into ``c_out`` (one call per plane: see module doc)."""
    nz, ny, nx = c_in.shape
    z = np.int64(zi)  # prange hands out uint64; keep index arithmetic in one signed type
    vs, nt, nc, sr = aux
    bc = (bc_value[4], bc_value[5], bc_value[2], bc_value[3], bc_value[0], bc_value[1])
    zm, zp = max(z - 1, 0), min(z + 1, nz - 1)
    kzm, kzp = _side(z, nz, bc_type, 0, True), _side(z, nz, bc_type, 1, False)
    kx0, kx1 = _side(0, nx, bc_type, 4, True), _side(nx - 1, nx, bc_type, 5, False)
    for y in range(ny):
        ym, yp = max(y - 1, 0), min(y + 1, ny - 1)
        kym, kyp = _side(y, ny, bc_type, 2, True), _side(y, ny, bc_type, 3, False)
        rv, rt = (z if has[0] else 0, y if has[0] else 0), (z if has[1] else 0, y if has[1] else 0)
        rc, rs = (z if has[2] else 0, y if has[2] else 0), (z if has[3] else 0, y if has[3] else 0)
        # x = 0 and x = nx-1 apart, so the interior loop has neither x faces nor clamped indices
        for e in range(2 if nx > 1 else 1):
            x = 0 if e == 0 else nx - 1
            kind = (kx0 if x == 0 else NEIGHBOUR, kx1 if x == nx - 1 else NEIGHBOUR, kym, kyp, kzm, kzp)
            cc = np.float64(c_in[z, y, x])
            nb = (np.float64(c_in[z, y, max(x - 1, 0)]), np.float64(c_in[z, y, min(x + 1, nx - 1)]),
                  np.float64(c_in[z, ym, x]), np.float64(c_in[z, yp, x]),
                  np.float64(c_in[zm, y, x]), np.float64(c_in[zp, y, x]))
            c_out[z, y, x] = explicit_voxel(cc, nb, kind, bc, np.float64(vs[rv[0], rv[1], x]),
                                            np.float64(nt[rt[0], rt[1], x]), np.float64(nc[rc[0], rc[1], x]),
                                            np.float64(sr[rs[0], rs[1], x]), cf, use_t, use_c)
        kind = (NEIGHBOUR, NEIGHBOUR, kym, kyp, kzm, kzp)
        for xi in range(1, nx - 1):
            x = np.uint64(xi)
            cc = np.float64(c_in[z, y, x])
            nb = (np.float64(c_in[z, y, x - np.uint64(1)]), np.float64(c_in[z, y, x + np.uint64(1)]),
                  np.float64(c_in[z, ym, x]), np.float64(c_in[z, yp, x]),
                  np.float64(c_in[zm, y, x]), np.float64(c_in[zp, y, x]))
            c_out[z, y, x] = explicit_voxel(cc, nb, kind, bc, np.float64(vs[rv[0], rv[1], x]),
                                            np.float64(nt[rt[0], rt[1], x]), np.float64(nc[rc[0], rc[1], x]),
                                            np.float64(sr[rs[0], rs[1], x]), cf, use_t, use_c)


@njit(parallel=True, cache=True)
def explicit_step(c_in, c_out, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags):
    """One explicit sub-step of length ``coef[DT]`` (min) from ``c_in`` into ``c_out`` (float32, unit).

    7-point diffusion with the reaction implicit on the diagonal; same operands as ``lod_step``.
    """
    nz, ny, nx = c_in.shape
    cf = _coef_tuple(coef)
    has = _flags(c_in, vessel, n_tumor, n_tcell, src, flags)
    if c_out.shape != c_in.shape or c_out.ctypes.data == c_in.ctypes.data:
        raise ValueError("explicit_step needs a distinct c_out of c_in's shape (it reads neighbours)")
    z8 = np.zeros((1, 1, nx), np.uint8)  # stand-ins for absent per-voxel arrays: plane 0, row 0
    z32 = np.zeros((1, 1, nx), np.float32)
    aux = (vessel if has[0] else z8, n_tumor if has[1] else z8, n_tcell if has[2] else z8,
           src if has[3] else z32)
    for z in prange(nz):
        # literal flags per call, so each compiled variant drops the divisions it need not do
        if has[1] and has[2]:
            _explicit_plane(c_in, c_out, z, bc_type, bc_value, aux, has, cf, True, True)
        elif has[1]:
            _explicit_plane(c_in, c_out, z, bc_type, bc_value, aux, has, cf, True, False)
        elif has[2]:
            _explicit_plane(c_in, c_out, z, bc_type, bc_value, aux, has, cf, False, True)
        else:
            _explicit_plane(c_in, c_out, z, bc_type, bc_value, aux, has, cf, False, False)
