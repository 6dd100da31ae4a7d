"""Therapy events with the cell model present (DESIGN.md §1 rule 7) and T-cell entry: a bolus adds its
amount, the intratumoral implant scenario, repeats fire their stated number of times, T-cell
infusions land where their placement says within capacity, recruitment happens at vessels and
scales with A*(serum Mg). Each against an answer computed here.

Step n covers [n·dt, (n+1)·dt); events are evaluated at its start, and timeseries row n is written
at its end."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpusim
from gpusim import rng
from gpusim.agents import params as P
from gpusim.agents.placement import tumor_extent
from gpusim.agents.rules import LIVE, NECROTIC, lfa1_target
from gpusim.agents.spatial_index import voxel_of
from gpusim.events import UMOL_PER_UM3

DX = 15.0


def config(shape, **sections):
    base = {"grid": {"shape": list(shape), "dx_um": DX}, "seed": 5, "backend": "cpu"}
    base.update(sections)
    return gpusim.Config.model_validate(base)


def quiet_tcells(**extra):
    """T cells that stay put and stay alive: no motion, engagement, apoptosis or recruitment."""
    return {"initial_count": 0, "speed_um_per_min": 0.0, "k_on_per_min": 0.0, "apoptosis_per_min": 0.0,
            "recruit_per_vessel_per_min": 0.0, **extra}


def total_umol(sim, name="mg") -> float:
    """Field total in µmol: float64 sum × V_voxel × 1e-12 µmol/µm³ per mM."""
    return float(sim.field_host(name).sum(dtype=np.float64)) * sim.state.dx_um**3 * UMOL_PER_UM3["mM"]


def vessel_file(tmp_path, mask) -> str:
    path = tmp_path / "vessels.npy"
    np.save(path, mask.astype(np.uint8))
    return str(path)


# --- bolus ------------------------------------------------------------------------------------------------

def test_a_bolus_adds_its_amount_in_the_step_containing_its_time_with_cells_present():
    """A 1e-6 µmol Mg bolus at t = 2.5 min (dt = 1: step 2) into a block with a tumour and T cells
    whose uptake is off, zero-flux faces and no vessels: the field total (µmol, 1 mM = 1e-12
    µmol/µm³) rises by the amount in step 2 (1e-5 relative: float32 storage) and stays constant in
    every other step (T cells move and engage throughout)."""
    amount = 1.0e-6
    no_uptake = {"tumor": {"vmax_per_min": 0.0}, "tcell": {"vmax_per_min": 0.0}}
    sim = gpusim.Simulation(config(
        (12, 12, 12),
        substrates=[{"name": "mg", "initial": 0.47, "uptake": no_uptake}],
        tumor={"initial_radius_um": 45.0},
        tcells={"initial_count": 20, "placement": "tumor"},
        events=[{"name": "b", "type": "bolus", "time_min": 2.5, "substrate": "mg",
                 "center_um": [90.0, 90.0, 90.0], "radius_um": 40.0, "amount_umol": amount}]))
    totals = [total_umol(sim)]
    for _ in range(6):
        sim.step()
        totals.append(total_umol(sim))
    rise = np.diff(totals)
    assert rise[2] == pytest.approx(amount, rel=1e-5)
    others = np.delete(rise, 2)
    assert np.all(np.abs(others) < 1e-6 * totals[0]), others
    assert sim.timeseries["tcells"][-1] == 20


# --- implant scenario -------------------------------------------------------------------------------------

def test_intratumoral_mg_places_its_implant_at_the_tumour_centre_with_serum_faces_and_raises_tumour_mg():
    """The screened-point-source profile of an implant is checked in test_field_accuracy.py; here the
    built-in intratumoral_mg scenario: its implant sits at the tumour centre (the grid centre, as
    tumor.center_um is unset), Mg's six faces are Dirichlet at serum (so released Mg can leave the
    block, PARAMETERS.md §6), baseline's are zero-flux, and one step later the mean Mg over the LIVE
    tumour cells exceeds baseline's — by no more than the released Q·dt spread over those cells."""
    cfg = gpusim.scenario_config("intratumoral_mg").with_overrides({"backend": "cpu"})
    base = gpusim.scenario_config("baseline").with_overrides({"backend": "cpu"})
    implants = [e for e in cfg.events if e.type == "implant"]
    assert len(implants) == 1 and implants[0].substrate == "mg"
    centre = cfg.tumor.center_um or tuple(n * cfg.grid.dx_um / 2 for n in cfg.grid.nzyx)
    assert implants[0].center_um == pytest.approx(centre)
    mg = cfg.substrate("mg")
    assert [kind for kind, _ in mg.faces()] == ["serum"] * 6
    assert [kind for kind, _ in base.substrate("mg").faces()] == ["zero_flux"] * 6
    sims = {}
    for name, c in (("intratumoral_mg", cfg), ("baseline", base)):
        sims[name] = gpusim.Simulation(c)
        sims[name].run(minutes=1, progress=False)
    plan = sims["intratumoral_mg"].field_update.plans["mg"]
    assert list(plan.bc_value) == [mg.serum] * 6 and all(plan.bc_type != 0)
    mean = {k: float(s.timeseries["mg_tumor_mean_mM"][-1]) for k, s in sims.items()}
    n_live = int(sims["intratumoral_mg"].timeseries["tumor_live"][-1])
    bound = implants[0].rate_umol_per_min * 1.0 / (n_live * cfg.grid.dx_um**3 * UMOL_PER_UM3["mM"])
    assert 0.0 < mean["intratumoral_mg"] - mean["baseline"] <= bound, (mean, bound)


