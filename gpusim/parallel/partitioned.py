"""Partitioned LOD sweeps (``parallel.lod_mode = "partitioned"``): every rank keeps its box of the
process grid, and each Thomas line that crosses ranks is solved where it lies, by a partitioned
tridiagonal algorithm in the style of PaScaL_TDMA (Kim, Kang, Ha & Seo, Comput. Phys. Commun. 260,
107722, 2021).

One sweep along an axis solves, for every line of the box, the rows (``fields.layout``)::

    a_i x_{i-1} + b_i x_i + c_i x_{i+1} = d_i,   a_i = c_i = -R (0 beyond a GLOBAL end of the line)

with ``b_i = B0[m_i]`` (+ the reaction on the x sweep), ``m_i`` counted on the global line (a cut between
ranks is an interior row) and the Dirichlet terms only at the global ends. A rank holds the segment
``j = 0..n-1`` of the line and, in float64:

1. *Eliminates its segment* (``tdma.eliminate``; the algorithm on plain arrays is ``parallel.tdma``): a downward pass removes ``a_j`` from rows ``j >= 2`` (rows 0
   and 1 are only normalised), an upward pass removes ``c_j`` from rows ``n-3..1``, and row 0 is reduced
   with row 1. Every row then reads ``A_j x_0 + x_j + C_j x_{n-1} = D_j``; rows 0 and n-1 couple only the
   segment's two ends and the neighbouring segments' ends (row 0: ``A_0 x_{-1} + x_0 + C_0 x_{n-1}``,
   row n-1: ``A_{n-1} x_0 + x_{n-1} + C_{n-1} x_n``).
2. *Reduced system* (``reduced_system``, ``reduced_solve``): those two rows of each of the line's p
   segments form a tridiagonal system in the 2p segment ends (one end for a 1-voxel segment), unit
   diagonal, diagonally dominant like the rows it came from. PaScaL's distribution: the box's L lines
   are dealt out in p contiguous chunks; each rank on the line receives the reduced rows of its chunk
   from the other p - 1 ranks (pairwise rounds, rank k sending to k + s and receiving from k - s),
   solves those lines' reduced systems by Thomas, and sends each rank the two end values of its
   segment back.
3. *Back-substitutes* (``substitute``): ``x_j = D_j - A_j x_0 - C_j x_{n-1}``; the sweep stores float32.

The y and z sweeps (and an x sweep without per-voxel terms) have coefficients that depend only on the
position, so every rank computes every segment's ``A``, ``C`` itself and only the right sides ``D_0``,
``D_{n-1}`` travel. Messages per LOD step, summed over ranks, for a grid of N voxels cut into p_a ranks
on axis a of n_a voxels (axes with p_a = 1 send nothing)::

    bytes = sum over a with p_a > 1 of  8 * (k_a + 2) * (p_a - 1) * N / n_a

where N / n_a is the number of lines on the axis, ``k_a = 2`` doubles of reduced rows per line to its
solver (``k_x = 6``, i.e. A, C and D of both rows, for the x sweep when reaction arrays are read) and
2 doubles of solved ends per line back. The bitwise mode moves ``8 N (1 - 1/P)`` bytes per LOD step
(the whole field, twice, on P ranks): with one cut axis the ratio is ``n_a (1 - 1/P) / (4 (p_a - 1))``,
8x for 64-voxel lines on 2 ranks, and it grows with the line length.

Why not bitwise: the elimination order differs from the single line's Thomas recurrence (and the
single-process kernel rounds its forward values to float32 before the back substitution, this one
keeps float64), so the results differ in the last bits of float32, ~1e-7 relative per sweep; the
rows are diagonally dominant, so such differences do not grow over steps. Axes that are not cut use
the single-process kernels: on one rank this is ``lod_step`` exactly, and z-slab grids (p_y = p_x = 1)
keep the single-process x and y sweeps.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ..fields import layout as L
from ..fields.cpu_kernels import (XBLOCK, _coef_tuple, _face, _flags, _row_m, _transpose, dirichlet_rhs,
                                  lod_reaction, lod_step, lod_xy_pass, lod_z_pass)
from .tdma import (_down_a, _down_d, _pivot, _top_pivot, _up, _up_lines, _value, eliminate, reduced_solve,
                   reduced_system, segment_ends)

__all__ = ["PartitionedLOD"]

_TAG = 600  # + 2*axis: reduced rows to the line's solver; + 2*axis + 1: the solved ends back


# -- the sweep kernels on a rank's box -------------------------------------------------------------------
@njit(cache=True)
def _segment_rows(n_line, off, n, coef, dir_lo, dir_hi, diag0):
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
def _fixed_factors(a, b, c):
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
    the position-only factors of ``_fixed_factors``; ``rhs0`` is added to every right side (an x sweep's
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
    does); ``a, r, cf, r0`` from ``_fixed_factors``, ``fa``/``fc`` the reduced form's (n, 1) A and C."""
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


