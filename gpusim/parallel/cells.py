"""The tumour lattice and the T cells stepped box by box on N ranks, bitwise equal to one process.

The ranks hold the lattice (each its box, from the first step on); rank 0 holds the T cells
(gpusim.parallel.run). Each step rank 0 sorts the T cells and sends every rank those of its
*region* — its box grown by ``CELL_GHOST`` voxels on every side, clipped to the grid. The lattice the
rules read one voxel further out (so every engaged T cell's target is there) and the fields over
that lattice region come from the ranks that hold them, by ``parallel.regions`` (the lattice from
the ranks' boxes, a field from its owners' boxes).
Each rank runs the six phases of the single-process step (:func:`gpusim.agents.cells.run_phases`,
the same kernels) on arrays of that size, whose *frame* places them in the global grid, then recruits
at the vessel voxels of its box and divides its own T cells (``agents.cells.recruit``, ``divide``).
Each rank keeps its box of the stepped lattice; rank 0 takes back the T cells that sat in the box at
the sort, the new ones and the box's numbers (event and code counts, plane sums: integer partials),
and finishes the step (counts, appends, uid checks).

Why this is exact: every rule is a gather over the 27 voxels around a voxel or an agent, and its
random numbers are keyed by global voxel index and uid (DESIGN.md §2; the frame gives the global
index). T cells are reflected at the faces of the global grid, and voxel indices that leave a rank
(targets, proposals, voxels) are converted back to global ones. A result is therefore right wherever
the data it reads are right. Data are right in the whole region at the start of the step, and each
phase that reads its neighbours' results of an earlier phase shrinks the right zone by one voxel:

    A1 sense (own voxel) -> T1 fate (hits of the agents within 1) -> T2 propose (fates within 1)
    -> T3 claim (proposals within 1) -> A2 respond (targets within 1; credit: hitters within 2)
    -> A3 accept (proposals of agents within 1 of the voxel moved into: 2 from the agent)

so the owned box is right after six voxels of region (``CELL_GHOST``). Recruitment (R) reads the
moves, after A3, of the T cells within one voxel of a vessel voxel: one voxel more (``RECRUIT_GHOST``)
where T cells are recruited. Redundant work on the ghosts instead of a halo exchange between phases:
one message per rank and step.

Scope of this version: rank 0 holds and re-sends the T cells every step (the lattice stays on the
ranks; rank 0's mirror of it is gathered only when read whole); infusions run on rank 0 (their
placement reads the whole lattice, gathered first, and the occupancy). New T cells are appended rank by
rank, so rank 0's row order differs from one process's; nothing reads it: the next sort orders by
(voxel, uid), and snapshots and checkpoints by uid.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..agents import params as P
from ..agents import rules as R
from ..agents.cells import LATTICE_EVENTS, check_new, divide, lattice_events, recruit, run_phases
from ..agents.spatial_index import sort_by_voxel_uid
from ..agents.tcell_store import COLUMNS, STATE_COLUMNS, TCellStore
from ..backend import select_backend
from ..census import LATTICE_CODES, lattice_counts
from .decomposition import Box, Decomposition, balanced_runs
from .regions import Regions

__all__ = ["CELL_GHOST", "CellWorker", "DistributedCells", "region"]

#: voxels of region around a rank's box: the depth of the phases' dependency chain (module docstring)
CELL_GHOST = 6
#: one voxel more where T cells are recruited: a vessel voxel's occupancy after the moves reads the
#: proposals, after A3, of the T cells within one voxel of it
RECRUIT_GHOST = 1
#: the lattice arrays a rank receives (over its region) and returns (over its box)
LATTICE_IN = ("tumor", "damage", "last_hit", "since", "div_dir", "n_tumor", "hit_mark")
LATTICE_OUT = LATTICE_IN + ("tumor_event",)
#: steps between two choices of the cell step's box boundaries (``parallel.balance = "cells"``)
BALANCE_EVERY = 10
#: the substrates the rules read (a dummy where the config has none)
RULE_FIELDS = ("mg", "o2", "chemokine")
_TAG = 400


def ghost_width(recruits: bool = False) -> int:
    """``CELL_GHOST`` (plus ``RECRUIT_GHOST`` when the ranks recruit T cells), or the test hook
    ``GPUSIM_TEST_CELL_GHOST`` (a test narrows it to show that the bitwise comparison catches a
    region too small)."""
    return int(os.environ.get("GPUSIM_TEST_CELL_GHOST", CELL_GHOST + (RECRUIT_GHOST if recruits else 0)))


def recruits(cfg, has_vessel: bool) -> bool:
    """Whether the cell step recruits T cells at vessels (``CellStep.recruits`` of the same config)."""
    return cfg.tcells is not None and cfg.tcells.recruit_per_vessel_per_min > 0 and has_vessel


def region(decomp: Decomposition, rank: int, width: int) -> Box:
    """``rank``'s box grown by ``width`` voxels (:func:`ghost_width`; the T cells a rank gets) on
    every side, clipped to the grid; one voxel more for the lattice and fields: ``width + 1``."""
    width = int(width)
    b = decomp.box(rank)
    lo = [max(0, o - width) for o in b.offset]
    hi = [min(n, s + width) for n, s in zip(decomp.shape, b.stop)]
    return Box(tuple(lo), tuple(h - l for l, h in zip(lo, hi)))


def _zyx(voxel, shape):
    ny, nx = int(shape[1]), int(shape[2])
    return voxel // (ny * nx), (voxel // nx) % ny, voxel % nx


def _inside(voxel, shape, box: Box):
    z, y, x = _zyx(voxel, shape)
    (z0, y0, x0), (z1, y1, x1) = box.offset, box.stop
    return (z >= z0) & (z < z1) & (y >= y0) & (y < y1) & (x >= x0) & (x < x1)


def _names(cfg, has_vessel):
    lattice_in = LATTICE_IN + (("vessel",) if has_vessel else ())
    lattice_out = LATTICE_OUT + (("vessel",) if has_vessel else ())
    fields = tuple(n for n in RULE_FIELDS if any(s.name == n for s in cfg.substrates))
    return lattice_in, lattice_out, fields


_DTYPES = {"tumor": np.uint8, "damage": np.uint8, "last_hit": np.int32, "since": np.int32, "div_dir": np.int8,
           "n_tumor": np.uint8, "hit_mark": np.uint8, "tumor_event": np.uint8, "vessel": np.uint8}


class _Lattice:
    """A rank's lattice arrays (of its lattice region) with the attribute names of ``State`` (what
    run_phases reads)."""

    def __init__(self, shape, names):
        for name in set(names) | {"tumor_event"}:
            setattr(self, name, np.zeros(shape, _DTYPES[name]))


class CellWorker:
    """One rank's part of the cell step: the six phases on its region (see the module docstring).

    From the first step on (:meth:`scatter_lattice`) it holds its box of the lattice (``own``), and
    the other layouts read it from there: its region's lattice (:meth:`fill_lattice`), the field
    step's operands (:meth:`operand`), rank 0's mirror when a frame or a checkpoint reads it
    (:meth:`gather_lattice`), and the new boxes when they are re-cut (:meth:`set_decomposition`)."""

    #: the lattice arrays the field step reads (``BoxFieldRun.lattice``)
    OPERANDS = ("vessel", "n_tumor")

    def __init__(self, cfg, comm, fields_run, has_vessel: bool):
        self.comm = comm
        self.fields_run = fields_run  # the BoxFieldRun whose ranks hold the fields
        decomp = fields_run.decomp
        self.backend = select_backend("cpu")  # CPU ranks (GPU ranks are still to come)
        self.k = self.backend.kernels("agents")
        self.p = P.build(cfg)
        self.seed = np.uint64(cfg.seed)
        self.shape = tuple(decomp.shape)
        self.dx_um = float(cfg.grid.dx_um)
        self.lattice_in, self.lattice_out, self.field_names = _names(cfg, has_vessel)
        self.tc = cfg.tcells
        self.recruits = recruits(cfg, has_vessel)
        self.width = ghost_width(self.recruits)
        self._dummy = np.zeros(1, np.float32)
        self.store = TCellStore(self.backend, capacity=1024)
        self.own = None  # this rank's box of the lattice (lattice_out), from scatter_lattice on
        self.lattice_bytes = 0  # lattice sent and received by this rank (regions, operands, scatter, gathers, re-cuts)
        self.decomp = None
        self.set_decomposition(decomp)

    def set_decomposition(self, decomp: Decomposition) -> None:
        """Every rank: the boxes of the cell step (they follow the cells, :class:`DistributedCells`),
        the arrays of this rank's region, and (when the ranks hold the lattice) its boxes moved from
        the old boxes to the new ones."""
        rank = self.comm.rank
        if self.own is not None and self.decomp is not None:
            move = Regions(self.comm, self.decomp.boxes(), decomp.boxes())
            self.own = {n: self._count(move, move.fill(a, out=np.empty(decomp.box(rank).shape, a.dtype)))
                        for n, a in self.own.items()}
        self.decomp = decomp
        self.box = decomp.box(rank)
        self.region = region(decomp, rank, self.width)  # the T cells it gets
        w = self.width + 1
        self.lregion = region(decomp, rank, w)  # the lattice and fields
        lr = self.lregion
        self.dims = tuple(np.int64(n) for n in lr.shape)
        self.frame = tuple(np.int64(v) for v in (*lr.offset, *self.shape))
        self.lat = _Lattice(lr.shape, self.lattice_in)
        self.fields = {n: np.zeros(lr.shape, np.float32) for n in self.field_names}
        self._no_vessel = np.zeros(int(np.prod(lr.shape)), np.uint8)
        self.box_local = Box(tuple(o - lo for o, lo in zip(self.box.offset, lr.offset)), self.box.shape)
        self._lregions = [region(decomp, r, w) for r in range(self.comm.size)]
        self._field_moves = {}  # substrate -> Regions into the lattice regions of these boxes
        self._operand_moves = {}  # another layout's boxes -> Regions from these boxes
        self.field_bytes = 0  # sent and received in fill_fields
        self._lattice_in = Regions(self.comm, decomp.boxes(), self._lregions)  # the boxes -> the regions

    def _count(self, move: Regions, out):
        """``out``, with the bytes this rank moved in ``move`` so far added to :attr:`lattice_bytes`
        (each Regions here fills once per call of the method that made it, or is reset below)."""
        self.lattice_bytes += move.bytes_sent + move.bytes_received
        move.bytes_sent = move.bytes_received = 0
        return out

    # -- where the lattice lives --------------------------------------------------------------------
    def scatter_lattice(self, state=None) -> None:
        """Every rank: from now on it holds its box of the lattice, cut from rank 0's mirror
        (``state``; None elsewhere); the field step then reads its operands from the boxes."""
        move = Regions.scatter(self.comm, self.decomp)
        self.own = {n: self._count(move, move.fill(None if state is None else getattr(state, n),
                                                   out=np.empty(self.box.shape, _DTYPES[n])))
                    for n in self.lattice_out}
        self.fields_run.lattice = self

    def gather_lattice(self, state=None) -> None:
        """Every rank: the boxes of the lattice gathered into rank 0's mirror (``state``; None elsewhere)."""
        move = Regions.gather(self.comm, self.decomp.boxes(), self.shape)
        for name in self.lattice_out:
            self._count(move, move.fill(self.own[name], out=None if state is None else getattr(state, name)))

    def fill_lattice(self) -> None:
        """Every rank: the lattice over this rank's lattice region from the ranks' boxes."""
        for name in self.lattice_in:
            self._count(self._lattice_in, self._lattice_in.fill(self.own[name], out=getattr(self.lat, name)))

    def keep_box(self) -> None:
        """This rank's box of the stepped lattice region kept as its own."""
        for name in self.lattice_out:
            self.own[name][...] = getattr(self.lat, name)[self.box_local.slices]

    def operand(self, key: str, boxes) -> np.ndarray:
        """Every rank: lattice array ``key`` (one of :data:`OPERANDS`) over this rank's box of
        ``boxes`` (one per rank: a field layout's), from the ranks' boxes; zero bytes where the
        layouts agree."""
        boxes = tuple(boxes)
        move = self._operand_moves.get(boxes)
        if move is None:
            move = self._operand_moves[boxes] = Regions(self.comm, self.decomp.boxes(), list(boxes))
        return self._count(move, move.fill(self.own[key], out=np.zeros(boxes[self.comm.rank].shape, _DTYPES[key])))

    def partials(self) -> np.ndarray:
        """This rank's numbers of its box's lattice after the step, which add up over the ranks (rank 0
        sums them): the event counts (``agents.cells.lattice_events``), the code counts
        (``census.lattice_counts``) and the occupied sites per plane (:func:`plane_sites`), int64."""
        return np.concatenate([lattice_events(np, self.own["tumor_event"]), lattice_counts(np, self.own["tumor"]),
                               plane_sites(self.own["tumor"], self.box, self.shape)])

    def fill_fields(self, mirror_fields=None) -> None:
        """Every rank: the fields over this rank's lattice region, from the ranks that hold them (a
        held field from its owners' boxes; one solved on rank 0 alone from its mirror, ``mirror_fields``)."""
        run = self.fields_run
        for name, out in self.fields.items():
            stepped = name in run.held
            if name not in self._field_moves:
                src = (run.holder(name).boxes() if stepped else
                       [Box((0, 0, 0), self.shape) if r == 0 else None for r in range(self.comm.size)])
                self._field_moves[name] = Regions(self.comm, src, self._lregions)
            moved = self._field_moves[name]
            before = moved.bytes_sent + moved.bytes_received
            local = (np.ascontiguousarray(run.interior(name)) if stepped
                     else (mirror_fields[name] if self.comm.rank == 0 else None))
            moved.fill(local, out=out)
            self.field_bytes += moved.bytes_sent + moved.bytes_received - before

    def _to_local(self, v):
        """Global voxel indices (all >= 0) as indices of this rank's lattice arrays."""
        if not np.all(_inside(v, self.shape, self.lregion)):
            raise RuntimeError("MPI cell step: an engaged T cell's target lies outside this rank's lattice region")
        z, y, x = _zyx(v, self.shape)
        (oz, oy, ox), (ly, lx) = self.lregion.offset, self.lregion.shape[1:]
        return ((z - oz) * ly + (y - oy)) * lx + (x - ox)

    def _to_global(self, v):
        """Indices of this rank's lattice arrays as global voxel indices (-1 kept)."""
        z, y, x = _zyx(v, self.lregion.shape)
        (oz, oy, ox), (ny, nx) = self.lregion.offset, self.shape[1:]
        return np.where(v >= 0, ((z + oz) * ny + (y + oy)) * nx + (x + ox), v)

    def prepare(self, msg: dict, state=None) -> None:
        """Every rank, on the step's header: the boxes it names (re-cut when they changed), and the
        lattice cut from rank 0's mirror (``state``) at the first step."""
        runs = [[tuple(r) for r in axis] for axis in msg["runs"]]
        if runs != [[tuple(r) for r in axis] for axis in self.decomp.runs]:
            self.set_decomposition(Decomposition.from_runs(self.shape, runs))
        if msg["scatter"]:
            self.scatter_lattice(state)
    def step(self, step: int, rows: np.ndarray, columns: dict, a_serum: float = 0.0):
        """Run step ``step`` on this rank's region (its lattice and fields in place:
        :meth:`fill_lattice`, :meth:`fill_fields`), given its T cells (``rows``: their rows in rank 0's
        sorted store; voxel indices global): the six phases, then recruitment at the vessel voxels of
        the box (recruits arrive with LFA-1 ``a_serum``) and the daughters of the box's T cells, as
        ``CellStep.finish`` does on one process; the box of the stepped lattice is kept (:meth:`keep_box`).
        Returns the rows and columns of the T cells that sat in the box, with global voxel indices, the
        new T cells' state columns, and the numbers recruited and born followed by :meth:`partials`
        (int64)."""
        s = self.store
        s.n = 0
        local = np.zeros(0, bool)
        if rows.shape[0]:
            s.append(**columns)
            # an engaged T cell's target is within one voxel of it, so inside the lattice region; a free
            # one's ``target`` is the stale value of its last synapse, never read: it stays global
            local = s.state == np.uint8(R.ENGAGED)
            s.target[local] = self._to_local(s.target[local])
        counts, offsets = sort_by_voxel_uid(s, self.dx_um, self.lregion.shape, fr=self.frame)
        if not np.array_equal(s.uid, columns["uid"]):  # a subsequence of a sorted store stays in order
            raise RuntimeError("MPI cell step: this rank's T cells came out of (voxel, uid) order")
        f = {n: self.fields[n].reshape(-1) if n in self.fields else self._dummy for n in RULE_FIELDS}
        vessel = self.lat.vessel.reshape(-1) if "vessel" in self.lattice_in else self._no_vessel
        run_phases(self.k, self.p, self.seed, np.int64(step), self.dims, self.lat, s, counts, offsets,
                   f["mg"], f["o2"], f["chemokine"], vessel, fr=self.frame)
        self.keep_box()
        n = s.n
        mine = _inside(s.voxel, self.lregion.shape, self.box_local)
        recruited = born = 0
        if self.recruits:
            recruited = recruit(self.k, self.backend, self.p, self.tc, self.seed, np.int64(step), self.dims,
                                self.frame, self._box_vessels(), np.float32(a_serum), offsets, counts, s,
                                self.lat.tumor.reshape(-1), f["chemokine"])
        if self.tc is not None:
            born = divide(self.backend, s, np.flatnonzero(((s.flags[:n] & R.FL_BORN) != 0) & mine))
        new = {c: np.ascontiguousarray(getattr(s, c)[n:]) for c in STATE_COLUMNS}
        out = {c: np.ascontiguousarray(getattr(s, c)[:n][mine]) for c in COLUMNS}
        for c in ("voxel", "prop"):  # voxel indices leave the rank as global ones
            out[c] = self._to_global(out[c])
        local = (local | ((s.flags[:n] & R.FL_ENGAGED) != 0))[mine]  # targets set here or converted above
        out["target"][local] = self._to_global(out["target"][local])
        return rows[mine], out, new, np.concatenate([np.array([recruited, born], np.int64), self.partials()])

    def _box_vessels(self):
        """The vessel voxels of this rank's box (after this step's pruning) as ascending indices of its
        region's arrays: where it recruits. Found anew each step (a box-sized scan, next to the phases'
        region-sized loops)."""
        z, y, x = np.nonzero(self.lat.vessel[self.box_local.slices])
        (oz, oy, ox), (ly, lx) = self.box_local.offset, self.lregion.shape[1:]
        return (((z + oz) * ly + (y + oy)) * lx + (x + ox)).astype(np.int64)

    # -- ranks > 0 --------------------------------------------------------------------------------
    def follow(self, msg: dict) -> None:
        """Receive this rank's T cells from rank 0, step its region, send its T cells and numbers back."""
        self.prepare(msg)
        comm = self.comm
        m = np.empty(1, np.int64)
        comm.recv(m, 0, _TAG)
        n = int(m[0])
        rows = _recv(comm, (n,), np.int64)
        columns = {c: _recv(comm, (n,) + shape, dt) for c, (dt, shape, _) in COLUMNS.items()}
        self.fill_lattice()
        self.fill_fields()
        t0 = time.perf_counter()
        out_rows, out_columns, new, made = self.step(int(msg["step"]), rows, columns, msg["a_serum"])
        comm.send(np.array([time.perf_counter() - t0, n], np.float64), 0, _TAG)
        comm.send(np.array([out_rows.shape[0], new["uid"].shape[0]], np.int64), 0, _TAG)
        comm.send(made, 0, _TAG)
        comm.send(out_rows, 0, _TAG)
        for c in COLUMNS:
            comm.send(out_columns[c], 0, _TAG)
        for c in STATE_COLUMNS:
            comm.send(new[c], 0, _TAG)


