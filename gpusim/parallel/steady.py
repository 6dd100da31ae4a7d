"""The steady (multigrid) solve of :mod:`gpusim.fields.steady` on the process-grid boxes, bitwise equal
to one process: the same field and the same cycle count, on any process grid, odd shapes and uneven
boxes included.

    solver = DistributedSteady(comm, decomp)             # every rank, the same decomposition
    c = solver.local(box_of_c)                           # this rank's box plus one ghost layer
    info = solver.solve(mg_cpu, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags)
    # c[solver.halo.interior] is this rank's box of the solution; info is the same on every rank

Why bitwise. Every per-voxel formula of the solver is a gather over the 7 neighbours of one level
(rates, the red-black update, the residual) or over a fixed set of finer or coarser cells (restriction,
prolongation), and the only reductions are maxima (the cycle's change and the iterate's maximum, the
residual), which are exact: ``allreduce`` max gives every rank the one-process value. So each rank runs
the single-process kernels (:mod:`gpusim.fields.mg_cpu`) on its box plus one ghost layer where a
neighbour lies, as the explicit stencil does (``BoxFieldRun``): the local array's edge is a ghost, the
kernels' boundary terms (Dirichlet ``dmask``, the faces' right side in ``rates``) apply only at local
edges that are faces of the global grid, and the ghosts' own values (wrong: the kernels see them as a
face) are overwritten by an exchange before anything reads them. The red-black colour is the global
one: each level's ``parity`` is (z+y+x) & 1 of its local array's first element. The ghosts are
exchanged before each colour's half-sweep (a red voxel reads the black neighbours of the previous
half-sweep, across the cut too), before the restriction and before the final residual. The driver
loop, the V-cycle and the convergence test are :func:`gpusim.fields.steady.solve` and
:func:`~gpusim.fields.steady.vcycle` themselves, given this module's levels and reductions.

Coarse levels. ``level_shapes`` halves each axis rounding up, and ``transfer_tables`` puts 1 or 2 fine
cells into a coarse cell (odd sizes give irregular runs), so a coarse cell may straddle a cut between
boxes. Choice: a coarse level is distributed while every rank's box of the finer level is a union of
whole coarse cells (checked per axis from the tables; the coarse boxes are then the parents'
runs, ``Decomposition.from_runs``), and never the coarsest level (its direct solve is global). At the
first level ``g`` whose next level is not aligned (or is the coarsest), the *hand-off*: each rank sends
its box of level g's ``u`` (after the pre-smoothing), ``b`` and ``k`` to rank 0 (24 B per cell), rank 0
restricts the whole level g, runs the rest of the V-cycle with the single-process levels
(``steady._build_levels`` of the whole grid: the same arrays and tables as one process), and sends each
rank the block of the level-(g+1) correction its prolongation reads (its parents plus one coarse cell
beyond each cut: 8 B per coarse cell); each rank adds it to its box and post-smooths. Coarse levels
are 1/8, 1/64, ... of the work, so rank 0's part is small: with boxes that split evenly down to 2-cell
coarse runs (64^3 on 2-8 ranks) the hand-off is at the level above the coarsest (4^3 cells); a box
edge inside a coarse cell (a cut at 8 of a 13-voxel axis, whose coarse cell 4 holds fine cells 7 and 8)
hands off at level 0: rank 0 then receives 24 B per fine voxel and restricts the whole fine grid
every cycle (one pass over it, against the ranks' eight smoothing half-sweeps of their boxes), which
is correct but serial; process-grid cuts at even offsets (or multiples of 2^k) avoid it.

Bytes per V-cycle and rank (``bytes_sent``; float64 throughout): each distributed level exchanges its
ghost faces 4 (pre-smoothing) + 1 (before the restriction) + 4 (post-smoothing) times, a coarse one once
more (before the finer level's prolongation reads it), 8 B per face cell each time (both colours are
sent, not only the half a sweep reads); plus the hand-off's 24 B per box cell of level g sent to rank 0
and rank 0's 8 B per block cell sent to each rank; one more fine exchange per solve for the final
residual. Measured (tests/mpi/steady_driver.py, the O2 problem, 8 cycles): 64^3 on (2, 1, 1), hand-off
at level 4 (4^3): 408 kB per cycle from each rank (the fine faces 9 x 32 kB = 295 kB, levels 1-3 107 kB,
the hand-off 0.8 kB), and the same formula to the byte; on (2, 2, 1) 427 kB per rank; 13 x 11 x 9 on
(1, 2, 2), hand-off at level 0: 13-18 kB per rank. Before the first cycle rank 0 scatters the field
and the operands' boxes (4 + 1 + 1 + 1 B per voxel of the other boxes, + 4 with a source), and after
the last gathers the field (4 B) (``BoxFieldRun.solve_steady``).

Scope: the CPU kernels (MPI ranks are CPU ranks); grids of at most 2 cells on every axis (one level)
are solved on rank 0 by the caller (:meth:`DistributedSteady.supported`).
"""

from __future__ import annotations

import math

import numpy as np

