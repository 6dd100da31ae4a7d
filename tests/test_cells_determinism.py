"""Determinism of the T-cell/tumour model on the CPU (DESIGN.md §2): the same seed gives the same bits
on a repeated run, at 1 and 2 numba threads, and with the agent arrays randomly permuted before a step;
a different seed gives a different state, so the equalities can fail.

The system is small but busy: 20³ voxels, Mg, O₂ and chemokine, random vessels, a tumour of radius
90 µm and 150 T cells inside it, with rates raised so that in 200 steps T cells engage, hit, kill,
divide, die, are recruited and move, and the tumour divides and is cleared — every rule whose
order of evaluation could leak into the result runs. "State" is every step-to-step column of the
T-cell store (``STATE_COLUMNS``, in row order), the tumour lattice arrays, every field and the whole
timeseries, compared as raw bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import gpusim
from gpusim.agents import rules as R
from gpusim.agents.spatial_index import voxel_of
from gpusim.agents.tcell_store import STATE_COLUMNS

REPO_ROOT = Path(gpusim.__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
SEED = 7
STEPS = 200
LATTICE = ("tumor", "damage", "last_hit", "since", "n_tumor", "n_tcell", "vessel")


def busy_config(seed: int = SEED) -> dict:
    """20³ voxels of 15 µm, a 90 µm tumour with 150 T cells in it; rates raised so every rule fires."""
    return {
        "grid": {"shape": [20, 20, 20], "dx_um": 15.0}, "time": {"dt_min": 1.0}, "seed": seed,
        "backend": "cpu",
        "substrates": [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}],
        "vessels": {"kind": "random", "voxel_fraction": 0.02},
        "tumor": {"initial_radius_um": 90.0, "cycle_rate_per_min": 0.005, "hits_to_kill": 2,
                  "hit_recovery_min": 20.0, "apoptotic_clear_min": 60.0},
        "tcells": {"initial_count": 150, "placement": "tumor", "k_on_per_min": 0.5, "k_hit_per_min": 0.1,
                   "synapse_min": 15.0, "prolif_prob_per_kill": 0.5, "division_delay_min": 30.0,
                   "recruit_per_vessel_per_min": 0.005, "apoptosis_per_min": 1e-3,
                   "speed_um_per_min": 6.0},
    }


def step_counting_moves(sim, steps: int) -> int:
    """Advance ``steps`` steps; return how many T cells moved into another voxel (FL_MOVED) in all."""
    moved = 0
    for _ in range(steps):
        sim.step()
        moved += int(np.count_nonzero(sim.tcells.flags & R.FL_MOVED))
    return moved


def state_of(sim) -> dict:
    """Host copies of everything that carries state from step to step, plus the timeseries."""
    be, st = sim.backend, sim.state
    host = sim.tcells.to_host()
    out = {f"tcell_{c}": host[c] for c in STATE_COLUMNS}
    for name in LATTICE:
        out[f"lattice_{name}"] = be.to_host(getattr(st, name))
    for name, f in st.fields.items():
        out[f"field_{name}"] = be.to_host(f)
    for name, values in sim.timeseries.items():
        out[f"ts_{name}"] = np.asarray(values)
    out["totals"] = np.array([sim.cells.totals[k] for k in sorted(sim.cells.totals)], np.int64)
    out["step"] = np.array([st.step], np.int64)
    return out


def differing(a: dict, b: dict) -> list[str]:
    """Names whose arrays differ in key set, dtype, shape or any byte."""
    names = sorted(set(a) | set(b))
    return [k for k in names
            if k not in a or k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
            or a[k].tobytes() != b[k].tobytes()]


def assert_bitwise(a: dict, b: dict) -> None:
    diff = differing(a, b)
    assert not diff, f"not bitwise equal: {diff}"


def run_state(seed: int = SEED, steps: int = STEPS) -> dict:
    sim = gpusim.Simulation(busy_config(seed))
    sim.run(minutes=steps, progress=False)
    return state_of(sim)


@pytest.fixture(scope="module", autouse=True)
def one_numba_thread():
    """In-process runs use one numba thread: the thread count has its own test (subprocesses with 1
    and 2 threads), and ~2000 short parallel loops per run cost 10x more on a loaded machine."""
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


@pytest.fixture(scope="module")
def reference():
    """The seed-7 run: (state after 200 steps, T-cell moves, cell totals)."""
    sim = gpusim.Simulation(busy_config())
    moved = step_counting_moves(sim, STEPS)
    return state_of(sim), moved, dict(sim.cells.totals), sim.timeseries


def test_the_reference_run_exercises_every_rule(reference):
    """Engagements, kills, tumour and T-cell divisions, recruitment, moves, T-cell apoptosis and the
    clearing of dead cells all happen, and the tumour is still there at the end."""
    _, moved, totals, ts = reference
    assert totals["engagements"] > 0
    assert totals["kills"] > 0
    assert totals["tumor_births"] > 0
    assert totals["tcells_born"] > 0
    assert totals["tcells_recruited"] > 0
    assert totals["tcells_died"] > 0
    assert moved > 0
    assert ts["tumor_live"][-1] > 0 and ts["tcells_engaged"][-1] > 0
    # DEAD cells are cleared after 60 min: fewer remain than were killed
    assert ts["tumor_dead"][-1] < totals["kills"]


def test_same_seed_gives_bitwise_identical_state(reference):
    assert_bitwise(reference[0], run_state())


def test_a_different_seed_gives_a_different_state(reference):
    """The equality tests can fail: another seed moves the vessels, the T cells and the tumour."""
    diff = differing(reference[0], run_state(seed=SEED + 1))
    for name in ("lattice_tumor", "lattice_vessel", "tcell_pos_um", "ts_kills", "field_mg"):
        assert name in diff


def test_permuting_the_agent_arrays_before_a_step_changes_nothing(reference):
    """Runs A and B side by side; B's rows are randomly permuted before step 0 and before step 100.
    The sort by (voxel, uid) at the start of each step makes the order of the rows irrelevant: A and
    B are bitwise equal one step after each permutation (when agents sharing a voxel would still
    show their order) and at the end, where A is the reference run."""
    a, b = gpusim.Simulation(busy_config()), gpusim.Simulation(busy_config())
    crowded = 0
    for k, at in enumerate((0, 100)):
        for sim in (a, b):
            step_counting_moves(sim, at - sim.state.step)
        s = b.tcells
        before = s.to_host()
        crowded = max(crowded, int(np.bincount(voxel_of(before["pos_um"], 15.0, (20, 20, 20))).max()))
        order = np.random.default_rng(100 + k).permutation(s.n)
        s.permute(order)
        after = s.to_host()
        assert not np.array_equal(after["uid"], before["uid"])  # the rows really moved
        for c in STATE_COLUMNS:
            assert np.array_equal(after[c], before[c][order])
        for sim in (a, b):
            step_counting_moves(sim, 1)
        assert_bitwise(state_of(a), state_of(b))
    assert crowded >= 2  # some voxel held several T cells when B was permuted: their order was tested
    for sim in (a, b):
        step_counting_moves(sim, STEPS - sim.state.step)
    assert_bitwise(state_of(a), state_of(b))
    assert_bitwise(reference[0], state_of(a))


_THREAD_SCRIPT = """
import sys
import numba, numpy as np
sys.path.insert(0, {tests!r})
import test_cells_determinism as T
assert numba.get_num_threads() == {threads}, numba.get_num_threads()
np.savez({out!r}, **T.run_state())
"""


def test_the_state_does_not_depend_on_the_numba_thread_count(reference, tmp_path):
    """1 and 2 numba threads (separate processes: the count is fixed at start-up) give the same bits,
    equal to this process's run too."""
    states = []
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        # idle OpenMP threads sleep instead of spinning: 4x faster on a loaded machine, same results
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        script = _THREAD_SCRIPT.format(tests=str(TESTS_DIR), threads=threads, out=str(out))
        proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", script], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        with np.load(out) as z:
            states.append({k: z[k] for k in z.files})
    assert_bitwise(states[0], states[1])
    assert_bitwise(reference[0], states[0])
