"""The cell operation: one step of the tumour lattice and the T cells, phase by phase.

The phases (see :mod:`gpusim.agents.rules` for what each does) interleave the two populations —
T cells aim hits, the lattice gathers them and decides deaths, T cells read the deaths back — so
they form one operation; each phase is one loop of the backend's ``agents`` kernels
(``cpu_loops`` or ``cuda_loops``). Between phases the host only appends new agents (daughters,
recruits, infusions), whose uids come from their origin (DESIGN.md §2).

Order within a step: infusions due -> sort by (voxel, uid), dropping dead T cells, and write the
per-voxel counts (which the field step's T-cell uptake reads) -> A1 -> T1 -> T2 -> T3 -> A2 -> A3 ->
R -> append daughters and recruits. The field operation runs after this one.
"""

from __future__ import annotations

import logging

import numpy as np

from gpusim import rng
from gpusim.agents import params as P
from gpusim.agents import rules as R
from gpusim.agents.placement import place
from gpusim.agents.spatial_index import sort_by_voxel_uid, voxel_of, write_counts
from gpusim.agents.tcell_store import (TCellStore, check_unique, uid_daughter, uid_infused, uid_initial,
                                       uid_recruited)

log = logging.getLogger("gpusim")

#: steps between two full uid-uniqueness checks (new uids are checked among themselves every step)
UID_CHECK_EVERY = 64
#: occurrence numbers per infusion event in its uid (event index * this + occurrence)
_OCCURRENCES_PER_EVENT = 1 << 16


def active_box(tumor):
    """The box (z0, y0, x0, bz, by, bx) of int64 around every non-EMPTY voxel, grown by one voxel and
    clipped to the grid, or None when the lattice is empty. Every lattice event of a step happens in
    it: deaths and clearance at occupied voxels, divisions into their neighbours, pruning of vessels
    next to necrosis; outside it the lattice rules would change nothing."""
    occupied = tumor != R.EMPTY
    spans = []
    for axes in ((1, 2), (0, 2), (0, 1)):
        idx = occupied.any(axis=axes).nonzero()[0]
        if idx.shape[0] == 0:
            return None
        spans.append((int(idx[0]), int(idx[-1])))
    lo = [max(a - 1, 0) for a, _ in spans]
    hi = [min(b + 2, n) for (_, b), n in zip(spans, tumor.shape)]
    return tuple(np.int64(v) for v in (*lo, *(h - l for l, h in zip(lo, hi))))


def run_phases(k, p, seed, step, dims, st, s, counts, offsets, mg, o2, chem, vessel, fr=None) -> None:
    """Phases A1 -> T1 -> T2 -> T3 -> A2 -> A3 of one step on lattice ``st`` and T-cell store ``s``,
    indexed by ``counts``/``offsets`` (the sort by (voxel, uid) of this step); ``k`` is the backend's
    ``agents`` kernels, ``dims`` the arrays' (nz, ny, nx) as int64 and ``mg``/``o2``/``chem``/``vessel``
    flat arrays (a dummy where absent); ``fr``: the arrays' frame in the global grid (default: they
    hold the whole grid; see the comment above ``rules.global_voxel``). Every read is a gather over at
    most the 27 voxels around a voxel or an agent, keyed by global voxel index and uid, so a rank
    holding only part of the lattice and of the T cells gets this phase's exact results where its
    data reach far enough (gpusim.parallel.cells)."""
    nz, ny, nx = dims
    fr = R.whole_frame(nz, ny, nx) if fr is None else fr
    n = np.int64(s.n)
    tumor = st.tumor.reshape(-1)
    damage, last_hit, since = st.damage.reshape(-1), st.last_hit.reshape(-1), st.since.reshape(-1)
    event, div_dir, n_tumor = st.tumor_event.reshape(-1), st.div_dir.reshape(-1), st.n_tumor.reshape(-1)
    hit_mark = st.hit_mark.reshape(-1)
    k.sense(n, seed, step, p, s.uid, s.state, s.voxel, s.lfa1, s.function, s.target, s.hit, s.flags, s.prop,
            s.timer_min, s.div_timer, hit_mark, mg)
    event[...] = 0
    box = active_box(st.tumor)
    if box is not None:  # targets are LIVE, so inside the box: T1 clears every mark A1 set
        k.tumor_fate(box, fr, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, offsets,
                     s.state, s.target, s.hit, hit_mark, o2)
        k.tumor_propose(box, fr, seed, step, p, nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg)
        k.tumor_claim(box, fr, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, vessel, div_dir,
                      n_tumor)
    k.respond(n, seed, step, p, nz, ny, nx, fr, offsets, s.uid, s.state, s.voxel, s.pos_um, s.dir, s.lfa1,
              s.function, s.target, s.timer_min, s.kills, s.div_timer, s.hit, s.flags, s.prop, s.prio,
              s.pos_new, tumor, event, chem)
    k.accept(n, seed, step, p, nz, ny, nx, offsets, counts, s.uid, s.state, s.voxel, s.pos_um,
             s.div_timer, s.flags, s.prop, s.prio, s.pos_new, tumor)


