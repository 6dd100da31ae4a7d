"""The packed float32 parameter vector the cell rules read (one layout for the CPU loops and the CUDA
kernels), built once per run on the host from the config.

Everything that is constant over a run and that a rule needs is computed here, in float32 or through
the project's own exp/log (``gpusim.rng``), so both backends read the same bits. Per-step rates that
depend on local fields (division, necrosis, engagement) are turned into probabilities inside the rules
with :func:`gpusim.rng.prob_from_rate`.
"""

from __future__ import annotations

import math

import numpy as np

from gpusim import rng

# --- indices into the float32 parameter vector -----------------------------------------------------
DT = 0  # min; the step dt_min
DX = 1  # µm; voxel edge
SPEED_STEP = 2  # µm; speed_um_per_min * dt_min, the distance a free T cell moves per step
P_TURN = 3  # probability per step that the persistent direction is renewed: 1 - exp(-dt/persistence)
BIAS = 4  # chemotaxis_bias
CAP = 5  # max_per_voxel
CAP_T = 6  # max_per_voxel_with_tumor
K_ON = 7  # 1/min; engagement rate at A = 1, function 1
K_HIT = 8  # 1/min; hit rate at A = 1, function 1
SYNAPSE = 9  # min; mean synapse duration
P_APO = 10  # T-cell apoptosis probability per step
P_PROLIF = 11  # probability of a division after a credited kill
DIV_DELAY = 12  # min; kill -> division
KEEP_FN = 13  # 1 - exhaust_per_engagement: factor on the function 1 - E per engagement
A_FLOOR = 14  # LFA-1 floor
K_HALF = 15  # mM; LFA-1 half-activation Mg
HILL = 16  # Hill coefficient
RELAX = 17  # exp(-dt/tau) (0 when tau = 0: A = A*)
HAS_MG = 18  # 1 when an "mg" substrate exists (else A* = 1)
HAS_CHEM = 19  # 1 when a "chemokine" substrate exists (else no chemotaxis)
HAS_O2 = 20  # 1 when an "o2" substrate exists (else O2 never limits growth nor causes necrosis)
HITS_TO_KILL = 21  # hits
RECOVERY_STEPS = 22  # steps without a hit after which one hit is repaired (0: off)
CYCLE = 23  # 1/min; tumour division rate at saturating O2
O2_THR = 24  # mmHg; no division below
O2_SAT = 25  # mmHg; full rate above
NEC_THR = 26  # mmHg; necrosis starts below
NEC_MAX_O2 = 27  # mmHg; necrosis rate maximal at and below
NEC_MAX = 28  # 1/min; maximal necrosis rate
P_TAPO = 29  # tumour-cell apoptosis probability per step
APO_CLEAR_STEPS = 30  # steps a DEAD cell stays before it is cleared
NEC_CLEAR_STEPS = 31  # steps a NECROTIC cell stays before it is cleared
MG_KM = 32  # mM; Monod constant of Mg-dependent division (0: off)
PRUNE = 33  # 1: vessel voxels surrounded by necrosis are removed
HILL_INT = 34  # the Hill coefficient when it is an integer in [1, 8] (the product path), else 0
K_HALF_POW = 35  # K_half^n by the product path (float32 roundings as the rule does), when HILL_INT > 0
NPARAM = 36


def _steps(minutes: float, dt: float) -> float:
    """Whole steps covering ``minutes`` (at least 1 when minutes > 0), as a float32-exact count."""
    if minutes <= 0:
        return 0.0
    return float(max(1, math.ceil(minutes / dt - 1e-9)))


def build(cfg) -> np.ndarray:
    """The float32[NPARAM] vector of ``cfg`` (defaults where a section is absent)."""
    from gpusim.config_cells import TCells, Tumor

    tc = cfg.tcells or TCells()
    tu = cfg.tumor or Tumor()
    dt = float(cfg.time.dt_min)
    names = set(cfg.substrate_names)
    p = np.zeros(NPARAM, np.float32)
    p[DT] = dt
    p[DX] = cfg.grid.dx_um
    p[SPEED_STEP] = np.float32(tc.speed_um_per_min) * np.float32(dt)
    p[P_TURN] = 1.0 if tc.persistence_min <= 0 else rng.prob_from_rate(1.0 / tc.persistence_min, dt)
    p[BIAS] = tc.chemotaxis_bias
    p[CAP] = tc.max_per_voxel
    p[CAP_T] = tc.max_per_voxel_with_tumor
    p[K_ON] = tc.k_on_per_min
    p[K_HIT] = tc.k_hit_per_min
    p[SYNAPSE] = tc.synapse_min
    p[P_APO] = rng.prob_from_rate(tc.apoptosis_per_min, dt)
    p[P_PROLIF] = tc.prolif_prob_per_kill
    p[DIV_DELAY] = tc.division_delay_min
    p[KEEP_FN] = np.float32(1.0) - np.float32(tc.exhaust_per_engagement)
    p[A_FLOOR] = tc.lfa1.A_floor
    p[K_HALF] = tc.lfa1.K_half_mM
    p[HILL] = tc.lfa1.hill_n
    p[RELAX] = 0.0 if tc.lfa1.tau_min <= 0 else rng.exp_f32(np.float32(-dt / tc.lfa1.tau_min))
    p[HAS_MG] = 1.0 if "mg" in names else 0.0
    p[HAS_CHEM] = 1.0 if "chemokine" in names else 0.0
    p[HAS_O2] = 1.0 if "o2" in names else 0.0
    p[HITS_TO_KILL] = tu.hits_to_kill
    p[RECOVERY_STEPS] = _steps(tu.hit_recovery_min, dt)
    p[CYCLE] = tu.cycle_rate_per_min
    p[O2_THR] = tu.o2_prolif_threshold_mmHg
    p[O2_SAT] = tu.o2_prolif_saturation_mmHg
    p[NEC_THR] = tu.o2_necrosis_threshold_mmHg
    p[NEC_MAX_O2] = tu.o2_necrosis_max_mmHg
    p[NEC_MAX] = tu.necrosis_max_per_min
    p[P_TAPO] = rng.prob_from_rate(tu.apoptosis_per_min, dt)
    p[APO_CLEAR_STEPS] = _steps(tu.apoptotic_clear_min, dt)
    p[NEC_CLEAR_STEPS] = _steps(tu.necrotic_clear_min, dt)
    p[MG_KM] = tu.mg_growth_km_mM
    p[PRUNE] = 1.0 if (cfg.vessels is not None and cfg.vessels.prune_in_necrosis) else 0.0
    n = float(tc.lfa1.hill_n)
    if n == int(n) and 1 <= n <= 8:
        p[HILL_INT] = n
        p[K_HALF_POW] = rng.pow_int(np.float32(tc.lfa1.K_half_mM), int(n))  # as the rule takes Mg^n
    return p