from ..fields import steady as S
from .decomposition import Decomposition
from .halo import Halo, gather

__all__ = ["DistributedSteady"]

_TAG_BLOCK = 800  # own range (the frames use 700..): rank 0's coarse-correction blocks at the hand-off


def _parents(children, nf):
    """parent[i]: the coarse cell holding fine cell i (from ``transfer_tables``' children)."""
    par = np.empty(nf, np.int64)
    for j, (a, b) in enumerate(children):
        par[a:b + 1] = j
    return par


def _coarse_runs(runs, children, nf):
    """The coarse runs under fine ``runs`` when every run is whole coarse cells, else None."""
    par = _parents(children, nf)
    out = []
    for start, length in runs:
        j0, j1 = int(par[start]), int(par[start + length - 1])
        if children[j0][0] != start or children[j1][1] != start + length - 1:
            return None
        out.append((j0, j1 - j0 + 1))
    return out


class _Reductions(S.OneProcess):
    """steady.solve's grid: the distributed levels and the ranks' exact combinations."""

    def __init__(self, owner):
        self.owner = owner
        self.inner = owner.halo.interior

    def any(self, flag):
        return bool(self.owner.comm.allreduce_max(np.int64(bool(flag))))

    def max(self, values):
        v = np.asarray(values, np.float64)
        bad = ~np.isfinite(v)
        got = self.owner.comm.allreduce_max(np.concatenate([np.where(bad, -np.inf, v), bad.astype(np.float64)]))
        n = v.size
        # a non-finite value on any rank makes the result non-finite, as on one process
        return tuple(math.nan if got[n + i] > 0 else float(got[i]) for i in range(n))

    def levels(self, xp, shape, rd, dmask):
        return self.owner._levels(xp, rd, dmask)


