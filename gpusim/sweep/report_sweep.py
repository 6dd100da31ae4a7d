"""Figures of a sweep: dose–response with across-seed intervals, arms side by side, Sobol bars.

Intervals are two-sided 95 % t-intervals of the mean over seeds (none with one seed). Each function
returns a matplotlib Figure whose axes hold the plotted means (tests read them back).
"""

from __future__ import annotations

import math
import re

import numpy as np

from .report_run import _plt
from .summary import OUTCOMES

__all__ = ["sweep_figures", "dose_response", "arm_comparison", "sensitivity_bars", "mean_ci", "param_label",
           "outcome_label", "dose_parameter"]

DOSE_OUTCOMES = ("tumor_live_final", "kills_per_tcell", "lfa1_mean_time_avg")
ARM_OUTCOMES = ("tumor_live_final", "growth_rate_per_day", "kills_per_tcell", "lfa1_mean_time_avg",
                "mg_tumor_time_avg_mM")
_SUFFIX_UNITS = (("_um2_per_min", "µm²/min"), ("_umol_per_min", "µmol/min"), ("_per_min", "1/min"),
                 ("_mM", "mM"), ("_nM", "nM"), ("_mmHg", "mmHg"), ("_um3", "µm³"), ("_um", "µm"),
                 ("_min", "min"))
_NICE = {"substrates.mg.serum": "serum ionised Mg", "tcells.lfa1.K_half_mM": "LFA-1 K_half",
         "events.implant.rate_umol_per_min": "Mg implant release rate"}


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the two-sided t-interval); half-width NaN with fewer than two values."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def param_label(path: str, config=None) -> str:
    """An axis label with the unit: the substrate's unit for substrate keys, else the key's unit suffix."""
    name = _NICE.get(path, path)
    m = re.match(r"substrates\.([^.]+)\.(serum|initial)$", path)
    if m and config is not None:
        try:
            return f"{name} ({config.substrate(m.group(1)).unit})"
        except KeyError:
            pass
    for suffix, unit in _SUFFIX_UNITS:
        if path.endswith(suffix):
            return f"{name} ({unit})"
    return name


def outcome_label(name: str) -> str:
    unit = OUTCOMES.get(name, ("", ""))[0]
    return f"{name.replace('_', ' ')} ({unit})" if unit else name.replace("_", " ")


def dose_parameter(spec, summary) -> str | None:
    """The parameter a dose–response plots against: serum Mg when swept, else the first numeric one
    with at least two values."""
    numeric = [p.path for p in spec.parameter_list
               if p.path in summary and np.issubdtype(summary[p.path].dtype, np.number)
               and summary[p.path].nunique() > 1]
    if "substrates.mg.serum" in numeric:
        return "substrates.mg.serum"
    return numeric[0] if numeric else None


def dose_response(spec, summary, x: str, outcomes=DOSE_OUTCOMES, config=None):
    """Outcome means over seeds (± 95 % t-interval) against parameter ``x``; one line per arm and per
    combination of the other swept parameters."""
    plt = _plt()
    done = summary[summary["status"] == "complete"]
    outcomes = [o for o in outcomes if o in done and done[o].notna().any()]
    fig, axes = plt.subplots(1, len(outcomes), figsize=(4.2 * len(outcomes), 3.6), squeeze=False)
    others = [p.path for p in spec.parameter_list if p.path != x]
    groups = ["arm"] + others
    for ax, o in zip(axes[0], outcomes):
        for key, g in done.groupby(groups, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            xs, ms, hs = [], [], []
            for xv, gx in g.groupby(x, sort=True):
                m, h = mean_ci(gx[o])
                xs.append(float(xv))
                ms.append(m)
                hs.append(0.0 if math.isnan(h) else h)
            parts = [spec.arm_label(key[0])] if len(spec.arm_names) > 1 else []
            parts += [f"{p.split('.')[-1]}={v}" for p, v in zip(others, key[1:])]
            ax.errorbar(xs, ms, yerr=hs, marker="o", capsize=3, label=", ".join(parts) or None)
        ax.set_xlabel(param_label(x, config))
        ax.set_ylabel(outcome_label(o))
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
    fig.suptitle(f"dose–response: mean over {len(spec.seed_list)} seeds, bars 95 % t-interval", fontsize=10)
    fig.tight_layout()
    return fig


def arm_comparison(spec, summary, outcomes=ARM_OUTCOMES):
    """Each arm's mean (± 95 % t-interval) per outcome, seeds as dots: the scenarios side by side."""
    plt = _plt()
    done = summary[summary["status"] == "complete"]
    outcomes = [o for o in outcomes if o in done and np.isfinite(done[o].to_numpy(np.float64)).any()]
    arms = spec.arm_names
    fig, axes = plt.subplots(1, len(outcomes), figsize=(3.3 * len(outcomes), 3.9), squeeze=False)
    for ax, o in zip(axes[0], outcomes):
        means, halves = [], []
        for a in arms:
            m, h = mean_ci(done.loc[done["arm"] == a, o])
            means.append(m)
            halves.append(0.0 if math.isnan(h) else h)
        pos = np.arange(len(arms))
        ax.bar(pos, means, yerr=halves, capsize=3, color="#9ecae1", edgecolor="#3182bd")
        for i, a in enumerate(arms):
            v = done.loc[done["arm"] == a, o].to_numpy(np.float64)
            ax.plot(np.full(v.size, pos[i]) + np.linspace(-0.15, 0.15, max(v.size, 1))[:v.size], v, "k.", ms=3)
        ax.set_xticks(pos, [spec.arm_label(a) for a in arms], rotation=35, ha="right", fontsize=7)
        ax.set_ylabel(outcome_label(o))
    fig.suptitle("arms side by side: mean over seeds (bars 95 % t-interval, dots: seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def sensitivity_bars(result):
    """First-order (S1) and total (ST) Sobol indices with their bootstrap intervals."""
    plt = _plt()
    t = result.table
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(t) + 2), 3.6))
    pos = np.arange(len(t))
    ax.bar(pos - 0.2, t["S1"], 0.4, yerr=t["S1_conf"], capsize=3, label="first order S1")
    ax.bar(pos + 0.2, t["ST"], 0.4, yerr=t["ST_conf"], capsize=3, label="total ST")
    ax.set_xticks(pos, list(t["parameter"]), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("Sobol index (1)")
    ax.set_title(f"{result.outcome}: {int(result.conf_level * 100)} % bootstrap intervals; seed noise "
                 f"{result.noise_share:.1%} of the variance", fontsize=9)
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sweep_figures(spec, summary, sobol_results=()) -> dict:
    """name -> (Figure, caption) for every figure the sweep's design allows."""
    out = {}
    done = summary[summary["status"] == "complete"]
    if done.empty:
        return out
    x = dose_parameter(spec, done) if spec.design == "grid" else None
    if x is not None:
        cfg = spec.arm_config(spec.arm_names[0])
        out["dose_response"] = (dose_response(spec, summary, x, config=cfg),
                                f"Outcomes against {param_label(x, cfg)}: mean over seeds with 95 % t-intervals.")
    if len(spec.arm_names) > 1:
        out["arms"] = (arm_comparison(spec, summary), "The arms side by side (mean, 95 % t-interval, seeds).")
    for r in sobol_results:
        out[f"sobol_{r.arm}_{r.outcome}"] = (sensitivity_bars(r), f"Sobol indices of {r.outcome} ({r.arm}).")
    return out