# --- repeats ----------------------------------------------------------------------------------------------

def _on_runs(flags) -> int:
    """Number of maximal runs of True in a boolean sequence."""
    f = np.asarray(flags, bool)
    return int(np.count_nonzero(f[1:] & ~f[:-1]) + f[0])


def test_a_repeated_serum_event_sets_the_serum_in_exactly_its_active_steps():
    """A serum event at 5 min, 4 min long, every 10 min, 3 times (dt = 1): the Mg serum value is 0.72
    exactly in the steps starting in [5, 9), [15, 19), [25, 29) — 3 on-intervals of 4 steps — and the
    normal 0.47 in all others, with a tumour and T cells present."""
    sim = gpusim.Simulation(config(
        (8, 8, 8), substrates=[{"name": "mg", "substeps": 1}],
        tumor={"initial_radius_um": 30.0}, tcells={"initial_count": 5, "placement": "tumor"},
        events=[{"name": "infusion", "type": "serum", "time_min": 5.0, "duration_min": 4.0,
                 "repeat_every_min": 10.0, "repeat_count": 3, "substrate": "mg", "value": 0.72}]))
    serum = []
    for _ in range(40):
        sim.step()
        serum.append(sim.field_update.plans["mg"].serum)
    starts = np.arange(40) * 1.0
    expect_on = np.zeros(40, bool)
    for tj in (5.0, 15.0, 25.0):
        expect_on |= (starts >= tj) & (starts < tj + 4.0)
    on = np.asarray(serum) == 0.72
    np.testing.assert_array_equal(on, expect_on)
    assert np.all(np.asarray(serum)[~on] == 0.47)
    assert _on_runs(on) == 3 and on.sum() == 12