class DistributedSteady:
    """The steady solve on rank ``comm.rank``'s box of ``decomp`` (see the module docstring)."""

    def __init__(self, comm, decomp: Decomposition):
        self.comm, self.decomp = comm, decomp
        self.halo = Halo(comm, decomp, width=1)
        self.colour_exchange = True  # test hook: False skips the exchange between red and black
        self.bytes_sent = 0  # this rank's messages in solves so far (halo faces and hand-off)
        self.bytes_received = 0  # rank 0: the hand-off boxes it gathered
        self.handoff_level = None  # the level whose restriction rank 0 does (set by a solve)

    @staticmethod
    def supported(shape) -> bool:
        """Whether a grid of ``shape`` has a level above the coarsest to distribute."""
        return len(S.level_shapes(shape)[0]) > 1

    def local(self, box: np.ndarray) -> np.ndarray:
        """This rank's box (no ghosts) in an array of the halo's local shape (ghosts zero: the first
        exchange fills those the solve reads)."""
        out = np.zeros(self.halo.local_shape, box.dtype)
        out[self.halo.interior] = box
        return out

    def solve(self, xp_kernels, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags, *, tol=1e-6,
              max_cycles=200) -> S.SteadyInfo:
        """:func:`gpusim.fields.steady.steady_solve` of the whole grid, ``c`` and the per-voxel arrays
        being this rank's local arrays (``local``; dummies where ``flags`` says absent): ``c``'s box
        becomes this rank's part of the one-process solution. Collective; the same info on every rank."""
        if not self.supported(self.decomp.shape):
            raise ValueError(f"a {self.decomp.shape} grid has one multigrid level: solve it on one rank")
        self._kernels = xp_kernels
        return S.solve(xp_kernels, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags, tol=tol,
                       max_cycles=max_cycles, grid=_Reductions(self))

    # -- the levels ------------------------------------------------------------------------------------
    def _levels(self, xp, rd, dmask):
        """This rank's levels 0..g (boxes plus ghosts); level g's hand-off holds, on rank 0, the
        whole-grid levels (``steady._build_levels``) it runs below g."""
        shapes, factors = S.level_shapes(self.decomp.shape)
        whole = S._build_levels(xp, self.decomp.shape, rd, dmask) if self.comm.rank == 0 else None
        decomps, tables = [self.decomp], []
        for lv in range(len(shapes) - 1):
            tab = [S.transfer_tables(shapes[lv][a], shapes[lv + 1][a], (dmask >> (2 * a)) & 1,
                                     (dmask >> (2 * a + 1)) & 1) for a in range(3)]
            tables.append(tab)
            if lv + 1 == len(shapes) - 1:
                break  # the coarsest level is solved whole
            runs = [_coarse_runs(decomps[-1].runs[a], tab[a][0], shapes[lv][a]) for a in range(3)]
            if any(r is None for r in runs):
                break
            decomps.append(Decomposition.from_runs(shapes[lv + 1], runs))
        g = len(decomps) - 1
        self.handoff_level = g
        levels = []
        for lv, d in enumerate(decomps):
            halo = self.halo if lv == 0 else Halo(self.comm, d, width=1)
            level = S._Level(xp, halo.local_shape, tuple(rd * f for f in factors[lv]))
            level.halo = halo
            level.parity = sum(o - lo for o, (lo, _) in zip(halo.box.offset, halo.ghosts)) & 1
            level.exchange = self._exchanger(halo)
            if lv > 0:
                level.children = (*self._children(tables[lv - 1], levels[-1].halo, halo),
                                  S.volume_ratio(shapes[lv - 1], shapes[lv]))
                level.prolong = self._prolong(tables[lv - 1], levels[-1].halo, halo)
            levels.append(level)
        levels[g].handoff = self._handoff(levels, g, tables[g], whole, dmask)
        return levels

    def _exchanger(self, halo):
        """The level's ghost exchange, counting this rank's bytes; ``colour`` is given by the smoother
        (0 before the red half-sweep, 1 before the black one), None elsewhere."""
        def exchange(a, colour=None):
            if colour == 1 and not self.colour_exchange:
                return  # test hook: the black half-sweep reads stale red ghosts
            before = halo.bytes_sent
            halo.exchange(a)
            self.bytes_sent += halo.bytes_sent - before

        return exchange

    @staticmethod
    def _children(tab, fine_halo, coarse_halo):
        """Restriction tables of the coarse local cells in the fine local array; a ghost cell gets its
        first own fine cell (its values are overwritten by the exchange before being read)."""
        out = []
        for a in range(3):
            children = tab[a][0]
            glo_c, glo_f = coarse_halo.ghosts[a][0], fine_halo.ghosts[a][0]
            off_c, off_f = coarse_halo.box.offset[a], fine_halo.box.offset[a]
            n_c = coarse_halo.box.shape[a]
            local = np.full((coarse_halo.local_shape[a], 2), glo_f, np.int32)
            for jl in range(glo_c, glo_c + n_c):
                local[jl] = children[jl - glo_c + off_c] - off_f + glo_f
            out.append(local)
        return out

    @staticmethod
    def _prolong(tab, fine_halo, coarse_halo, block_start=None):
        """Prolongation tables (pz, wz, py, wy, px, wx) of the fine local cells into the coarse local
        array (``block_start``: into rank 0's block whose first cell is that global index instead); a
        fine ghost adds 0 (it is overwritten by the exchange)."""
        out = []
        for a in range(3):
            _, pidx, pw = tab[a]
            glo_f, off_f, n_f = fine_halo.ghosts[a][0], fine_halo.box.offset[a], fine_halo.box.shape[a]
            shift = (block_start[a] if block_start is not None
                     else coarse_halo.box.offset[a] - coarse_halo.ghosts[a][0])
            first = 0 if block_start is not None else coarse_halo.ghosts[a][0]
            p = np.full((fine_halo.local_shape[a], 2), first, np.int32)
            w = np.zeros((fine_halo.local_shape[a], 2), np.float64)
            for il in range(glo_f, glo_f + n_f):
                p[il] = pidx[il - glo_f + off_f] - shift
                w[il] = pw[il - glo_f + off_f]
            out += [p, w]
        return tuple(out)

    def _handoff(self, levels, g, tab, whole, dmask):
        """Level g's restriction, coarser cycle and prolongation, with the levels below g on rank 0."""
        comm, lv = self.comm, levels[g]
        halo = lv.halo
        decomp = halo.decomp
        # per rank and axis, the global coarse cells its own fine cells' prolongation reads
        blocks = []
        for r in range(comm.size):
            box = decomp.box(r)
            blocks.append(tuple((int(tab[a][1][box.offset[a]:box.stop[a]].min()),
                                 int(tab[a][1][box.offset[a]:box.stop[a]].max()) + 1) for a in range(3)))
        mine = blocks[comm.rank]
        lv_tables = self._prolong(tab, halo, None, block_start=tuple(b[0] for b in mine))
        block = np.empty(tuple(b1 - b0 for b0, b1 in mine), np.float64)

        def handoff(i):
            arrays = [np.ascontiguousarray(a[halo.interior]) for a in (lv.u, lv.b, lv.k)]
            gathered = [gather(comm, decomp, a) for a in arrays]
            if comm.rank != 0:
                self.bytes_sent += sum(a.nbytes for a in arrays)
            else:
                self.bytes_received += 24 * sum(decomp.box(r).n_voxels for r in range(1, comm.size))
                fine, nxt = whole[g], whole[g + 1]
                fine.u[...], fine.b[...], fine.k[...] = gathered
                k = self._kernels
                k.restrict(fine.u, fine.b, fine.k, fine.rz, fine.ry, fine.rx, dmask, nxt.b, nxt.k, *nxt.children)
                nxt.u.fill(0.0)
                S.vcycle(k, whole, g + 1, dmask)
                for r in range(1, comm.size):
                    part = np.ascontiguousarray(nxt.u[tuple(slice(b0, b1) for b0, b1 in blocks[r])])
                    comm.send(part, r, _TAG_BLOCK)
                    self.bytes_sent += part.nbytes
                block[...] = nxt.u[tuple(slice(b0, b1) for b0, b1 in mine)]
            if comm.rank != 0:
                comm.recv(block, 0, _TAG_BLOCK)
            self._kernels.prolong_add(block, lv.u, *lv_tables)

        return handoff

