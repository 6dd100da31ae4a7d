"""T-cell mechanics against answers derived here: the persistent random walk (Fürth), hit statistics
(geometric / negative binomial), hit recovery, LFA-1 relaxation and its Mg dependence, the paper's
direction at the mechanism (PARAMETERS.md "Direction tests at the mechanism"), and the capacity and
synapse invariants of a crowded run.

Set-ups are direct: ``sim.set_tumor`` lays out the lattice and ``sim.add_tcells`` places T cells in a
chosen state, every mechanism a test is not about switched off. The expected numbers come from the
rule text (rules.py module docstring, PARAMETERS.md) and closed forms, never from running the model.

The tests pin numba to one thread: on a shared two-core machine parallel launches spend most of
their time spinning (5-10x slower), and the model's results do not depend on the thread count
(DESIGN.md §2).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import stats

import gpusim
from gpusim.config_cells import LFA1, TCells

DX_UM = 15.0
FREE, ENGAGED = 0, 1
LIVE, NECROTIC = 1, 3
ENDLESS_MIN = 1e9  # a synapse timer that never runs out within a test


@pytest.fixture
def one_thread():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# set-up helpers
# ---------------------------------------------------------------------------------------------------
def _mg(initial_mM):
    """A uniform, closed Mg field: no decay, no uptake, zero-flux faces, no vessels -> constant."""
    return {"name": "mg", "initial": initial_mM, "decay_per_min": 0.0, "boundary": "zero_flux",
            "uptake": {"tumor": {"vmax_per_min": 0.0}, "tcell": {"vmax_per_min": 0.0}}}


def _quiet_tcells(**over):
    """T cells with motion, apoptosis, recruitment, exhaustion and proliferation off."""
    tc = {"initial_count": 0, "speed_um_per_min": 0.0, "apoptosis_per_min": 0.0,
          "recruit_per_vessel_per_min": 0.0, "exhaust_per_engagement": 0.0, "prolif_prob_per_kill": 0.0}
    tc.update(over)
    return tc


def _quiet_tumor(**over):
    """A tumour lattice that neither divides nor dies of anything but T-cell hits (no O2 substrate:
    no necrosis; apoptosis 0), filled by ``set_tumor``."""
    tu = {"initial_radius_um": 0.0, "cycle_rate_per_min": 0.0, "apoptosis_per_min": 0.0}
    tu.update(over)
    return tu


def _sim(shape, seed=1, substrates=(), tumor=None, tcells=None, **extra):
    cfg = {"grid": {"shape": list(shape), "dx_um": DX_UM}, "time": {"dt_min": 1.0}, "seed": seed,
           "backend": "cpu", "substrates": list(substrates)}
    if tumor is not None:
        cfg["tumor"] = tumor
    if tcells is not None:
        cfg["tcells"] = tcells
    cfg.update(extra)
    return gpusim.Simulation(cfg)


def _centres_um(idx):
    """µm centre of voxels (k, 3) (z, y, x)."""
    return (np.asarray(idx, np.float64) + 0.5) * DX_UM


def _flat(idx, shape):
    idx = np.asarray(idx)
    return (idx[:, 0] * shape[1] + idx[:, 1]) * shape[2] + idx[:, 2]


def _live_in_neighbourhood(tumor, idx):
    """LIVE cells among the 27 voxels around each voxel of ``idx`` (k, 3)."""
    pad = np.pad(tumor == LIVE, 1).astype(np.int64)
    out = np.zeros(len(idx), np.int64)
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                out += pad[idx[:, 0] + dz, idx[:, 1] + dy, idx[:, 2] + dx]
    return out


def _engaged_pairs(sim, shape, spacing, lfa1=1.0):
    """LIVE cells on a lattice of ``spacing`` voxels, each with one T cell in its voxel engaged on
    it for good. With spacing >= 2 the 27 voxels around a T cell hold its target and no other LIVE
    cell, so a T cell freed by its target's death finds nothing to engage. Returns the targets (k, 3)."""
    tumor = np.zeros(shape, np.uint8)
    tumor[::spacing, ::spacing, ::spacing] = LIVE
    sim.set_tumor(tumor)
    idx = np.argwhere(tumor == LIVE)
    assert (_live_in_neighbourhood(tumor, idx) == 1).all()
    n = len(idx)
    sim.add_tcells(_centres_um(idx), state=np.full(n, ENGAGED, np.uint8), target=_flat(idx, shape),
                   timer_min=np.full(n, ENDLESS_MIN, np.float32), lfa1=np.full(n, lfa1, np.float32))
    return idx