def _chunk(n_lines: int, p: int, k: int) -> tuple:
    """Lines ``[start, stop)`` whose reduced systems rank k of a line's p ranks solves."""
    return k * n_lines // p, (k + 1) * n_lines // p


class PartitionedLOD:
    """One rank's LOD steps on its box of ``decomp`` (no ghosts), lines across ranks solved partitioned."""

    def __init__(self, comm, decomp):
        self.comm, self.decomp = comm, decomp
        self.box = decomp.box(comm.rank)
        coords = decomp.coords(comm.rank)
        self.members = []  # per axis: the ranks along my lines, in line order
        for axis in range(3):
            cc = list(coords)
            ranks = []
            for k in range(decomp.ranks_zyx[axis]):
                cc[axis] = k
                ranks.append(decomp.rank_of(cc))
            self.members.append(ranks)
        self.me = coords
        self.bytes_sent = 0  # by the exchanges of reduced rows and ends, for the message-volume report
        self._rows_cache = {}

    def step(self, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags) -> None:
        """One LOD field step in place on the box ``c`` (float32 (nz, ny, nx)); operands as ``lod_step``,
        cut to the box where their flag is set."""
        if self.comm.size == 1:
            lod_step(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags)
            return
        pz, py, px = self.decomp.ranks_zyx
        if py == 1 and px == 1:  # whole z-planes: the single-process x and y sweeps
            lod_xy_pass(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags)
        else:
            self.sweep(c, 2, coef, bc_type, bc_value, (vessel, n_tumor, n_tcell, src, flags))
            self.sweep(c, 1, coef, bc_type, bc_value)
        if pz == 1:
            lod_z_pass(c, coef, bc_type, bc_value)
        else:
            self.sweep(c, 0, coef, bc_type, bc_value)

    def sweep(self, c, axis, coef, bc_type, bc_value, reaction=None) -> None:
        """One partitioned sweep along ``axis`` (0 z, 1 y, 2 x) in place on the box ``c``; ``reaction``:
        the first sweep's ``(vessel, n_tumor, n_tcell, src, flags)``, None for pure diffusion."""
        rows = self._rows(axis, coef, bc_type, bc_value, reaction is not None)
        n_lines = self.box.n_voxels // self.box.shape[axis]
        lo, dlo, hi, dhi = rows["lo"], rows["dlo"], rows["hi"], rows["dhi"]
        if reaction is not None and reaction[4] != 0:
            def kernel(phase, ends, x_first, x_last):
                _reaction_sweep(c, phase, ends, rows["a"], rows["bm"], rows["c"], coef, lo, dlo, hi, dhi, *reaction,
                                x_first, x_last)
            mine = np.empty((6, n_lines))
            kernel(0, mine, _NONE, _NONE)
            got = self._to_solvers(axis, mine, n_lines)
        else:
            r, cf, fa, fc, r0 = rows["factors"]

            def kernel(phase, ends, x_first, x_last):
                _fixed_sweep(c, axis, phase, ends, rows["a"], r, cf, r0, fa, fc, rows["rhs0"], lo, dlo, hi, dhi,
                             x_first, x_last)
            mine = np.empty((2, n_lines))
            kernel(0, mine, _NONE, _NONE)
            got = []
            for ends, d in zip(rows["ends"], self._to_solvers(axis, mine, n_lines)):
                row = np.empty((6, d.shape[1]))  # the ends' A and C are the same on every line
                row[0], row[1], row[3], row[4] = ends[0], ends[1], ends[2], ends[3]
                row[2], row[5] = d[0], d[1]
                got.append(row)
        lengths = rows["lengths"]
        ends = segment_ends(lengths, reduced_solve(*reduced_system(lengths, got)))
        x_first, x_last = self._from_solvers(axis, ends, n_lines)
        kernel(1, _NONE2, x_first, x_last)

    def _rows(self, axis, coef, bc_type, bc_value, first) -> dict:
        """The position-only parts of a sweep along ``axis`` (kept while the coefficients and faces
        stay): this rank's segment rows, and for sweeps without per-voxel terms every segment's
        factors and reduced-form ends (each rank computes them all: nothing about them travels)."""
        key = (axis, first, coef.tobytes(), bc_type.tobytes(), bc_value.tobytes())
        if key in self._rows_cache:
            return self._rows_cache[key]
        cf = _coef_tuple(coef)
        n_line, runs = self.decomp.shape[axis], self.decomp.runs[axis]
        off, n = runs[self.me[axis]]
        dir_lo, dlo = _face(bc_type, bc_value, cf, 2 * axis)
        dir_hi, dhi = _face(bc_type, bc_value, cf, 2 * axis + 1)
        # an x sweep's empty-voxel diagonal and source (layout.py), on lines without per-voxel arrays
        diag0, rhs0 = lod_reaction(0.0, 0, 0.0, 0.0, 0.0, cf, False, False) if first else (0.0, 0.0)
        a, bm, c = _segment_rows(n_line, off, n, coef, dir_lo, dir_hi, 0.0)
        ends, factors = [], None
        for q, (o, m) in enumerate(runs):
            f = _fixed_factors(*_segment_rows(n_line, o, m, coef, dir_lo, dir_hi, diag0))
            ends.append((f[2][0], f[3][0], f[2][-1], f[3][-1]))
            if q == self.me[axis]:
                factors = (f[0], f[1], f[2].reshape((n, 1)), f[3].reshape((n, 1)), f[4])
        rows = {"a": a, "bm": bm, "c": c, "lo": bool(off == 0 and dir_lo), "dlo": float(dlo),
                "hi": bool(off + n == n_line and dir_hi), "dhi": float(dhi), "rhs0": float(rhs0),
                "lengths": [m for _, m in runs], "factors": factors, "ends": ends}
        if len(self._rows_cache) > 16:  # serum events change the coefficients: keep the recent ones
            self._rows_cache.clear()
        self._rows_cache[key] = rows
        return rows

    def _to_solvers(self, axis, mine, n_lines):
        """Each rank on the line gets the reduced rows (k, Lc) of its chunk of lines from every rank on
        it: returns those of my chunk, one array per rank in line order."""
        ranks, me = self.members[axis], self.me[axis]
        p = len(ranks)
        lo, hi = _chunk(n_lines, p, me)
        got = [None] * p
        got[me] = mine[:, lo:hi]
        for s in range(1, p):
            to, frm = (me + s) % p, (me - s) % p
            t0, t1 = _chunk(n_lines, p, to)
            send = np.ascontiguousarray(mine[:, t0:t1])
            recv = np.empty((mine.shape[0], hi - lo))
            self.comm.sendrecv(send, ranks[to] if t1 > t0 else None, recv, ranks[frm] if hi > lo else None,
                               _TAG + 2 * axis)
            if t1 > t0:
                self.bytes_sent += send.nbytes
            got[frm] = recv
        return got

    def _from_solvers(self, axis, ends, n_lines):
        """The solved ends of my segment for every line: my chunk's from ``ends`` (one (2, Lc) per
        rank on the line), the other chunks' from their solvers."""
        ranks, me = self.members[axis], self.me[axis]
        p = len(ranks)
        lo, hi = _chunk(n_lines, p, me)
        out = np.empty((2, n_lines))
        out[:, lo:hi] = ends[me]
        for s in range(1, p):
            to, frm = (me + s) % p, (me - s) % p
            f0, f1 = _chunk(n_lines, p, frm)
            send = np.ascontiguousarray(ends[to])
            recv = np.empty((2, f1 - f0))
            self.comm.sendrecv(send, ranks[to] if hi > lo else None, recv, ranks[frm] if f1 > f0 else None,
                               _TAG + 2 * axis + 1)
            if hi > lo:
                self.bytes_sent += send.nbytes
            out[:, f0:f1] = recv
        return out[0], out[1]