#: the lattice's per-step event counts (:func:`lattice_events`), in their order
LATTICE_EVENTS = ("killed", "born", "lost", "pruned")


def lattice_events(xp, event) -> np.ndarray:
    """This step's lattice event counts (:data:`LATTICE_EVENTS`, int64) in ``event`` (the
    ``tumor_event`` bits of the whole lattice, or of an MPI rank's box: they add up)."""
    return np.array([int(xp.count_nonzero(event & bits)) for bits in
                     (R.EV_KILLED, R.EV_BORN, R.EV_KILLED | R.EV_NECROSIS | R.EV_APOPTOSIS, R.EV_PRUNED)], np.int64)


#: the T cells' per-step event counts (:func:`tcell_events`), in their order
TCELL_EVENTS = ("engaged", "kills")


def tcell_events(xp, flags) -> np.ndarray:
    """This step's T-cell event counts (:data:`TCELL_EVENTS`, int64) in the store's ``flags`` (the
    whole store's, or an MPI rank's own T cells': they add up)."""
    return np.array([int(xp.count_nonzero(flags & bits)) for bits in (R.FL_ENGAGED, R.FL_KILL)], np.int64)


def check_new(uids) -> None:
    """New uids must be distinct among themselves; against the whole store they are checked every
    ``UID_CHECK_EVERY`` steps (a full check hashes every uid: too dear for every step)."""
    check_unique(np.atleast_1d(np.asarray(uids, np.uint64)))


def recruit(k, backend, p, tc, seed, step, dims, fr, vessels, a_serum, offsets, counts, s, tumor, chem) -> int:
    """R: recruitment at the vessel voxels ``vessels`` (indices of the arrays of frame ``fr``, whose
    shape is ``dims``), each recruit appended to store ``s`` (indexed by ``counts``/``offsets``) with
    LFA-1 ``a_serum`` (A* of the serum Mg) and a uid from its global voxel and the step; returns the
    number recruited. One process passes the whole grid; an MPI rank its region and the vessels of
    its box (gpusim.parallel.cells)."""
    m = int(vessels.shape[0])
    if m == 0:
        return 0
    xp = backend.xp
    scale = np.float32(tc.recruit_per_vessel_per_min) * (a_serum if tc.recruit_scales_with_serum_mg else np.float32(1.0))
    out_pos = xp.empty((m, 3), xp.float32)
    out_flag = xp.empty(m, xp.uint8)
    nz, ny, nx = dims
    k.recruit(np.int64(m), seed, step, p, nz, ny, nx, fr, vessels, np.float32(scale),
              np.float32(tc.recruit_chemokine_half_nM), offsets, counts, s.voxel, s.flags, s.prop, tumor, chem,
              out_pos, out_flag)
    idx = xp.flatnonzero(out_flag)
    if idx.shape[0] == 0:
        return 0
    z, y, x = (int(v) for v in fr[:3])
    gz, gy, gx = (int(v) for v in fr[3:])
    local = backend.to_host(vessels[idx])
    lz, ly, lx = local // (int(ny) * int(nx)), (local // int(nx)) % int(ny), local % int(nx)
    voxels = ((lz + z) * gy + (ly + y)) * gx + (lx + x)  # the global voxel names the recruit
    uids = np.atleast_1d(uid_recruited(voxels, int(step), 0))
    check_new(uids)
    s.append(pos_um=out_pos[idx], uid=backend.asarray(uids, np.uint64),
             lfa1=xp.full(idx.shape[0], np.float32(a_serum), dtype=xp.float32))
    return int(idx.shape[0])