def _recv(comm, shape, dtype):
    return _recv_from(comm, 0, shape, dtype)


def _recv_from(comm, source, shape, dtype):
    buf = np.empty(shape, dtype)
    comm.recv(buf, source, _TAG)
    return buf


def plane_sites(tumor, box: Box, shape) -> np.ndarray:
    """The occupied lattice sites of ``tumor`` (the lattice over ``box``) per plane along z, y and x,
    at the box's offsets in vectors of the grid's lengths, concatenated (nz + ny + nx, int64): they
    add up over the boxes of a decomposition."""
    occupied = tumor != 0
    out = []
    for axis in range(3):
        v = np.zeros(shape[axis], np.int64)
        v[box.offset[axis]:box.stop[axis]] = occupied.sum(axis=tuple(a for a in range(3) if a != axis))
        out.append(v)
    return np.concatenate(out)


def cell_weights(tumor, tcell_voxel, shape, sites=None) -> list:
    """Per axis, the cell step's work along it: T cells (binned by voxel) plus occupied lattice sites
    in each plane — what the six phases loop over (``parallel.balance = "cells"``). ``sites``: the
    :func:`plane_sites` of the whole grid when the ranks hold the lattice (``tumor`` is then unread)."""
    if sites is None:
        sites = plane_sites(tumor, Box((0, 0, 0), tuple(shape)), shape)
    z, y, x = _zyx(tcell_voxel, shape)
    out, at = [], 0
    for axis, coord in enumerate((z, y, x)):
        planes = sites[at:at + shape[axis]].astype(np.float64)
        at += shape[axis]
        out.append(planes + np.bincount(coord, minlength=shape[axis]).astype(np.float64))
    return out


