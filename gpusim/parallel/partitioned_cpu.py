"""A CPU rank's partitioned LOD sweeps (numba): the kernels :class:`~gpusim.parallel.partitioned.PartitionedLOD`
drives through :class:`Sweeps` (the GPU twin, with the same interface: ``gpusim.parallel.partitioned_cuda``,
kernels/partitioned.cu), and the position-only rows of a segment (``segment_rows``, ``fixed_factors``) that
the driver computes for every rank on a line. The algorithm is described in ``gpusim.parallel.partitioned``;
the row operations are ``gpusim.parallel.tdma``'s.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..fields import layout as L
from ..fields.cpu_kernels import XBLOCK, _coef_tuple, _flags, _row_m, _transpose, dirichlet_rhs, lod_reaction
from .tdma import _down_a, _down_d, _pivot, _top_pivot, _up, _up_lines, _value, eliminate

__all__ = ["Sweeps", "fixed_factors", "segment_rows"]


@njit(cache=True)
def segment_rows(n_line, off, n, coef, dir_lo, dir_hi, diag0):
    """``(a, b, c)`` (each (n,) float64) of the segment ``off..off+n-1`` of an ``n_line``-long line with
    the position-only diagonal ``B0[m] + diag0``."""
    cf = _coef_tuple(coef)
    a, b, c = np.empty(n), np.empty(n), np.empty(n)
    for j in range(n):
        i = off + j
        a[j] = 0.0 if i == 0 else -cf[L.R]
        c[j] = 0.0 if i == n_line - 1 else -cf[L.R]
        b[j] = cf[L.B0 + _row_m(i, n_line, dir_lo, dir_hi)] + diag0
    return a, b, c


@njit(cache=True)
def fixed_factors(a, b, c):
    """A segment without per-voxel terms: ``(r, cf, A, C, r0)``: the downward pivots and ``C`` (which
    depend on the position only, so the sweep runs ``D`` alone through them), the reduced form's
    ``A``, ``C`` and row 0's final pivot (1 when n < 3)."""
    n = b.shape[0]
    r, cf = np.empty(n), np.empty(n)
    for j in range(n):
        r[j] = _pivot(j < 2, a[j], b[j], cf[max(j - 1, 0)])
        cf[j] = c[j] * r[j]
    A, C, _ = eliminate(a, c, b.reshape((n, 1)), np.zeros((n, 1)))
    r0 = _top_pivot(cf[0], A[1, 0]) if n >= 3 else 1.0
    return r, cf, A[:, 0].copy(), C[:, 0].copy(), r0


# Lines are solved in lockstep, the line index innermost over contiguous memory, as in cpu_kernels: a
# z line is a column of the (nz, ny*nx) view, a y line a column of a z-plane, and x lines are columns of
# a plane's block of XBLOCK rows transposed. Line l is y*nx + x (z sweep), z*nx + x (y sweep) or
# z*ny + y (x sweep). Each sweep runs its kernel twice: phase 0 eliminates every block of lines in
# thread-local arrays and keeps only the reduced rows (``ends``); phase 1, after the exchange,
# eliminates again (same bits) and back-substitutes. Keeping the per-voxel reduced form between the
# phases instead (24 B a voxel written and read back) measured ~2x slower: it is memory traffic, the
# recomputation is arithmetic on data in cache.
ZCHUNK = 512  # z lines per work item (a (nz, ZCHUNK) float64 block: 256 KiB at nz = 64)


@register_jitable
def _fixed_down(w, j, q0, nq, D, a, r, rhs0, lo, dlo, hi, dhi):
    """Downward pass of the right sides of row ``j`` of ``w[:, q0:q0+nq]`` into ``D[j, :nq]``."""
    first, jp = j < 2, max(j - 1, 0)
    qu = np.uint64(q0)  # unsigned offsets: numba adds no negative-index fix-up, the loops vectorise
    for k in range(nq):
        d = dirichlet_rhs(np.float64(w[j, qu + np.uint64(k)]) + rhs0, lo, dlo, hi, dhi)
        D[j, k] = _down_d(first, a, d, r, D[jp, k])


