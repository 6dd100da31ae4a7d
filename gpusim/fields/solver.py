"""The field operation: advances every substrate by one simulation step on the run's backend.

Per substrate (its :class:`~gpusim.fields.coefficients.SubstratePlan`): ``lod`` takes ``n_sub`` implicit
LOD field steps, ``explicit`` ``n_sub`` explicit sub-steps, ``steady`` re-solves the coupled
diffusion-reaction equilibrium every ``update_every_min`` (warm-started) and holds it in between.
Holds (clamped regions) are applied after the substrate's step.
"""

from __future__ import annotations

import logging

import numpy as np

from . import layout as L
from .coefficients import make_plan

log = logging.getLogger("gpusim")


class FieldUpdate:
    """Operation advancing all substrate fields by ``dt_min`` (reads cell counts, sources, holds)."""

    name = "fields"

    def __init__(self, cfg, backend):
        self.backend = backend
        self.plans = {s.name: make_plan(s, cfg) for s in cfg.substrates}
        self._fk = backend.kernels("fields") if self.plans else None
        xp = backend.xp
        self._dummy_u8 = xp.zeros((1, 1, 1), xp.uint8)
        self._dummy_f32 = xp.zeros((1, 1, 1), xp.float32)
        self._scratch = None  # explicit solver's second buffer, shared by all substrates
        self._last_steady = {}
        self._hold_masks = {}
        self.steady_info = {}

    def _operands(self, state, name):
        """(flags, vessel, n_tumor, n_tcell, src) for the kernels: real arrays where present, else dummies."""
        flags = 0
        vessel, nt, nc, src = self._dummy_u8, self._dummy_u8, self._dummy_u8, self._dummy_f32
        if state.vessel is not None and self.plans[name].coef[L.KV] != 0.0:
            flags |= L.HAS_VESSEL
            vessel = state.vessel
        if state.n_tumor is not None:
            flags |= L.HAS_TUMOR
            nt = state.n_tumor
        if state.n_tcell is not None:
            flags |= L.HAS_TCELL
            nc = state.n_tcell
        if state.sources.get(name) is not None:
            flags |= L.HAS_SRC
            src = state.sources[name]
        return flags, vessel, nt, nc, src

    def solve_steady(self, state, name, tol=1e-6, solve=None):
        """Replace field ``name`` by its steady state under the current counts, sources and serum.

        ``solve``: called as ``solve(state, name, tol)`` for the :class:`~gpusim.fields.steady.SteadyInfo`
        in place of the single-process solve (an MPI run's solve on all ranks, gpusim.parallel.run);
        the outcome is recorded and warned about the same way.
        """
        from .steady import steady_solve

        if solve is not None:
            info = solve(state, name, tol)
        else:
            plan = self.plans[name]
            flags, vessel, nt, nc, src = self._operands(state, name)
            info = steady_solve(
                self.backend.kernels("mg"), state.fields[name], plan.coef, plan.bc_type, plan.bc_value,
                vessel, nt, nc, src, flags, tol=tol,
            )
        if not info.converged:
            log.warning("steady solve of %s did not converge: %s", name, info)
        self.steady_info[name] = info
        return info

    def apply(self, sim) -> None:
        state = sim.state
        for name, plan in self.plans.items():
            if plan.method == "steady":
                self.steady_if_due(state, name)
            else:
                self._advance(state, name, plan)
            self.apply_holds(sim, name)

    def steady_is_due(self, time_min: float, name: str) -> bool:
        """Whether steady substrate ``name`` is re-solved in the step starting at ``time_min``:
        ``update_every_min`` has passed since its last solve (or it was never solved). Pure, so MPI
        ranks that hold no whole-grid state take the same decision as rank 0."""
        last = self._last_steady.get(name)
        return last is None or time_min - last >= self.plans[name].update_every_min - 1e-9

    def steady_if_due(self, state, name, solve=None) -> None:
        """Re-solve steady substrate ``name`` when :meth:`steady_is_due` (``solve``: as in
        :meth:`solve_steady`)."""
        if self.steady_is_due(state.time_min, name):
            self.solve_steady(state, name, solve=solve)
            self._last_steady[name] = state.time_min

    def _advance(self, state, name, plan):
        flags, vessel, nt, nc, src = self._operands(state, name)
        c = state.fields[name]
        if plan.method == "lod":
            for _ in range(plan.n_sub):
                self._fk.lod_step(c, plan.coef, plan.bc_type, plan.bc_value, vessel, nt, nc, src, flags)
            return
        if self._scratch is None or self._scratch.shape != c.shape:
            self._scratch = self.backend.xp.empty_like(c)
        a, b = c, self._scratch
        for _ in range(plan.n_sub):
            self._fk.explicit_step(a, b, plan.coef, plan.bc_type, plan.bc_value, vessel, nt, nc, src, flags)
            a, b = b, a
        if a is not c:  # the result sits in the scratch buffer: it becomes the live field
            state.fields[name] = a
            self._scratch = c

    def apply_holds(self, sim, name):
        """Clamp the regions of active holds on ``name``: the tumour's LIVE voxels (read on the device
        each step, as the tumour changes) or a sphere (uploaded once)."""
        for ev in sim.schedule.holds(sim.state.time_min):
            if ev.substrate != name:
                continue
            if ev.region == "tumor":
                mask = sim.state.n_tumor > 0
            else:
                if ev.name not in self._hold_masks:
                    self._hold_masks[ev.name] = self.backend.asarray(sim.schedule.mask(ev))
                mask = self._hold_masks[ev.name]
            sim.state.fields[name][mask] = np.float32(ev.value)
