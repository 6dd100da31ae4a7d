"""The tumour lattice and the T cells stepped box by box on N ranks, bitwise equal to one process.

The ranks hold the lattice and the T cells from the first step on: each rank its box of the lattice
and the T cells whose voxel lies in its box (rank 0's mirror, gpusim.parallel.run, is only gathered
when it is read whole). Each step every rank

1. sends its T cells that left its box to their new owners (``parallel.migrate.migrate``, the dead
   dropped) and receives copies of the others' T cells within ``CELL_GHOST`` voxels of its box
   (``ghosts``): the T cells of its *region*, its box grown by that width, clipped to the grid;
2. fills the lattice one voxel further out (so every engaged T cell's target is there) and the
   fields over that lattice region from the ranks that hold them (``parallel.regions``);
3. sorts its region's T cells by (voxel, uid) (the counts over its box are the field step's
   ``n_tcell``) and runs the six phases of the single-process step
   (:func:`gpusim.agents.cells.run_phases`, the same kernels) on arrays of that size, whose *frame*
   places them in the global grid, then recruits at the vessel voxels of its box and divides its
   own T cells (``agents.cells.recruit``, ``divide``);
4. keeps its box of the lattice and the T cells that sat in its box with the new ones, and sends
   rank 0 only its :class:`Partials` (integer counts and plane sums that add up over the ranks) and
   its event rows, from which rank 0 finishes the step (counts, totals, the timeseries row).

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

Infusions are placed by the ranks into their boxes after the step's migration
(``parallel.placement``: the one-process placement's T cells with its uid numbers); uids are
checked for duplicates on each rank every ``UID_CHECK_EVERY`` steps (a uid made twice sits where its
original does, so on the same rank; new uids are made distinct by their origin). A gathered mirror
store is in rank order, not one process's; nothing reads that order: the next sort orders by
(voxel, uid), and snapshots and checkpoints by uid.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..agents import params as P
from ..agents import rules as R
from ..agents.cells import (LATTICE_EVENTS, TCELL_EVENTS, UID_CHECK_EVERY, divide, lattice_events, recruit,
                            run_phases, tcell_events)
from ..agents.spatial_index import sort_by_voxel_uid
from ..agents.tcell_store import COLUMNS, STATE_COLUMNS, TCellStore, check_unique
from ..backend import select_backend
from ..census import CELL_COUNTS, LATTICE_CODES, cell_counts, lattice_counts
from ..io.layout import EVENT_COLUMNS
from .decomposition import Box, Decomposition, region
from .migrate import Traffic, ghosts, migrate, pack, row_bytes, unpack, voxel_coords
from .placement import infuse
from .regions import Regions

__all__ = ["CELL_GHOST", "CellWorker", "Partials", "plane_sites", "plane_tcells", "region"]

#: voxels of region around a rank's box: the depth of the phases' dependency chain (module docstring)
CELL_GHOST = 6
#: one voxel more where T cells are recruited: a vessel voxel's occupancy after the moves reads the
#: proposals, after A3, of the T cells within one voxel of it
RECRUIT_GHOST = 1
#: the lattice arrays a rank receives (over its region) and returns (over its box)
LATTICE_IN = ("tumor", "damage", "last_hit", "since", "div_dir", "n_tumor", "hit_mark")
LATTICE_OUT = LATTICE_IN + ("tumor_event",)
#: the substrates the rules read (a dummy where the config has none)
RULE_FIELDS = ("mg", "o2", "chemokine")
_TAG = 400
#: the tag of what each rank sends rank 0 after its cell step (:meth:`CellWorker.follow`, read by
#: ``parallel.cell_op.DistributedCells``)
PARTIALS_TAG = _TAG


def ghost_width(recruits: bool = False) -> int:
    """``CELL_GHOST`` (plus ``RECRUIT_GHOST`` when the ranks recruit T cells), or the test hook
    ``GPUSIM_TEST_CELL_GHOST`` (a test narrows it to show that the bitwise comparison catches a
    region too small)."""
    return int(os.environ.get("GPUSIM_TEST_CELL_GHOST", CELL_GHOST + (RECRUIT_GHOST if recruits else 0)))


def recruits(cfg, has_vessel: bool) -> bool:
    """Whether the cell step recruits T cells at vessels (``CellStep.recruits`` of the same config)."""
    return cfg.tcells is not None and cfg.tcells.recruit_per_vessel_per_min > 0 and has_vessel


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
           "n_tumor": np.uint8, "hit_mark": np.uint8, "tumor_event": np.uint8, "vessel": np.uint8,
           "n_tcell": np.uint8}


class Partials:
    """The numbers each rank sends rank 0 after its cell step, as one int64 vector: they add up over
    the ranks, and their sum is what one process computes over the whole grid and store. ``made``:
    recruited, born; ``events``: ``agents.cells.lattice_events``; ``codes``: ``census.lattice_counts``;
    ``sites``: :func:`plane_sites`; ``died``: dead T cells dropped; ``flags``:
    ``agents.cells.tcell_events``; ``census``: ``census.cell_counts`` of the T cells (lattice entries
    0); ``planes``: :func:`plane_tcells` of the living T cells (the next balance's); ``rows``: T cells
    before and after the migration (the conservation check)."""

    def __init__(self, shape):
        planes = int(sum(shape))
        self.parts = (("made", 2), ("events", len(LATTICE_EVENTS)), ("codes", len(LATTICE_CODES)),
                      ("sites", planes), ("died", 1), ("flags", len(TCELL_EVENTS)), ("census", len(CELL_COUNTS)),
                      ("planes", planes), ("rows", 2))
        self.size = sum(n for _, n in self.parts)

    def pack(self, **values) -> np.ndarray:
        out = np.concatenate([np.asarray(values[name], np.int64).reshape(-1) for name, _ in self.parts])
        if out.shape[0] != self.size:
            raise ValueError(f"cell-step partials of length {out.shape[0]}; expected {self.size}")
        return out

    def unpack(self, vec) -> dict:
        out, at = {}, 0
        for name, n in self.parts:
            out[name] = np.asarray(vec[at:at + n], np.int64)
            at += n
        return out


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

    #: the arrays of the boxes the field step reads (``BoxFieldRun.lattice``)
    OPERANDS = ("vessel", "n_tumor", "n_tcell")

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
        self.store = TCellStore(self.backend, capacity=1024)  # the step's region
        self.tcells = TCellStore(self.backend, capacity=1024)  # this rank's own T cells between steps
        self.traffic = Traffic()  # what this rank sent and received in migrations and ghost exchanges
        self.placed = []  # the last step's infusions: T cells placed on all ranks, one number each
        self.gathered_bytes = 0  # rank 0: T cells and lattice gathered into the mirror (gather_tcells, gather_lattice)
        # the arrays of the box it keeps: the lattice, and the T cells per voxel at the sort (n_tcell)
        self.owned = self.lattice_out + (("n_tcell",) if cfg.tcells is not None else ())
        self.own = None  # this rank's box of the ``owned`` arrays, from scatter_lattice on
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
                    for n in self.owned}
        self.fields_run.lattice = self

    def gather_lattice(self, state=None) -> None:
        """Every rank: the boxes of the lattice gathered into rank 0's mirror (``state``; None elsewhere)."""
        move = Regions.gather(self.comm, self.decomp.boxes(), self.shape)
        before = self.lattice_bytes
        for name in self.owned:
            self._count(move, move.fill(self.own[name], out=None if state is None else getattr(state, name)))
        if self.comm.rank == 0:
            self.gathered_bytes += self.lattice_bytes - before

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
    def step(self, step: int, columns: dict, a_serum: float = 0.0):
        """Run step ``step`` on this rank's region (its lattice and fields in place:
        :meth:`fill_lattice`, :meth:`fill_fields`), given the T cells of its region (``columns``: own
        ones and ghosts, in any order; voxel indices global): the sort by (voxel, uid), whose counts
        over the box are the field step's ``n_tcell``, the six phases, then recruitment at the vessel
        voxels of the box (recruits arrive with LFA-1 ``a_serum``) and the daughters of the box's T
        cells, as ``CellStep.finish`` does on one process; the box of the stepped lattice is kept
        (:meth:`keep_box`). Returns the columns of the T cells that sat in the box, with global voxel
        indices, the new T cells' state columns, and the numbers recruited and born."""
        s = self.store
        s.n = 0
        if columns["uid"].shape[0]:
            s.append(**columns)
            # an engaged T cell's target is within one voxel of it, so inside the lattice region; a free
            # one's ``target`` is the stale value of its last synapse, never read: it stays global
            engaged = s.state == np.uint8(R.ENGAGED)
            s.target[engaged] = self._to_local(s.target[engaged])
        counts, offsets = sort_by_voxel_uid(s, self.dx_um, self.lregion.shape, fr=self.frame)
        local = s.state == np.uint8(R.ENGAGED)  # the rows converted above, in the sort's order
        if "n_tcell" in self.own:  # the region's sort holds every T cell of the box: the box's counts
            box_counts = counts.reshape(self.lregion.shape)[self.box_local.slices]
            self.own["n_tcell"][...] = box_counts.clip(0, 255).astype(np.uint8)
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
        return out, new, (recruited, born)

    def run_step(self, msg: dict, sim=None):
        """Every rank: cell step ``msg["step"]`` (rank 0's header; ``sim``: rank 0's mirror, None
        elsewhere). Its own T cells (all of them on rank 0 at the first step, which rank 0's mirror
        holds then) go to their owners (``migrate``, the dead dropped), the step's infusions
        (``msg["infusions"]``) are placed into the boxes (``parallel.placement.infuse``), the
        others' T cells within ``width`` of its box come as ghosts (``ghosts``), its region is stepped
        (:meth:`step`), and it keeps the T cells of its box and its new ones. Returns its
        :class:`Partials` vector, seconds in the phases, and the step's event rows (``msg["events"]``) or None."""
        from ..io.layout import event_rows

        step = int(msg["step"])
        self.prepare(msg, None if sim is None else sim.state)
        if msg["scatter"]:
            self.tcells.n = 0
            if sim is not None:
                self.tcells.append(**{c: getattr(sim.cells.store, c) for c in STATE_COLUMNS})
        t = self.tcells
        before, died = t.n, int(np.count_nonzero(t.state == np.uint8(R.TDEAD)))
        own = migrate(self.comm, self.decomp, {c: getattr(t, c) for c in STATE_COLUMNS}, self.dx_um,
                      drop_dead=True, traffic=self.traffic)
        self.placed = []  # each infusion's T cells on all ranks (rank 0 counts them)
        for infusion in msg["infusions"]:  # placed where they land, by the ranks holding the boxes
            n = own["uid"].shape[0]
            own, placed = infuse(self, infusion, own)
            before += own["uid"].shape[0] - n
            self.placed.append(placed)
        halo = ghosts(self.comm, self.decomp, own, self.width, self.dx_um, traffic=self.traffic)
        kept = own["uid"].shape[0]
        self.fill_lattice()
        self.fill_fields(None if sim is None else sim.state.fields)
        t0 = time.perf_counter()
        out, new, made = self.step(step, {c: np.concatenate([own[c], halo[c]]) for c in STATE_COLUMNS},
                                   msg["a_serum"])
        seconds = time.perf_counter() - t0
        flags = tcell_events(np, out["flags"])  # before the new T cells, as CellStep.count
        t.n = 0
        t.append(**out)
        if new["uid"].shape[0]:
            t.append(**new)
        if step % UID_CHECK_EVERY == 0 and t.n:
            check_unique(t.uid)  # a copy made twice sits where the original does, on the same rank
        exhausted = self.tc.exhausted_below if self.tc is not None else None
        alive = t.state != np.uint8(R.TDEAD)
        z, y, x = voxel_coords(t.pos_um[alive], self.dx_um, self.shape)
        parts = Partials(self.shape)
        vec = parts.pack(made=made, events=lattice_events(np, self.own["tumor_event"]),
                         codes=lattice_counts(np, self.own["tumor"]),
                         sites=plane_sites(self.own["tumor"], self.box, self.shape), died=[died],
                         flags=flags, census=cell_counts(np, t, None, exhausted),
                         planes=plane_tcells(z, y, x, self.shape), rows=[before, kept])
        events = event_rows(t, np, np.asarray, step) if msg["events"] else None
        return vec, seconds, events

    def _box_vessels(self):
        """The vessel voxels of this rank's box (after this step's pruning) as ascending indices of its
        region's arrays: where it recruits. Found anew each step (a box-sized scan, next to the phases'
        region-sized loops)."""
        z, y, x = np.nonzero(self.lat.vessel[self.box_local.slices])
        (oz, oy, ox), (ly, lx) = self.box_local.offset, self.lregion.shape[1:]
        return (((z + oz) * ly + (y + oy)) * lx + (x + ox)).astype(np.int64)

    # -- ranks > 0 --------------------------------------------------------------------------------
    def follow(self, msg: dict) -> None:
        """Step this rank's region and send rank 0 its numbers (and event rows)."""
        vec, seconds, events = self.run_step(msg)
        comm = self.comm
        comm.send(np.array([seconds], np.float64), 0, _TAG)
        comm.send(vec, 0, _TAG)
        if msg["events"]:
            n = 0 if events is None else events["step"].shape[0]
            comm.send(np.array([n], np.int64), 0, _TAG)
            if n:
                for c in EVENT_COLUMNS:
                    comm.send(np.ascontiguousarray(events[c]), 0, _TAG)

    def gather_tcells(self, store=None) -> None:
        """Every rank: its own T cells (state columns) sent to rank 0, which puts them all, rank by
        rank, into the mirror's ``store`` (None elsewhere)."""
        comm, t = self.comm, self.tcells
        if comm.rank != 0:
            comm.send(np.array([t.n], np.int64), 0, _TAG + 1)
            if t.n:
                comm.send(pack({c: getattr(t, c) for c in STATE_COLUMNS}, names=STATE_COLUMNS), 0, _TAG + 1)
            return
        store.n = 0
        store.append(**{c: getattr(t, c) for c in STATE_COLUMNS})
        rb = row_bytes(STATE_COLUMNS)
        for r in range(1, comm.size):
            m = np.empty(1, np.int64)
            comm.recv(m, r, _TAG + 1)
            if m[0]:
                buf = np.empty(int(m[0]) * rb, np.uint8)
                comm.recv(buf, r, _TAG + 1)
                self.gathered_bytes += buf.nbytes
                store.append(**unpack(buf, int(m[0]), STATE_COLUMNS))


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


def plane_tcells(z, y, x, shape) -> np.ndarray:
    """T cells at voxels (z, y, x) per plane along z, y and x, concatenated (nz + ny + nx, int64):
    they add up over the ranks' T cells."""
    return np.concatenate([np.bincount(c, minlength=n).astype(np.int64) for c, n in zip((z, y, x), shape)])