@register_jitable
def _fixed_up(D, j, nq, c):
    for k in range(nq):
        D[j, k] = _up(c, D[j, k], D[j + 1, k])


@register_jitable
def _fixed_block(w, q0, nq, D, a, r, cf, r0, rhs0, lo, dlo, hi, dhi):
    """Segment elimination of the right sides of the lines ``w[:, q0:q0+nq]`` into ``D[:, :nq]`` with
    the position-only factors of ``fixed_factors``; ``rhs0`` is added to every right side (an x sweep's
    empty-voxel source, 0 on the y and z sweeps); ``lo``/``hi``: the segment holds a Dirichlet end."""
    n = w.shape[0]
    for j in range(n):
        _fixed_down(w, j, q0, nq, D, a[j], r[j], rhs0, j == 0 and lo, dlo, j == n - 1 and hi, dhi)
    for j in range(n - 3, 0, -1):
        _fixed_up(D, j, nq, cf[j])
    if n >= 3:
        for k in range(nq):
            D[0, k] = _up(cf[0], D[0, k], D[1, k]) * r0


@register_jitable
def _sub_row(w, j, q0, nq, A, C, D, l0, x_first, x_last):
    """Row ``j`` of the lines ``w[:, q0:q0+nq]`` (lines ``l0..``) from their solved ends, float32 store;
    ``A``/``C`` are per line like ``D`` ([j, k]), or (n, 1) for position-only rows."""
    qu, lu = np.uint64(q0), np.uint64(l0)
    if A.shape[1] == 1:
        a, c = A[j, 0], C[j, 0]
        for k in range(nq):
            l = lu + np.uint64(k)
            w[j, qu + np.uint64(k)] = np.float32(_value(a, c, D[j, k], x_first[l], x_last[l]))
    else:
        for k in range(nq):
            l = lu + np.uint64(k)
            w[j, qu + np.uint64(k)] = np.float32(_value(A[j, k], C[j, k], D[j, k], x_first[l], x_last[l]))


@register_jitable
def _finish(w, q0, nq, A, C, D, l0, phase, ends, x_first, x_last):
    """Phase 0: the block's reduced rows into ``ends[:, l0:l0+nq]``: D_0, D_{n-1} (2 rows) or, with
    per-line ``A`` and ``C``, A_0, C_0, D_0, A_{n-1}, C_{n-1}, D_{n-1} (6 rows). Phase 1: its back
    substitution."""
    n = w.shape[0]
    lu = np.uint64(l0)
    if phase == 0:
        wide = ends.shape[0] == 6
        for k in range(nq):
            l = lu + np.uint64(k)
            if wide:
                ends[0, l], ends[1, l], ends[2, l] = A[0, k], C[0, k], D[0, k]
                ends[3, l], ends[4, l], ends[5, l] = A[n - 1, k], C[n - 1, k], D[n - 1, k]
            else:
                ends[0, l], ends[1, l] = D[0, k], D[n - 1, k]
        return
    qu = np.uint64(q0)
    for k in range(nq):
        w[0, qu + np.uint64(k)] = np.float32(x_first[lu + np.uint64(k)])
    for j in range(1, n - 1):
        _sub_row(w, j, q0, nq, A, C, D, l0, x_first, x_last)
    for k in range(nq):
        w[n - 1, qu + np.uint64(k)] = np.float32(x_last[lu + np.uint64(k)])


