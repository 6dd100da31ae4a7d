"""The tumour lattice (DESIGN.md §1 rule 6) and the vessel mask, each fact against an answer computed
here: divisions land only in free voxels, births − deaths account for the LIVE count, isolated cells
divide at the Poisson rate, a growing sphere stays round, hypoxic necrosis at its rate, clearance
after the documented number of steps, vessel pruning, tumour vascularity and file masks.

Timeseries rows are written at the END of each step, so row t holds the state after t + 1 steps;
the count before the first step comes from ``sim.tumor_state()``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import gpusim
from gpusim import rng, vessels
from gpusim.agents import params as P
from gpusim.agents.rules import (DEAD, EMPTY, EV_APOPTOSIS, EV_BORN, EV_CLEARED, EV_KILLED, EV_NECROSIS,
                                 EV_PRUNED, LIVE, NECROTIC)
from gpusim.agents.spatial_index import voxel_of

DX = 15.0


def config(shape, **sections):
    base = {"grid": {"shape": list(shape), "dx_um": DX}, "seed": 3, "backend": "cpu"}
    base.update(sections)
    return gpusim.Config.model_validate(base)


def p_step(rate_per_min, dt_min=1.0) -> float:
    """The model's per-step probability 1 - exp(-rate*dt) (float32, as the rules compute it)."""
    return float(rng.prob_from_rate(np.float32(rate_per_min), np.float32(dt_min)))


def static_o2(**extra):
    """An O₂ substrate that never changes once set: no diffusion, decay, uptake or vessel supply,
    zero-flux faces. Cells then see exactly the values a test writes into ``sim.fields["o2"]``."""
    return {"name": "o2", "D_um2_per_min": 0.0, "decay_per_min": 0.0, "boundary": "zero_flux",
            "vessel_supply_per_min": 0.0, "method": "lod", "substeps": 1,
            "uptake": {"tumor": {"vmax_per_min": 0.0}, "tcell": {"vmax_per_min": 0.0}}, **extra}


def tcell_counts(sim) -> np.ndarray:
    """Living T cells per voxel (flat), from the snapshot."""
    snap = sim.tcell_snapshot()
    n = int(np.prod(sim.state.shape))
    return np.bincount(voxel_of(snap["position_um"], sim.state.dx_um, sim.state.shape), minlength=n)


# --- a run with every lattice event: division, necrosis, killing, apoptosis, clearance ------------------

def _busy_run():
    """A 20³ block: a 90 µm avascular-by-supply tumour (vessels block sites but supply no O₂; the
    steady O₂ with D = 5e3 µm²/min and the default Michaelis–Menten uptake falls below the 5 mmHg
    necrosis threshold inside r ≈ 68 µm: c(r) = 38 − q(R² − r²)/(6D), q = 281 mmHg/min), fast
    division, T cells that kill with one hit, tumour apoptosis and short clearance times."""
    return config(
        (20, 20, 20),
        substrates=[{"name": "o2", "D_um2_per_min": 5.0e3, "vessel_supply_per_min": 0.0, "update_every_min": 5.0}],
        vessels={"kind": "random", "voxel_fraction": 0.03, "tumor_voxel_fraction": 0.05},
        tumor={"initial_radius_um": 90.0, "cycle_rate_per_min": 0.2, "apoptosis_per_min": 0.002,
               "hits_to_kill": 1, "apoptotic_clear_min": 10.0, "necrotic_clear_min": 15.0},
        tcells={"initial_count": 40, "placement": "tumor", "k_on_per_min": 0.3, "k_hit_per_min": 0.2,
                "synapse_min": 10.0, "recruit_per_vessel_per_min": 0.005},
    )


@pytest.fixture(scope="module")
def busy():
    """Steps the busy run once, recording per step the lattice, the event bits and the T-cell counts
    at the start of the step (what a division may not exceed)."""
    sim = gpusim.Simulation(_busy_run())
    vessel = sim.state.vessel.copy()
    lattices = [sim.tumor_state()]
    counts_before, events = [], []
    for _ in range(60):
        counts_before.append(tcell_counts(sim))
        sim.step()
        lattices.append(sim.tumor_state())
        events.append(sim.state.tumor_event.copy())
    return sim, vessel, lattices, counts_before, events


