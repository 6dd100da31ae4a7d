"""Rank 0's cell operation in an MPI run (``mpiexec -n N gpusim run``): :class:`DistributedCells`,
the single-process CellStep whose step every rank does on its part (``parallel.cells.CellWorker``),
and the balance of the cell step's boxes (:func:`cell_weights`). Rank 0 broadcasts the step's header
(its boxes, the infusions due, whether event rows are wanted), does its own part, and finishes the
step from the sum of the ranks' integer partials: exactly the single-process counts and totals."""

from __future__ import annotations

import time

import numpy as np

from ..agents import rules as R
from ..census import CELL_COUNTS
from ..io.layout import EVENT_COLUMNS, merge_event_rows
from .cells import PARTIALS_TAG, CellWorker, Partials, plane_sites, plane_tcells
from .decomposition import Box, Decomposition, balanced_runs
from .migrate import voxel_coords
from .placement import infusion_header

__all__ = ["BALANCE_EVERY", "DistributedCells", "cell_weights"]

#: steps between two choices of the cell step's box boundaries (``parallel.balance = "cells"``)
BALANCE_EVERY = 10


def _recv_from(comm, source, shape, dtype):
    buf = np.empty(shape, dtype)
    comm.recv(buf, source, PARTIALS_TAG)
    return buf


def cell_weights(sites, planes, shape) -> list:
    """Per axis, the cell step's work along it: occupied lattice sites (``sites``, :func:`plane_sites`)
    plus T cells (``planes``, :func:`plane_tcells`) in each plane — what the six phases loop over
    (``parallel.balance = "cells"``). Float64 vectors of length nz, ny, nx."""
    out, at = [], 0
    for n in shape:
        out.append(sites[at:at + n].astype(np.float64) + planes[at:at + n].astype(np.float64))
        at += n
    return out