@njit(parallel=True, cache=True)
def _fixed_sweep(c, axis, phase, ends, a, r, cf, r0, fa, fc, rhs0, lo, dlo, hi, dhi, x_first, x_last):
    """A sweep along ``axis`` of the box ``c`` without per-voxel terms (``_finish`` says what each phase
    does); ``a, r, cf, r0`` from ``fixed_factors``, ``fa``/``fc`` the reduced form's (n, 1) A and C."""
    nz, ny, nx = c.shape
    if axis == 0:
        w = c.reshape((nz, ny * nx))
        nl = ny * nx
        nch = (nl + ZCHUNK - 1) // ZCHUNK
        for t in prange(nch):
            q0 = t * ZCHUNK
            nq = min(ZCHUNK, nl - q0)
            td = np.empty((nz, ZCHUNK))
            _fixed_block(w, q0, nq, td, a, r, cf, r0, rhs0, lo, dlo, hi, dhi)
            _finish(w, q0, nq, fa, fc, td, q0, phase, ends, x_first, x_last)
    elif axis == 1:
        for z in prange(nz):
            td = np.empty((ny, nx))
            w = c[z]
            _fixed_block(w, 0, nx, td, a, r, cf, r0, rhs0, lo, dlo, hi, dhi)
            _finish(w, 0, nx, fa, fc, td, z * nx, phase, ends, x_first, x_last)
    else:
        for z in prange(nz):
            bx = min(XBLOCK, ny)
            tb = np.empty((nx, bx), np.float32)
            td = np.empty((nx, bx))
            p = c[z]
            for y0 in range(0, ny, bx):
                nb = min(bx, ny - y0)
                _transpose(p, y0, tb, 0, nb, nx)
                _fixed_block(tb, 0, nb, td, a, r, cf, r0, rhs0, lo, dlo, hi, dhi)
                _finish(tb, 0, nb, fa, fc, td, z * ny + y0, phase, ends, x_first, x_last)
                if phase == 1:
                    _transpose(tb, 0, p, y0, nx, nb)


@register_jitable
def _reaction_down(w, j, nq, aux, has, A, C, D, a, c, bm, lo, dlo, hi, dhi, cf, use_t, use_c):
    """Downward pass of row ``j`` of the x sweep's lines ``w[:, :nq]`` into ``(A, C, D)[j, :nq]`` with the
    per-voxel reaction (layout.py): the row's diagonal ``B0[m] + diag`` and right side ``c + rhs``.
    ``aux`` = (vessel, n_tumor, n_tcell, src) indexed like ``w`` where ``has`` says so, else one-row
    zero stand-ins (row 0)."""
    vs, nt, nc, sr = aux
    iv, it, ic, isr = (j if has[0] else 0), (j if has[1] else 0), (j if has[2] else 0), (j if has[3] else 0)
    first, jp = j < 2, max(j - 1, 0)
    for k in range(nq):
        cv = np.float64(w[j, k])
        diag, rhs = lod_reaction(cv, vs[iv, k], np.float64(nt[it, k]), np.float64(nc[ic, k]),
                                 np.float64(sr[isr, k]), cf, use_t, use_c)
        r = _pivot(first, a, bm + diag, C[jp, k])
        A[j, k] = _down_a(first, a, r, A[jp, k])
        D[j, k] = _down_d(first, a, dirichlet_rhs(cv + rhs, lo, dlo, hi, dhi), r, D[jp, k])
        C[j, k] = c * r