def test_a_daughter_lands_only_in_a_voxel_that_was_empty_free_of_vessels_and_not_crowded(busy):
    """Rule 6: one cell per voxel, and a division goes to a FREE neighbour — EMPTY at the start of the
    step, not a vessel, holding no more T cells than a tumour voxel may (max_per_voxel_with_tumor).
    Checked voxel by voxel on every step of a run in which cells die, are cleared and divide."""
    sim, vessel, lattices, counts_before, events = busy
    cap_t = sim.config.tcells.max_per_voxel_with_tumor
    born_total = 0
    for t in range(len(events)):
        before, after = lattices[t], lattices[t + 1]
        became_live = (after == LIVE) & (before != LIVE)
        born_total += int(became_live.sum())
        assert np.all(before[became_live] == EMPTY), f"step {t}: a cell appeared on an occupied voxel"
        assert not np.any(vessel[became_live]), f"step {t}: a daughter landed on a vessel"
        assert np.all(counts_before[t].reshape(after.shape)[became_live] <= cap_t), (
            f"step {t}: a daughter landed in a voxel crowded with T cells")
        # the event bits say the same: every new LIVE cell is a birth, and every birth is a new LIVE cell
        np.testing.assert_array_equal(became_live, (events[t] & EV_BORN) != 0)
        assert not np.any((after == LIVE) & (vessel > 0)), f"step {t}: a LIVE cell on a vessel"
    assert born_total > 200  # the check above saw real divisions


def test_births_minus_deaths_account_for_the_live_count_every_step(busy):
    """tumor_live[t] = N₀ + tumor_births[t] − tumor_deaths[t] exactly, with N₀ counted on the lattice
    before the first step (row t is the end of step t), in a run where cells are born, killed by
    T cells, turn necrotic, die by apoptosis and are cleared (each kind of event occurs)."""
    sim, _vessel, lattices, _counts, events = busy
    ts = sim.timeseries
    n0 = int((lattices[0] == LIVE).sum())
    live = ts["tumor_live"]
    np.testing.assert_array_equal(live, n0 + ts["tumor_births"] - ts["tumor_deaths"])
    # and the counts agree with the lattices themselves
    np.testing.assert_array_equal(live, [int((lat == LIVE).sum()) for lat in lattices[1:]])
    seen = np.bitwise_or.reduce(np.stack(events).reshape(-1))
    for bit, what in ((EV_BORN, "division"), (EV_KILLED, "killing"), (EV_NECROSIS, "necrosis"),
                      (EV_APOPTOSIS, "apoptosis"), (EV_CLEARED, "clearance")):
        assert seen & bit, f"the run had no {what}: the accounting was not exercised"
    assert ts["kills"][-1] > 0 and ts["tumor_births"][-1] > 0


# --- division rate ----------------------------------------------------------------------------------------

def test_isolated_cells_divide_at_the_poisson_cycle_rate():
    """16³ = 4096 single LIVE cells 5 voxels apart, no O₂ (growth unlimited) and no T cells, grown for
    one mean cycle n = 1/rate = 20 steps: each LIVE cell divides with p = 1 − exp(−rate·dt) per step
    and daughters divide from the next step, so E[N] = N₀(1 + p)ⁿ (a Galton–Watson process).

    Crowding is negligible: a cell is contact-inhibited only when all 26 neighbours are taken, and a
    division is lost only when two cells of one clone pick the same empty voxel in the same step
    (≈ p²·(pairs)/20 ≈ 2e-4 per clone and step against ≈ 0.13 births), while clones, ≈ 1 generation
    deep and 4 empty voxels apart, do not meet. The clone size after one cycle has mean m ≈ 2.7 and
    variance ≈ m(m − 1) (Yule), so the total's relative sd is 0.79/√4096 = 1.2 %: 5 % is 4 sd."""
    rate, spacing, per_axis = 0.05, 5, 16
    n = per_axis * spacing
    sim = gpusim.Simulation(config((n, n, n), tumor={"initial_radius_um": 0.0, "cycle_rate_per_min": rate}))
    lattice = np.zeros((n, n, n), np.uint8)
    lattice[2::spacing, 2::spacing, 2::spacing] = LIVE
    sim.set_tumor(lattice)
    n0 = int((sim.tumor_state() == LIVE).sum())
    assert n0 == per_axis**3
    steps = int(round(1.0 / rate))
    sim.run(minutes=steps, progress=False)
    expected = n0 * (1.0 + p_step(rate)) ** steps
    got = int(sim.timeseries["tumor_live"][-1])
    assert got == pytest.approx(expected, rel=0.05), f"{got} LIVE cells, expected {expected:.0f}"


