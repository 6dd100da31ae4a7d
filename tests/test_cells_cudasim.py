"""The numba.cuda agent kernels (``gpusim.agents.cuda_loops``) give the CPU's bits (DESIGN.md §2):
a tiny tumour with T cells stepped through the kernels under the CUDA simulator equals the same run
through the numba CPU loops (``gpusim.agents.cpu_loops``), state and timeseries, byte for byte.

The simulator switch (``NUMBA_ENABLE_CUDASIM=1``) is process-wide, so that run is a subprocess (with
``-W error::RuntimeWarning``: an integer overflow in the simulator's Python arithmetic fails it). It
builds the Simulation on the CPU backend (NumPy arrays, which the simulator accepts) and routes the
agent kernels — every rule phase, the voxel binning and the (voxel, uid) sort — through
``cuda_loops``. The rates are raised so that in 5 steps T cells engage, kill, divide, die, are
recruited and move and the tumour divides, and the simulator stays fast enough: 10³ voxels, 30 T cells.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import gpusim
from test_cells_determinism import state_of, step_counting_moves  # the one definition of "state"

REPO_ROOT = Path(gpusim.__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
STEPS = 5


def tiny_config() -> dict:
    """10³ voxels, a 45 µm tumour (~130 cells) with 30 T cells in it; every rule fires in 5 steps."""
    return {
        "grid": {"shape": [10, 10, 10], "dx_um": 15.0}, "time": {"dt_min": 1.0}, "seed": 3, "backend": "cpu",
        "substrates": [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}],
        "vessels": {"kind": "random", "voxel_fraction": 0.03},
        "tumor": {"initial_radius_um": 45.0, "cycle_rate_per_min": 0.05, "hits_to_kill": 1,
                  "apoptotic_clear_min": 2.0},
        "tcells": {"initial_count": 30, "placement": "tumor", "k_on_per_min": 2.0, "k_hit_per_min": 1.0,
                   "synapse_min": 2.0, "prolif_prob_per_kill": 1.0, "division_delay_min": 1.0,
                   "recruit_per_vessel_per_min": 0.1, "apoptosis_per_min": 0.02, "speed_um_per_min": 6.0,
                   "persistence_min": 1.0},
    }


def run_tiny(kernels: str) -> dict:
    """The tiny run with the agent kernels of ``kernels`` ("cpu_loops" or "cuda_loops"): its state
    after STEPS steps (every STATE_COLUMN in row order, lattice, fields, timeseries, totals)."""
    import importlib

    sim = gpusim.Simulation(tiny_config())
    if kernels != "cpu_loops":
        k = importlib.import_module(f"gpusim.agents.{kernels}")
        sim.cells.k = k  # the rule phases
        sim.backend._modules["agents"] = k  # the binning and sort of sort_by_voxel_uid too
    moved = step_counting_moves(sim, STEPS)
    out = state_of(sim)
    for name, value in sim.cells.totals.items():
        out[f"total_{name}"] = np.array([value], np.int64)
    out["total_moved"] = np.array([moved], np.int64)
    return out


_CUDASIM_SCRIPT = """
import sys
import numba, numpy as np
assert numba.config.ENABLE_CUDASIM == 1
sys.path.insert(0, {tests!r})
import test_cells_cudasim as T
import gpusim.agents.cuda_loops as C
assert type(C._sense).__module__.startswith("numba.cuda.simulator"), type(C._sense)
np.savez({out!r}, **T.run_tiny("cuda_loops"))
"""


def test_cuda_kernels_under_the_simulator_equal_the_cpu_loops_bitwise(tmp_path):
    out = tmp_path / "cudasim.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c",
                           _CUDASIM_SCRIPT.format(tests=str(TESTS_DIR), out=str(out))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as z:
        sim_state = {k: z[k] for k in z.files}
    cpu_state = run_tiny("cpu_loops")

    # the run exercises every phase (the CPU's counts; the simulator's are compared below)
    for name in ("engagements", "kills", "tumor_births", "tcells_born", "tcells_recruited", "tcells_died",
                 "moved"):
        assert cpu_state[f"total_{name}"][0] > 0, name

    assert sorted(sim_state) == sorted(cpu_state)
    diff = [k for k in sorted(cpu_state)
            if sim_state[k].dtype != cpu_state[k].dtype or sim_state[k].shape != cpu_state[k].shape
            or sim_state[k].tobytes() != cpu_state[k].tobytes()]
    assert not diff, f"CUDA simulator and CPU differ in {diff}"
