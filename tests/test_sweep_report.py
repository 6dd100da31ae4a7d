"""Reports (issue 7): the figures of a tiny run and a tiny sweep carry the data they claim (read back
from the matplotlib axes, not from pixels) and units on their axes; the HTML is one self-contained
file with every figure embedded; ``gpusim sweep`` and ``gpusim report`` work from the command line.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

import gpusim
from gpusim.cli import main
from gpusim.sweep.report import write_report
from gpusim.sweep.report_run import kills, lfa1_histogram, populations, slices
from gpusim.sweep.report_sweep import arm_comparison

from test_sweep import DAYS, TINY

RUN = {**TINY, "backend": "cpu", "seed": 3, "output.fields_every_min": 10.0, "output.tcells_every_min": 10.0}


@pytest.fixture(scope="module")
def run_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "run.zarr"
    cfg = gpusim.scenario_config("baseline").with_overrides(RUN)
    gpusim.Simulation(cfg).run(days=DAYS, out=path, progress=False)
    return path


def _images(html: str) -> dict:
    return {name: base64.b64decode(data) for name, data in
            re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)}


def test_run_figures_hold_the_timeseries_and_snapshots(run_store):
    run = gpusim.open_run(run_store)
    ts = run.timeseries
    fig = populations(ts)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.lines}
    np.testing.assert_array_equal(lines["tumour LIVE"].get_ydata(), ts["tumor_live"].to_numpy(float))
    np.testing.assert_allclose(lines["T cells"].get_xdata(), ts["time_min"].to_numpy() / 60.0)
    assert ax.get_xlabel() == "time (h)" and ax.get_ylabel() == "cells (count)"
    k = kills(ts)
    assert k.axes[0].lines[0].get_ydata()[-1] == ts["kills"].iloc[-1]
    assert sum(p.get_height() for p in k.axes[1].patches) == ts["kills"].iloc[-1]
    assert k.axes[1].get_ylabel() == "kills per hour"
    mg = slices(run, "mg")
    k_z = int(run.config.tumor_center_um[0] // run.dx_um)
    shown = mg.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), run.fields["mg"].isel(t=0, z=k_z).values)
    assert "(mM)" in mg.axes[-1].get_ylabel()  # the colour bar
    assert mg.axes[0].get_xlabel() == "x (µm)"
    h = lfa1_histogram(run)
    last = run.tcells(-1)
    counts = [p.get_height() for p in h.axes[0].patches]
    assert sum(counts) == len(run.tcells(0)) + len(last)
    assert "LFA-1" in h.axes[0].get_xlabel()


def test_run_report_is_self_contained_html_with_every_figure(run_store, tmp_path):
    out = write_report(run_store, tmp_path / "r.html")
    html = out.read_text()
    imgs = _images(html)
    assert set(imgs) == {"populations", "kills", "slice_mg", "slice_o2", "lfa1"}
    assert all(b.startswith(b"\x89PNG") for b in imgs.values())
    assert "src=\"http" not in html and "<script" not in html
    assert "tumor_live_final" in html


def test_arm_comparison_has_one_bar_per_arm(tmp_path):
    from gpusim.sweep.execute import run_sweep
    from gpusim.sweep.spec import spec_from_dict

    spec = spec_from_dict({"base": "baseline", "days": 0.01, "seeds": [1, 2], "backend": "cpu", "set": TINY,
                           "cluster": {"workers": 2},
                           "arms": {"normal": {}, "deficient": {"base": "mg_deficient"}},
                           "checks": [{"name": "lfa", "outcome": "lfa1_mean_time_avg", "arm": "deficient",
                                       "reference": "normal", "expect": "less"}],
                           "assumptions": ["diet serum Mg is unverified"]}, "<test>")
    df = run_sweep(spec, tmp_path / "arms", progress=False)
    fig = arm_comparison(spec, df, outcomes=("lfa1_mean_time_avg",))
    bars = [p.get_height() for p in fig.axes[0].patches]
    want = [df[df["arm"] == a]["lfa1_mean_time_avg"].mean() for a in ("normal", "deficient")]
    assert bars == pytest.approx(want)
    html = write_report(tmp_path / "arms").read_text()
    assert "arms" in _images(html)
    assert "1 of 1 reproduced" in html and "diet serum Mg is unverified" in html


def test_cli_sweep_then_report(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.toml"
    spec.write_text(f'base = "baseline"\nminutes = 10\nseeds = [1, 2]\nbackend = "cpu"\n'
                    f'[set]\n"grid.shape" = [16, 16, 16]\n"tumor.initial_radius_um" = 60.0\n'
                    f'"tcells.initial_count" = 20\n[parameters]\n"substrates.mg.serum" = [0.24, 0.47]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(spec), "--workers", "2", "--no-progress", "--csv"]) == 0
    assert (tmp_path / "s.sweep" / "summary.csv").exists()
    html = (tmp_path / "s.sweep" / "report.html").read_text()
    assert "dose_response" in _images(html)
    assert main(["report", "s.sweep", "--out", "again.html"]) == 0
    assert (tmp_path / "again.html").read_text().count("data:image/png;base64") == html.count("data:image/png;base64")
    assert main(["sweep", str(spec), "--check"]) == 0
    assert "4 members" in capsys.readouterr().out.replace("\n", " ")
    assert main(["sweep", "--builtin", "nope"]) == 2