def test_a_repeated_tcell_infusion_adds_its_count_each_time_with_new_uids():
    """An infusion of 7 T cells at 1 min, every 4 min, 3 times (apoptosis and recruitment off): the
    T-cell count rises by exactly 7 in steps 1, 5 and 9 and nowhere else, and all 21 uids are
    distinct from each other and from the initial cells'."""
    sim = gpusim.Simulation(config(
        (10, 10, 10), tumor={"initial_radius_um": 45.0},
        tcells=quiet_tcells(initial_count=4, placement="tumor"),
        events=[{"name": "act", "type": "tcell_infusion", "time_min": 1.0, "repeat_every_min": 4.0,
                 "repeat_count": 3, "count": 7, "placement": "uniform"}]))
    initial = set(sim.tcell_snapshot()["uid"].tolist())
    sim.run(minutes=12, progress=False)
    n = sim.timeseries["tcells"]
    rises = np.diff(np.concatenate([[4], n]))
    np.testing.assert_array_equal(np.flatnonzero(rises), [1, 5, 9])
    assert np.all(rises[[1, 5, 9]] == 7)
    uids = sim.tcell_snapshot()["uid"]
    assert len(set(uids.tolist())) == uids.shape[0] == 25
    assert initial <= set(uids.tolist())


# --- infusion placements ----------------------------------------------------------------------------------

def _new_cells(before, after):
    """Rows of snapshot ``after`` whose uid is not in snapshot ``before``."""
    return ~np.isin(after["uid"], before["uid"])


def _occupancy(sim):
    snap = sim.tcell_snapshot()
    return np.bincount(voxel_of(snap["position_um"], sim.state.dx_um, sim.state.shape),
                       minlength=sim.state.n_voxels)


@pytest.fixture(scope="module")
def infusions(tmp_path_factory):
    """A 24³ block with a 75 µm tumour, 1.5 % vessel voxels (a file mask) and three infusions:
    'shell' 15–45 µm outside the surface at step 0, 'vessels' (more than fit) at step 1, 'tumor' at
    step 2. T cells stay put (speed 0, no engagement), so positions after the step are where the
    infusion put them. Returns per step (lattice before, snapshot before, snapshot after)."""
    shape = (24, 24, 24)
    mask = np.random.default_rng(2).random(shape) < 0.015
    path = vessel_file(tmp_path_factory.mktemp("vessels"), mask)
    cfg = config(shape, vessels={"kind": "file", "path": path},
                 tumor={"initial_radius_um": 75.0, "cycle_rate_per_min": 0.0},
                 tcells=quiet_tcells(placement="tumor", max_per_voxel=2),
                 events=[{"name": "shell", "type": "tcell_infusion", "time_min": 0.0, "count": 300,
                          "placement": "shell", "shell_um": [15.0, 45.0]},
                         {"name": "vessels", "type": "tcell_infusion", "time_min": 1.0, "count": 2000,
                          "placement": "vessels"},
                         {"name": "tumor", "type": "tcell_infusion", "time_min": 2.0, "count": 150,
                          "placement": "tumor"}])
    sim = gpusim.Simulation(cfg)
    record = {}
    for name in ("shell", "vessels", "tumor"):
        lattice, snap, occ = sim.tumor_state(), sim.tcell_snapshot(), _occupancy(sim)
        sim.step()
        record[name] = (lattice, snap, occ, sim.tcell_snapshot())
    return sim, mask, record


def test_shell_infusion_places_every_t_cell_in_the_shell_outside_the_tumour_surface(infusions):
    """'shell' [15, 45] µm: each new T cell's distance from the tumour centre lies in [R + 15, R + 45]
    µm ± the half-diagonal of the 90 % jitter box (0.45·√3·dx), R being the equivalent-sphere radius
    of the LIVE cells at infusion time; all 300 fit."""
    sim, _mask, record = infusions
    lattice, before, _occ, after = record["shell"]
    new = _new_cells(before, after)
    assert new.sum() == 300
    centre, radius = tumor_extent(lattice, DX)
    d = np.linalg.norm(after["position_um"][new].astype(np.float64) - centre, axis=1)
    slack = 0.45 * math.sqrt(3.0) * DX
    assert d.min() >= radius + 15.0 - slack and d.max() <= radius + 45.0 + slack, (d.min(), d.max(), radius)


