"""On a GPU, the T-cell/tumour model equals the CPU bitwise (DESIGN.md §2; marked ``gpu``, skipped
without a usable device): 10⁵ T cells around a 300 µm tumour, 50 steps, with the rates raised so that
engagements, kills, divisions of both populations, recruitment and apoptosis all happen.

Compared: every step-to-step column of the T-cell store (``STATE_COLUMNS``) after sorting both
stores by uid, the tumour lattice and its damage and clocks, the fields and the whole timeseries.
"""

import numpy as np
import pytest

import gpusim
from gpusim.agents.tcell_store import STATE_COLUMNS
from gpusim.backend import cuda_status

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_status()[0], reason=f"no usable GPU: {cuda_status()[1]}"),
]

N_TCELLS = 100_000
STEPS = 50


def config() -> dict:
    """64³ voxels of 15 µm, Mg, O₂ and chemokine, random vessels, a 300 µm tumour (~3.3e4 cells) and
    10⁵ T cells spread through the block (~1.3e4 of them inside the tumour)."""
    return {
        "grid": {"shape": [64, 64, 64], "dx_um": 15.0}, "time": {"dt_min": 1.0}, "seed": 11,
        "substrates": [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}],
        "vessels": {"kind": "random", "voxel_fraction": 0.02},
        "tumor": {"initial_radius_um": 300.0, "cycle_rate_per_min": 0.005, "hits_to_kill": 2,
                  "hit_recovery_min": 20.0, "apoptotic_clear_min": 20.0},
        "tcells": {"initial_count": N_TCELLS, "placement": "uniform", "k_on_per_min": 0.5,
                   "k_hit_per_min": 0.2, "synapse_min": 10.0, "prolif_prob_per_kill": 0.5,
                   "division_delay_min": 10.0, "recruit_per_vessel_per_min": 0.002, "apoptosis_per_min": 1e-3,
                   "speed_um_per_min": 6.0},
    }


def final_state(backend: str):
    sim = gpusim.Simulation(config(), backend=backend)
    assert sim.tcells.n == N_TCELLS
    sim.run(minutes=STEPS, progress=False)
    be, st = sim.backend, sim.state
    host = sim.tcells.to_host()
    by_uid = np.argsort(host["uid"], kind="stable")
    cells = {c: host[c][by_uid] for c in STATE_COLUMNS}
    lattice = {name: be.to_host(getattr(st, name)) for name in ("tumor", "damage", "last_hit", "since", "n_tumor")}
    fields = {name: sim.field_host(name) for name in st.fields}
    return cells, lattice, fields, sim.timeseries, dict(sim.cells.totals)


def test_tcells_and_tumour_are_bitwise_equal_on_cpu_and_gpu():
    cpu, gpu = final_state("cpu"), final_state("cuda")
    totals = cpu[4]
    for name in ("engagements", "kills", "tumor_births", "tcells_born", "tcells_recruited", "tcells_died"):
        assert totals[name] > 0, name
    assert totals == gpu[4]
    for what, a, b in zip(("T-cell column", "lattice", "field", "timeseries"), cpu[:4], gpu[:4]):
        assert sorted(a) == sorted(b), what
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, f"{what} {name}"
            assert a[name].tobytes() == b[name].tobytes(), f"{what} {name} differs between CPU and GPU"
