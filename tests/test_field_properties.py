"""Properties every field step must have, whatever the rates: concentrations never go negative, and a
non-finite value stops the run within the step that produced it, saying where and when.

Why positivity holds (so a counterexample is a bug, not bad luck): LOD solves, per line, an M-matrix
(diagonal 1 + m·R + dt_f/3·k, off-diagonals -R) against a right side c + dt_f/3·s + 2R·bc that is
non-negative, and Thomas elimination on it has no subtractions of data; the explicit sub-step is
(c·(1 - DT·m·RD) + DT·RD·Σ neighbours + DT·s)/(1 + DT·k) with DT·(m·RD + rates) ≤ 1 by its automatic
sub-steps. Uptake enters as the rate Vmax/(Km + c_old) on the diagonal, never as a subtraction.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpusim

FACES = ("z_lo", "z_hi", "y_lo", "y_hi", "x_lo", "x_hi")


def simulation(cfg_overrides, substrates):
    cfg = {"grid": {"shape": [6, 5, 7], "dx_um": 15.0}, "time": {"dt_min": 1.0}, "init": "given",
           "substrates": substrates, "seed": 1, "backend": "cpu", **cfg_overrides}
    return gpusim.Simulation(gpusim.Config.model_validate(cfg))


# --- 7. No negative concentration, ever ---------------------------------------------------------------

# Rates are drawn as dimensionless products with the step (rate·dt, D·dt/dx²) so that stiff cases
# (rate·dt_f up to 300 with one sub-step) are common while the automatic sub-step counts stay small
# enough for ~60 examples to run in seconds: with "auto", LOD takes dt·rate/0.1 sub-steps and the
# explicit solver dt·(m·D/dx² + rates) (m <= 12), so those products are capped lower there.
STIFF = st.one_of(st.just(0.0), st.floats(1e-4, 300.0))
MILD = st.one_of(st.just(0.0), st.floats(1e-4, 8.0))
CONC = st.one_of(st.just(0.0), st.floats(1e-6, 1e3))
CONC32 = st.one_of(st.just(0.0), st.floats(2.0**-20, 1e3, width=32))
FACE = st.one_of(st.just("zero_flux"), st.just("serum"), CONC)


@st.composite
def field_problems(draw):
    """A small grid, one substrate with random rates and faces, random cells, vessels and initial field."""
    shape = tuple(draw(st.integers(1, 7)) for _ in range(3))
    solver = draw(st.sampled_from(["lod", "explicit"]))
    substeps = draw(st.one_of(st.just("auto"), st.integers(1, 4)))
    auto_or_explicit = substeps == "auto" or solver == "explicit"
    rate_dt = MILD if auto_or_explicit else STIFF
    dt = draw(st.floats(0.01, 5.0))
    dx = draw(st.sampled_from([5.0, 15.0, 30.0]))
    diff_dt_dx2 = draw(st.one_of(st.just(0.0), st.floats(1e-4, 20.0 if solver == "explicit" else 1e3)))
    km = draw(st.floats(1e-3, 1e3))
    sub = {
        "name": "s",
        "unit": "mM",
        "D_um2_per_min": diff_dt_dx2 * dx**2 / dt,
        "decay_per_min": draw(rate_dt) / dt,
        "serum": draw(CONC),
        "vessel_supply_per_min": draw(rate_dt) / dt,
        # per-cell Vmax: the solver uses Vmax·V_cell/V_voxel/(Km + c) as the rate, so draw that rate
        "uptake": {
            "tumor": {"vmax_per_min": draw(rate_dt) / dt * km * dx**3 / 2494.0, "km": km},
            "tcell": {"vmax_per_min": draw(rate_dt) / dt * km * dx**3 / 500.0, "km": km},
        },
        "secretion_per_min": {"tumor": draw(CONC) / dt},
        "boundary": {f: draw(FACE) for f in FACES},
        "substeps": substeps,
    }
    initial = draw(arrays(np.float32, shape, elements=CONC32))
    vessel = draw(arrays(np.uint8, shape, elements=st.integers(0, 1)))
    tumor = draw(arrays(np.uint8, shape, elements=st.integers(0, 1)))
    tcells = draw(arrays(np.uint8, shape, elements=st.integers(0, 4)))  # tcells.max_per_voxel = 4
    return cell_config(shape, dx, dt, solver), sub, initial, vessel, tumor, tcells


def cell_config(shape, dx, dt, solver):
    """Sections that make the engine allocate vessel, tumour and T-cell count arrays (filled by the test)."""
    return {"grid": {"shape": list(shape), "dx_um": dx}, "time": {"dt_min": dt}, "solver": solver,
            "vessels": {"kind": "random", "voxel_fraction": 0.5}, "tumor": {"initial_radius_um": 1.0},
            "tcells": {"initial_count": 0, "placement": "uniform", "speed_um_per_min": 0.25 * dx / dt}}


def run_problem(cfg, sub, initial, vessel, tumor, tcells, steps=3):
    """Set the drawn arrays into a fresh Simulation and return the field minimum after each step."""
    sim = simulation(cfg, [sub])
    sim.fields["s"][...] = initial
    sim.state.vessel[...] = vessel
    sim.state.n_tumor[...] = tumor * (1 - vessel)  # one occupant per voxel, as the engine places them
    sim.state.n_tcell[...] = tcells
    minima = []
    for _ in range(steps):
        sim.step()
        minima.append(float(sim.field_host("s").min()))
    return minima, sim.field_update.plans["s"]


# An explicit step whose weight dt·m·D/dx² lands just above 1 (m = 2 on a line of 3 voxels): n_sub =
# ceil(dt·m·RD - 1e-9) accepts 1 + 3e-10 with one sub-step, so c·(1 - DT·m·RD) < 0 next to empty voxels.
EDGE_EXPLICIT = (
    cell_config((1, 1, 3), 10.0, 1.0, "explicit"),
    {"name": "s", "unit": "mM", "D_um2_per_min": 50.0 * (1 + 3e-10), "boundary": "zero_flux"},
    np.array([[[0.0, 1.0, 0.0]]], np.float32),
    np.zeros((1, 1, 3), np.uint8),
    np.zeros((1, 1, 3), np.uint8),
    np.zeros((1, 1, 3), np.uint8),
)


@settings(max_examples=60, deadline=None)
@example(problem=EDGE_EXPLICIT)
@given(problem=field_problems())
def test_concentrations_never_go_negative(problem):
    """After every step, for any rates, step, sub-steps, faces and non-negative start: min >= 0."""
    minima, plan = run_problem(*problem)
    assert min(minima) >= 0.0, (minima, plan.describe())


# --- 8. NaN / Inf stop the run within one step --------------------------------------------------------

MESSAGE = re.compile(r"'(?P<field>\w+)'.*\(z, y, x\) = \((?P<z>\d+), (?P<y>\d+), (?P<x>\d+)\).*t = (?P<t>[0-9.]+) min")


@pytest.mark.parametrize("solver", ["lod", "explicit"])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_nonfinite_value_stops_the_run_within_one_step(solver, bad):
    """Two good steps, then one voxel of "o2_like" is poisoned: the next step raises FieldNotFiniteError
    naming that field, a voxel (z, y, x) of the grid that holds the non-finite value, and the time at
    the end of that step (3 min); the healthy second substrate is not blamed."""
    sim = simulation(
        {"solver": solver},
        [{"name": "healthy", "unit": "nM", "D_um2_per_min": 1000.0},
         {"name": "o2_like", "unit": "mmHg", "D_um2_per_min": 1000.0, "initial": 38.0, "decay_per_min": 0.1}],
    )
    sim.run(minutes=2, progress=False)
    sim.fields["o2_like"][3, 2, 4] = bad
    with pytest.raises(gpusim.FieldNotFiniteError) as info:
        sim.step()
    m = MESSAGE.search(str(info.value))
    assert m is not None, str(info.value)
    assert m["field"] == "o2_like"
    assert float(m["t"]) == pytest.approx(3.0)
    voxel = (int(m["z"]), int(m["y"]), int(m["x"]))
    assert all(0 <= v < n for v, n in zip(voxel, (6, 5, 7)))
    assert not np.isfinite(sim.field_host("o2_like")[voxel])