def test_vessel_infusion_fills_exactly_the_free_room_of_the_vessel_voxels(infusions):
    """'vessels': every new T cell sits in a vessel voxel; 2000 asked for more than fit, so exactly the
    free room Σ max(max_per_voxel − T cells already there, 0) over vessel voxels is filled, and no
    voxel exceeds max_per_voxel."""
    sim, mask, record = infusions
    _lattice, before, occ, after = record["vessels"]
    new = _new_cells(before, after)
    vox = voxel_of(after["position_um"][new], DX, mask.shape)
    assert np.all(mask.reshape(-1)[vox])
    cap = sim.config.tcells.max_per_voxel
    room = np.maximum(cap - occ[mask.reshape(-1)], 0).sum()
    assert new.sum() == room > 0
    assert _occupancy(sim)[mask.reshape(-1)].max() <= cap


def test_tumor_infusion_places_t_cells_in_live_voxels_within_capacity(infusions):
    """'tumor': every new T cell sits in a voxel holding a LIVE cell, and no voxel holding a LIVE or
    NECROTIC cell ends with more than max_per_voxel_with_tumor (1) T cells."""
    sim, _mask, record = infusions
    lattice, before, _occ, after = record["tumor"]
    new = _new_cells(before, after)
    assert new.sum() == 150
    vox = voxel_of(after["position_um"][new], DX, lattice.shape)
    assert np.all(lattice.reshape(-1)[vox] == LIVE)
    flat = lattice.reshape(-1)
    occupied = (flat == LIVE) | (flat == NECROTIC)
    assert _occupancy(sim)[occupied].max() <= sim.config.tcells.max_per_voxel_with_tumor


def test_after_three_infusions_uids_are_distinct_and_every_voxel_is_within_capacity(infusions):
    """The uids of all infused T cells (three events) are distinct, and every voxel holds at most its
    capacity: max_per_voxel_with_tumor where a LIVE or NECROTIC cell sits, else max_per_voxel."""
    sim, _mask, _record = infusions
    uids = sim.tcell_snapshot()["uid"]
    assert uids.shape[0] > 300 + 150
    assert np.unique(uids).shape[0] == uids.shape[0]
    flat = sim.tumor_state().reshape(-1)
    tc = sim.config.tcells
    cap = np.where((flat == LIVE) | (flat == NECROTIC), tc.max_per_voxel_with_tumor, tc.max_per_voxel)
    assert np.all(_occupancy(sim) <= cap)


# --- recruitment ------------------------------------------------------------------------------------------

RECRUIT_RATE = 0.05  # per vessel voxel per min, high so that counts are large in few steps


def _recruits(tmp_path, serum, scales, steps):
    """Recruits in ``steps`` steps at vessel voxels (a 15 % file mask of a 24³ block, no chemokine so
    the chemokine factor is 1, room for 50 T cells a voxel so capacity never binds). Returns the
    simulation, the mask and the positions of all T cells (recruits only; none start)."""
    shape = (24, 24, 24)
    mask = np.random.default_rng(4).random(shape) < 0.15
    path = tmp_path / f"v_{serum}_{scales}.npy"
    np.save(path, mask.astype(np.uint8))
    cfg = config(shape, substrates=[{"name": "mg", "initial": serum, "serum": serum, "substeps": 1,
                                     "vessel_supply_per_min": 0.0}],
                 vessels={"kind": "file", "path": str(path)},
                 tcells=quiet_tcells(placement="vessels", max_per_voxel=50,
                                     recruit_per_vessel_per_min=RECRUIT_RATE,
                                     recruit_scales_with_serum_mg=scales))
    sim = gpusim.Simulation(cfg)
    sim.run(minutes=steps, progress=False)
    return sim, mask, sim.tcell_snapshot()["position_um"]