def _by_uid(snap):
    order = np.argsort(snap["uid"])
    return {k: v[order] for k, v in snap.items()}


def lfa1_star(mg_mM, floor=None):
    """A* = A_floor + (1 - A_floor) Mg^n / (K^n + Mg^n) with the default K, n (PARAMETERS.md §3), float64."""
    d = LFA1()
    floor = d.A_floor if floor is None else floor
    h = mg_mM**d.hill_n / (d.K_half_mM**d.hill_n + mg_mM**d.hill_n)
    return floor + (1.0 - floor) * h


def p_event(rate_per_min, dt_min=1.0):
    return 1.0 - math.exp(-rate_per_min * dt_min)


# ---------------------------------------------------------------------------------------------------
# 1. persistent random walk
# ---------------------------------------------------------------------------------------------------
def msd_discrete(n, step_um, q):
    """Exact MSD after n steps of length s whose directions are correlated as q^|i-j| (a direction
    renewed with probability 1 - q per step): s^2 (n + 2 sum_{k=1}^{n-1} (n-k) q^k)."""
    k = np.arange(1, n)
    return step_um**2 * (n + 2.0 * np.sum((n - k) * q**k))


def msd_fuerth(t_min, speed, persistence):
    """Fürth's formula of a continuous persistent walk: 2 v^2 P (t - P (1 - e^{-t/P}))."""
    return 2.0 * speed**2 * persistence * (t_min - persistence * (1.0 - math.exp(-t_min / persistence)))


def test_free_walkers_mean_squared_displacement_follows_fuerth(one_thread):
    """10^4 free walkers, 4 µm/min, persistence 5 min: the MSD at lags 5-40 min is within 5 % of the
    exact discrete answer (directions correlated as q^k, q = exp(-dt/P)); Fürth's continuous formula,
    within 1.5 % of it at these lags, also holds within 5 %. Every walker moves exactly speed*dt per
    step (its zero initial direction is replaced on the first step; no capacity refusal, no face)."""
    speed, persistence, n_walk = 4.0, 5.0, 10_000
    lags = (5, 10, 20, 40)
    # 30^3 voxels of 15 µm; walkers start in the central 90 µm cube (~46 per voxel, capacity 255),
    # at least 180 µm from every face while 40 steps cover at most 160 µm
    sim = _sim((30, 30, 30), seed=3, tcells=_quiet_tcells(placement="uniform", speed_um_per_min=speed,
                                                          persistence_min=persistence, max_per_voxel=255))
    rng = np.random.default_rng(11)
    sim.add_tcells(rng.uniform(180.0, 270.0, (n_walk, 3)))
    start = _by_uid(sim.tcell_snapshot())["position_um"].astype(np.float64)
    prev, msd = start, {}
    for n in range(1, max(lags) + 1):
        sim.step()
        snap = _by_uid(sim.tcell_snapshot())
        assert snap["position_um"].shape == (n_walk, 3)
        pos = snap["position_um"].astype(np.float64)
        step_len = np.linalg.norm(pos - prev, axis=1)
        np.testing.assert_allclose(step_len, speed * 1.0, atol=1e-3)
        prev = pos
        if n in lags:
            msd[n] = float(((pos - start) ** 2).sum(axis=1).mean())
    q = math.exp(-1.0 / persistence)
    for n in lags:
        exact = msd_discrete(n, speed * 1.0, q)
        assert msd[n] == pytest.approx(exact, rel=0.05), (n, msd[n], exact)
        assert msd[n] == pytest.approx(msd_fuerth(n * 1.0, speed, persistence), rel=0.05)


# ---------------------------------------------------------------------------------------------------
# 2. killing: geometric and negative-binomial times to death
# ---------------------------------------------------------------------------------------------------
def _death_trials(sim, idx, max_steps):
    """Step count (1-based) at which each target stopped being LIVE; runs until all are dead."""
    death = np.zeros(len(idx), np.int64)
    for n in range(1, max_steps + 1):
        sim.step()
        tumor = sim.tumor_state()
        newly = (death == 0) & (tumor[idx[:, 0], idx[:, 1], idx[:, 2]] != LIVE)
        death[newly] = n
        if (death > 0).all():
            break
    return death


