"""Per-substrate solver plans: method, automatic field sub-steps and the packed kernel coefficients.

Accuracy at the default step (DESIGN.md rule 1): each substrate advances with its own field step
``dt_f = dt/n_sub``; ``substeps = "auto"`` picks the smallest ``n_sub`` with
``dt_f * max(decay + Vmax/Km (tumour) + n_max * Vmax/Km (T cells), vessel_supply) <= ACCURACY``.
The explicit solver sub-steps further, under its stability and positivity limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import layout as L

# dt_f * fastest reaction rate: with the rate on the diagonal this keeps a substrate's relaxation rate
# within ~1.7 % (3*ln(1 + x/3)/x at x = 0.1) and its steady profiles within a few % (DESIGN.md rule 1).
ACCURACY = 0.1


@dataclass
class SubstratePlan:
    """How one substrate advances: ``method`` ("lod", "explicit" or "steady") and its constants."""

    name: str
    unit: str
    method: str
    n_sub: int  # field steps per simulation step (lod/explicit)
    dt_sub_min: float
    update_every_min: float
    coef: np.ndarray  # float64[NCOEF], see layout.py
    bc_type: np.ndarray  # int32[6]
    bc_value: np.ndarray  # float64[6]
    serum: float
    fastest_rate_per_min: float  # the rate n_sub is chosen from
    serum_faces: list = field(default_factory=list)  # faces whose Dirichlet value follows the serum

    def set_serum(self, value: float) -> None:
        """Change the serum value: vessel supply target and the faces declared ``"serum"``."""
        self.serum = float(value)
        self.coef[L.KV_CS] = self.coef[L.KV] * self.serum
        derive(self.coef)
        for f in self.serum_faces:
            self.bc_value[f] = self.serum

    def describe(self) -> str:
        if self.method == "steady":
            return f"{self.name}: steady (coupled implicit solve every {self.update_every_min:g} min)"
        return f"{self.name}: {self.method}, n_sub = {self.n_sub} (dt_f = {self.dt_sub_min:.4g} min)"


def derive(coef: np.ndarray) -> np.ndarray:
    """Fill the slots that follow from the base ones (R, DT, LAM, KV, KV_CS): R2, B0..B0+4 and the
    exponentially fitted G0, G1, SG1 (layout.py). In place; returns ``coef``."""
    r, dt = coef[L.R], coef[L.DT]
    coef[L.R2] = r + r
    for m in range(5):
        coef[L.B0 + m] = 1.0 + m * r
    rate = coef[L.LAM] + coef[L.KV]
    coef[L.G0] = math.expm1(coef[L.LAM] * dt)
    coef[L.G1] = math.expm1(rate * dt)
    coef[L.SG1] = coef[L.KV_CS] * coef[L.G1] / rate if rate > 0 else 0.0
    return coef


def _neighbour_weight_max(shape, bc_type) -> int:
    """Largest diagonal weight m of the explicit stencil: 2 per axis, +1 per Dirichlet face (ghost 2*bc - c)."""
    m = 0
    for axis, n in enumerate(shape):
        lo, hi = bc_type[2 * axis], bc_type[2 * axis + 1]
        if n == 1:
            m += 2 * int(lo == L.BC_DIRICHLET) + 2 * int(hi == L.BC_DIRICHLET)
        else:
            m += 2 + int(lo == L.BC_DIRICHLET or hi == L.BC_DIRICHLET)
    return m


def make_plan(sub, cfg) -> SubstratePlan:
    """Build the plan of substrate config ``sub`` under the whole config ``cfg``."""
    dx = float(cfg.grid.dx_um)
    dt = float(cfg.time.dt_min)
    v_voxel = dx**3
    v_tumor = _tumor_volume(cfg)
    v_tcell = _tcell_volume(cfg)
    nc_max = int(cfg.tcells.max_per_voxel) if cfg.tcells is not None else 0
    has_vessels = cfg.vessels is not None

    bc_type = np.zeros(6, np.int32)
    bc_value = np.zeros(6, np.float64)
    serum_faces = []
    for i, (kind, value) in enumerate(sub.faces()):
        if kind == "zero_flux":
            continue
        bc_type[i] = L.BC_DIRICHLET
        if kind == "serum":
            serum_faces.append(i)
            bc_value[i] = float(sub.serum)
        else:
            bc_value[i] = float(value)

    coef = np.zeros(L.NCOEF, np.float64)
    coef[L.LAM] = sub.decay_per_min
    coef[L.KV] = sub.vessel_supply_per_min if has_vessels else 0.0
    coef[L.VT] = sub.uptake.tumor.vmax_per_min * v_tumor / v_voxel
    coef[L.KMT] = sub.uptake.tumor.km
    coef[L.VC] = sub.uptake.tcell.vmax_per_min * v_tcell / v_voxel
    coef[L.KMC] = sub.uptake.tcell.km
    coef[L.SEC_T] = sub.secretion_per_min.tumor * v_tumor / v_voxel
    coef[L.RD] = sub.D_um2_per_min / dx**2

    # uptake counts only where those cells can exist (a [tumor] / [tcells] section)
    tumor_rate = coef[L.VT] / coef[L.KMT] if cfg.tumor is not None else 0.0
    fastest = max(coef[L.LAM] + tumor_rate + nc_max * coef[L.VC] / coef[L.KMC], coef[L.KV])
    if sub.substeps == "auto":
        n_sub = max(1, math.ceil(dt * fastest / ACCURACY - 1e-9))
    else:
        n_sub = int(sub.substeps)
    method = sub.method
    if method == "lod" and cfg.solver == "explicit":
        method = "explicit"
        # stability and positivity: DT * (m*RD + rates) <= 1 (DESIGN.md rule 1's limit, with the
        # Dirichlet ghost's extra weight counted)
        m = _neighbour_weight_max(cfg.grid.nzyx, bc_type)
        limit = m * coef[L.RD] + fastest
        n_sub = max(n_sub, math.ceil(dt * limit), 1)
        while dt / n_sub * limit > 1.0:  # ceil's float round-off must never leave DT*limit above 1
            n_sub += 1
    dt_sub = dt / n_sub

    coef[L.R] = sub.D_um2_per_min * dt_sub / dx**2
    coef[L.DT] = dt_sub

    plan = SubstratePlan(
        name=sub.name,
        unit=sub.unit,
        method=method,
        n_sub=n_sub,
        dt_sub_min=dt_sub,
        update_every_min=float(sub.update_every_min),
        coef=coef,
        bc_type=bc_type,
        bc_value=bc_value,
        serum=float(sub.serum),
        fastest_rate_per_min=float(fastest),
        serum_faces=serum_faces,
    )
    plan.set_serum(sub.serum)
    return plan


def _tumor_volume(cfg) -> float:
    from ..config import Tumor

    return float((cfg.tumor or Tumor()).cell_volume_um3)


def _tcell_volume(cfg) -> float:
    from ..config import TCells

    return float((cfg.tcells or TCells()).cell_volume_um3)
