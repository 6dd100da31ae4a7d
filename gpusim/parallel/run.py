"""``mpiexec -n N gpusim run CONFIG`` (and ``gpusim resume STORE``): a run whose field, lattice and
T-cell arithmetic is done box by box on N ranks, with the store, timeseries, checkpoints and progress
of the single-process code on rank 0.

Rank 0 holds a whole-grid *mirror* Simulation whose field and cell operations are replaced by
:class:`DistributedFields` and :class:`~gpusim.parallel.cells.DistributedCells`. Every step each of
them broadcasts what it is about to do, sends every rank its part of the state (its box, or for the
cells its box plus ``CELL_GHOST`` voxels), computes its own part, and takes the others' results back
into the mirror, whose events, recorder, writer and checkpointer then run unchanged. The store and
the timeseries are therefore those of the single-process run, bit for bit, and a checkpoint (whole-grid
arrays) resumes on any number of ranks, one included.

Steady substrates (O₂'s multigrid solve) are re-solved by all ranks when due (``"steady"``: rank 0
sends each rank its box of the field and operands, the ranks run :mod:`gpusim.parallel.steady`,
bitwise the one-process solve, and rank 0 gathers the solution into the mirror; the mirror's
``FieldUpdate.steady_if_due`` decides when, records the ``SteadyInfo`` and warns on non-convergence).
``init = "steady"`` at set-up is solved by all ranks the same way (``_mirror``); grids with a single
multigrid level (at most 2 voxels per axis) are solved by rank 0 alone.

The price of this version: rank 0 holds the whole state and sends and receives it every step, so it
spreads the arithmetic, not the memory or the bytes; therapy events, recruitment, daughters and
infusions run on rank 0. Ranks holding their own state, writing their own shards, is the next step
(MODEL.md 'Parallel runs'; its design: docs/owned_state.md).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..fields.steady import SteadyStateUndefined
from .cells import CellWorker, DistributedCells
from .fields import BoxFieldRun, unsupported

__all__ = ["DistributedFields", "resume_cli", "run_cli"]

_STOP = {"op": "stop"}
_TAG_PERF = 500


class DistributedFields:
    """Rank 0's field operation: all ranks step their part of the non-steady substrates, which are
    gathered into ``sim``; then per substrate in the single-process order, a steady substrate whose
    solve is due (the mirror's ``FieldUpdate.steady_if_due`` decides) is solved by all ranks on their
    boxes and gathered, and holds run on the mirror."""

    name = "fields"

    def __init__(self, box_run: BoxFieldRun, inner):
        self.box = box_run
        self._inner = inner
        self.plans = inner.plans  # what the recorder and the writer read from the field operation
        self._steady_s = None  # this step's seconds of steady solves per rank

    def __getattr__(self, key):  # field_stats, steady_info, _operands, ... of the single-process operation
        return getattr(self.__dict__["_inner"], key)

    def apply(self, sim) -> None:
        comm = self.box.comm
        t_start = time.perf_counter()
        before = self._bytes()
        header = self.box.header(sim)
        comm.bcast_json(header)
        self.box.load(header, sim)
        t0 = time.perf_counter()
        self.box.step()
        seconds = [time.perf_counter() - t0]
        self.box.gather_into(sim)
        for r in range(1, comm.size):
            buf = np.empty(1, np.float64)
            comm.recv(buf, r, _TAG_PERF)
            seconds.append(float(buf[0]))
        for r, sec in enumerate(seconds):
            sim.perf_extra[f"fields_s_r{r}"] = sec
        # sending the fields and operands, the transposes' waits, gathering (steady solves come after)
        sim.perf_extra["fields_rank0_other_s"] = time.perf_counter() - t_start - seconds[0]
        gathered = sum(sim.state.fields[n].nbytes for n in self.box.plans) * (comm.size - 1) // comm.size
        steady_before = self.box.steady_bytes if self.box.steady_plans else 0
        self._steady_s = [0.0] * comm.size
        solve = self._solve_steady if self.box.steady is not None else None  # None: one level, rank 0 alone
        for name, plan in self.plans.items():  # substrates do not couple: the single-process order per substrate
            if plan.method == "steady":
                self._inner.steady_if_due(sim.state, name, solve=solve)
            self._inner.apply_holds(sim, name)
        if self.box.steady_plans:
            for r, sec in enumerate(self._steady_s):
                sim.perf_extra[f"steady_s_r{r}"] = sec
        steady_bytes = self.box.steady_bytes - steady_before if self.box.steady_plans else 0
        sim.perf_extra["fields_rank0_bytes"] = float(self._bytes() - before + gathered + steady_bytes)

    def _solve_steady(self, state, name, tol):
        """FieldUpdate.solve_steady's ``solve``: all ranks solve ``name`` (``steady_on_ranks``)."""
        info, seconds = steady_on_ranks(self.box, self._inner, state, name, tol)
        for r, sec in enumerate(seconds):
            self._steady_s[r] += sec
        return info

    def _bytes(self) -> int:
        """Bytes rank 0 sent so far: fields and operands sent out, halos, transposes, reduced rows."""
        b = self.box
        return int(b.scattered_bytes + b.halo.bytes_sent + b.redistributed_bytes + b.partitioned_bytes)


def steady_on_ranks(box: BoxFieldRun, fu, state, name: str, tol: float):
    """Rank 0: substrate ``name`` of ``state`` (the mirror's; ``fu`` its FieldUpdate) solved to its
    steady state by all ranks on their boxes (the field and operands sent, the solution gathered into
    ``state``). Returns rank 0's SteadyInfo, which every rank shares (its cycles and maxima are the
    ranks' exact combinations), and each rank's seconds. A problem without a steady state raises
    SteadyStateUndefined on every rank at the same point, before the solution is gathered."""
    comm = box.comm
    header = box.steady_header(state, fu, name, tol)
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
            box.gather_into()
            comm.send(np.array([seconds], np.float64), 0, _TAG_PERF)
        elif msg["op"] == "steady":
            try:
                _, seconds = box.solve_steady(msg)
            except SteadyStateUndefined:
                continue  # raised on rank 0 at the same point (init = "steady" then keeps the field)
            comm.send(np.array([seconds], np.float64), 0, _TAG_PERF)
        elif msg["op"] == "cells":
            cells.follow(msg)
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
            cells = CellWorker(cfg, comm, box.decomp, has_vessel=cfg.vessels is not None) if has_cells else None
            _follow(comm, box, cells)
        except BaseException:
            _abort(comm)  # rank 0 waits for this rank's part: end the whole job, not hang
            raise
        return 0
    try:
        mirror = make_mirror(box)
        fields = DistributedFields(box, mirror.field_update)
        swap = {id(mirror.field_update): fields}
        if mirror.cells is not None:
            cells = DistributedCells(mirror, comm, box.decomp)
            swap[id(mirror.cells)] = cells
        mirror.operations = [swap.get(id(o), o) for o in mirror.operations]
        mirror.field_update = fields
        code = body(mirror, box)
    except BaseException:
        _abort(comm)  # the other ranks wait for rank 0: end the whole job
        raise
    comm.bcast_json(_STOP)
    return code


def _describe(comm, box) -> str:
    return (f"parallel: {comm.size} MPI ranks (CPU), process grid {list(box.decomp.ranks_zyx)} (rank 0 holds the "
            "whole state and sends each rank its part every step)")


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