def _cone_radii(lattice, centre_vox, directions, half_angle_deg=20.0):
    """Equivalent radius (voxels) of the LIVE volume in a cone around each direction:
    R = (3·N_cone/Ω)^(1/3), Ω = 2π(1 − cos θ) — the mean radius of the boundary over the cone."""
    live = np.argwhere(lattice == LIVE) + 0.5 - np.asarray(centre_vox)
    r = np.linalg.norm(live, axis=1)
    u = live / np.maximum(r, 1e-9)[:, None]
    cos_t = math.cos(math.radians(half_angle_deg))
    omega = 2.0 * math.pi * (1.0 - cos_t)
    return np.array([(3.0 * np.count_nonzero(u @ d >= cos_t) / omega) ** (1.0 / 3.0) for d in directions])


def test_a_growing_sphere_stays_isotropic():
    """A 45 µm (3-voxel) seed sphere in a 40³ block, no O₂ limit and no T cells, grown at 0.2/min for
    40 steps to ≈ 12 voxels: the division weights 1/distance over the 26 neighbours make the front
    advance alike along the 6 axes and the 8 diagonals. The mean boundary radius in a 20° cone around
    each of the 14 directions agrees with the overall mean within 15 %, and so do the axis and
    diagonal means (a face-neighbour-only rule would grow an octahedron: diagonal/axis ≈ 0.58)."""
    n = 40
    sim = gpusim.Simulation(config((n, n, n), seed=2,
                                   tumor={"initial_radius_um": 45.0, "cycle_rate_per_min": 0.2}))
    sim.run(minutes=40, progress=False)
    lattice = sim.tumor_state()
    assert not lattice[[0, -1]].any() and not lattice[:, [0, -1]].any() and not lattice[:, :, [0, -1]].any(), (
        "the tumour reached a face: the shape is cut by the block")
    axes = [np.array(v, float) for v in np.vstack([np.eye(3), -np.eye(3)])]
    diagonals = [np.array(v, float) / math.sqrt(3.0) for v in itertools.product((1, -1), repeat=3)]
    centre = (n / 2, n / 2, n / 2)  # grid centre, in voxel units
    r_axis = _cone_radii(lattice, centre, axes)
    r_diag = _cone_radii(lattice, centre, diagonals)
    mean = np.concatenate([r_axis, r_diag]).mean()
    assert mean > 9.0, f"mean radius {mean:.1f} voxels: the sphere hardly grew from 3"
    assert r_axis.mean() == pytest.approx(r_diag.mean(), rel=0.15), (r_axis, r_diag)
    np.testing.assert_allclose(np.concatenate([r_axis, r_diag]), mean, rtol=0.15)


# --- hypoxic necrosis -------------------------------------------------------------------------------------

def test_hypoxic_cells_turn_necrotic_at_the_rate_set_by_oxygen():
    """A block filled with LIVE cells (no division), O₂ held at 1 mmHg (≤ o2_necrosis_max = 2.5: the
    maximal rate), 3.75 mmHg (halfway to the 5 mmHg threshold: half the rate, linear in between) and
    20 mmHg (above the threshold: none). After n = 30 steps the LIVE fraction in each slab is
    (1 − p)ⁿ, p = 1 − exp(−rate·dt), within 4 binomial sd (≈ 3 % of the value for 4000 cells)."""
    nec_max, steps = 0.02, 30
    shape = (30, 20, 20)
    sim = gpusim.Simulation(config(shape, substrates=[static_o2()],
                                   tumor={"initial_radius_um": 0.0, "cycle_rate_per_min": 0.0,
                                          "necrosis_max_per_min": nec_max}))
    sim.set_tumor(np.full(shape, LIVE, np.uint8))
    slabs = {1.0: slice(0, 10), 3.75: slice(10, 20), 20.0: slice(20, 30)}
    for o2, zs in slabs.items():
        sim.fields["o2"][zs] = np.float32(o2)
    sim.run(minutes=steps, progress=False)
    lattice = sim.tumor_state()
    assert np.array_equal(np.unique(sim.field_host("o2")), sorted(slabs))  # O₂ stayed as set
    for o2, rate in ((1.0, nec_max), (3.75, nec_max / 2)):
        slab = lattice[slabs[o2]]
        q = (1.0 - p_step(rate)) ** steps
        frac = np.count_nonzero(slab == LIVE) / slab.size
        sd = math.sqrt(q * (1.0 - q) / slab.size)
        assert abs(frac - q) < 4 * sd, f"O2 {o2} mmHg: {frac:.4f} LIVE left, expected {q:.4f} ± {sd:.4f}"
        assert np.all((slab == LIVE) | (slab == NECROTIC))  # hypoxia kills by necrosis only
    assert np.all(lattice[slabs[20.0]] == LIVE)


