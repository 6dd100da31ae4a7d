"""Substrate fields stepped on one rank's box, with a halo exchange before every explicit sub-step;
bitwise equal to the single-process run (the first slice of issue 6).

    from gpusim.parallel import comm, fields
    run = fields.BoxFieldRun(cfg, comm.world())          # under mpiexec -n N
    run.advance(minutes=60)
    whole = run.gather("mg")                            # the whole grid on rank 0, None elsewhere

Why bitwise: the explicit sub-step is a gather over the 7-point stencil, so a voxel's new value depends
only on its own and its six neighbours' old values and the same constants, whoever computes it. Each
rank runs the same kernel (``explicit_step``) on its box plus one ghost layer on every face that has a
neighbour: the box's voxels read their neighbours from the ghosts, filled by the exchange with copied
(never recombined) values; the ghosts' own new values are wrong (the kernel sees them as a grid face)
and are overwritten by the next exchange. At a face of the global grid there is no ghost and the
kernel applies the boundary condition exactly as on one process.

Scope today (each refused with a clear message on more than one rank): substrates with the
``explicit`` method only (LOD lines and the multigrid steady solver span the whole grid: the
``bitwise``/``partitioned`` LOD modes and a distributed multigrid are still to come); no tumour, no T
cells, no events. The initial state (uniform or steady fields, vessels) is set up by the
single-process code on every rank and cut to the box, so a run's memory per rank is still the whole
grid at set-up.
"""

from __future__ import annotations

import numpy as np

from .decomposition import Decomposition
from .halo import Halo, gather

__all__ = ["BoxFieldRun", "unsupported"]


def unsupported(cfg) -> list:
    """What in ``cfg`` the distributed field run cannot do yet (empty: it can)."""
    from ..fields.coefficients import make_plan

    out = []
    for s in cfg.substrates:
        method = make_plan(s, cfg).method
        if method != "explicit":
            out.append(f"substrates.{s.name}: method {method!r} (only 'explicit' runs across ranks so far; "
                       f"set solver = \"explicit\" or run on one rank)")
    if cfg.tumor is not None:
        out.append("[tumor]: the tumour lattice does not run across ranks yet")
    if cfg.tcells is not None:
        out.append("[tcells]: T cells do not run across ranks yet")
    if cfg.events:
        out.append("[[events]]: events do not run across ranks yet")
    return out


class BoxFieldRun:
    """The fields of ``cfg`` on rank ``comm.rank`` of ``comm.size`` (see the module docstring)."""

    def __init__(self, cfg, comm, ranks_zyx=None):
        from ..simulation import Simulation

        problems = unsupported(cfg) if comm.size > 1 else []
        if problems:
            raise ValueError("this config cannot run on several MPI ranks yet:\n  " + "\n  ".join(problems))
        self.comm = comm
        self.setup = Simulation(cfg.with_overrides({"backend": "cpu"}))  # the single-process set-up
        ranks = ranks_zyx if ranks_zyx is not None else cfg.parallel.ranks_zyx
        self.decomp = Decomposition(self.setup.state.shape, n_ranks=comm.size, ranks_zyx=ranks)
        self.halo = Halo(comm, self.decomp, width=1)
        st = self.setup.state
        fu = self.setup.field_update
        self.plans = fu.plans
        self.kernels = fu._fk
        self.fields = {name: self.halo.local_from_global(np.asarray(a)) for name, a in st.fields.items()}
        self._operands = {}
        for name in self.plans:
            flags, vessel, nt, nc, src = fu._operands(st, name)
            self._operands[name] = (flags, *(a if a.shape == (1, 1, 1) else self.halo.local_from_global(np.asarray(a))
                                             for a in (vessel, nt, nc, src)))
        self.step_count = int(st.step)
        self.dt_min = float(self.setup.dt_min)

    def step(self) -> None:
        """One step of every substrate: ``n_sub`` explicit sub-steps, each after a halo exchange."""
        for name, plan in self.plans.items():
            flags, vessel, nt, nc, src = self._operands[name]
            a = self.fields[name]
            b = np.empty_like(a)
            for _ in range(plan.n_sub):
                self.halo.exchange(a)
                self.kernels.explicit_step(a, b, plan.coef, plan.bc_type, plan.bc_value, vessel, nt, nc, src, flags)
                a, b = b, a
            self.fields[name] = a
        self.step_count += 1

    def advance(self, minutes: float) -> int:
        n = int(round(float(minutes) / self.dt_min))
        for _ in range(n):
            self.step()
        return n

    def interior(self, name: str) -> np.ndarray:
        """This rank's own voxels of field ``name`` (a view)."""
        return self.fields[name][self.halo.interior]

    def gather(self, name: str, root: int = 0):
        """Field ``name`` over the whole grid on ``root`` (None on the other ranks)."""
        return gather(self.comm, self.decomp, np.ascontiguousarray(self.interior(name)), root)

    def message_bytes_per_step(self) -> int:
        """Bytes this rank sent in halo exchanges so far, per step (0 before the first)."""
        return self.halo.bytes_sent // max(1, self.step_count - int(self.setup.state.step))
