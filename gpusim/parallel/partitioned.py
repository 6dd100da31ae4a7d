"""Partitioned LOD sweeps (``parallel.lod_mode = "partitioned"``): every rank keeps its box of the
process grid, and each Thomas line that crosses ranks is solved where it lies, by a partitioned
tridiagonal algorithm in the style of PaScaL_TDMA (Kim, Kang, Ha & Seo, Comput. Phys. Commun. 260,
107722, 2021).

One sweep along an axis solves, for every line of the box, the rows (``fields.layout``)::

    a_i x_{i-1} + b_i x_i + c_i x_{i+1} = d_i,   a_i = c_i = -R (0 beyond a GLOBAL end of the line)

with ``b_i = B0[m_i]`` (+ the reaction on the x sweep), ``m_i`` counted on the global line (a cut between
ranks is an interior row) and the Dirichlet terms only at the global ends. A rank holds the segment
``j = 0..n-1`` of the line and, in float64:

1. *Eliminates its segment* (``tdma.eliminate``; the algorithm on plain arrays is ``parallel.tdma``): a
   downward pass removes ``a_j`` from rows ``j >= 2`` (rows 0 and 1 are only normalised), an upward pass
   removes ``c_j`` from rows ``n-3..1``, and row 0 is reduced with row 1. Every row then reads
   ``A_j x_0 + x_j + C_j x_{n-1} = D_j``; rows 0 and n-1 couple only the segment's two ends and the
   neighbouring segments' ends (row 0: ``A_0 x_{-1} + x_0 + C_0 x_{n-1}``, row n-1:
   ``A_{n-1} x_0 + x_{n-1} + C_{n-1} x_n``).
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

This module is the driver, the same on either device: the rows, the exchanges and the reduced solves
(on the host). The sweep kernels are the rank's device's (``Backend.kernels("partitioned").Sweeps``):
numba on a CPU rank (``parallel.partitioned_cpu``), kernels/partitioned.cu on a GPU rank
(``parallel.partitioned_cuda``: the box and its operands CuPy arrays, the reduced rows and ends staged
through the host), bit for bit the same.
"""

from __future__ import annotations

import numpy as np

from ..fields import cpu_kernels
from ..fields.cpu_kernels import _coef_tuple, _face, lod_reaction
from . import partitioned_cpu
from .partitioned_cpu import fixed_factors, segment_rows
from .tdma import reduced_solve, reduced_system, segment_ends

__all__ = ["PartitionedLOD"]

_TAG = 600  # + 2*axis: reduced rows to the line's solver; + 2*axis + 1: the solved ends back


def _chunk(n_lines: int, p: int, k: int) -> tuple:
    """Lines ``[start, stop)`` whose reduced systems rank k of a line's p ranks solves."""
    return k * n_lines // p, (k + 1) * n_lines // p


class PartitionedLOD:
    """One rank's LOD steps on its box of ``decomp`` (no ghosts), lines across ranks solved partitioned."""

    def __init__(self, comm, decomp, backend=None):
        self.comm, self.decomp = comm, decomp
        #: the sweep kernels of this rank's device: numba (``partitioned_cpu.Sweeps``, also without a
        #: ``backend``) or kernels/partitioned.cu (``partitioned_cuda.Sweeps``: ``c`` and the operands CuPy arrays)
        self.kernels = (backend.kernels("partitioned") if backend is not None else partitioned_cpu).Sweeps()
        #: the single-process sweeps of the axes a box holds whole (lod_step, lod_xy_pass, lod_z_pass): the
        #: device's field kernels, which have the same signatures on either device
        self.whole = backend.kernels("fields") if backend is not None else cpu_kernels
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
        reaction = (vessel, n_tumor, n_tcell, src, flags)
        if self.comm.size == 1:
            self.whole.lod_step(c, coef, bc_type, bc_value, *reaction)
            return
        pz, py, px = self.decomp.ranks_zyx
        if py == 1 and px == 1:  # whole z-planes: the single-process x and y sweeps
            self.whole.lod_xy_pass(c, coef, bc_type, bc_value, *reaction)
        else:
            self.sweep(c, 2, coef, bc_type, bc_value, reaction)
            self.sweep(c, 1, coef, bc_type, bc_value)
        if pz == 1:
            self.whole.lod_z_pass(c, coef, bc_type, bc_value)
        else:
            self.sweep(c, 0, coef, bc_type, bc_value)

    def sweep(self, c, axis, coef, bc_type, bc_value, reaction=None) -> None:
        """One partitioned sweep along ``axis`` (0 z, 1 y, 2 x) in place on the box ``c``; ``reaction``:
        the first sweep's ``(vessel, n_tumor, n_tcell, src, flags)``, None for pure diffusion."""
        rows = self._rows(axis, coef, bc_type, bc_value, reaction is not None)
        n_lines = self.box.n_voxels // self.box.shape[axis]
        k = self.kernels
        if reaction is not None and reaction[4] != 0:
            mine = k.eliminate_reaction(c, rows, coef, reaction, n_lines)
            got = self._to_solvers(axis, mine, n_lines)

            def finish(x_first, x_last):
                k.substitute_reaction(c, rows, coef, reaction, x_first, x_last)
        else:
            mine = k.eliminate_fixed(c, axis, rows, n_lines)
            got = []
            for ends, d in zip(rows["ends"], self._to_solvers(axis, mine, n_lines)):
                row = np.empty((6, d.shape[1]))  # the ends' A and C are the same on every line
                row[0], row[1], row[3], row[4] = ends[0], ends[1], ends[2], ends[3]
                row[2], row[5] = d[0], d[1]
                got.append(row)

            def finish(x_first, x_last):
                k.substitute_fixed(c, axis, rows, x_first, x_last)
        lengths = rows["lengths"]
        ends = segment_ends(lengths, reduced_solve(*reduced_system(lengths, got)))
        finish(*self._from_solvers(axis, ends, n_lines))

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
        a, bm, c = segment_rows(n_line, off, n, coef, dir_lo, dir_hi, 0.0)
        ends, factors = [], None
        for q, (o, m) in enumerate(runs):
            f = fixed_factors(*segment_rows(n_line, o, m, coef, dir_lo, dir_hi, diag0))
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