def test_recruitment_happens_at_vessels_and_scales_with_a_star_of_serum_mg(tmp_path):
    """Per vessel voxel and step a recruit arrives with p = 1 − exp(−k·A*(serum)·dt): over 40 steps and
    ≈ 2120 vessel voxels each count is binomial (within 4 sd of M·n·p), every recruit sits in a vessel
    voxel, and the ratio of recruits at serum 0.24 and 0.47 mM is A*(0.24)/A*(0.47) = 0.55 within
    4 sd (≈ 3 % each; the ratio of p differs from that of A* by k·ΔA*·dt/2 ≈ 0.3 %)."""
    steps = 40
    counts, a_star = {}, {}
    for serum in (0.24, 0.47):
        sim, mask, pos = _recruits(tmp_path, serum, True, steps)
        params = P.build(sim.config)
        a_star[serum] = float(lfa1_target(np.float32(serum), params))
        vox = voxel_of(pos, DX, mask.shape)
        assert np.all(mask.reshape(-1)[vox]), "a recruit appeared outside the vessels"
        m = int(mask.sum())
        p = float(rng.prob_from_rate(np.float32(RECRUIT_RATE) * np.float32(a_star[serum]), np.float32(1.0)))
        expected = m * steps * p
        counts[serum] = pos.shape[0]
        assert abs(counts[serum] - expected) < 4 * math.sqrt(expected * (1 - p)), (serum, counts[serum], expected)
    ratio = counts[0.24] / counts[0.47]
    expect = a_star[0.24] / a_star[0.47]
    sd = expect * math.sqrt(1 / counts[0.24] + 1 / counts[0.47])
    assert abs(ratio - expect) < 4 * sd, (ratio, expect, sd)
    assert expect == pytest.approx(0.552, abs=0.002)  # PARAMETERS.md validation table


def test_recruitment_ignores_serum_mg_when_the_flag_is_off(tmp_path):
    """recruit_scales_with_serum_mg = false: the rate is the same at serum 0.24 and 0.47, and as the
    draws depend only on (voxel, step, seed), the recruits are the same cells at the same places,
    numbering M·n·p with p = 1 − exp(−k·dt) (within 4 sd)."""
    steps = 20
    a = _recruits(tmp_path, 0.24, False, steps)
    b = _recruits(tmp_path, 0.47, False, steps)
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[0].tcell_snapshot()["uid"], b[0].tcell_snapshot()["uid"])
    m = int(a[1].sum())
    p = float(rng.prob_from_rate(np.float32(RECRUIT_RATE), np.float32(1.0)))
    expected = m * steps * p
    assert abs(a[2].shape[0] - expected) < 4 * math.sqrt(expected * (1 - p))


def test_placement_picks_the_same_slots_as_a_full_sort_of_the_keys():
    from gpusim.agents.placement import smallest_slots

    g = np.random.default_rng(5)
    for n, count in ((1000, 10), (1000, 999), (1000, 1000), (5000, 1), (300, 0)):
        h = g.integers(0, 50, n).astype(np.uint64)  # many equal hashes: the (voxel, slot) tie-break counts
        voxel = g.integers(0, 40, n).astype(np.int64)
        slot = g.integers(0, 4, n).astype(np.int64)
        full = np.lexsort((slot, voxel, h))[:count]
        assert np.array_equal(smallest_slots(h, voxel, slot, count), full), (n, count)


