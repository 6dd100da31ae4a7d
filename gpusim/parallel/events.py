"""Therapy events applied by the ranks to the fields they hold (issue 6, item 4: "therapy events placed
by global coordinates"): a bolus's dose, a hold's clamp and an implant's source array, each over a
rank's own box with the single-process arithmetic per voxel, so nothing is gathered to rank 0 or
scattered from it.

An event's region is a sphere (``events.sphere_in_box``: the voxels whose centre lies inside it, or
the voxel holding the centre when none does) or, for a hold, the live tumour (``n_tumor > 0``, from the
ranks' lattice boxes). A dose or a release rate is spread over the region's voxels, whose number is
the sum of the ranks' counts over their disjoint boxes (one all-reduce per event, kept). Per voxel
the ranks then do exactly what one process does: ``field[mask] += float32(dc)`` for a bolus,
``field[mask] = float32(value)`` for a hold, and ``src[mask] += float32(rate)`` per active implant in
the events' order for a source (over the layout the substrate's kernels read, ghosts included).

Rank 0 names the events (their indices in ``cfg.events``); the schedule's timing stays rank 0's.
"""

from __future__ import annotations

import numpy as np

from ..events import active_start, centre_voxel, concentration_per_umol, sphere_in_box

__all__ = ["BoxEvents"]


class BoxEvents:
    """Every rank's part of the events of ``cfg`` on the fields of ``fields_run`` (a BoxFieldRun)."""

    def __init__(self, cfg, fields_run):
        self.events = list(cfg.events)
        self.units = {s.name: s.unit for s in cfg.substrates}
        self.dx_um = float(cfg.grid.dx_um)
        self.run = fields_run
        self.shape = tuple(fields_run.decomp.shape)
        self._counts = {}  # event index -> voxels of its sphere on the whole grid (0: its centre voxel only)
        self._masks = {}  # (event index, box) -> bool mask over the box

    def _count(self, i: int) -> int:
        """Collective (once per event): the voxels of event ``i``'s sphere over the whole grid, from
        each rank's count over its own box of the fields' decomposition."""
        if i not in self._counts:
            box = self.run.decomp.box(self.run.comm.rank)
            local = int(self._raw(i, box).sum())
            self._counts[i] = int(np.asarray(self.run.comm.allreduce_sum(np.array([local], np.int64)))[0])
        return self._counts[i]

    def _raw(self, i, box):
        ev = self.events[i]
        return sphere_in_box(ev.center_um, ev.radius_um, self.dx_um, box.offset, box.shape)

    def mask(self, i: int, box) -> np.ndarray:
        """Event ``i``'s region over ``box`` (collective the first time: :meth:`_count`)."""
        key = (i, tuple(box.offset), tuple(box.shape))
        if key not in self._masks:
            n = self._count(i)
            m = self._raw(i, box)
            if n == 0:  # no voxel centre inside: the voxel holding the centre, where it lies in this box
                c = centre_voxel(self.events[i].center_um, self.dx_um, self.shape)
                if all(o <= v < o + k for v, o, k in zip(c, box.offset, box.shape)):
                    m[tuple(v - o for v, o in zip(c, box.offset))] = True
            self._masks[key] = m
        return self._masks[key]

    def _per_voxel(self, i: int, amount: float) -> float:
        """Concentration per voxel of ``amount`` µmol spread over event ``i``'s region."""
        ev = self.events[i]
        return amount * concentration_per_umol(self.units[ev.substrate], max(self._count(i), 1), self.dx_um)

    def _interior_box(self, name):
        return self.run.holder(name).box(self.run.comm.rank)

    def bolus(self, indices) -> None:
        """Every rank: the bolus occurrences ``indices`` (event indices, one per occurrence due, in the
        schedule's order) added to the fields it holds."""
        for i in indices:
            ev = self.events[i]
            field = self.run.interior(ev.substrate)  # a view: the dose lands in the held array
            field[self.mask(i, self._interior_box(ev.substrate))] += np.float32(self._per_voxel(i, ev.amount_umol))

    def hold(self, name: str, indices, n_tumor=None) -> None:
        """Every rank: the active holds ``indices`` on field ``name`` clamped over its box; a hold over
        the tumour reads ``n_tumor`` (this rank's box of it, given when one of them needs it)."""
        field = self.run.interior(name)
        box = self._interior_box(name)
        for i in indices:
            ev = self.events[i]
            mask = (n_tumor > 0) if ev.region == "tumor" else self.mask(i, box)
            field[mask] = np.float32(ev.value)

    def source(self, name: str, t: float, box) -> np.ndarray:
        """Every rank: substrate ``name``'s implant source (float32, unit/min) over ``box`` (its cut of
        the layout the kernels read) at time ``t``: the active implants in the events' order."""
        out = np.zeros(tuple(box.shape), np.float32)
        for i, ev in enumerate(self.events):
            if ev.type != "implant" or ev.substrate != name or active_start(ev, t) is None:
                continue
            out[self.mask(i, box)] += np.float32(self._per_voxel(i, ev.rate_umol_per_min))
        return out
