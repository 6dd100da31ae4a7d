"""``mpiexec -n N gpusim run CONFIG`` (and ``gpusim resume STORE``): a run whose field, lattice and
T-cell arithmetic is done box by box on N ranks, with the store, timeseries, checkpoints and progress
of the single-process code on rank 0.

Rank 0 holds a whole-grid *mirror* Simulation whose field, cell, event and record operations are
replaced by :class:`DistributedFields`, :class:`~gpusim.parallel.cell_op.DistributedCells`,
:class:`DistributedEvents` and :class:`DistributedRecorder`. Every step each of them broadcasts what
it is about to do and all ranks do their part; the mirror's writer and checkpointer then run
unchanged, handing the frames, T-cell rows and checkpoints to the ranks that hold the data. The store
and the timeseries are therefore those of the single-process run, bit for bit, and a checkpoint (the
one-process slot) resumes on any number of ranks, one included.

Where the state lives (docs/owned_state.md is the design of the rest):

- The fields live on the ranks (``BoxFieldRun.held``): the stepped substrates (explicit, LOD) in the
  layout their kernels read, the steady ones on the boxes, from the first step on. Rank 0 sends the
  serum values; the ranks apply boluses, holds and implant sources over their boxes
  (``parallel.events``); the cell step
  reads the fields over its regions straight from the ranks that hold them (``parallel.regions``);
  the timeseries statistics are combined over the ranks (``gpusim.census``). The mirror's copy is
  gathered only when something reads it whole (``Simulation.synchronize_state``): a bolus or hold on a
  field rank 0 solves alone.
- Steady substrates (O₂'s multigrid solve) are re-solved by all ranks when due (``"steady"``: rank 0
  sends each rank its box of the operands, the ranks run :mod:`gpusim.parallel.steady` from the field
  they hold, bitwise the one-process solve, and keep the solution; the mirror's
  ``FieldUpdate.steady_if_due`` decides when, records the ``SteadyInfo`` and warns on
  non-convergence). ``init = "steady"`` at set-up is solved by all ranks from the mirror's fields,
  gathered back into it (``_mirror``); grids with a single multigrid level (at most 2 voxels per
  axis) are solved by rank 0 alone, and their steady fields stay on the mirror.
- The lattice and the T cells live on the ranks (each its box and the T cells whose voxel is in it,
  from the first step on; ``parallel.cells``): T cells migrate to their owners and ghosts cross the
  faces each step, the cell step fills each rank's region from the boxes, the field step takes its
  lattice and T-cell-count operands from them, and rank 0 gets the ranks' integer partials (counts,
  plane sums) and event rows. The mirror gathers the lattice and the T cells only to read them
  whole (the lattice alone for a hold over the tumour). Infusions are placed by the
  ranks into their boxes (``parallel.placement``); ``perf/mirror_gathered_bytes`` counts what the
  mirror gathered. The run's end gathers nothing either: the final checkpoint is the ranks' and the
  summary is the last timeseries row (``Recorder.final``), so after the run the mirror is stale.
- The field and tumour frames are written by every rank into its own shards
  (``Simulation.frame_writer`` = :class:`~gpusim.parallel.frames.DistributedFrames`), and the T-cell
  snapshots and tracks as each rank's share of their rows (``Simulation.snapshot_writer`` =
  :class:`~gpusim.parallel.snapshots.DistributedSnapshots`), and the checkpoints as each rank's parts
  (``Simulation.checkpoint_writer`` = :class:`~gpusim.parallel.checkpoints.DistributedCheckpoints`),
  not gathered.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..agents.rules import LIVE
from ..census import LATTICE_CODES
from ..events import ApplyEvents
from ..fields.steady import SteadyStateUndefined
from ..simulation import Recorder
from .cell_op import DistributedCells
from .cells import CellWorker
from .fields import BoxFieldRun
from .ranks import unsupported
from .frames import DistributedFrames, FrameWriter, follow_frame
from .checkpoints import DistributedCheckpoints, follow_checkpoint
from .snapshots import DistributedSnapshots, SnapshotWriter, follow_snapshots

__all__ = ["DistributedEvents", "DistributedFields", "DistributedRecorder", "resume_cli", "run_cli"]

_STOP = {"op": "stop"}
_TAG_PERF = 500


class DistributedFields:
    """Rank 0's field operation. The fields live on the ranks between steps (``BoxFieldRun.held``):
    every step rank 0 sends the operands (and a field only where the mirror changed it, or at the
    first step), all ranks step their parts of the stepped substrates, and nothing comes back. The
    mirror's copy of such a field is *stale* until :meth:`pull` gathers it, which the mirror's
    ``synchronize_state`` does before the mirror reads it whole. Then per
    substrate in the single-process order, a steady substrate whose solve is due (the mirror's
    ``FieldUpdate.steady_if_due`` decides) is solved by all ranks from the field they hold, which they
    keep, and the holds on a held field are clamped by the ranks over their boxes (gpusim.parallel.events;
    those on a field rank 0 solves alone by the mirror)."""

    name = "fields"

    def __init__(self, box_run: BoxFieldRun, inner):
        self.box = box_run
        self._inner = inner
        self.plans = inner.plans  # what the recorder and the writer read from the field operation
        self._steady_s = None  # this step's seconds of steady solves per rank
        self.stale = set()  # held fields whose newest values are on the ranks only
        self.to_push = set(box_run.held)  # held fields the mirror changed (all, before the first step)
        #: gathers the ranks' lattice into the mirror (DistributedCells.pull; None without cells)
        self.pull_lattice = None

    def __getattr__(self, key):  # field_stats, steady_info, _operands, ... of the single-process operation
        return getattr(self.__dict__["_inner"], key)

    def pull(self, sim, names=None) -> None:
        """All ranks: gather the stale fields ``names`` (default: every stale one) into the mirror."""
        names = sorted(self.stale if names is None else set(names) & self.stale)
        if names:
            self.box.comm.bcast_json({"op": "pull", "names": names})
            self.box.pull(names, sim)
            self.stale -= set(names)

    def push_pending(self, sim) -> None:
        """All ranks: the held fields the mirror changed sent to the ranks now (before the cell step
        reads them; otherwise the field step's load sends them)."""
        names = sorted(self.to_push)
        if names:
            self.box.comm.bcast_json({"op": "push", "names": names})
            self.box.push(names, sim)
            self.to_push = set()

    def apply(self, sim) -> None:
        comm = self.box.comm
        t_start = time.perf_counter()
        # set by this step's image frames and T-cell rows, if any (parallel.frames, parallel.snapshots)
        for key in ("frames_rank0_bytes", "frames_s", "snapshots_rank0_bytes", "snapshots_s"):
            sim.perf_extra[key] = 0.0
        before = self._bytes()
        header = self.box.header(sim)
        header["push"] = sorted(self.to_push)
        comm.bcast_json(header)
        self.box.load(header, sim)
        self.to_push = set()
        t0 = time.perf_counter()
        self.box.step()
        seconds = [time.perf_counter() - t0]
        self.stale |= set(self.box.plans)
        for r in range(1, comm.size):
            buf = np.empty(1, np.float64)
            comm.recv(buf, r, _TAG_PERF)
            seconds.append(float(buf[0]))
        for r, sec in enumerate(seconds):
            sim.perf_extra[f"fields_s_r{r}"] = sec
        # sending the operands, the transposes' waits (steady solves and holds come after)
        sim.perf_extra["fields_rank0_other_s"] = time.perf_counter() - t_start - seconds[0]
        steady_before = self.box.steady_bytes if self.box.steady_plans else 0
        self._steady_s = [0.0] * comm.size
        solve = self._solve_steady if self.box.steady is not None else None  # None: one level, rank 0 alone
        for name, plan in self.plans.items():  # substrates do not couple: the single-process order per substrate
            holds = [ev for ev in sim.schedule.holds(sim.state.time_min) if ev.substrate == name]
            held = name in self.box.held
            if self.pull_lattice is not None and (
                    (not held and any(ev.region == "tumor" for ev in holds))  # the mirror's mask: the live tumour
                    or (plan.method == "steady" and solve is None and self._inner.steady_is_due(sim.state.time_min,
                                                                                                name))):
                self.pull_lattice(sim)  # the mirror reads the lattice: a rank-0 solve's operands, a mask
            if plan.method == "steady":
                self._inner.steady_if_due(sim.state, name, solve=solve)
            if held and holds:  # clamped by the ranks over their boxes (gpusim.parallel.events)
                index = {id(ev): i for i, ev in enumerate(sim.schedule.events)}
                msg = {"op": "hold", "name": name, "events": [index[id(ev)] for ev in holds],
                       "tumor": any(ev.region == "tumor" for ev in holds)}
                comm.bcast_json(msg)
                self.box.hold(msg, sim)
            else:
                self._inner.apply_holds(sim, name)
        if self.box.steady_plans:
            for r, sec in enumerate(self._steady_s):
                sim.perf_extra[f"steady_s_r{r}"] = sec
        steady_bytes = self.box.steady_bytes - steady_before if self.box.steady_plans else 0
        sim.perf_extra["fields_rank0_bytes"] = float(self._bytes() - before + steady_bytes)
        # what the mirror gathered so far (cumulative): a field, the lattice or the T cells read whole on rank 0
        lattice = self.box.lattice
        sim.perf_extra["mirror_gathered_bytes"] = float(self.box.gathered_bytes
                                                        + (lattice.gathered_bytes if lattice is not None else 0))

    def _solve_steady(self, state, name, tol):
        """FieldUpdate.solve_steady's ``solve``: all ranks solve ``name`` (``steady_on_ranks``) from the
        field they hold, and keep the solution (the mirror's copy is stale until a pull)."""
        info, seconds = steady_on_ranks(self.box, self._inner, state, name, tol, keep=True)
        self.stale.add(name)
        for r, sec in enumerate(seconds):
            self._steady_s[r] += sec
        return info

    def _bytes(self) -> int:
        """Bytes rank 0 moved so far: operands and pushed fields sent, halos, transposes, reduced rows,
        fields gathered by pulls."""
        b = self.box
        operands = b.lattice.lattice_bytes if b.lattice is not None else 0  # the operands from the cell boxes
        return int(b.scattered_bytes + b.halo.bytes_sent + b.redistributed_bytes + b.partitioned_bytes
                   + b.gathered_bytes + operands)


class DistributedEvents:
    """Rank 0's event operation: the mirror's ApplyEvents (serum values, implant sources), with the
    boluses on the fields the ranks hold added by the ranks over their boxes
    (gpusim.parallel.events); a bolus on a field rank 0 solves alone, or due before the ranks hold
    the field (a run's first step), is the mirror's."""

    name = "events"

    def __init__(self, inner, fields: DistributedFields):
        self.inner, self.fields = inner, fields

    def apply(self, sim) -> None:
        box = self.fields.box
        self.inner.set_serum(sim)
        index = {id(ev): i for i, ev in enumerate(sim.schedule.events)}
        on_ranks = []
        for ev in sim.schedule.boluses_due(sim.state.step):
            # the ranks' copy once they hold the newest one (not before the first push: a run's or a
            # resume's first step doses the mirror's copy, which the push then hands out)
            if ev.substrate in box.held and ev.substrate not in self.fields.to_push:
                on_ranks.append(index[id(ev)])
            else:
                self.inner.dose(sim, ev)
        if on_ranks:
            msg = {"op": "bolus", "events": on_ranks}
            box.comm.bcast_json(msg)
            box.events.bolus(msg["events"])
        self.inner.update_sources(sim)


class DistributedRecorder(Recorder):
    """Rank 0's recorder: the held fields' statistics, and Mg's over the live tumour, are
    combined over the ranks that hold them (gpusim.census, bitwise the single-process row); the
    fields rank 0 solves alone (one multigrid level) and the cells' counts are the mirror's."""

    def __init__(self, sim, fields: DistributedFields):
        super().__init__(sim)
        self.fields = fields
        self.cells = None  # the DistributedCells, whose ranks hold the lattice (its counts after the step)
        self._step_stats = {}

    def apply(self, sim) -> None:
        box = self.fields.box
        mg_live = None
        if self.cells is not None and "mg" in box.held:
            mg_live = int(self.cells.lattice_counts[LATTICE_CODES.index(LIVE)])
        header = {"op": "census", "names": sorted(box.held), "mg_live": mg_live}
        box.comm.bcast_json(header)
        self._step_stats, self._mg = box.census(header, sim.state.n_tumor)
        super().apply(sim)

    def field_stats(self, sim, name: str) -> dict:
        if name in self._step_stats:
            return self._step_stats[name]
        return super().field_stats(sim, name)

    def cell_columns(self, sim) -> dict:
        return self.cells.columns(sim, mg_tumor=self._mg, counts=self.cells.census_counts)


def steady_on_ranks(box: BoxFieldRun, fu, state, name: str, tol: float, keep: bool = False):
    """Rank 0: substrate ``name`` of ``state`` (the mirror's; ``fu`` its FieldUpdate) solved to its
    steady state by all ranks on their boxes (the operands sent; ``keep``: from the field the ranks
    hold, which keep the solution, else the field sent and the solution gathered into ``state``).
    Returns rank 0's SteadyInfo, which every rank shares (its cycles and maxima are the ranks' exact
    combinations), and each rank's seconds. A problem without a steady state raises
    SteadyStateUndefined on every rank at the same point, before the solution is gathered."""
    comm = box.comm
    header = dict(box.steady_header(state, fu, name, tol), keep=bool(keep))
    comm.bcast_json(header)
    info, own = box.solve_steady(header, state, fu)
    seconds = [own]
    for r in range(1, comm.size):
        buf = np.empty(1, np.float64)
        comm.recv(buf, r, _TAG_PERF)
        seconds.append(float(buf[0]))
    return info, seconds


def _mirror(cfg, box: BoxFieldRun):
    """Rank 0's whole-grid Simulation of ``cfg``; with ``init = "steady"`` its initial steady solves run
    on all ranks (the others wait in ``_follow``) when the grid has multigrid levels to share."""
    from ..simulation import Simulation

    if box.steady is None:
        return Simulation(cfg)

    class Mirror(Simulation):
        def _init_steady(self, solve=None):
            super()._init_steady(solve=lambda state, name, tol: steady_on_ranks(box, self.field_update, state,
                                                                                 name, tol)[0])

    return Mirror(cfg)


def _follow(comm, box: BoxFieldRun, cells) -> None:
    """The loop of ranks > 0: do what rank 0 broadcasts until it says stop."""
    frames = FrameWriter(comm, box, cells)
    snapshots = SnapshotWriter(comm, cells)
    fail = os.environ.get("GPUSIM_TEST_FAIL_RANK")  # test hook: this rank fails in its first step
    while True:
        msg = comm.bcast_json(None)
        if fail is not None and int(fail) == comm.rank:
            raise RuntimeError(f"GPUSIM_TEST_FAIL_RANK={fail}: rank {comm.rank} fails on purpose")
        if msg["op"] == "fields":
            box.load(msg)
            t0 = time.perf_counter()
            box.step()
            seconds = time.perf_counter() - t0
            comm.send(np.array([seconds], np.float64), 0, _TAG_PERF)
        elif msg["op"] == "pull":
            box.pull(msg["names"])
        elif msg["op"] == "push":
            box.push(msg["names"])
        elif msg["op"] == "bolus":
            box.events.bolus(msg["events"])
        elif msg["op"] == "hold":
            box.hold(msg)
        elif msg["op"] == "census":
            box.census(msg)
        elif msg["op"] == "steady":
            try:
                _, seconds = box.solve_steady(msg)
            except SteadyStateUndefined:
                continue  # raised on rank 0 at the same point (init = "steady" then keeps the field)
            comm.send(np.array([seconds], np.float64), 0, _TAG_PERF)
        elif msg["op"] == "cells":
            cells.follow(msg)
        elif msg["op"] == "lattice":
            cells.gather_lattice()
        elif msg["op"] == "tcells":
            cells.gather_tcells()
        elif msg["op"] == "frame":
            follow_frame(comm, frames, msg)
        elif msg["op"] == "snapshots":
            follow_snapshots(comm, snapshots, msg)
        elif msg["op"] == "checkpoint":
            follow_checkpoint(comm, frames, snapshots, msg)
        else:
            return


def _abort(comm) -> None:
    """Print this rank's error (MPI's abort ends the process before a traceback would) and end the job."""
    import traceback

    print(f"gpusim: rank {comm.rank} of {comm.size} failed; ending the MPI job:", file=sys.stderr)
    traceback.print_exc()
    sys.stderr.flush()
    comm.abort(1)


def _refuse(cfg, comm, console) -> bool:
    from rich.markup import escape

    problems = unsupported(cfg)
    if problems and comm.rank == 0:
        console.print(f"[red]error:[/red] this config cannot run on {comm.size} MPI ranks yet:\n  "
                      + escape("\n  ".join(problems))
                      + "\nrun it without mpiexec (one process), or see MODEL.md 'Parallel runs'")
    return bool(problems)


def _drive(cfg, comm, console, make_mirror, body) -> int:
    """Set up the ranks, let rank 0 build its mirror and run ``body(mirror)``; the others follow."""
    box = BoxFieldRun(cfg, comm, coordinated=True)
    has_cells = cfg.tumor is not None or cfg.tcells is not None
    if comm.rank != 0:
        try:
            cells = CellWorker(cfg, comm, box, has_vessel=cfg.vessels is not None) if has_cells else None
            _follow(comm, box, cells)
        except BaseException:
            _abort(comm)  # rank 0 waits for this rank's part: end the whole job, not hang
            raise
        return 0
    try:
        mirror = make_mirror(box)
        fields = DistributedFields(box, mirror.field_update)
        recorder = DistributedRecorder(mirror, fields)
        recorder.columns = mirror.recorder.columns  # a resumed run's rows so far
        swap = {id(mirror.field_update): fields, id(mirror.recorder): recorder}
        for op in mirror.operations:
            if isinstance(op, ApplyEvents):
                swap[id(op)] = DistributedEvents(op, fields)
        cells = None
        if mirror.cells is not None:
            cells = DistributedCells(mirror, comm, box, fields)
            swap[id(mirror.cells)] = cells
            recorder.cells = cells
            fields.pull_lattice = lambda sim: cells.pull(sim, ("lattice",))
        mirror.operations = [swap.get(id(o), o) for o in mirror.operations]
        mirror.field_update = fields
        mirror.recorder = recorder
        if cells is not None:
            mirror.cells = cells  # the writer's event rows and the snapshots read the ranks' T cells through it

        def synchronize(parts=None):
            if parts is None or "fields" in parts:
                fields.pull(mirror)
            if cells is not None:
                cells.pull(mirror, [p for p in ("lattice", "tcells") if parts is None or p in parts])

        mirror.synchronizer = synchronize
        mirror.frame_writer = DistributedFrames(comm, FrameWriter(comm, box, None if cells is None else cells.worker),
                                                fields, cells)
        rows = SnapshotWriter(comm, None if cells is None else cells.worker)
        if cells is not None:
            mirror.snapshot_writer = DistributedSnapshots(comm, rows, cells)
        mirror.checkpoint_writer = DistributedCheckpoints(comm, mirror.frame_writer, rows, cells)
        code = body(mirror, box)
    except BaseException:
        _abort(comm)  # the other ranks wait for rank 0: end the whole job
        raise
    comm.bcast_json(_STOP)
    return code


def _describe(comm, box) -> str:
    where = "CPU" if box.device is None else f"CPU; LOD sweeps on each rank's GPU, rank 0's {box.device.device_name}"
    return (f"parallel: {comm.size} MPI ranks ({where}), process grid {list(box.decomp.ranks_zyx)} (the ranks keep the "
            "fields, the lattice and the T cells and write their parts of the frames, the T-cell snapshots "
            "and the checkpoints, the final one included; rank 0's summary is the last timeseries row)")


def run_cli(args, cfg, comm, console, minutes: float) -> int:
    """``gpusim run`` on ``comm.size`` > 1 ranks (see the module docstring); returns the exit code."""
    from ..cli import _after, _report

    if _refuse(cfg, comm, console):
        return 2

    def body(mirror, box):
        for line in mirror.info():
            console.print(line)
        console.print(_describe(comm, box))
        if cfg.init == "steady":
            where = f"on all {comm.size} ranks" if box.steady_bytes else "on rank 0 (too few voxels to share)"
            console.print(f"init = steady: the initial fields were solved {where}")
        if args.out is not None:
            mirror.attach_store(args.out, overwrite=args.overwrite)
            mirror._store["writer"].set_attr("parallel", {"ranks": comm.size, "ranks_zyx": list(box.decomp.ranks_zyx),
                                                          "lod_mode": cfg.parallel.lod_mode})
        summary = mirror.run(minutes=minutes, progress=not args.no_progress)
        _report(mirror, summary, console)
        return _after(summary, args.out, console)

    return _drive(cfg, comm, console, lambda box: _mirror(cfg.with_overrides({"backend": "cpu"}), box), body)


def resume_cli(args, comm, console, planned_minutes) -> int:
    """``gpusim resume STORE`` on ``comm.size`` > 1 ranks: rank 0 restores the checkpoint (whole-grid
    arrays, written on any number of ranks) into its mirror and the run continues on these ranks.
    ``planned_minutes(sim)`` gives the minutes to run (from --minutes/--days or the store's plan)."""
    from ..cli import _after, _report
    from ..config import Config
    from ..io.store import open_store
    from ..simulation import Simulation

    root = open_store(args.store, mode="r")
    cfg = Config.from_json(root.attrs["gpusim"]["config"], source=f"{args.store} (stored config)")
    if args.backend is not None:  # --backend of the resume command, checked like the config's
        cfg = cfg.with_overrides({"backend": args.backend})
    if _refuse(cfg, comm, console):
        return 2

    def body(mirror, box):
        minutes = planned_minutes(mirror)
        console.print(f"resuming {args.store} at t = {mirror.time_min:g} min for {minutes:g} min")
        console.print(_describe(comm, box))
        summary = mirror.run(minutes=minutes, progress=not args.no_progress)
        _report(mirror, summary, console)
        return _after(summary, args.store, console)

    return _drive(cfg, comm, console, lambda box: Simulation.resume(args.store, backend="cpu"), body)
