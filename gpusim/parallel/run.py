"""``mpiexec -n N gpusim run CONFIG``: a run whose substrate fields are stepped box by box on N ranks
(gpusim.parallel.fields), with the store, timeseries, checkpoints and progress of the single-process
code on rank 0.

Rank 0 holds a whole-grid *mirror* Simulation whose field operation is replaced by
:class:`DistributedFields`: every step it tells the other ranks to step (a broadcast "step"), steps
its own box, and gathers every field into the mirror, whose recorder, writer and checkpointer then
run unchanged. The store and the timeseries are therefore those of the single-process run, bit for
bit, and its checkpoint (whole-grid arrays) resumes on any rank count: on one process with
``gpusim resume``. The price of this first version: rank 0 holds the whole grid and receives it
every step (a gather), so it scales the field arithmetic, not the memory; ranks writing their own
shards come with the distributed lattice and T cells.
"""

from __future__ import annotations

from .fields import BoxFieldRun, unsupported

__all__ = ["DistributedFields", "run_cli"]

_STEP, _STOP = "step", "stop"


class DistributedFields:
    """Rank 0's field operation: all ranks step their boxes, the fields are gathered into ``sim``."""

    name = "fields"

    def __init__(self, box_run: BoxFieldRun):
        self.box = box_run
        self.plans = box_run.plans  # what the recorder and the writer read from the field operation
        self._inner = box_run.setup.field_update

    def __getattr__(self, key):  # field_stats, steady_info, ... of the single-process operation
        return getattr(self.__dict__["_inner"], key)

    def apply(self, sim) -> None:
        self.box.comm.bcast_json(_STEP)
        self.box.step()
        for name in self.plans:
            sim.state.fields[name][...] = self.box.gather(name)


def _follow(box: BoxFieldRun) -> None:
    """The loop of ranks > 0: step and join the gathers until rank 0 says stop."""
    while box.comm.bcast_json(None) == _STEP:
        box.step()
        for name in box.plans:
            box.gather(name)


def run_cli(args, cfg, comm, console, minutes: float) -> int:
    """``gpusim run`` on ``comm.size`` > 1 ranks (see the module docstring); returns the exit code."""
    from ..cli import _after, _report
    from ..simulation import Simulation

    from rich.markup import escape

    problems = unsupported(cfg)
    if problems:
        if comm.rank == 0:
            console.print(f"[red]error:[/red] this config cannot run on {comm.size} MPI ranks yet:\n  "
                          + escape("\n  ".join(problems))
                          + "\nrun it without mpiexec (one process), or see MODEL.md 'Parallel runs'")
        return 2
    mirror = Simulation(cfg.with_overrides({"backend": "cpu"}))
    box = BoxFieldRun(cfg, comm, setup=mirror)
    if comm.rank != 0:
        _follow(box)
        return 0
    try:
        op = DistributedFields(box)
        mirror.operations = [op if o is mirror.field_update else o for o in mirror.operations]
        mirror.field_update = op
        for line in mirror.info():
            console.print(line)
        console.print(f"parallel: {comm.size} MPI ranks, process grid {list(box.decomp.ranks_zyx)} (fields only; "
                      "rank 0 gathers the fields every step for the store)")
        if args.out is not None:
            mirror.attach_store(args.out, overwrite=args.overwrite)
            mirror._store["writer"].set_attr("parallel", {"ranks": comm.size, "ranks_zyx": list(box.decomp.ranks_zyx),
                                                          "lod_mode": cfg.parallel.lod_mode})
        summary = mirror.run(minutes=minutes, progress=not args.no_progress)
    except BaseException:
        comm.abort(1)  # the other ranks wait in a broadcast: end the whole job
        raise
    comm.bcast_json(_STOP)
    _report(mirror, summary, console)
    return _after(summary, args.out, console)