# --- clearance --------------------------------------------------------------------------------------------

def test_dead_and_necrotic_cells_are_cleared_after_their_documented_number_of_steps():
    """With dt = 0.5 min, apoptotic_clear_min = 3.2 → ⌈6.4⌉ = 7 steps and necrotic_clear_min = 4 → 8
    steps: a cell that turns DEAD (apoptosis, or set DEAD at the start) or NECROTIC (hypoxia) in step
    s is cleared — becomes EMPTY — in step s + 7 or s + 8 exactly, voxel by voxel."""
    dt, apo_min, nec_min = 0.5, 3.2, 4.0
    keep = {DEAD: math.ceil(apo_min / dt), NECROTIC: math.ceil(nec_min / dt)}
    assert (keep[DEAD], keep[NECROTIC]) == (P._steps(apo_min, dt), P._steps(nec_min, dt)) == (7, 8)
    shape = (8, 12, 12)
    cfg = config(shape, time={"dt_min": dt}, substrates=[static_o2()],
                 tumor={"initial_radius_um": 0.0, "cycle_rate_per_min": 0.0, "necrosis_max_per_min": 0.05,
                        "apoptosis_per_min": 0.05, "apoptotic_clear_min": apo_min, "necrotic_clear_min": nec_min})
    sim = gpusim.Simulation(cfg)
    lattice = np.full(shape, LIVE, np.uint8)
    lattice[6] = DEAD  # preset: their clock starts at step 0
    lattice[7] = NECROTIC
    sim.set_tumor(lattice)
    sim.fields["o2"][:4] = np.float32(1.0)  # hypoxic half: necrosis; the rest at 38 mmHg: apoptosis only
    died_at = np.where(lattice == LIVE, -1, 0).astype(np.int64)  # step each cell died (-1: not yet)
    kind = lattice.copy()
    cleared_at = np.full(shape, -1, np.int64)
    steps = 40
    for s in range(steps):
        sim.step()
        ev = sim.state.tumor_event
        new_dead = (ev & (EV_NECROSIS | EV_APOPTOSIS)) != 0
        died_at[new_dead] = s
        kind[new_dead] = sim.tumor_state()[new_dead]
        cleared = (ev & EV_CLEARED) != 0
        assert np.all(cleared_at[cleared] == -1)
        cleared_at[cleared] = s
    for state in (DEAD, NECROTIC):
        mine = (kind == state) & (died_at >= 0)
        due = mine & (died_at + keep[state] < steps)
        assert due.sum() > 30, f"too few {state} cells came due for clearance"
        np.testing.assert_array_equal(cleared_at[due] - died_at[due], keep[state])
        assert np.all(cleared_at[mine & ~due] == -1)  # not before their time
    final = sim.tumor_state()
    assert np.all(final[cleared_at >= 0] == EMPTY)  # nothing grows back (cycle rate 0)


# --- vessels ----------------------------------------------------------------------------------------------

def _one_vessel(tmp_path, shape, where):
    mask = np.zeros(shape, np.uint8)
    mask[where] = 1
    path = tmp_path / "vessel.npy"
    np.save(path, mask)
    return mask, str(path)


@pytest.mark.parametrize("prune, n_necrotic, kept", [(True, 13, False), (True, 12, True), (False, 26, True)],
                         ids=["prune-13", "prune-12-keeps", "no-prune-26-keeps"])
