"""Sweeps on a local Dask cluster of 2 workers (issue 7): a 2 x 2 grid with 2 seeds completes with the
right parameters in 8 summary rows; re-running skips all 8; a member equals the same config and seed
run directly, bitwise on the stored timeseries; a member that fails is recorded with its error while
the others finish; the summary outcomes follow their definitions; open_sweep gives the table and the
member stores.

The members: baseline on a 16³ block (a 60 µm tumour of ~280 cells, 20 T cells) for 0.02 days
(29 steps), ~2 s each once the kernels are cached.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

import gpusim
from gpusim.sweep.execute import run_sweep
from gpusim.sweep.spec import spec_from_dict
from gpusim.sweep.report_sweep import dose_response, mean_ci
from gpusim.sweep.summary import OUTCOMES, outcomes

TINY = {"grid.shape": [16, 16, 16], "tumor.initial_radius_um": 60.0, "tcells.initial_count": 20}
DAYS = 0.02
GRID = {"substrates.mg.serum": [0.24, 0.47], "tcells.lfa1.K_half_mM": [0.2, 0.4]}


def grid_spec(**extra):
    data = {"name": "tiny", "base": "baseline", "days": DAYS, "seeds": [1, 2], "backend": "cpu", "set": TINY,
            "parameters": GRID, "cluster": {"workers": 2}}
    data.update(extra)
    return spec_from_dict(data, "<test>")


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "grid"
    df = run_sweep(grid_spec(), out, progress=False)
    return out, df


def test_grid_sweep_completes_with_one_row_per_member_and_its_parameters(grid_sweep):
    out, df = grid_sweep
    assert len(df) == 8
    assert (df["status"] == "complete").all(), df["error"].tolist()
    got = sorted(zip(df["substrates.mg.serum"], df["tcells.lfa1.K_half_mM"], df["seed"]))
    want = sorted((m, k, s) for m in (0.24, 0.47) for k in (0.2, 0.4) for s in (1, 2))
    assert got == want
    assert df["member"].is_unique
    for _, r in df.iterrows():  # each member's store holds the config of its row
        cfg = gpusim.open_run(out / "members" / f"{r['member']}.zarr").config
        assert cfg.seed == r["seed"]
        assert cfg.substrate("mg").serum == r["substrates.mg.serum"]
        assert cfg.tcells.lfa1.K_half_mM == r["tcells.lfa1.K_half_mM"]
        assert cfg.grid.nzyx == (16, 16, 16)
    # the parquet on disk is the frame returned; more LFA-1 at higher serum Mg, at the same K
    assert pd.read_parquet(out / "summary.parquet").equals(df)
    for k in (0.2, 0.4):
        low = df[(df["tcells.lfa1.K_half_mM"] == k) & (df["substrates.mg.serum"] == 0.24)]["lfa1_mean_final"]
        high = df[(df["tcells.lfa1.K_half_mM"] == k) & (df["substrates.mg.serum"] == 0.47)]["lfa1_mean_final"]
        assert high.min() > low.max()


def test_rerun_skips_every_complete_member(grid_sweep, monkeypatch):
    out, df = grid_sweep
    import gpusim.sweep.execute as ex

    def no_cluster(*a, **k):
        raise AssertionError("a complete sweep must not start a cluster")

    monkeypatch.setattr(ex, "make_client", no_cluster)
    again = run_sweep(grid_spec(), out, progress=False)
    pd.testing.assert_frame_equal(again.drop(columns="wall_s"), df.drop(columns="wall_s"))


def test_member_equals_the_same_config_and_seed_run_directly(grid_sweep, tmp_path):
    out, df = grid_sweep
    row = df[(df["substrates.mg.serum"] == 0.47) & (df["tcells.lfa1.K_half_mM"] == 0.2) & (df["seed"] == 2)].iloc[0]
    cfg = gpusim.scenario_config("baseline").with_overrides(
        {**TINY, "substrates.mg.serum": 0.47, "tcells.lfa1.K_half_mM": 0.2, "seed": 2, "backend": "cpu"})
    gpusim.Simulation(cfg).run(days=DAYS, out=tmp_path / "direct.zarr", progress=False)
    direct = gpusim.open_run(tmp_path / "direct.zarr").timeseries
    member = gpusim.open_run(out / "members" / f"{row['member']}.zarr").timeseries
    assert list(direct.columns) == list(member.columns)
    for c in direct.columns:
        assert direct[c].to_numpy().tobytes() == member[c].to_numpy().tobytes(), c


def test_a_failing_member_is_recorded_and_the_others_finish(tmp_path):
    # a vessel mask file that does not exist passes validation and fails when the member starts
    spec = spec_from_dict({"base": "baseline", "days": DAYS, "seeds": [1], "backend": "cpu", "set": TINY,
                           "parameters": {"vessels": [{"kind": "random"}, {"kind": "file", "path": "no_such_mask.npy"}],
                                          "substrates.mg.serum": [0.24, 0.47]},
                           "cluster": {"workers": 2}}, "<test>")
    df = run_sweep(spec, tmp_path / "sw", progress=False)
    assert len(df) == 4
    failed = df[df["status"] == "failed"]
    assert len(failed) == 2
    assert all("no_such_mask.npy" in e for e in failed["error"])
    assert failed["kills"].isna().all()
    ok = df[df["status"] == "complete"]
    assert len(ok) == 2 and ok["tumor_live_final"].gt(0).all()
    for mid in failed["member"]:
        assert (tmp_path / "sw" / "members" / f"{mid}.error.txt").read_text().strip()
    # the table stays readable with its error texts
    sw = gpusim.open_sweep(tmp_path / "sw")
    assert set(sw.summary["status"]) == {"complete", "failed"}
    assert set(sw.members) == set(ok["member"]) | {m for m in failed["member"] if sw.member_path(m).exists()}


def test_open_sweep_gives_the_summary_spec_and_member_stores(grid_sweep):
    out, df = grid_sweep
    sw = gpusim.open_sweep(out)
    assert len(sw.summary) == 8 and len(sw.members) == 8
    assert sw.spec.design_points() == grid_spec().design_points()
    first = df["member"].iloc[0]
    assert sw.run(first).status == "complete"


def test_a_different_sweep_in_the_same_directory_is_refused(grid_sweep):
    out, _ = grid_sweep
    other = grid_spec(parameters={"substrates.mg.serum": [0.3]})
    with pytest.raises(gpusim.ConfigError, match="different sweep"):
        run_sweep(other, out, progress=False)


def test_sweep_figures_hold_the_means_and_intervals_over_seeds(grid_sweep):
    out, df = grid_sweep
    sw = gpusim.open_sweep(out)
    spec = sw.spec
    fig = dose_response(spec, sw.summary, "substrates.mg.serum", outcomes=("lfa1_mean_time_avg",),
                        config=spec.arm_config("main"))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "serum ionised Mg (mM)"
    assert ax.get_ylabel() == "lfa1 mean time avg (fraction)"
    assert len(ax.lines) >= 2  # one line per K_half
    g = df[df["tcells.lfa1.K_half_mM"] == 0.2]
    want = [g[g["substrates.mg.serum"] == m]["lfa1_mean_time_avg"].mean() for m in (0.24, 0.47)]
    got = [ln.get_ydata() for ln in ax.lines if len(ln.get_ydata()) == 2]
    assert any(np.allclose(y, want) for y in got)
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-3)


def test_outcomes_follow_their_definitions():
    t = np.arange(1, 2881, dtype=np.float64)  # two days of 1-min steps
    live = np.where(t < 1440, 100.0, 5.0)
    live[2000:] = 250.0
    ts = {"time_min": t, "tumor_live": live, "tumor_dead": np.zeros_like(t), "tumor_necrotic": np.zeros_like(t),
          "tcells": np.full_like(t, 10.0), "tcells_engaged": np.zeros_like(t), "tcells_exhausted": np.zeros_like(t),
          "engagements": np.zeros_like(t), "kills": np.linspace(0, 40, t.size), "lfa1_mean": np.full_like(t, 0.5),
          "mg_tumor_mean_mM": np.full_like(t, 0.4)}
    oc = outcomes(ts)
    assert set(oc) == set(OUTCOMES)
    assert oc["tumor_live_start"] == 100 and oc["tumor_live_final"] == 250
    assert oc["time_to_control_day"] == pytest.approx(1440 / 1440)
    assert oc["time_to_escape_day"] == pytest.approx(2001 / 1440)
    assert oc["growth_rate_per_day"] == pytest.approx(math.log(2.5) / (2879 / 1440))
    assert oc["kills_per_tcell"] == pytest.approx(4.0)
    assert oc["tumor_live_auc"] == pytest.approx(live.sum() / 1440)
    assert oc["mg_tumor_time_avg_mM"] == pytest.approx(0.4)