def test_recruitment_on_a_region_of_the_grid_equals_the_whole_grid_recruitment(tmp_path):
    """The recruit kernel on a rank's region (a box of the grid grown by one voxel, its arrays in a frame)
    decides every vessel voxel of the box exactly as on the whole grid: the draw is keyed by the global
    voxel, the recruit placed in global µm, and the occupancy after the step's moves read from the
    region's T cells (what ranks keeping their own state need, docs/owned_state.md). Without the frame
    the decisions differ, so the comparison has power."""
    from gpusim.agents import rules as R

    shape = (12, 12, 12)
    mask = np.random.default_rng(7).random(shape) < 0.2
    sim = gpusim.Simulation(config(shape, substrates=[{"name": "mg"}, {"name": "chemokine"}],
                                   vessels={"kind": "file", "path": vessel_file(tmp_path, mask)},
                                   tumor={"initial_radius_um": 45.0},
                                   tcells={"initial_count": 400, "placement": "vessels", "max_per_voxel": 2,
                                           "recruit_per_vessel_per_min": 0.5}))
    sim.run(minutes=3, progress=False)  # the store keeps the last step's sort, flags and proposals
    cs, st, s = sim.cells, sim.state, sim.cells.store
    nz, ny, nx = cs.dims
    step = np.int64(st.step - 1)
    tumor, chem = st.tumor.reshape(-1), st.fields["chemokine"].reshape(-1)
    scale, half = np.float32(0.5) * cs.serum_lfa1(sim), np.float32(sim.config.tcells.recruit_chemokine_half_nM)

    def recruit(frame, dims, vessels, offsets, counts, voxel, flags, prop, tum, ch):
        m = vessels.shape[0]
        pos, flag = np.zeros((m, 3), np.float32), np.zeros(m, np.uint8)
        cs.k.recruit(np.int64(m), cs.seed, step, cs.p, *dims, frame, vessels, scale, half, offsets, counts,
                     voxel, flags, prop, tum, ch, pos, flag)
        return pos, flag

    n_sorted = int(cs.offsets[-1])
    rows = slice(0, n_sorted)
    whole_v = np.flatnonzero(st.vessel.reshape(-1)).astype(np.int64)
    whole_pos, whole_flag = recruit(R.whole_frame(nz, ny, nx), cs.dims, whole_v, cs.offsets, cs.counts,
                                    s.voxel[rows], s.flags[rows], s.prop[rows], tumor, chem)
    assert whole_flag.sum() > 0 and (whole_flag == 0).sum() > 0

    box = (slice(3, 8), slice(0, 12), slice(5, 12))  # the rank's box
    reg = (slice(2, 9), slice(0, 12), slice(4, 12))  # grown by one voxel, clipped to the grid
    lo = np.array([r.start for r in reg])
    rshape = tuple(r.stop - r.start for r in reg)
    gz, gy, gx = np.unravel_index(s.voxel[rows], shape)
    inside = np.all([(c >= r.start) & (c < r.stop) for c, r in zip((gz, gy, gx), reg)], axis=0)
    keep = np.flatnonzero(inside)  # in the sort's order: (voxel, uid) stays sorted within the region

    def local(v):
        z, y, x = np.unravel_index(np.where(v >= 0, v, 0), shape)
        ok = (v >= 0) & np.all([(c >= r.start) & (c < r.stop) for c, r in zip((z, y, x), reg)], axis=0)
        lv = np.ravel_multi_index((np.clip(z - lo[0], 0, rshape[0] - 1), np.clip(y - lo[1], 0, rshape[1] - 1),
                                   np.clip(x - lo[2], 0, rshape[2] - 1)), rshape)
        return np.where(ok, lv, -1).astype(np.int64)

    voxel, prop = local(s.voxel[rows][keep]), local(s.prop[rows][keep])
    counts = np.bincount(voxel, minlength=int(np.prod(rshape))).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vz, vy, vx = np.unravel_index(whole_v, shape)
    in_box = np.all([(c >= b.start) & (c < b.stop) for c, b in zip((vz, vy, vx), box)], axis=0)
    region_v = np.ravel_multi_index((vz[in_box] - lo[0], vy[in_box] - lo[1], vx[in_box] - lo[2]), rshape)
    frame = tuple(np.int64(v) for v in (*lo, *shape))
    args = (tuple(np.int64(n) for n in rshape), region_v.astype(np.int64), offsets, counts, voxel,
            s.flags[rows][keep], prop, np.ascontiguousarray(st.tumor[reg]).reshape(-1),
            np.ascontiguousarray(st.fields["chemokine"][reg]).reshape(-1))
    pos, flag = recruit(frame, *args)
    assert in_box.sum() > 10 and flag.sum() > 0
    np.testing.assert_array_equal(flag, whole_flag[in_box])
    np.testing.assert_array_equal(pos[flag == 1], whole_pos[in_box][whole_flag[in_box] == 1])
    _, unframed = recruit(R.whole_frame(*rshape), *args)
    assert not np.array_equal(unframed, flag)