class DistributedCells:
    """Rank 0's cell operation: the single-process CellStep of ``sim``, its step done by all ranks.

    The ranks hold the lattice and the T cells from the first step on (each its box and the T cells
    whose voxel is in it, :class:`CellWorker`): each step every rank migrates its T cells to their
    owners, exchanges ghosts, steps its region and keeps its box, and sends rank 0 only its
    :class:`Partials` (and event rows), from which rank 0 finishes the step (``CellStep.count``, the
    totals), the recorder its row and the balance its weights. The mirror's lattice and T cells are
    then *stale* until :meth:`pull` gathers them (the lattice alone, for a hold over the tumour or a
    steady solve on a field rank 0 solves alone; frames and
    snapshots are written from the ranks' copies: gpusim.parallel.frames, gpusim.parallel.snapshots).

    The boxes of the cell step need not be the fields' (the results do not depend on the boxes): with
    ``parallel.balance = "cells"`` (default) the process grid is kept and the runs along each axis are
    re-cut every ``BALANCE_EVERY`` steps so that each holds an equal share of the T cells and tumour
    cells (:func:`cell_weights`), the lattice moving from the old boxes to the new and the T cells
    by the next migration; with ``"even"`` they are the fields' equal boxes. Per step it records each
    rank's T cells, its seconds in the phases, and rank 0's seconds and bytes of messages, in
    ``sim.perf_extra`` (the store's perf/)."""

    name = "cells"

    def __init__(self, sim, comm, fields_run, fields_op):
        self.inner = sim.cells
        self.comm, self.decomp = comm, fields_run.decomp
        self.fields_op = fields_op  # rank 0's DistributedFields: the fields live on the ranks
        self.balance = sim.config.parallel.balance
        self.events = bool(sim.config.output.events) and sim.config.tcells is not None
        self.worker = CellWorker(sim.config, comm, fields_run, has_vessel=sim.state.vessel is not None)
        self.partials = Partials(sim.state.shape)
        self.stale = {"lattice": False, "tcells": False}  # whether the ranks' copy is newer than the mirror's
        self.lattice_counts = None  # census.lattice_counts after the last step (the recorder's)
        self.census_counts = None  # census.cell_counts of the whole run after the last step (the recorder's)
        self.step_rows = None  # the last step's event rows (the writer's, step_events)
        self._sites = self._planes = None  # plane_sites and plane_tcells after the last step (the balance's)

    def __getattr__(self, key):  # store, totals, last, columns(), ... of the single-process operation
        return getattr(self.__dict__["inner"], key)

    def pull(self, sim, parts=("lattice", "tcells")) -> None:
        """All ranks: the ranks' lattice and T cells (``parts``) gathered into the mirror where stale."""
        w = self.worker
        for part in parts:
            if self.stale[part]:
                self.comm.bcast_json({"op": part})
                w.gather_lattice(sim.state) if part == "lattice" else w.gather_tcells(self.inner.store)
                self.stale[part] = False

    def step_events(self, sim):
        """The event rows of the step just done (the writer's), merged from the ranks'."""
        return self.step_rows

    def _rebalance(self, sim) -> None:
        st, s = sim.state, self.inner.store
        sites = self._sites if self.stale["lattice"] else plane_sites(st.tumor, Box((0, 0, 0), st.shape), st.shape)
        if self.stale["tcells"]:
            planes = self._planes
        else:  # the mirror holds every T cell (the first step)
            alive = s.state != np.uint8(R.TDEAD)
            planes = plane_tcells(*voxel_coords(s.pos_um[alive], st.dx_um, st.shape), st.shape)
        weights = cell_weights(sites, planes, st.shape)
        runs = [balanced_runs(w, p) for w, p in zip(weights, self.decomp.ranks_zyx)]
        if runs != self.decomp.runs:
            self.decomp = Decomposition.from_runs(st.shape, runs)

    def apply(self, sim) -> None:
        cs, st, comm, w = self.inner, sim.state, self.comm, self.worker
        self.fields_op.push_pending(sim)  # the fields the mirror set up, before the rules read them
        t_start = time.perf_counter()
        due = cs.infusions_due(sim)  # placed by the ranks into their boxes (parallel.placement)
        if self.balance == "cells" and st.step % BALANCE_EVERY == 0:
            self._rebalance(sim)
        a_serum = float(cs.serum_lfa1(sim)) if w.recruits else 0.0  # a float32, exact through JSON
        header = {"op": "cells", "step": int(st.step), "a_serum": a_serum, "scatter": w.own is None,
                  "infusions": [infusion_header(sim, salt, ev) for salt, ev in due], "events": self.events,
                  "runs": [[list(r) for r in axis] for axis in self.decomp.runs]}
        comm.bcast_json(header)
        tr = w.traffic
        before = w.lattice_bytes + w.field_bytes + tr.bytes_sent + tr.bytes_received + tr.count_bytes
        vec, sec, events = w.run_step(header, sim)
        for (_, ev), placed in zip(due, w.placed):
            cs.infused(sim, ev, placed)
        vecs, seconds, rows = [vec], [sec], [events]
        moved = 0
        for r in range(1, comm.size):
            buf = np.empty(1, np.float64)
            comm.recv(buf, r, PARTIALS_TAG)
            seconds.append(float(buf[0]))
            vecs.append(_recv_from(comm, r, (self.partials.size,), np.int64))
            moved += 8 * (1 + self.partials.size)
            if self.events:
                n = int(_recv_from(comm, r, (1,), np.int64)[0])
                if n:
                    rows.append({c: _recv_from(comm, r, (n,), dt) for c, dt in EVENT_COLUMNS.items()})
                    moved += n * sum(np.dtype(dt).itemsize for dt in EVENT_COLUMNS.values())
        self.stale = {"lattice": True, "tcells": True}
        moved += w.lattice_bytes + w.field_bytes + tr.bytes_sent + tr.bytes_received + tr.count_bytes - before
        per_rank = [self.partials.unpack(v) for v in vecs]
        perf = sim.perf_extra
        for r, (sec, part) in enumerate(zip(seconds, per_rank)):
            perf[f"cells_s_r{r}"] = sec
            perf[f"tcells_r{r}"] = float(part["rows"][1])  # its T cells at the sort
        # rank 0's time in this operation beyond its own share of the phases: migration, ghosts,
        # region fills, messages and waiting for the slowest rank
        perf["cells_rank0_other_s"] = time.perf_counter() - t_start - seconds[0]
        perf["cells_rank0_bytes"] = float(moved)  # sent and received by rank 0 this step
        self._finish(sim, self.partials.unpack(np.sum(vecs, axis=0)), rows)

    def _finish(self, sim, total: dict, rows) -> None:
        """``CellStep.finish`` of the ranks' step from the sum of their :class:`Partials`: this step's
        counts and the totals, the recorder's and the balance's numbers, and the merged event rows
        (the new T cells stayed on the ranks that made them)."""
        cs = self.inner
        before, kept = (int(v) for v in total["rows"])
        died = int(total["died"][0])
        if before != kept + died:  # every living T cell went to exactly one owner
            raise RuntimeError(f"MPI cell step: {before} T cells before the migration, {died} dead dropped, "
                               f"{kept} after: T cells lost or duplicated")
        cs.count(sim, lattice=total["events"], tcells=total["flags"])
        cs.totals["tcells_died"] += died
        cs.totals["tcells_recruited"] += int(total["made"][0])
        cs.totals["tcells_born"] += int(total["made"][1])
        self.lattice_counts = total["codes"]
        counts = total["census"].copy()
        counts[[CELL_COUNTS.index(f"tumor_{c}") for c in ("live", "dead", "necrotic")]] = total["codes"]
        self.census_counts = counts
        self._sites, self._planes = total["sites"], total["planes"]
        self.step_rows = merge_event_rows(rows) if self.events else None
