"""State: the arrays of a run on its device (fields, vessel mask, per-voxel cell counts) and its clock.

One grid, one index space (DESIGN.md §1): arrays are ``(z, y, x)`` over the global voxel grid; a voxel's
global index is ``(z*ny + y)*nx + x`` (< 2**32). Memory is estimated from the config before anything
is allocated, so a run that cannot fit is refused with the number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# float64 scratch of the steady (multigrid) solver per voxel: iterate, right side, diagonal, residual,
# with the coarse levels adding 1/7 more.
_STEADY_BYTES_PER_VOXEL = 4 * 8 * 8 / 7
# uint8 state, damage, event, hit mark; int8 division proposal; int32 last-hit and state clocks
_LATTICE_BYTES = 1 + 1 + 1 + 1 + 1 + 4 + 4


def bytes_per_voxel(cfg) -> dict:
    """Bytes per voxel of each kind of array a run of ``cfg`` allocates (a memory estimate)."""
    subs = cfg.substrates
    cells = cfg.tumor is not None or cfg.tcells is not None
    parts = {
        "fields (float32)": 4.0 * len(subs),
        "vessel mask (uint8)": 1.0 if cfg.vessels is not None else 0.0,
        "tumour counts (uint8)": 1.0 if cells else 0.0,
        "T-cell counts (uint8)": 1.0 if cfg.tcells is not None else 0.0,
        "tumour lattice (state, damage, clocks, events)": _LATTICE_BYTES if cells else 0.0,
        "T-cell index (counts, offsets)": 12.0 if cells else 0.0,
    }
    implants = {e.substrate for e in cfg.events if e.type == "implant"}
    parts["implant sources (float32)"] = 4.0 * len(implants)
    if cfg.solver == "explicit" and subs:
        parts["explicit ping-pong buffer (float32)"] = 4.0
    if cfg.init == "steady" or any(s.method == "steady" for s in subs):
        parts["steady-solver scratch (float64, with coarse levels)"] = _STEADY_BYTES_PER_VOXEL
    return parts


def estimate_bytes(cfg) -> int:
    """Total bytes a run of ``cfg`` allocates on its device: voxel arrays, plus the T-cell store at
    twice the initial and infused count (its geometric growth headroom)."""
    from gpusim.agents.tcell_store import bytes_per_tcell

    nz, ny, nx = cfg.grid.nzyx
    total = sum(bytes_per_voxel(cfg).values()) * nz * ny * nx
    if cfg.tcells is not None:
        n = cfg.tcells.initial_count + sum(e.count * e.repeat_count for e in cfg.events if e.type == "tcell_infusion")
        total += 2 * max(n, 1024) * bytes_per_tcell()
    return int(total)


@dataclass
class State:
    """Everything that evolves, on the run's device. ``fields[name]`` is the live current buffer."""

    shape: tuple
    dx_um: float
    fields: dict
    vessel: object = None  # uint8 (z, y, x) or None
    n_tumor: object = None  # uint8 LIVE tumour cells per voxel, or None
    n_tcell: object = None  # uint8 T cells per voxel, or None
    # the tumour lattice (with a [tumor] or [tcells] section; see gpusim.agents.rules for the codes)
    tumor: object = None  # uint8 state: EMPTY, LIVE, DEAD, NECROTIC
    damage: object = None  # uint8 hits received (reversible)
    last_hit: object = None  # int32 step of the last hit (or of the last repair)
    since: object = None  # int32 step the current state began (clearance clock)
    tumor_event: object = None  # uint8 what happened this step (rules.EV_* bits)
    div_dir: object = None  # int8 scratch: this step's division proposal (neighbour code or -1)
    hit_mark: object = None  # uint8 scratch: 1 where a T cell aimed a hit this step (cleared by T1)
    sources: dict = field(default_factory=dict)  # substrate -> float32 source (unit/min) or None
    step: int = 0
    time_min: float = 0.0

    @property
    def n_voxels(self) -> int:
        nz, ny, nx = self.shape
        return nz * ny * nx

    def voxel_centers_um(self):
        """Host arrays (z, y, x) of voxel-centre coordinates in µm, broadcastable to the grid."""
        nz, ny, nx = self.shape
        d = self.dx_um
        return (
            ((np.arange(nz) + 0.5) * d)[:, None, None],
            ((np.arange(ny) + 0.5) * d)[None, :, None],
            ((np.arange(nx) + 0.5) * d)[None, None, :],
        )

    def sphere_mask(self, center_um, radius_um) -> np.ndarray:
        """Host bool mask of voxels whose centre lies within ``radius_um`` of ``center_um`` (z, y, x);
        at least the voxel holding the centre, so a tiny sphere is never empty."""
        from .events import centre_voxel, sphere_in_box

        mask = sphere_in_box(center_um, radius_um, self.dx_um, (0, 0, 0), self.shape)
        if not mask.any():
            mask[centre_voxel(center_um, self.dx_um, self.shape)] = True
        return mask