def test_one_hit_kills_leave_survivors_geometric(one_thread):
    """hits_to_kill = 1, A = 1 (no Mg substrate), endless synapses: each step an engaged T cell kills
    with p_hit = 1 - exp(-k_hit*dt), so a fraction (1 - p_hit)^n of 4096 targets survives n steps
    (within 5 %), and every death is credited as one kill."""
    k_hit, shape = 0.02, (32, 32, 32)
    sim = _sim(shape, seed=5, tumor=_quiet_tumor(hits_to_kill=1, hit_recovery_min=0.0),
               tcells=_quiet_tcells(k_hit_per_min=k_hit, synapse_min=ENDLESS_MIN))
    idx = _engaged_pairs(sim, shape, spacing=2)
    n_pairs = len(idx)
    assert n_pairs == 4096
    sim.run(minutes=40, progress=False)
    ts = sim.timeseries
    p_hit = p_event(k_hit)
    for n in (10, 20, 40):
        assert ts["tumor_live"][n - 1] / n_pairs == pytest.approx((1.0 - p_hit) ** n, rel=0.05)
    np.testing.assert_array_equal(ts["kills"], n_pairs - ts["tumor_live"])
    np.testing.assert_array_equal(ts["engagements"], 0)  # a freed T cell sees only its dead target


def test_three_hit_time_to_death_is_negative_binomial(one_thread):
    """hits_to_kill = 3, recovery off: the step of the third hit among independent per-step hits of
    probability p_hit is negative binomial, P(T <= n) = P(Binomial(n, p_hit) >= 3); a KS test on 4096
    deaths (D over the integer support, conservative for a discrete law) gives p > 0.01."""
    k_hit, hits, shape = 0.3, 3, (32, 32, 32)
    sim = _sim(shape, seed=7, tumor=_quiet_tumor(hits_to_kill=hits, hit_recovery_min=0.0),
               tcells=_quiet_tcells(k_hit_per_min=k_hit, synapse_min=ENDLESS_MIN))
    idx = _engaged_pairs(sim, shape, spacing=2)
    trials = _death_trials(sim, idx, max_steps=150)
    assert (trials > 0).all()
    assert trials.min() >= hits  # one hit per T cell per step at most
    p_hit = p_event(k_hit)
    support = np.arange(1, trials.max() + 1)
    cdf = stats.nbinom.cdf(support - hits, hits, p_hit)  # failures before the 3rd success
    ecdf = np.searchsorted(np.sort(trials), support, side="right") / len(trials)
    d = np.abs(ecdf - cdf).max()
    assert stats.kstwo.sf(d, len(trials)) > 0.01, d
    assert trials.mean() == pytest.approx(hits / p_hit, rel=0.03)


# ---------------------------------------------------------------------------------------------------
# 3. hit recovery
# ---------------------------------------------------------------------------------------------------
def _hit_schedule_damage(hit_steps, n_steps, recovery_min):
    """Run one LIVE target and one T cell that delivers exactly one hit at each of ``hit_steps``:
    engaged (k_hit = 1e6: p_hit = 1) with a 1-min synapse that ends in the same step, k_on = 0 so it
    never re-engages on its own. Returns damage and state of the target after every step."""
    shape = (5, 5, 5)
    sim = _sim(shape, seed=2, tumor=_quiet_tumor(hits_to_kill=3, hit_recovery_min=recovery_min),
               tcells=_quiet_tcells(k_hit_per_min=1e6, k_on_per_min=0.0))
    tumor = np.zeros(shape, np.uint8)
    tumor[2, 2, 2] = LIVE
    sim.set_tumor(tumor)
    v = int(_flat([[2, 2, 2]], shape)[0])
    sim.add_tcells(_centres_um([[2, 2, 1]]), lfa1=np.ones(1, np.float32))
    damage, state = [], []
    for s in range(n_steps):
        if s in hit_steps:
            tc = sim.tcells
            assert tc.n == 1 and tc.state[0] == FREE
            tc.state[0], tc.target[0], tc.timer_min[0] = ENGAGED, v, 1.0
        sim.step()
        damage.append(int(sim.state.damage[2, 2, 2]))
        state.append(int(sim.tumor_state()[2, 2, 2]))
    return np.array(damage), np.array(state)


