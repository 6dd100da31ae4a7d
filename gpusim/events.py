"""The therapy schedule (DESIGN.md rule 7): serum set/ramp, bolus, implant, hold and T-cell infusion
(placed by the cell operation), each may repeat.

Times are in minutes. Step ``n`` covers ``[n*dt, (n+1)*dt)``; events are evaluated at its start:
an occurrence at ``t_j`` fires (bolus) in the step that contains it, and timed events are active in
every step that starts inside ``[t_j, t_j + duration_min)`` (forever without a duration).
Amounts convert to concentrations through the substrate's molar unit.
"""

from __future__ import annotations

import numpy as np

# µmol per µm³ of one unit of concentration (1 mM = 1 mmol/L = 1e-12 µmol/µm³)
UMOL_PER_UM3 = {"mM": 1e-12, "uM": 1e-15, "nM": 1e-18}


def occurrences(ev) -> list[float]:
    """Start times (min) of every occurrence of event ``ev``."""
    if ev.repeat_every_min is None:
        return [float(ev.time_min)]
    return [float(ev.time_min + j * ev.repeat_every_min) for j in range(int(ev.repeat_count))]


def active_start(ev, t: float):
    """The start time of the occurrence of ``ev`` active at ``t``, or None."""
    current = None
    for tj in occurrences(ev):
        if tj <= t and (ev.duration_min is None or t < tj + ev.duration_min):
            current = tj
    return current


def step_of(t_min: float, dt_min: float) -> int:
    """The step whose interval contains time ``t_min`` (robust to float round-off of t/dt)."""
    return int(np.floor(t_min / dt_min + 1e-9))


def sphere_in_box(center_um, radius_um, dx_um: float, offset, shape) -> np.ndarray:
    """Bool mask over the box of ``shape`` at voxel ``offset`` of the voxels whose centre lies within
    ``radius_um`` of ``center_um`` (z, y, x µm): the sphere rule of every event region, the same
    arithmetic per voxel on the whole grid (``State.sphere_mask``) or an MPI rank's box."""
    z, y, x = (((np.arange(o, o + n) + 0.5) * dx_um).reshape([-1 if a == axis else 1 for a in range(3)])
               for axis, (o, n) in enumerate(zip(offset, shape)))
    cz, cy, cx = (float(v) for v in center_um)
    return (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= float(radius_um) ** 2


def centre_voxel(center_um, dx_um: float, grid_shape) -> tuple:
    """The voxel holding ``center_um``: an event's region when no voxel centre lies in its sphere."""
    return tuple(min(int(float(c) // dx_um), n - 1) for c, n in zip(center_um, grid_shape))


def concentration_per_umol(unit: str, n_voxels: int, dx_um: float) -> float:
    """Concentration (in ``unit``) that one µmol spread over ``n_voxels`` voxels adds."""
    return 1.0 / (UMOL_PER_UM3[unit] * n_voxels * dx_um**3)


class Schedule:
    """The events of a config, resolved against the grid: what is due or active at a step."""

    def __init__(self, cfg, state):
        self.events = list(cfg.events)
        self.dt = float(cfg.time.dt_min)
        self.base_serum = {s.name: float(s.serum) for s in cfg.substrates}
        self.units = {s.name: s.unit for s in cfg.substrates}
        self._masks = {}
        self._state = state

    def mask(self, ev) -> np.ndarray:
        """Host bool mask of the event's sphere (computed once per event)."""
        if ev.name not in self._masks:
            self._masks[ev.name] = self._state.sphere_mask(ev.center_um, ev.radius_um)
        return self._masks[ev.name]

    def serum(self, t: float) -> dict:
        """Serum value of every substrate at time ``t`` (later events in the list win)."""
        out = dict(self.base_serum)
        for ev in self.events:
            if ev.type != "serum":
                continue
            tj = active_start(ev, t)
            if tj is None:
                continue
            base = self.base_serum[ev.substrate]
            if ev.ramp_min and t - tj < ev.ramp_min:
                out[ev.substrate] = base + (ev.value - base) * ((t - tj) / ev.ramp_min)
            else:
                out[ev.substrate] = float(ev.value)
        return out

    def boluses_due(self, step: int) -> list:
        """Bolus events with an occurrence inside step ``step`` (one entry per occurrence)."""
        return [
            ev
            for ev in self.events
            if ev.type == "bolus"
            for tj in occurrences(ev)
            if step_of(tj, self.dt) == step
        ]

    def infusions_due(self, step: int) -> list:
        """(event index, occurrence number, event) of every T-cell infusion due in step ``step``."""
        return [
            (i, j, ev)
            for i, ev in enumerate(self.events)
            if ev.type == "tcell_infusion"
            for j, tj in enumerate(occurrences(ev))
            if step_of(tj, self.dt) == step
        ]

    def bolus_increment(self, ev) -> tuple[np.ndarray, float]:
        """(mask, concentration added per voxel) of one bolus occurrence."""
        m = self.mask(ev)
        return m, ev.amount_umol * concentration_per_umol(self.units[ev.substrate], int(m.sum()), self._state.dx_um)

    def sources(self, t: float) -> dict:
        """Host float32 source arrays (unit/min) of active implants per substrate; None where none."""
        out = {}
        for ev in self.events:
            if ev.type != "implant" or active_start(ev, t) is None:
                continue
            m = self.mask(ev)
            rate = ev.rate_umol_per_min * concentration_per_umol(self.units[ev.substrate], int(m.sum()), self._state.dx_um)
            arr = out.setdefault(ev.substrate, np.zeros(self._state.shape, np.float32))
            arr[m] += np.float32(rate)
        return out

    def active_key(self, t: float) -> tuple:
        """A value that changes exactly when the set of active implants changes (to re-upload sources)."""
        return tuple(ev.name for ev in self.events if ev.type == "implant" and active_start(ev, t) is not None)

    def holds(self, t: float) -> list:
        """Hold events active at ``t`` (their region: ``ev.region``, a sphere via :meth:`mask`)."""
        return [ev for ev in self.events if ev.type == "hold" and active_start(ev, t) is not None]


class ApplyEvents:
    """Operation, first in a step: serum values, bolus doses and implant sources for this step."""

    name = "events"

    def __init__(self):
        self._source_key = None

    def apply(self, sim) -> None:
        self.set_serum(sim)
        for ev in sim.schedule.boluses_due(sim.state.step):
            self.dose(sim, ev)
        self.update_sources(sim)

    def set_serum(self, sim) -> None:
        """Every substrate's serum value at the step's start (its plan's coefficients follow)."""
        for name, value in sim.schedule.serum(sim.state.time_min).items():
            plan = sim.field_update.plans[name]
            if plan.serum != value:
                plan.set_serum(value)

    def dose(self, sim, ev) -> None:
        """One occurrence of bolus ``ev`` added to its field."""
        mask, dc = sim.schedule.bolus_increment(ev)
        field = sim.state.fields[ev.substrate]
        field[sim.backend.asarray(mask)] += np.float32(dc)

    def update_sources(self, sim) -> None:
        """The implant source arrays, made anew when the set of active implants changes."""
        sched, t = sim.schedule, sim.state.time_min
        key = sched.active_key(t)
        if key != self._source_key:
            self._source_key = key
            host = sched.sources(t)
            sim.state.sources = {name: sim.backend.asarray(arr) for name, arr in host.items()}