@njit(parallel=True, cache=True)
def _reaction_sweep(c, phase, ends, a, bm, cc, coef, dir_lo, dlo, dir_hi, dhi, vessel, n_tumor, n_tcell, src,
                    flags, x_first, x_last):
    """The first (x) sweep of the box ``c`` with per-voxel reaction terms (``_finish`` says what each
    phase does); ``a``, ``bm`` (= ``B0[m]``), ``cc``: the rows' position-only coefficients; ``vessel``
    ... ``src`` as ``lod_step``'s, cut to the box where their ``flags`` bit is set."""
    nz, ny, nx = c.shape
    cf = _coef_tuple(coef)
    has = _flags(c, vessel, n_tumor, n_tcell, src, flags)
    ut, uc = has[1], has[2]
    counts = (vessel, n_tumor, n_tcell)
    z8 = np.zeros((1, max(nx, ny)), np.uint8)  # stand-ins for absent per-voxel arrays: row 0
    z32 = np.zeros((1, max(nx, ny)), np.float32)
    for z in prange(nz):
        bx = min(XBLOCK, ny)
        tb = np.empty((nx, bx), np.float32)
        tcounts = (np.zeros((nx, bx) if has[0] else (1, 1), np.uint8),
                   np.zeros((nx, bx) if has[1] else (1, 1), np.uint8),
                   np.zeros((nx, bx) if has[2] else (1, 1), np.uint8))
        ts = np.zeros((nx, bx) if has[3] else (1, 1), np.float32)
        aux = (tcounts[0] if has[0] else z8, tcounts[1] if has[1] else z8, tcounts[2] if has[2] else z8,
               ts if has[3] else z32)
        ta, tc, td = np.empty((nx, bx)), np.empty((nx, bx)), np.empty((nx, bx))
        p = c[z]
        for y0 in range(0, ny, bx):
            nb = min(bx, ny - y0)
            _transpose(p, y0, tb, 0, nb, nx)
            for k in range(3):
                if has[k]:
                    _transpose(counts[k][z], y0, tcounts[k], 0, nb, nx)
            if has[3]:
                _transpose(src[z], y0, ts, 0, nb, nx)
            for j in range(nx):
                lo, hi = j == 0 and dir_lo, j == nx - 1 and dir_hi
                # literal flags per call, so each compiled variant drops the divisions it need not do
                if ut and uc:
                    _reaction_down(tb, j, nb, aux, has, ta, tc, td, a[j], cc[j], bm[j], lo, dlo, hi, dhi, cf, True,
                                   True)
                elif ut:
                    _reaction_down(tb, j, nb, aux, has, ta, tc, td, a[j], cc[j], bm[j], lo, dlo, hi, dhi, cf, True,
                                   False)
                elif uc:
                    _reaction_down(tb, j, nb, aux, has, ta, tc, td, a[j], cc[j], bm[j], lo, dlo, hi, dhi, cf, False,
                                   True)
                else:
                    _reaction_down(tb, j, nb, aux, has, ta, tc, td, a[j], cc[j], bm[j], lo, dlo, hi, dhi, cf, False,
                                   False)
            _up_lines(ta, tc, td, 0, nb)
            _finish(tb, 0, nb, ta, tc, td, z * ny + y0, phase, ends, x_first, x_last)
            if phase == 1:
                _transpose(tb, 0, p, y0, nx, nb)


_NONE, _NONE2 = np.zeros(1), np.zeros((1, 1))  # the phase that does not read x_first/x_last (ends)


class Sweeps:
    """A CPU rank's sweep kernels (numba, above), behind the interface PartitionedLOD drives on either
    backend (the GPU twin: ``gpusim.parallel.partitioned_cuda.Sweeps``). ``eliminate_*`` returns the
    box's reduced rows as a host (2 or 6, n_lines) float64 array; ``substitute_*`` stores the values from
    the solved ends (here the elimination is run again, same bits: cheaper than keeping it)."""

    def eliminate_fixed(self, c, axis, rows, n_lines):
        mine = np.empty((2, n_lines))
        self._fixed(c, axis, rows, 0, mine, _NONE, _NONE)
        return mine

    def substitute_fixed(self, c, axis, rows, x_first, x_last) -> None:
        self._fixed(c, axis, rows, 1, _NONE2, x_first, x_last)

    def eliminate_reaction(self, c, rows, coef, reaction, n_lines):
        mine = np.empty((6, n_lines))
        self._reaction(c, rows, coef, reaction, 0, mine, _NONE, _NONE)
        return mine

    def substitute_reaction(self, c, rows, coef, reaction, x_first, x_last) -> None:
        self._reaction(c, rows, coef, reaction, 1, _NONE2, x_first, x_last)

    @staticmethod
    def _fixed(c, axis, rows, phase, ends, x_first, x_last):
        r, cf, fa, fc, r0 = rows["factors"]
        _fixed_sweep(c, axis, phase, ends, rows["a"], r, cf, r0, fa, fc, rows["rhs0"], rows["lo"], rows["dlo"],
                     rows["hi"], rows["dhi"], x_first, x_last)

    @staticmethod
    def _reaction(c, rows, coef, reaction, phase, ends, x_first, x_last):
        _reaction_sweep(c, phase, ends, rows["a"], rows["bm"], rows["c"], coef, rows["lo"], rows["dlo"], rows["hi"],
                        rows["dhi"], *reaction, x_first, x_last)