def test_hits_more_than_recovery_time_apart_never_kill(one_thread):
    """hit_recovery_min = 50, hits_to_kill = 3: each hit is repaired 50 min after it when no other
    follows, so hits 55 min apart never add up: the damage is 1 for the 50 steps from each hit, 0
    otherwise, and the cell stays LIVE through 9 hits. The same hits 20 min apart kill on the third."""
    hit_steps = list(range(0, 9 * 55, 55))
    damage, state = _hit_schedule_damage(set(hit_steps), 9 * 55 + 60, 50.0)
    s = np.arange(len(damage))
    last = np.array([max(h for h in hit_steps if h <= t) for t in s])
    np.testing.assert_array_equal(damage, (s - last < 50).astype(int))
    assert (state == LIVE).all()

    damage, state = _hit_schedule_damage({0, 20, 40}, 45, 50.0)
    np.testing.assert_array_equal(damage[[0, 19, 20, 39]], [1, 1, 2, 2])
    assert (state[:40] == LIVE).all() and state[40] != LIVE and damage[40] == 3


# ---------------------------------------------------------------------------------------------------
# 4. LFA-1
# ---------------------------------------------------------------------------------------------------
def test_lfa1_relaxes_exponentially_to_the_hill_target(one_thread):
    """Uniform Mg 0.47 mM, tau = 5 min: A(t) = A* + (A0 - A*) e^{-t/tau} within 1e-5 from A0 = 0, 0.3
    and 1, with A* = floor + (1 - floor) Mg^n/(K^n + Mg^n) = 0.69 (PARAMETERS.md §3)."""
    tau, mg = 5.0, 0.47
    sim = _sim((4, 4, 4), substrates=[_mg(mg)],
               tcells=_quiet_tcells(placement="uniform", lfa1={"tau_min": tau}))
    a0 = np.array([0.0, 0.3, 1.0])
    uids = sim.add_tcells(_centres_um([[1, 1, 1], [1, 2, 2], [2, 2, 1]]), lfa1=a0.astype(np.float32))
    order = np.argsort(uids)
    a_star = lfa1_star(mg)
    assert a_star == pytest.approx(0.69, abs=0.005)
    for n in range(1, 31):
        sim.step()
        a = _by_uid(sim.tcell_snapshot())["lfa1"].astype(np.float64)
        expected = (a_star + (a0 - a_star) * math.exp(-n / tau))[order]
        np.testing.assert_allclose(a, expected, atol=1e-5, rtol=0)
    assert (sim.field_host("mg") == np.float32(mg)).all()  # the field stayed uniform


def test_without_a_floor_no_mg_means_no_engagement_and_no_hit(one_thread):
    """A_floor = 0 and Mg = 0: A* = 0, so over 100 steps 40 engaged and 40 free T cells among LIVE
    cells make no engagement, no hit and no kill."""
    shape = (6, 6, 6)
    sim = _sim(shape, substrates=[_mg(0.0)], tumor=_quiet_tumor(hits_to_kill=1, hit_recovery_min=0.0),
               tcells=_quiet_tcells(synapse_min=ENDLESS_MIN, lfa1={"A_floor": 0.0}))
    sim.set_tumor(np.full(shape, LIVE, np.uint8))
    idx = np.argwhere(np.ones(shape, bool))[::2][:80]
    n = len(idx)
    state = np.where(np.arange(n) < 40, ENGAGED, FREE).astype(np.uint8)
    sim.add_tcells(_centres_um(idx), state=state, target=np.where(state == ENGAGED, _flat(idx, shape), -1),
                   timer_min=np.full(n, ENDLESS_MIN, np.float32), lfa1=np.zeros(n, np.float32))
    sim.run(minutes=100, progress=False)
    ts = sim.timeseries
    assert ts["engagements"][-1] == 0 and ts["kills"][-1] == 0
    assert (ts["tumor_live"] == np.prod(shape)).all()
    assert (sim.state.damage == 0).all()
    snap = sim.tcell_snapshot()
    assert (snap["lfa1"] == 0).all() and (snap["state"] == ENGAGED).sum() == 40