def divide(backend, s, rows) -> int:
    """The daughters of the T cells at ``rows`` of store ``s`` (those whose division fired,
    ``FL_BORN``) appended, each with its parent's position, direction, LFA-1 and function and a uid
    from the parent's uid and birth count, which goes up by one; returns their number."""
    if rows.shape[0] == 0:
        return 0
    host = backend.to_host  # small gathers of the dividing rows
    uids = np.atleast_1d(uid_daughter(host(s.uid[rows]), host(s.births[rows]).astype(np.int64)))
    pos, direction = s.pos_um[rows].copy(), s.dir[rows].copy()
    lfa1, function = s.lfa1[rows].copy(), s.function[rows].copy()
    s.births[rows] = s.births[rows] + np.uint16(1)
    check_new(uids)
    s.append(pos_um=pos, uid=backend.asarray(uids, np.uint64), dir=direction, lfa1=lfa1, function=function)
    return int(rows.shape[0])


class CellStep:
    """Operation advancing the tumour lattice and the T cells by one step."""

    name = "cells"

    def __init__(self, sim):
        cfg, st, be = sim.config, sim.state, sim.backend
        self.cfg = cfg
        self.backend = be
        self.k = be.kernels("agents")
        self.p_host = P.build(cfg)
        self.p = be.asarray(self.p_host)
        self.seed = np.uint64(cfg.seed)
        nz, ny, nx = st.shape
        self.nvox = nz * ny * nx
        self.dims = (np.int64(nz), np.int64(ny), np.int64(nx))
        xp = be.xp
        self._dummy = xp.zeros(1, xp.float32)
        self._no_vessel = xp.zeros(self.nvox, xp.uint8) if st.vessel is None else None
        self.store = TCellStore(be, capacity=max(1024, 2 * (cfg.tcells.initial_count if cfg.tcells else 0)))
        self.counts = xp.zeros(self.nvox, xp.int32)
        self.offsets = xp.zeros(self.nvox + 1, xp.int64)
        self._vessel_list = None
        self.totals = {"engagements": 0, "kills": 0, "tumor_births": 0, "tumor_deaths": 0,
                       "tcells_recruited": 0, "tcells_born": 0, "tcells_infused": 0, "tcells_died": 0}
        self.last = {}

    # -- set-up ---------------------------------------------------------------------------------
    def place_initial(self, sim) -> None:
        """Place ``tcells.initial_count`` T cells (uids from their index) and build the index."""
        tc = self.cfg.tcells
        if tc is None or tc.initial_count == 0:
            self.index(sim)
            return
        pos = self._place(sim, tc.initial_count, tc.placement, tc.shell_um, salt=0,
                          purpose=rng.PURPOSE_PLACEMENT, what="tcells.initial_count")
        uids = uid_initial(np.arange(pos.shape[0], dtype=np.int64))
        self._append(pos, uids, self.serum_lfa1(sim))
        check_unique(self.store.uid)
        self.index(sim)

    def _place(self, sim, count, placement, shell_um, salt, purpose, what):
        st = sim.state
        tumor = self.backend.to_host(st.tumor)
        vessel = None if st.vessel is None else self.backend.to_host(st.vessel)
        occupancy = np.zeros(self.nvox, np.int64)
        if self.store.n:
            alive = self.backend.to_host(self.store.state) != R.TDEAD
            vox = voxel_of(self.backend.to_host(self.store.pos_um)[alive], st.dx_um, st.shape)
            occupancy = np.bincount(vox, minlength=self.nvox)
        return place(count, placement, shell_um, tumor, vessel, occupancy, int(self.p_host[P.CAP]),
                     int(self.p_host[P.CAP_T]), st.dx_um, self.cfg.seed, rng.STREAM_EVENTS if salt else rng.STREAM_SETUP,
                     salt, purpose, what)

    def _append(self, pos, uids, lfa1, **extra):
        if pos.shape[0] == 0:
            return
        xp = self.backend.xp
        self.store.append(pos_um=self.backend.asarray(pos, np.float32), uid=self.backend.asarray(uids, np.uint64),
                          lfa1=xp.full(pos.shape[0], np.float32(lfa1), dtype=xp.float32), **extra)

    def serum_lfa1(self, sim) -> np.float32:
        """A*(current serum Mg): the LFA-1 state of T cells arriving from the blood."""
        plan = sim.field_update.plans.get("mg")
        serum = np.float32(plan.serum if plan is not None else 0.0)
        return R.lfa1_target(serum, self.p_host)

    # -- the step -------------------------------------------------------------------------------
    def index(self, sim) -> None:
        """Sort by (voxel, uid) dropping dead T cells; write per-voxel counts into ``state.n_tcell``."""
        self.counts, self.offsets = sort_by_voxel_uid(self.store, sim.state.dx_um, sim.state.shape, drop_dead=True)
        self.totals["tcells_died"] += self.store.removed
        if sim.state.n_tcell is not None:
            write_counts(self.counts, sim.state.n_tcell)

    def _field(self, sim, name):
        f = sim.state.fields.get(name)
        return self._dummy if f is None else f.reshape(-1)

    def _vessels(self, sim):
        st = sim.state
        if st.vessel is None:
            return self._no_vessel
        return st.vessel.reshape(-1)

    def apply(self, sim) -> None:
        self._infuse(sim)
        self.index(sim)
        st, s = sim.state, self.store
        run_phases(self.k, self.p, self.seed, np.int64(st.step), self.dims, st, s, self.counts, self.offsets,
                   self._field(sim, "mg"), self._field(sim, "o2"), self._field(sim, "chemokine"), self._vessels(sim))
        self.finish(sim)

    def finish(self, sim) -> None:
        """The end of a step after the phases: this step's counts, recruitment at vessels, daughters
        appended, and the periodic uid check (the host part; under MPI each rank recruits at the
        vessels of its box and divides its own T cells, gpusim.parallel.cells)."""
        st = sim.state
        step = np.int64(st.step)
        self.count(sim)
        if self.cfg.tcells is not None:
            self._recruit(sim, step, st.tumor.reshape(-1), self._field(sim, "chemokine"))
            self._divide()
        self.check_uids(step)

    def check_uids(self, step) -> None:
        """Every ``UID_CHECK_EVERY`` steps: the whole store's uids must be distinct."""
        if step % UID_CHECK_EVERY == 0 and self.store.n:
            check_unique(self.store.uid)

    def count(self, sim, lattice=None, tcells=None) -> None:
        """This step's counts (``last``) and their running totals: engagements and kills from the
        store's flags (:func:`tcell_events`), tumour births and deaths and vessel pruning from the
        lattice's events (:func:`lattice_events`); ``lattice``, ``tcells``: those of the MPI ranks'
        boxes and T cells, summed, in place of the whole lattice's and store's."""
        xp = self.backend.xp
        if lattice is None:
            lattice = lattice_events(xp, sim.state.tumor_event)
        if tcells is None:
            tcells = tcell_events(xp, self.store.flags)
        ev = {**{name: int(v) for name, v in zip(TCELL_EVENTS, tcells)},
              **{name: int(v) for name, v in zip(LATTICE_EVENTS, lattice)}}
        self.totals["engagements"] += ev["engaged"]
        self.totals["kills"] += ev["kills"]
        self.totals["tumor_births"] += ev["born"]
        self.totals["tumor_deaths"] += ev["lost"]
        if ev["pruned"]:
            self._vessel_list = None
        self.last = ev

    def recruits(self) -> bool:
        """Whether this run recruits T cells at vessels (a rate above zero and a vessel mask)."""
        tc = self.cfg.tcells
        return tc is not None and tc.recruit_per_vessel_per_min > 0 and self._no_vessel is None

    def _recruit(self, sim, step, tumor, chem) -> None:
        if not self.recruits():
            return
        xp = self.backend.xp
        if self._vessel_list is None:
            self._vessel_list = xp.flatnonzero(sim.state.vessel.reshape(-1)).astype(xp.int64)
        a_serum = self.serum_lfa1(sim)
        nz, ny, nx = self.dims
        self.totals["tcells_recruited"] += recruit(self.k, self.backend, self.p, self.cfg.tcells, self.seed, step,
                                                   self.dims, R.whole_frame(nz, ny, nx), self._vessel_list, a_serum,
                                                   self.offsets, self.counts, self.store, tumor, chem)

    def _divide(self) -> None:
        s = self.store
        self.totals["tcells_born"] += divide(self.backend, s, self.backend.xp.flatnonzero(s.flags & R.FL_BORN))

    def infusions_due(self, sim) -> list:
        """This step's T-cell infusions: ``(salt, event)`` per occurrence due (the salt makes each
        occurrence's placement draw differently; ``salt - 1`` numbers its uids)."""
        return [(index * _OCCURRENCES_PER_EVENT + occurrence + 1, ev)
                for index, occurrence, ev in sim.schedule.infusions_due(sim.state.step)]

    def infused(self, sim, ev, placed: int) -> None:
        """Count and log ``placed`` T cells of infusion ``ev`` (one process, or all MPI ranks together)."""
        self.totals["tcells_infused"] += int(placed)
        log.info("t = %g min: %s infused %d T cells (%s)", sim.state.time_min, ev.name, placed, ev.placement)

    def _infuse(self, sim) -> None:
        for salt, ev in self.infusions_due(sim):
            pos = self._place(sim, ev.count, ev.placement, ev.shell_um, salt=salt,
                              purpose=rng.PURPOSE_INFUSION, what=f"events.{ev.name}")
            uids = uid_infused(np.full(pos.shape[0], salt - 1, np.int64), np.arange(pos.shape[0], dtype=np.int64))
            check_new(uids)
            self._append(pos, np.atleast_1d(uids), self.serum_lfa1(sim))
            self.infused(sim, ev, pos.shape[0])

    # -- what a run exposes ---------------------------------------------------------------------
    def step_events(self, sim):
        """The events table's rows of the step just done (``io.layout.event_rows``), or None."""
        from gpusim.io.layout import event_rows

        return event_rows(self.store, self.backend.xp, self.backend.to_host, int(sim.state.step))

    def columns(self, sim, mg_tumor=None, counts=None) -> dict:
        """This step's timeseries values of the cells (gpusim.census: exact integer or fixed-point
        reductions, the rule the MPI ranks share). ``mg_tumor``: Mg's (mean, min) over the live
        tumour when the caller has it (an MPI run combines it over the ranks that hold Mg);
        ``counts``: the ``census.cell_counts`` of the whole run when the MPI ranks hold its parts."""
        from gpusim import census

        st, xp = sim.state, self.backend.xp
        exhausted_below = self.cfg.tcells.exhausted_below if self.cfg.tcells is not None else None
        if counts is None:
            counts = census.cell_counts(xp, self.store, st.tumor, exhausted_below)
        if mg_tumor is None and "mg" in st.fields:
            n_live = int(counts[census.CELL_COUNTS.index("tumor_live")])
            mg_tumor = census.mg_tumor(self.backend.kernels("reduce"), xp, st.fields["mg"], st.n_tumor, st.n_voxels,
                                       n_live)
        return census.cell_columns(counts, self.totals, mg_tumor)