class DistributedCells:
    """Rank 0's cell operation: the single-process CellStep of ``sim``, its phases done by all ranks.

    The ranks hold the lattice from the first step on (each its box, :class:`CellWorker`), and rank 0
    its T cells: each step it sends every rank the T cells of its region and takes back those of its
    box, the new ones and the box's numbers (:meth:`CellWorker.partials`: event and code counts, plane
    sums), from which it finishes the step (``CellStep.count``), the recorder its row and the
    balance its weights. The mirror's lattice is then *stale* until :meth:`pull` gathers it (an
    infusion's placement, a frame, a checkpoint, the run's end, a hold over the tumour).

    The boxes of the cell step need not be the fields' (the results do not depend on the boxes): with
    ``parallel.balance = "cells"`` (default) the process grid is kept and the runs along each axis are
    re-cut every ``BALANCE_EVERY`` steps so that each holds an equal share of the T cells and tumour
    cells (:func:`cell_weights`), and the lattice moves from the old boxes to the new; with ``"even"``
    they are the fields' equal boxes. Per step it records each rank's T cells, its seconds in the
    phases, and rank 0's seconds of messages, in ``sim.perf_extra`` (the store's perf/)."""

    name = "cells"

    def __init__(self, sim, comm, fields_run, fields_op):
        self.inner = sim.cells
        self.comm, self.decomp = comm, fields_run.decomp
        self.fields_op = fields_op  # rank 0's DistributedFields: the fields live on the ranks
        self.balance = sim.config.parallel.balance
        self.worker = CellWorker(sim.config, comm, fields_run, has_vessel=sim.state.vessel is not None)
        self.stale = False  # whether the ranks' lattice is newer than the mirror's
        self.lattice_counts = None  # census.lattice_counts of the lattice after the last step (the recorder's)
        self._sites = None  # plane_sites of the lattice after the last step (the balance's)
        self._regions()

    def _regions(self) -> None:
        width = self.worker.width
        self.regions = [region(self.decomp, r, width) for r in range(self.comm.size)]  # T cells (lattice: the worker)

    def __getattr__(self, key):  # store, totals, last, columns(), ... of the single-process operation
        return getattr(self.__dict__["inner"], key)

    def pull(self, sim) -> None:
        """All ranks: the ranks' lattice gathered into the mirror when it is stale."""
        if self.stale:
            self.comm.bcast_json({"op": "lattice"})
            self.worker.gather_lattice(sim.state)
            self.stale = False

    def _rebalance(self, sim) -> None:
        st = sim.state
        weights = cell_weights(st.tumor, self.inner.store.voxel, st.shape, sites=self._sites if self.stale else None)
        runs = [balanced_runs(w, p) for w, p in zip(weights, self.decomp.ranks_zyx)]
        if runs != self.decomp.runs:
            self.decomp = Decomposition.from_runs(st.shape, runs)
            self._regions()

    def apply(self, sim) -> None:
        cs, st, comm, w = self.inner, sim.state, self.comm, self.worker
        self.fields_op.push_pending(sim)  # the fields the mirror changed (set-up, a bolus) before the rules read them
        t_start = time.perf_counter()
        if sim.schedule.infusions_due(st.step):
            self.pull(sim)  # the placement reads the whole lattice
        cs._infuse(sim)
        cs.index(sim)
        if self.balance == "cells" and st.step % BALANCE_EVERY == 0:
            self._rebalance(sim)
        a_serum = float(cs.serum_lfa1(sim)) if w.recruits else 0.0  # a float32, exact through JSON
        header = {"op": "cells", "step": int(st.step), "a_serum": a_serum, "scatter": w.own is None,
                  "runs": [[list(r) for r in axis] for axis in self.decomp.runs]}
        comm.bcast_json(header)
        lattice_before = w.lattice_bytes + w.field_bytes
        w.prepare(header, st)
        s = cs.store
        host = {c: getattr(s, c) for c in COLUMNS}  # numpy views (rank 0's mirror is on the CPU)
        moved = 0

        def send(a, r):
            nonlocal moved
            a = np.ascontiguousarray(a)
            comm.send(a, r, _TAG)
            moved += a.nbytes

        def recv(r, shape, dtype):
            nonlocal moved
            a = _recv_from(comm, r, shape, dtype)
            moved += a.nbytes
            return a

        mine = None
        for r, reg in enumerate(self.regions):
            rows = np.flatnonzero(_inside(host["voxel"], st.shape, reg)).astype(np.int64)
            columns = {c: host[c][rows] for c in COLUMNS}
            if r == 0:
                mine = (rows, columns)
                continue
            send(np.array([rows.shape[0]], np.int64), r)
            for a in (rows, *(columns[c] for c in COLUMNS)):
                send(a, r)
        w.fill_lattice()
        w.fill_fields(st.fields)
        rows, columns = mine
        t0 = time.perf_counter()
        results = [w.step(int(st.step), rows, columns, a_serum)]
        seconds = [time.perf_counter() - t0]
        n_made = results[0][3].shape[0]
        for r in range(1, comm.size):
            seconds.append(float(recv(r, (2,), np.float64)[0]))
            k, m = (int(v) for v in recv(r, (2,), np.int64))
            made = recv(r, (n_made,), np.int64)
            out_rows = recv(r, (k,), np.int64)
            out_columns = {c: recv(r, (k,) + COLUMNS[c][1], COLUMNS[c][0]) for c in COLUMNS}
            new = {c: recv(r, (m,) + COLUMNS[c][1], COLUMNS[c][0]) for c in STATE_COLUMNS}
            results.append((out_rows, out_columns, new, made))
        self.stale = True
        moved += w.lattice_bytes + w.field_bytes - lattice_before
        seen = np.zeros(s.n, np.int64)
        for out_rows, out_columns, _, _ in results:
            for c in COLUMNS:
                host[c][out_rows] = out_columns[c]
            np.add.at(seen, out_rows, 1)
        if s.n and not np.all(seen == 1):  # every T cell sits in exactly one box
            raise RuntimeError(f"MPI cell step: {int(np.sum(seen == 0))} T cells lost, "
                               f"{int(np.sum(seen > 1))} returned twice")
        perf = sim.perf_extra
        for r, (sec, (out_rows, *_)) in enumerate(zip(seconds, results)):
            perf[f"cells_s_r{r}"] = sec
            perf[f"tcells_r{r}"] = float(out_rows.shape[0])
        # rank 0's time in this operation beyond its own share of the phases: sorting, packing,
        # messages and waiting for the slowest rank
        perf["cells_rank0_other_s"] = time.perf_counter() - t_start - seconds[0]
        perf["cells_rank0_bytes"] = float(moved)  # sent and received by rank 0 this step
        self._finish(sim, results)

    def _finish(self, sim, results) -> None:
        """``CellStep.finish`` of the ranks' step: this step's counts from the ranks' numbers, then the
        recruits and daughters each rank made appended (rank by rank: the store's order is not the one
        process's, and need not be, as the next sort and every write put the T cells in a canonical
        order), then the uid checks."""
        cs, step = self.inner, np.int64(sim.state.step)
        made = np.sum([m for *_, m in results], axis=0)  # recruited, born, then CellWorker.partials
        n_ev, n_codes = len(LATTICE_EVENTS), len(LATTICE_CODES)
        cs.count(sim, lattice=made[2:2 + n_ev])
        self.lattice_counts = made[2 + n_ev:2 + n_ev + n_codes]
        self._sites = made[2 + n_ev + n_codes:]
        new = [n for _, _, n, _ in results if n["uid"].shape[0]]
        if new:
            check_new(np.concatenate([n["uid"] for n in new]))
            for n in new:
                cs.store.append(**n)
        cs.totals["tcells_recruited"] += int(made[0])
        cs.totals["tcells_born"] += int(made[1])
        cs.check_uids(step)
