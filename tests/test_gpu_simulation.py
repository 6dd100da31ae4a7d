"""On a GPU, whole simulations equal the CPU bitwise (marked ``gpu``; skipped without a usable device)."""

import numpy as np
import pytest

import gpusim
from gpusim.backend import cuda_status

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_status()[0], reason=f"no usable GPU: {cuda_status()[1]}"),
]


def _both(cfg, minutes):
    runs = []
    for backend in ("cpu", "cuda"):
        sim = gpusim.Simulation(cfg, backend=backend)
        sim.run(minutes=minutes, progress=False)
        runs.append(sim)
    return runs


@pytest.mark.parametrize("solver", ["lod", "explicit"])
def test_diffusion_scenario_is_bitwise_equal_on_cpu_and_gpu(solver):
    """Steady init (multigrid), vessels, a bolus, both time-steppers and the fixed-order timeseries."""
    cfg = gpusim.scenario_config("diffusion").with_overrides({"solver": solver, "events.bolus.time_min": 2.0})
    cpu, gpu = _both(cfg, minutes=6)
    assert np.array_equal(cpu.field_host("mg"), gpu.field_host("mg"))
    for key, values in cpu.timeseries.items():
        assert np.array_equal(values, gpu.timeseries[key]), key


def test_default_substrates_with_a_tumour_and_an_implant_are_bitwise_equal():
    """Mg (LOD, vessels, tumour uptake, implant source), O2 (steady every 10 min), chemokine (secretion)."""
    cfg = gpusim.Config.model_validate({
        "grid": {"shape": [48, 40, 56]}, "init": "steady", "seed": 5,
        "substrates": [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}],
        "vessels": {"kind": "random"}, "tumor": {"initial_radius_um": 150.0},
        "events": [{"name": "implant", "type": "implant", "time_min": 0, "substrate": "mg",
                    "center_um": [360.0, 300.0, 420.0], "radius_um": 50.0, "rate_umol_per_min": 3.5e-5}],
    })
    cpu, gpu = _both(cfg, minutes=12)
    for name in ("mg", "o2", "chemokine"):
        assert np.array_equal(cpu.field_host(name), gpu.field_host(name)), name