def test_a_vessel_in_necrosis_is_pruned_only_with_13_necrotic_neighbours_and_the_flag_on(tmp_path, prune,
                                                                                       n_necrotic, kept):
    """vessels.prune_in_necrosis = true removes a vessel voxel with >= 13 NECROTIC cells among its 26
    neighbours (12 keep it); false keeps it even when fully surrounded."""
    shape, centre = (7, 7, 7), (3, 3, 3)
    mask, path = _one_vessel(tmp_path, shape, centre)
    sim = gpusim.Simulation(config(shape, vessels={"kind": "file", "path": path, "prune_in_necrosis": prune},
                                   tumor={"initial_radius_um": 0.0, "cycle_rate_per_min": 0.0}))
    lattice = np.zeros(shape, np.uint8)
    neighbours = [tuple(np.add(centre, d)) for d in itertools.product((-1, 0, 1), repeat=3) if any(d)]
    for w in neighbours[:n_necrotic]:
        lattice[w] = NECROTIC
    sim.set_tumor(lattice)
    sim.step()
    assert bool(sim.state.vessel[centre]) is kept
    assert bool(sim.state.tumor_event[centre] & EV_PRUNED) is (not kept)
    assert sim.state.vessel.sum() == mask.sum() - (0 if kept else 1)


def _inside_initial_sphere(shape, radius_um):
    """Voxels whose centre lies within radius_um of the grid centre."""
    c = [(np.arange(n) + 0.5) * DX - n * DX / 2 for n in shape]
    return c[0][:, None, None] ** 2 + c[1][None, :, None] ** 2 + c[2][None, None, :] ** 2 <= radius_um**2


def test_tumor_voxel_fraction_zero_leaves_the_initial_tumour_avascular():
    """vessels.tumor_voxel_fraction = 0: no vessel voxel inside the initial sphere, every voxel of the
    sphere holds a LIVE cell, and the random network outside the sphere is untouched."""
    shape, radius = (30, 30, 30), 120.0
    inside = _inside_initial_sphere(shape, radius)
    sim = gpusim.Simulation(config(shape, vessels={"kind": "random", "voxel_fraction": 0.02,
                                                   "tumor_voxel_fraction": 0.0},
                                   tumor={"initial_radius_um": radius}))
    v = sim.state.vessel
    network = vessels.random_mask(shape, 0.02, 150.0, DX, sim.config.seed)
    assert network[inside].sum() > 0  # there were vessels to remove
    assert v[inside].sum() == 0
    np.testing.assert_array_equal(v[~inside], network[~inside])
    np.testing.assert_array_equal(sim.tumor_state() == LIVE, inside)


def test_tumor_voxel_fraction_sets_the_vessel_density_inside_the_initial_tumour():
    """vessels.tumor_voxel_fraction = 0.1: the vessel fraction of the ~2100 voxels of a 120 µm sphere
    is 0.1 within 4 binomial sd (each voxel a vessel with probability 0.1, independently); tumour
    cells fill the rest of the sphere and the network outside is untouched."""
    shape, radius, target = (30, 30, 30), 120.0, 0.1
    inside = _inside_initial_sphere(shape, radius)
    sim = gpusim.Simulation(config(shape, vessels={"kind": "random", "voxel_fraction": 0.02,
                                                   "tumor_voxel_fraction": target},
                                   tumor={"initial_radius_um": radius}))
    v = sim.state.vessel
    n_in = int(inside.sum())
    frac = v[inside].sum() / n_in
    assert abs(frac - target) < 4 * math.sqrt(target * (1 - target) / n_in), frac
    network = vessels.random_mask(shape, 0.02, 150.0, DX, sim.config.seed)
    np.testing.assert_array_equal(v[~inside], network[~inside])
    np.testing.assert_array_equal(sim.tumor_state() == LIVE, inside & (v == 0))


def test_a_vessel_file_is_used_as_given_and_tumour_cells_avoid_it(tmp_path):
    """vessels.kind = 'file': the .npy mask (bool here) becomes sim.state.vessel voxel for voxel, and the
    initial tumour fills its sphere except the vessel voxels (one occupant per voxel)."""
    shape, radius = (14, 16, 18), 75.0
    mask = np.random.default_rng(11).random(shape) < 0.1
    path = tmp_path / "net.npy"
    np.save(path, mask)
    sim = gpusim.Simulation(config(shape, vessels={"kind": "file", "path": str(path)},
                                   tumor={"initial_radius_um": radius}))
    np.testing.assert_array_equal(sim.state.vessel, mask.astype(np.uint8))
    inside = _inside_initial_sphere(shape, radius)
    np.testing.assert_array_equal(sim.tumor_state() == LIVE, inside & ~mask)
    assert (inside & mask).any()
