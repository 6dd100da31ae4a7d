"""The built-in paper study (issue 7; PARAMETERS.md "Numbers for validation"): over its 8 seeds on the
0.6 mm block, Mg-deficient serum gives fewer kills per T cell than baseline, an intratumoral implant
more, and low serum Mg with a T-cell infusion fewer than the same infusion at normal Mg — each by a
one-sided paired test at p < 0.05; the tumour-burden directions are checked at the study's 1-day
horizon. Slow: 40 members of about a minute each on one core.
"""

from __future__ import annotations

import pytest

from gpusim.sweep.checks import evaluate_checks
from gpusim.sweep.execute import run_sweep
from gpusim.sweep.spec import builtin_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    spec = builtin_spec("paper")
    assert len(spec.seed_list) >= 8
    df = run_sweep(spec, tmp_path_factory.mktemp("paper") / "paper.sweep", progress=False)
    assert (df["status"] == "complete").all(), df[df["status"] != "complete"]["error"].tolist()
    return evaluate_checks(spec, df).set_index("check")


@pytest.mark.parametrize("check", ["deficient_lfa1", "deficient_kills", "intratumoral_kills", "infusion_kills"])
def test_kills_per_tcell_follow_the_papers_directions(paper, check):
    row = paper.loc[check]
    assert row["n_pairs"] >= 8
    assert row["verdict"] == "reproduced", row.to_dict()


@pytest.mark.parametrize("check", ["deficient_tumor", "intratumoral_tumor", "infusion_tumor"])
def test_tumour_burden_follows_the_papers_directions_at_one_day(paper, check):
    assert paper.loc[check, "verdict"] == "reproduced", paper.loc[check].to_dict()
