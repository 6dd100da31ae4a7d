"""Sobol sensitivity of sweep outcomes (SALib): first-order and total indices with bootstrap intervals.

The model output at a design point is the mean of the outcome over the sweep's seeds (the same seeds at
every point), so the indices describe the parameters' effect on the expected outcome. What seed noise
is left in that mean is reported beside them: the within-point variance across seeds, divided by the
number of seeds, as a share of the variance of the point means. A share near 1 means the indices are
mostly noise; more seeds (or a larger block) are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SobolResult", "sobol", "sobol_all"]


@dataclass
class SobolResult:
    """Sobol indices of one outcome. ``table``: DataFrame with parameter, S1, S1_conf, ST, ST_conf
    (``*_conf``: half-width of the bootstrap interval at ``conf_level``)."""

    outcome: str
    arm: str
    table: object
    n_points: int
    n_seeds: int
    conf_level: float
    output_variance: float      # variance of the seed-mean outcome over the design points
    seed_noise_variance: float  # mean within-point variance across seeds (one seed); NaN with one seed

    @property
    def noise_share(self) -> float:
        """Share of ``output_variance`` that is seed noise in the point means (var_seed / n / var)."""
        if not (self.output_variance > 0) or math.isnan(self.seed_noise_variance):
            return math.nan
        return self.seed_noise_variance / self.n_seeds / self.output_variance


def sobol(spec, summary, outcome: str, arm: str | None = None, resamples: int | None = None,
          conf_level: float | None = None, seed: int | None = None) -> SobolResult:
    """Sobol indices of ``outcome`` (a summary column) for arm ``arm`` of a design-'sobol' ``spec``.

    ``summary`` needs the columns point, seed, status (optional) and ``outcome``; every design point
    must have a value for every seed. ``seed`` fixes the bootstrap (default: the spec's design_seed).
    """
    import pandas as pd
    from SALib.analyze import sobol as sa

    if spec.design != "sobol":
        raise ValueError(f"Sobol indices need design = 'sobol' (this sweep is {spec.design!r})")
    arm = arm or spec.arm_names[0]
    df = summary[summary["arm"] == arm] if "arm" in summary else summary
    if "status" in df:
        df = df[df["status"] == "complete"]
    n_points = len(spec.design_points())
    seeds = spec.seed_list
    table = df.pivot_table(index="point", columns="seed", values=outcome, aggfunc="first")
    table = table.reindex(index=range(n_points), columns=seeds)
    missing = table.isna()
    if missing.values.any():
        bad = [int(i) for i in table.index[missing.any(axis=1)]][:10]
        raise ValueError(f"outcome {outcome!r} is missing or NaN at design points {bad} (of {n_points}); "
                         "Sobol indices need every point (re-run the sweep to finish failed members)")
    values = table.to_numpy(np.float64)
    y = values.mean(axis=1)
    noise = float(values.var(axis=1, ddof=1).mean()) if len(seeds) > 1 else math.nan
    res = spec.sensitivity.resamples if resamples is None else resamples
    conf = spec.sensitivity.conf_level if conf_level is None else conf_level
    s = sa.analyze(spec.salib_problem(), y, calc_second_order=False, num_resamples=res, conf_level=conf,
                   seed=spec.design_seed if seed is None else seed)
    out = pd.DataFrame({"parameter": spec.salib_problem()["names"], "S1": s["S1"], "S1_conf": s["S1_conf"],
                        "ST": s["ST"], "ST_conf": s["ST_conf"]})
    return SobolResult(outcome, arm, out, n_points, len(seeds), conf, float(np.var(y, ddof=1)), noise)


def sobol_all(spec, summary) -> list[SobolResult]:
    """:func:`sobol` of every outcome in ``spec.sensitivity.outcomes`` and arm; outcomes that cannot be
    analysed (a constant or missing value) are left out."""
    out = []
    for arm in spec.arm_names:
        for name in spec.sensitivity.outcomes:
            if name not in summary:
                continue
            try:
                out.append(sobol(spec, summary, name, arm))
            except (ValueError, ZeroDivisionError, FloatingPointError):
                continue
    return out
