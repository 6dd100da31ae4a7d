"""Expected directions between arms (``[[checks]]`` of a sweep spec), tested on seed-paired values.

For each check the outcome of ``arm`` and of ``reference`` are paired by seed (and design point), and
the paired differences d = arm − reference are tested one-sided (paired t-test) in the expected
direction. The verdict is ``reproduced`` (expected sign, p < alpha), ``contradicted`` (opposite sign,
significant in the other one-sided test) or ``not resolved`` (neither: more seeds or a longer horizon
are needed). Effect sizes: mean difference with its two-sided (1 − 2·alpha) t-interval, the ratio of
means, and the paired standardised difference (mean d ÷ sd d).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["evaluate_checks"]


def evaluate_checks(spec, summary):
    """A DataFrame with one row per check of ``spec`` (see the module docstring)."""
    import pandas as pd
    from scipy import stats

    rows = []
    done = summary[summary["status"] == "complete"] if "status" in summary else summary
    for c in spec.checks:
        a = done[done["arm"] == c.arm].set_index(["point", "seed"])[c.outcome]
        r = done[done["arm"] == c.reference].set_index(["point", "seed"])[c.outcome]
        pair = pd.concat({"a": a, "r": r}, axis=1).dropna()
        n = len(pair)
        row = {"check": c.name, "claim": c.claim, "outcome": c.outcome, "arm": c.arm, "reference": c.reference,
               "expect": c.expect, "n_pairs": n, "mean_arm": math.nan, "mean_reference": math.nan,
               "ratio": math.nan, "diff": math.nan, "diff_lo": math.nan, "diff_hi": math.nan,
               "effect_size": math.nan, "p": math.nan, "verdict": "not resolved", "alpha": c.alpha}
        if n >= 2:
            d = (pair["a"] - pair["r"]).to_numpy(np.float64)
            mean_a, mean_r = float(pair["a"].mean()), float(pair["r"].mean())
            sd = float(d.std(ddof=1))
            half = stats.t.ppf(1 - c.alpha, n - 1) * sd / math.sqrt(n)
            row.update(mean_arm=mean_a, mean_reference=mean_r, diff=float(d.mean()),
                       diff_lo=float(d.mean() - half), diff_hi=float(d.mean() + half),
                       ratio=mean_a / mean_r if mean_r != 0 else math.nan,
                       effect_size=float(d.mean() / sd) if sd > 0 else math.nan)
            if sd > 0:
                p = float(stats.ttest_1samp(d, 0.0, alternative=c.expect).pvalue)
                p_other = float(stats.ttest_1samp(d, 0.0, alternative="greater" if c.expect == "less" else "less").pvalue)
            else:  # every pair differs by the same amount: the sign decides
                sign = np.sign(d.mean())
                p = 0.0 if sign == (-1 if c.expect == "less" else 1) else 1.0
                p_other = 0.0 if sign == (1 if c.expect == "less" else -1) else 1.0
            row["p"] = p
            if p < c.alpha:
                row["verdict"] = "reproduced"
            elif p_other < c.alpha:
                row["verdict"] = "contradicted"
        rows.append(row)
    return pd.DataFrame(rows)