def summarize(ts: dict) -> dict:
    """Outcome numbers of a run from its timeseries: final tumour and T-cell counts, kills, kills per
    T cell (cumulative kills ÷ the time-averaged T-cell count) and per T cell per day, mean LFA-1."""
    if "tumor_live" not in ts or len(ts["tumor_live"]) == 0:
        return {}
    minutes = float(ts["time_min"][-1])
    mean_tcells = float(np.mean(ts["tcells"])) if len(ts["tcells"]) else 0.0
    kills = int(ts["kills"][-1])
    per_tcell = kills / mean_tcells if mean_tcells > 0 else float("nan")
    out = {
        "tumor_live": int(ts["tumor_live"][-1]), "tumor_dead": int(ts["tumor_dead"][-1]),
        "tumor_necrotic": int(ts["tumor_necrotic"][-1]),
        "tcells": int(ts["tcells"][-1]), "tcells_engaged": int(ts["tcells_engaged"][-1]),
        "tcells_free": int(ts["tcells"][-1]) - int(ts["tcells_engaged"][-1]),
        "tcells_exhausted": int(ts["tcells_exhausted"][-1]),
        "engagements": int(ts["engagements"][-1]), "kills": kills,
        "kills_per_tcell": per_tcell,
        "kills_per_tcell_per_day": per_tcell * 1440.0 / minutes if minutes > 0 else float("nan"),
        "lfa1_mean": float(ts["lfa1_mean"][-1]),
    }
    if "mg_tumor_mean_mM" in ts:
        out["mg_tumor_mean_mM"] = float(ts["mg_tumor_mean_mM"][-1])
    return out