def test_floor_alone_sets_the_kill_rate_at_zero_mg(one_thread):
    """Mg = 0 with the default floor: A* = A_floor = 0.05, so an engaged pair kills (hits_to_kill = 1)
    with p = 1 - exp(-k_hit*A_floor*dt) per step; the pooled kills per engaged pair-step of 4096 pairs
    over 30 steps match it within 10 %."""
    k_hit, shape = 1.0, (32, 32, 32)
    floor = LFA1().A_floor
    sim = _sim(shape, seed=9, substrates=[_mg(0.0)], tumor=_quiet_tumor(hits_to_kill=1, hit_recovery_min=0.0),
               tcells=_quiet_tcells(k_hit_per_min=k_hit, synapse_min=ENDLESS_MIN, lfa1={"tau_min": 0.0}))
    _engaged_pairs(sim, shape, spacing=2, lfa1=1.0)
    engaged_steps = 0
    for _ in range(30):
        engaged_steps += int(np.count_nonzero(sim.tcells.state == ENGAGED))
        sim.step()
    kills = int(sim.timeseries["kills"][-1])
    assert kills / engaged_steps == pytest.approx(p_event(k_hit * floor), rel=0.10)
    np.testing.assert_allclose(sim.tcell_snapshot()["lfa1"], floor, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# 5. the paper's direction at the mechanism
# ---------------------------------------------------------------------------------------------------
DIRECTION_MG_MM = {"deficient": 0.24, "normal": 0.47, "raised": 0.91}
DIRECTION_SEEDS = range(1, 9)
DIRECTION_SHAPE = (12, 15, 15)  # 4 x 5 x 5 blocks of 3^3 voxels: 100 T cells, one per block centre
DIRECTION_MIN = 240
#: PARAMETERS.md "Direction tests at the mechanism": ratio of A*, (a) engagements per free step,
#: (b) kills per T cell in 240 min, Mg low/high
TABLE = {("deficient", "normal"): (0.552, 0.577, 0.559), ("raised", "normal"): (1.296, 1.259, 1.285)}


def _direction_run(mg, seed):
    """100 T cells, each at the centre of its own 3^3 block of LIVE cells (so no two share a target),
    at uniform Mg: returns (engagements, free T-cell steps, kills per T cell) over 240 min."""
    sim = _sim(DIRECTION_SHAPE, seed=seed, substrates=[_mg(mg)],
               tumor=_quiet_tumor(hits_to_kill=1, hit_recovery_min=0.0),
               tcells=_quiet_tcells(synapse_min=ENDLESS_MIN, lfa1={"tau_min": 0.0}))
    tumor = np.full(DIRECTION_SHAPE, LIVE, np.uint8)
    sim.set_tumor(tumor)
    grids = np.meshgrid(*[np.arange(1, n, 3) for n in DIRECTION_SHAPE], indexing="ij")
    centres = np.stack(grids, axis=-1).reshape(-1, 3)
    assert len(centres) == 100
    sim.add_tcells(_centres_um(centres))
    free_steps = 0
    for _ in range(DIRECTION_MIN):
        free_steps += int(np.count_nonzero(sim.tcells.state == FREE))
        sim.step()
    # every T cell had a LIVE cell among its 27 voxels throughout (LIVE cells only disappear)
    assert (_live_in_neighbourhood(sim.tumor_state(), centres) > 0).all()
    snap = sim.tcell_snapshot()
    np.testing.assert_allclose(snap["lfa1"], lfa1_star(mg), atol=1e-6)
    return int(sim.timeseries["engagements"][-1]), free_steps, float(snap["kills"].mean())


def expected_kills(p_on, p_hit, n_steps):
    """Mean kills of one T cell in n steps: a FREE cell engages with p_on (its first hit chance is the
    next step), an ENGAGED one kills with p_hit and is FREE from the next step (a two-state chain)."""
    engaged, total = 0.0, 0.0
    for _ in range(n_steps):
        total += engaged * p_hit
        engaged = (1.0 - engaged) * p_on + engaged * (1.0 - p_hit)
    return total


@pytest.fixture(scope="module")
def direction_runs():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return {arm: [_direction_run(mg, seed) for seed in DIRECTION_SEEDS] for arm, mg in DIRECTION_MG_MM.items()}
    finally:
        numba.set_num_threads(before)


def test_table_ratios_follow_from_the_lfa1_formula():
    """The PARAMETERS.md direction table is what A*, p_on = 1 - exp(-k_on A* dt) and the kill rate
    1/(1/p_on + 1/p_hit) give at the default parameters (to its three decimals)."""
    d = TCells()
    for (low, high), table in TABLE.items():
        a_lo, a_hi = lfa1_star(DIRECTION_MG_MM[low]), lfa1_star(DIRECTION_MG_MM[high])

        def rate(a):
            return 1.0 / (1.0 / p_event(d.k_on_per_min * a) + 1.0 / p_event(d.k_hit_per_min * a))

        got = (a_lo / a_hi, p_event(d.k_on_per_min * a_lo) / p_event(d.k_on_per_min * a_hi), rate(a_lo) / rate(a_hi))
        np.testing.assert_allclose(got, table, atol=0.0015)


def test_engagements_per_free_step_follow_mg_deficient_normal_raised(direction_runs):
    """(a) Engagements per free step next to a LIVE cell, per seed: deficient < normal < raised
    (one-sided Mann-Whitney, p < 0.01); each arm's pooled value within 5 % of 1 - exp(-k_on A* dt);
    the pooled ratios deficient/normal and raised/normal within 10 % of the A*-predicted 0.577, 1.259."""
    k_on = TCells().k_on_per_min
    per_seed = {arm: np.array([e / f for e, f, _ in runs]) for arm, runs in direction_runs.items()}
    pooled = {arm: sum(e for e, _, _ in runs) / sum(f for _, f, _ in runs) for arm, runs in direction_runs.items()}
    assert stats.mannwhitneyu(per_seed["deficient"], per_seed["normal"], alternative="less").pvalue < 0.01
    assert stats.mannwhitneyu(per_seed["normal"], per_seed["raised"], alternative="less").pvalue < 0.01
    p_on = {arm: p_event(k_on * lfa1_star(mg)) for arm, mg in DIRECTION_MG_MM.items()}
    for arm in DIRECTION_MG_MM:
        assert pooled[arm] == pytest.approx(p_on[arm], rel=0.05), arm
    for (low, high), table in TABLE.items():
        predicted = p_on[low] / p_on[high]
        assert predicted == pytest.approx(table[1], abs=0.0015)
        assert pooled[low] / pooled[high] == pytest.approx(predicted, rel=0.10)


def test_kills_per_tcell_follow_mg_deficient_normal_raised(direction_runs):
    """(b) Kills per T cell in 240 min (hits_to_kill = 1, synapses until the kill), per seed:
    deficient < normal < raised (one-sided Mann-Whitney, p < 0.01); each arm's pooled mean within 6 %
    of the two-state chain's expectation; the pooled ratios within 10 % of the rate ratio
    1/(1/p_on + 1/p_hit) predicted from A* (0.559, 1.285)."""
    d = TCells()
    per_seed = {arm: np.array([k for _, _, k in runs]) for arm, runs in direction_runs.items()}
    pooled = {arm: float(v.mean()) for arm, v in per_seed.items()}
    assert stats.mannwhitneyu(per_seed["deficient"], per_seed["normal"], alternative="less").pvalue < 0.01
    assert stats.mannwhitneyu(per_seed["normal"], per_seed["raised"], alternative="less").pvalue < 0.01
    rate, chain = {}, {}
    for arm, mg in DIRECTION_MG_MM.items():
        p_on, p_hit = p_event(d.k_on_per_min * lfa1_star(mg)), p_event(d.k_hit_per_min * lfa1_star(mg))
        rate[arm] = 1.0 / (1.0 / p_on + 1.0 / p_hit)
        chain[arm] = expected_kills(p_on, p_hit, DIRECTION_MIN)
        assert pooled[arm] == pytest.approx(chain[arm], rel=0.06), arm
    for (low, high), table in TABLE.items():
        predicted = rate[low] / rate[high]
        assert predicted == pytest.approx(table[2], abs=0.0015)
        assert pooled[low] / pooled[high] == pytest.approx(predicted, rel=0.10)


# ---------------------------------------------------------------------------------------------------
# 6. capacity and engaged T cells in a crowded run
# ---------------------------------------------------------------------------------------------------
def test_crowded_run_never_exceeds_capacity_and_engaged_cells_stay_put(one_thread):
    """Motion, chemotaxis, recruitment, kills, T-cell proliferation (3-min delay) and tumour division
    on, ~2.4 T cells per voxel: after every one of 100 steps no voxel holds more living T cells
    (floor(pos/dx)) than max_per_voxel (3), or max_per_voxel_with_tumor (2) where a LIVE or NECROTIC
    cell sits; and every T cell ENGAGED at the start of a step is at exactly the same position after."""
    shape, cap, cap_t = (12, 12, 12), 3, 2
    sim = _sim(shape, seed=4, substrates=[{"name": "chemokine"}],
               vessels={"kind": "random", "voxel_fraction": 0.03, "segment_length_um": 60.0},
               tumor={"initial_radius_um": 0.0, "cycle_rate_per_min": 0.02, "hits_to_kill": 2},
               tcells={"initial_count": 0, "placement": "uniform", "speed_um_per_min": 7.0,
                       "chemotaxis_bias": 0.7, "max_per_voxel": cap, "max_per_voxel_with_tumor": cap_t,
                       "k_on_per_min": 0.5, "k_hit_per_min": 0.003, "synapse_min": 10.0,
                       "prolif_prob_per_kill": 1.0, "division_delay_min": 3.0,
                       "recruit_per_vessel_per_min": 0.2, "recruit_chemokine_half_nM": 1e-3})
    vessel = np.asarray(sim.state.vessel) > 0
    zz, yy, xx = np.indices(shape)
    r2 = (zz - 5.5) ** 2 + (yy - 5.5) ** 2 + (xx - 5.5) ** 2
    tumor = np.where(r2 < 3.5**2, LIVE, 0).astype(np.uint8)
    tumor[(r2 < 1.5**2)] = NECROTIC
    tumor[vessel] = 0
    sim.set_tumor(tumor)
    # fill voxels to capacity in a shuffled order until ~2.4 T cells per voxel
    rng = np.random.default_rng(0)
    room = np.where(tumor > 0, cap_t, cap) * ~vessel
    slots = np.repeat(np.argwhere(np.ones(shape, bool)), room.reshape(-1), axis=0)
    pick = slots[rng.permutation(len(slots))[: int(2.4 * np.prod(shape))]]
    sim.add_tcells((pick + rng.uniform(0.05, 0.95, pick.shape)) * DX_UM)

    def capacity_now():
        t = sim.tumor_state()
        return np.where((t == LIVE) | (t == NECROTIC), cap_t, cap)

    full_voxels, full_tumor_voxels, moved, engaged_seen = 0, 0, 0, 0
    before = _by_uid(sim.tcell_snapshot())
    for _ in range(100):
        sim.step()
        after = _by_uid(sim.tcell_snapshot())
        cell = np.floor(after["position_um"] / np.float32(DX_UM)).astype(np.int64)
        counts = np.zeros(shape, np.int64)
        np.add.at(counts, tuple(cell.T), 1)
        limit = capacity_now()
        assert (counts <= limit).all(), np.argwhere(counts > limit)[:5]
        full_voxels += int(np.count_nonzero(counts == limit))
        full_tumor_voxels += int(np.count_nonzero((counts == limit) & (limit == cap_t)))
        _, i_b, i_a = np.intersect1d(before["uid"], after["uid"], return_indices=True)
        was_engaged = before["state"][i_b] == ENGAGED
        np.testing.assert_array_equal(after["position_um"][i_a][was_engaged],
                                      before["position_um"][i_b][was_engaged])
        engaged_seen += int(was_engaged.sum())
        moved += int((after["position_um"][i_a] != before["position_um"][i_b]).any(axis=1).sum())
        before = after
    totals = sim.cells.totals
    # the run exercised what the invariants guard: full voxels, motion, synapses, kills, births, recruits
    assert full_voxels > 0 and full_tumor_voxels > 0 and moved > 0 and engaged_seen > 0
    assert totals["kills"] > 0 and totals["tcells_born"] > 0 and totals["tcells_recruited"] > 0
    assert totals["tumor_births"] > 0
