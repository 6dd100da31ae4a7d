"""Partitioned LOD sweeps (``parallel.lod_mode = "partitioned"``): every rank keeps its box of the
process grid, and each Thomas line that crosses ranks is solved where it lies, by a partitioned
tridiagonal algorithm in the style of PaScaL_TDMA (Kim, Kang, Ha & Seo, Comput. Phys. Commun. 260,
107722, 2021).

One sweep along an axis solves, for every line of the box, the rows (``fields.layout``)::

    a_i x_{i-1} + b_i x_i + c_i x_{i+1} = d_i,   a_i = c_i = -R (0 beyond a GLOBAL end of the line)

with ``b_i = B0[m_i]`` (+ the reaction on the x sweep), ``m_i`` counted on the global line (a cut between
ranks is an interior row) and the Dirichlet terms only at the global ends. A rank holds the segment
``j = 0..n-1`` of the line and, in float64:

1. *Eliminates its segment* (``eliminate``): a downward pass removes ``a_j`` from rows ``j >= 2`` (rows 0
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
(the whole field, twice); the ratio is about ``n_a / (4 (p_a - 1))`` per cut axis, 8x at 64³ on 2 ranks.

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
from ..fields.cpu_kernels import (_coef_tuple, _face, _row_m, dirichlet_rhs, lod_reaction, lod_step, lod_xy_pass,
                                  lod_z_pass)

__all__ = ["PartitionedLOD", "eliminate", "reduced_solve", "reduced_system", "segment_ends", "solve_split",
           "substitute"]

_TAG = 600  # + 2*axis: reduced rows to the line's solver; + 2*axis + 1: the solved ends back


# -- one row of the segment elimination (float64 scalars); every path below calls these ----------------
@register_jitable
def _pivot(first, a, b, c_prev):
    """Inverse pivot of a row in the downward pass: ``1/b`` on the segment's rows 0 and 1 (not
    eliminated), else ``1/(b - a*C_{j-1})``."""
    return 1.0 / b if first else 1.0 / (b - a * c_prev)


@register_jitable
def _down_a(first, a, r, a_prev):
    """``A_j`` after the downward pass: the coupling to the unknown before row 0 (row 0), to ``x_0``."""
    return a * r if first else (-a * a_prev) * r


@register_jitable
def _down_d(first, a, d, r, d_prev):
    """``D_j`` after the downward pass."""
    return d * r if first else (d - a * d_prev) * r


@register_jitable
def _up(c, v, v_next):
    """The upward pass of ``A_j`` or ``D_j``: ``v - C_j*v_{j+1}`` (``C_j``'s own is ``-C_j*C_{j+1}``)."""
    return v - c * v_next


@register_jitable
def _top_pivot(c0, a1):
    """Row 0's pivot after it is reduced with row 1."""
    return 1.0 / (1.0 - c0 * a1)


@register_jitable
def _value(a, c, d, x_first, x_last):
    """``x_j = D_j - A_j x_0 - C_j x_{n-1}``."""
    return (d - a * x_first) - c * x_last


@register_jitable
def _eliminate_lines(arow, crow, A, C, D, l0, l1):
    """Segment elimination, in place, of lines ``l0:l1`` of (n, L) float64 arrays; on entry ``C`` holds
    the diagonals ``b`` and ``D`` the right sides, ``arow``/``crow`` the off-diagonals per row; on exit
    ``(A, C, D)`` of the reduced form (module docstring)."""
    n = D.shape[0]
    for j in range(n):
        first, jp, a, c = j < 2, max(j - 1, 0), arow[j], crow[j]
        for l in range(l0, l1):
            r = _pivot(first, a, C[j, l], C[jp, l])
            A[j, l] = _down_a(first, a, r, A[jp, l])
            D[j, l] = _down_d(first, a, D[j, l], r, D[jp, l])
            C[j, l] = c * r
    for j in range(n - 3, 0, -1):
        for l in range(l0, l1):
            c = C[j, l]
            A[j, l] = _up(c, A[j, l], A[j + 1, l])
            D[j, l] = _up(c, D[j, l], D[j + 1, l])
            C[j, l] = -c * C[j + 1, l]
    if n >= 3:
        for l in range(l0, l1):
            c = C[0, l]
            r = _top_pivot(c, A[1, l])
            A[0, l] = A[0, l] * r
            D[0, l] = _up(c, D[0, l], D[1, l]) * r
            C[0, l] = (-c * C[1, l]) * r


# -- the algorithm as plain functions (no MPI): what the sweeps do, testable on one process ---------
@njit(cache=True)
def eliminate(arow, crow, b, d):
    """``(A, C, D)`` (each (n, L) float64) of the segment rows ``arow[j] x_{j-1} + b[j, l] x_j + crow[j]
    x_{j+1} = d[j, l]`` of L lines: every row reads ``A_j x_0 + x_j + C_j x_{n-1} = D_j``."""
    n, nl = d.shape
    A, C, D = np.empty((n, nl)), b.copy(), d.copy()
    _eliminate_lines(arow, crow, A, C, D, 0, nl)
    return A, C, D


def reduced_system(lengths, rows):
    """``(alpha, gamma, delta)`` (each (M, Lc)) of the reduced system of lines cut into segments of
    ``lengths`` (in line order): ``rows[q]`` is segment q's ``(A_0, C_0, D_0, A_{n-1}, C_{n-1},
    D_{n-1})``, a (6, Lc) array; a 1-voxel segment gives one row, the others two."""
    m = sum(1 if n == 1 else 2 for n in lengths)
    out = np.empty((3, m, rows[0].shape[1]))
    k = 0
    for n, r in zip(lengths, rows):
        out[:, k] = r[0:3]
        k += 1
        if n >= 2:
            out[:, k] = r[3:6]
            k += 1
    return out[0], out[1], out[2]


@njit(parallel=True, cache=True)
def reduced_solve(alpha, gamma, delta):
    """The ends ``u`` (M, Lc) with ``alpha[k] u[k-1] + u[k] + gamma[k] u[k+1] = delta[k]`` per line
    (Thomas; unit diagonal)."""
    m, nl = delta.shape
    u = np.empty((m, nl))
    for l in prange(nl):
        g = np.empty(m)
        for k in range(m):
            w = 1.0 if k == 0 else 1.0 / (1.0 - alpha[k, l] * g[k - 1])
            g[k] = gamma[k, l] * w
            u[k, l] = delta[k, l] * w if k == 0 else (delta[k, l] - alpha[k, l] * u[k - 1, l]) * w
        for k in range(m - 2, -1, -1):
            u[k, l] = u[k, l] - g[k] * u[k + 1, l]
    return u


def segment_ends(lengths, u):
    """Per segment, its ``(x_0, x_{n-1})`` as a (2, Lc) array from the reduced solution ``u``."""
    out, k = [], 0
    for n in lengths:
        last = k + (1 if n >= 2 else 0)
        out.append(np.stack((u[k], u[last])))
        k = last + 1
    return out


@njit(cache=True)
def substitute(A, C, D, x_first, x_last):
    """The segment's values (n, L) float64 from its reduced form and its solved ends."""
    n, nl = D.shape
    x = np.empty((n, nl))
    for l in range(nl):
        x[0, l], x[n - 1, l] = x_first[l], x_last[l]
        for j in range(1, n - 1):
            x[j, l] = _value(A[j, l], C[j, l], D[j, l], x_first[l], x_last[l])
    return x


def solve_split(arow, crow, b, d, lengths):
    """The lines ``(arow, b, crow; d)`` ((n,) per-row off-diagonals, (n, L) diagonals and right sides)
    solved through segments of ``lengths``, all on this process: the partitioned algorithm without MPI."""
    starts = np.cumsum([0] + list(lengths))
    parts = [eliminate(arow[s:e].copy(), crow[s:e].copy(), b[s:e].copy(), d[s:e].copy())
             for s, e in zip(starts[:-1], starts[1:])]
    rows = [np.stack((A[0], C[0], D[0], A[-1], C[-1], D[-1])) for A, C, D in parts]
    ends = segment_ends(lengths, reduced_solve(*reduced_system(lengths, rows)))
    return np.concatenate([substitute(A, C, D, e[0], e[1]) for (A, C, D), e in zip(parts, ends)])


# -- the sweep kernels on a rank's box: ``v`` is the box viewed (n, P, Q) with the line axis first -----
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


@register_jitable
def _fixed_down_row(v, D, j, p, nq, l0, a, r, rhs0, lo, dlo, hi, dhi):
    first = j < 2
    jp = max(j - 1, 0)
    for q in range(nq):
        d = dirichlet_rhs(np.float64(v[j, p, q]) + rhs0, lo, dlo, hi, dhi)
        D[j, l0 + q] = _down_d(first, a, d, r, D[jp, l0 + q])


@register_jitable
def _fixed_up_row(D, j, l0, nq, c):
    for q in range(nq):
        D[j, l0 + q] = _up(c, D[j, l0 + q], D[j + 1, l0 + q])


@njit(parallel=True, cache=True)
def _eliminate_fixed(v, D, a, r, cf, r0, rhs0, dir_lo, dlo, dir_hi, dhi):
    """Segment elimination of the right sides ``D`` (n, P*Q) of the box's lines ``v`` with the
    position-only factors of ``_fixed_factors``; ``rhs0`` is added to every right side (an x sweep's
    empty-voxel source, 0 on the y and z sweeps); ``dir_lo``/``dir_hi``: the segment holds a Dirichlet end."""
    n, np_, nq = v.shape
    for p in prange(np_):
        l0 = p * nq
        for j in range(n):
            _fixed_down_row(v, D, j, p, nq, l0, a[j], r[j], rhs0, j == 0 and dir_lo, dlo, j == n - 1 and dir_hi, dhi)
        for j in range(n - 3, 0, -1):
            _fixed_up_row(D, j, l0, nq, cf[j])
        if n >= 3:
            for q in range(nq):
                D[0, l0 + q] = _up(cf[0], D[0, l0 + q], D[1, l0 + q]) * r0


@register_jitable
def _reaction_row(v, C, D, j, p, nq, l0, bm, lo, dlo, hi, dhi, aux, has, cf, use_t, use_c):
    """Row j's diagonals into ``C`` and right sides into ``D`` with the per-voxel reaction (layout.py)."""
    vs, nt, nc, sr = aux
    for q in range(nq):
        cv = np.float64(v[j, p, q])
        vv = vs[j, p, q] if has[0] else vs[0, 0, 0]
        ntf = np.float64(nt[j, p, q] if has[1] else nt[0, 0, 0])
        ncf = np.float64(nc[j, p, q] if has[2] else nc[0, 0, 0])
        srv = np.float64(sr[j, p, q] if has[3] else sr[0, 0, 0])
        diag, rhs = lod_reaction(cv, vv, ntf, ncf, srv, cf, use_t, use_c)
        C[j, l0 + q] = bm + diag
        D[j, l0 + q] = dirichlet_rhs(cv + rhs, lo, dlo, hi, dhi)


@njit(parallel=True, cache=True)
def _eliminate_reaction(v, A, C, D, a, bm, c, coef, dir_lo, dlo, dir_hi, dhi, aux, has):
    """Segment elimination of the first (x) sweep's lines with per-voxel reaction terms: ``(A, C, D)``
    each (n, P*Q); ``bm`` the rows' ``B0[m]``, ``aux`` (vessel, n_tumor, n_tcell, src) viewed like
    ``v`` where ``has`` says so, else (1, 1, 1) zeros."""
    n, np_, nq = v.shape
    cf = _coef_tuple(coef)
    ut, uc = has[1], has[2]
    for p in prange(np_):
        l0 = p * nq
        for j in range(n):
            lo, hi = j == 0 and dir_lo, j == n - 1 and dir_hi
            # literal flags per call, so each compiled variant drops the divisions it need not do
            if ut and uc:
                _reaction_row(v, C, D, j, p, nq, l0, bm[j], lo, dlo, hi, dhi, aux, has, cf, True, True)
            elif ut:
                _reaction_row(v, C, D, j, p, nq, l0, bm[j], lo, dlo, hi, dhi, aux, has, cf, True, False)
            elif uc:
                _reaction_row(v, C, D, j, p, nq, l0, bm[j], lo, dlo, hi, dhi, aux, has, cf, False, True)
            else:
                _reaction_row(v, C, D, j, p, nq, l0, bm[j], lo, dlo, hi, dhi, aux, has, cf, False, False)
        _eliminate_lines(a, c, A, C, D, l0, l0 + nq)


@njit(parallel=True, cache=True)
def _substitute_box(v, A, C, D, x_first, x_last):
    """Back substitution into the box (float32 store); ``A``/``C`` are (n, P*Q) or, for position-only
    rows, (n, 1)."""
    n, np_, nq = v.shape
    wide = A.shape[1] > 1
    for p in prange(np_):
        l0 = p * nq
        for q in range(nq):
            v[0, p, q] = np.float32(x_first[l0 + q])
            v[n - 1, p, q] = np.float32(x_last[l0 + q])
        for j in range(1, n - 1):
            for q in range(nq):
                k = l0 + q if wide else 0
                v[j, p, q] = np.float32(_value(A[j, k], C[j, k], D[j, l0 + q], x_first[l0 + q], x_last[l0 + q]))


_VIEW = ((0, 1, 2), (1, 0, 2), (2, 0, 1))  # per axis (z, y, x): the box's axes with the line axis first


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
        self._scratch = {}

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
        n_line = self.decomp.shape[axis]
        runs = self.decomp.runs[axis]
        lengths = [m for _, m in runs]
        off, n = runs[self.me[axis]]
        dir_lo, dlo = _face(bc_type, bc_value, _coef_tuple(coef), 2 * axis)
        dir_hi, dhi = _face(bc_type, bc_value, _coef_tuple(coef), 2 * axis + 1)
        v = c.transpose(_VIEW[axis])
        n_lines = v.shape[1] * v.shape[2]
        diag0, rhs0 = lod_reaction(0.0, 0, 0.0, 0.0, 0.0, _coef_tuple(coef), False, False) if reaction else (0.0, 0.0)
        D = self._buffer("D", (n, n_lines))
        lo, hi = off == 0 and dir_lo, off + n == n_line and dir_hi  # my segment holds a Dirichlet end
        if reaction is not None and reaction[4] != 0:
            A, C = self._buffer("A", (n, n_lines)), self._buffer("C", (n, n_lines))
            has, aux = self._aux(reaction, axis)
            a, bm, cc = _segment_rows(n_line, off, n, coef, dir_lo, dir_hi, 0.0)  # the reaction's diagonal per voxel
            _eliminate_reaction(v, A, C, D, a, bm, cc, coef, lo, dlo, hi, dhi, aux, has)
            mine = np.stack((A[0], C[0], D[0], A[n - 1], C[n - 1], D[n - 1]))
            rows = self._to_solvers(axis, mine, n_lines)
        else:
            # every rank's segment rows depend only on the position: each rank computes all of them
            segment = [_segment_rows(n_line, o, m, coef, dir_lo, dir_hi, diag0) for o, m in runs]
            factors = [_fixed_factors(*rows) for rows in segment]
            r, cf, fa, fc, r0 = factors[self.me[axis]]
            _eliminate_fixed(v, D, segment[self.me[axis]][0], r, cf, r0, rhs0, lo, dlo, hi, dhi)
            got = self._to_solvers(axis, np.stack((D[0], D[n - 1])), n_lines)
            rows = []
            for (_, _, fa_q, fc_q, _), g in zip(factors, got):
                row = np.empty((6, g.shape[1]))
                row[0], row[1], row[2] = fa_q[0], fc_q[0], g[0]
                row[3], row[4], row[5] = fa_q[-1], fc_q[-1], g[1]
                rows.append(row)
            A, C = fa.reshape((n, 1)), fc.reshape((n, 1))
        ends = segment_ends(lengths, reduced_solve(*reduced_system(lengths, rows)))
        x_first, x_last = self._from_solvers(axis, ends, n_lines)
        _substitute_box(v, A, C, D, x_first, x_last)

    def _buffer(self, key, shape):
        """Float64 scratch kept between sweeps (one per kind and shape)."""
        if self._scratch.get((key, shape)) is None:
            self._scratch[key, shape] = np.empty(shape)
        return self._scratch[key, shape]

    def _aux(self, reaction, axis):
        """(has, per-voxel arrays viewed like the box) of the first sweep's operands."""
        flags = int(reaction[4])
        bits = (L.HAS_VESSEL, L.HAS_TUMOR, L.HAS_TCELL, L.HAS_SRC)
        has = tuple(bool(flags & b) for b in bits)
        aux = tuple(a.transpose(_VIEW[axis]) if h else np.zeros((1, 1, 1), a.dtype)
                    for a, h in zip(reaction[:4], has))
        for a, h in zip(reaction[:4], has):
            if h and a.shape != self.box.shape:
                raise ValueError(f"a per-voxel array of shape {a.shape} on a rank whose box is {self.box.shape}")
        return has, aux

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
