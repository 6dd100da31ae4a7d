"""The sweep spec (issue 7): the README's example validates into its 4 members; lists, ranges and
distributions expand as documented; designs are reproducible; every error names its key; Sobol indices
of the Ishigami function, sampled and analysed through the sweep's own code path, match the analytic
values within their bootstrap intervals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpusim.config import ConfigError
from gpusim.sweep.sensitivity import sobol
from gpusim.sweep.spec import builtin_names, builtin_spec, load_spec, spec_from_dict

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"


def test_the_example_sweep_file_validates_into_four_members():
    spec = load_spec(EXAMPLE)
    members = spec.members()
    assert [(m.params["substrates.mg.serum"], m.seed) for m in members] == [(0.24, 1), (0.24, 2), (0.47, 1), (0.47, 2)]
    assert all(m.config.substrate("mg").serum == m.params["substrates.mg.serum"] for m in members)
    assert spec.total_minutes == pytest.approx(144.0)


def test_every_builtin_study_validates():
    for name in builtin_names():
        spec = builtin_spec(name)
        assert spec.members()
    paper = builtin_spec("paper")
    assert len(paper.seed_list) >= 8 and paper.assumptions
    arms = {m.arm: m.config for m in paper.members()}
    assert arms["infusion_control"].substrate("mg").serum == 0.47
    assert arms["low_mg_tcell_infusion"].substrate("mg").serum == 0.33


def test_ranges_lists_and_bare_dotted_keys_expand_in_declared_order():
    spec = spec_from_dict({"base": "baseline", "minutes": 10, "seeds": 2, "parameters": {
        "tcells": {"lfa1": {"K_half_mM": {"start": 0.2, "stop": 0.4, "steps": 3}}},
        "tcells.k_hit_per_min": {"start": 0.01, "stop": 0.1, "steps": 2, "scale": "log"},
    }})
    pts = spec.design_points()
    assert [round(p["tcells.lfa1.K_half_mM"], 12) for p in pts[::2]] == [0.2, 0.3, 0.4]
    assert [p["tcells.k_hit_per_min"] for p in pts[:2]] == pytest.approx([0.01, 0.1])
    assert spec.seed_list == [1, 2] and len(spec.members()) == 12


def test_lhs_and_sobol_designs_are_reproducible_and_within_bounds():
    params = {"tcells.k_hit_per_min": {"distribution": "loguniform", "low": 0.01, "high": 0.2},
              "substrates.mg.serum": {"distribution": "uniform", "low": 0.2, "high": 0.6}}
    lhs = spec_from_dict({"base": "baseline", "days": 1, "seeds": [1], "design": "lhs", "samples": 10,
                          "parameters": params})
    a, b = lhs.design_points(), lhs.design_points()
    assert a == b and len(a) == 10
    serum = sorted(p["substrates.mg.serum"] for p in a)
    assert all(0.2 + 0.04 * i <= s < 0.2 + 0.04 * (i + 1) for i, s in enumerate(serum))  # one per stratum
    sob = spec_from_dict({"base": "baseline", "days": 1, "seeds": [1], "design": "sobol", "samples": 8,
                          "parameters": params})
    pts = sob.design_points()
    assert len(pts) == 8 * (2 + 2)
    assert all(0.01 <= p["tcells.k_hit_per_min"] <= 0.2 for p in pts)


BASE = {"base": "baseline", "days": 0.1, "seeds": [1]}


@pytest.mark.parametrize("extra, key, words", [
    ({"dayz": 1}, "dayz", "unknown key"),
    ({"days": -1}, "days", "> 0"),
    ({"seeds": [1, 1]}, "seeds", "distinct"),
    ({"design": "random"}, "design", "grid"),
    ({"base": "no_such_scenario"}, "base", "built-in scenario"),
    ({"parameters": {"substrates.mg.serum": {"start": 0.1, "stop": 0.3}}}, "parameters.substrates.mg.serum.steps", "integer"),
    ({"parameters": {"substrates.mg.serum": {"distribution": "uniform", "low": 0.1, "high": 0.3}}},
     "parameters.substrates.mg.serum", "lhs"),
    ({"parameters": {"substrates.mg.serum": {"distribution": "beta"}}, "design": "lhs", "samples": 4},
     "parameters.substrates.mg.serum.distribution", "allowed"),
    ({"parameters": {"substrates.mg.serum": []}}, "parameters.substrates.mg.serum", "empty"),
    ({"design": "sobol", "samples": 6, "parameters": {"x": {"distribution": "uniform", "low": 0, "high": 1}}},
     "samples", "power of 2"),
    ({"design": "lhs", "parameters": {"x": {"distribution": "uniform", "low": 0, "high": 1}}}, "samples", "required"),
    ({"cluster": {"kind": "sge"}}, "cluster.kind", "slurm"),
    ({"keep": ["fields", "movies"]}, "keep.1", "tcells"),
    ({"checks": [{"name": "c", "outcome": "kills", "arm": "a", "reference": "main", "expect": "less"}]},
     "checks.0.arm", "no such arm"),
])
def test_spec_errors_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, **extra}, "bad.toml").members()
    assert err.value.path == key
    assert words in str(err.value) and "bad.toml" in str(err.value)


@pytest.mark.parametrize("params, key", [
    ({"substrates.mg.serumm": [0.3]}, "substrates.mg.serumm"),
    ({"substrates.mg.serum": [0.3, -1.0]}, "substrates.mg.serum"),
    ({"events.implant.rate_umol_per_min": [1e-5]}, "events.implant"),
])
def test_parameter_paths_and_values_are_validated_like_a_config(params, key):
    with pytest.raises(ConfigError) as err:
        spec_from_dict({**BASE, "parameters": params}, "bad.toml").members()
    assert err.value.path.startswith(key)
    assert "parameters (point" in str(err.value)


def test_a_missing_sweep_file_and_bad_toml_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_spec(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("base = \n")
    with pytest.raises(ConfigError, match="line 1: invalid TOML"):
        load_spec(bad)


ISHIGAMI_S1 = (0.3139, 0.4424, 0.0)
ISHIGAMI_ST = (0.5576, 0.4424, 0.2437)


def test_sobol_indices_of_the_ishigami_function_match_the_analytic_values():
    # the sweep's own Saltelli sample and analysis; the "model" is Ishigami (a = 7, b = 0.1) with a
    # small seed noise, so the seed averaging and the noise report are exercised too
    u = {"distribution": "uniform", "low": -math.pi, "high": math.pi}
    spec = spec_from_dict({**BASE, "design": "sobol", "samples": 1024, "seeds": [1, 2, 3], "design_seed": 7,
                           "parameters": {"x1": u, "x2": u, "x3": u}, "sensitivity": {"resamples": 200}})
    rng = np.random.default_rng(0)
    rows = []
    for i, p in enumerate(spec.design_points()):
        f = math.sin(p["x1"]) + 7 * math.sin(p["x2"]) ** 2 + 0.1 * p["x3"] ** 4 * math.sin(p["x1"])
        for s in spec.seed_list:
            rows.append({"arm": "main", "point": i, "seed": s, "status": "complete", "y": f + rng.normal(0, 0.1)})
    res = sobol(spec, pd.DataFrame(rows), "y")
    t = res.table.set_index("parameter")
    for name, s1, st in zip(("x1", "x2", "x3"), ISHIGAMI_S1, ISHIGAMI_ST):
        assert abs(t.loc[name, "S1"] - s1) <= max(t.loc[name, "S1_conf"], 0.02), name
        assert abs(t.loc[name, "ST"] - st) <= max(t.loc[name, "ST_conf"], 0.02), name
        assert 0 < t.loc[name, "ST_conf"] < 0.15
    assert res.seed_noise_variance == pytest.approx(0.01, rel=0.1)
    assert res.noise_share < 0.01


def test_every_outcome_is_defined_in_model_md_and_the_readme_example_validates():
    from gpusim.sweep.summary import OUTCOMES

    root = Path(__file__).resolve().parents[1]
    model = root / "MODEL.md"
    text = model.read_text().split("## Sweep outcomes", 1)[1].split("\n## ", 1)[0]
    for name in OUTCOMES:
        assert f"`{name}`" in text, name
    spec = load_spec(root / "examples" / "sweep_serum_mg.toml")
    assert [round(p["substrates.mg.serum"], 9) for p in spec.design_points()] == [0.2, 0.4, 0.6, 0.8]
    assert len(spec.members()) == 16
    readme = (root / "README.md").read_text()
    assert "gpusim sweep examples/sweep_serum_mg.toml" in readme
