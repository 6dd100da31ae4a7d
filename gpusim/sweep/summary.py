"""The sweep summary: one row per member (parameters, seed, outcomes), and ``open_sweep``.

Outcomes are computed from a member store's timeseries (one row per step, each the state at the end
of that step) by :func:`outcomes`; their definitions are in :data:`OUTCOMES` and MODEL.md ("Sweep
outcomes"). N₀ is the LIVE tumour count of the first recorded step (the end of step 1).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

__all__ = ["OUTCOMES", "outcomes", "open_sweep", "Sweep", "summary_frame", "PLAN_FILE", "SUMMARY_FILE"]

PLAN_FILE = "sweep.json"
SUMMARY_FILE = "summary.parquet"
#: control: LIVE cells below this fraction of N₀; escape: above this multiple of N₀ (issue 7)
CONTROL_FRACTION = 0.1
ESCAPE_FACTOR = 2.0

#: name -> (unit, definition); every outcome column of the summary
OUTCOMES: dict[str, tuple[str, str]] = {
    "minutes": ("min", "simulated time of the member (the last timeseries row)"),
    "tumor_live_start": ("cells", "N₀: LIVE tumour cells at the end of the first step"),
    "tumor_live_final": ("cells", "LIVE tumour cells at the end of the run"),
    "tumor_live_mean": ("cells", "time-averaged LIVE tumour cells (mean over steps)"),
    "tumor_live_auc": ("cell·day", "time integral of LIVE tumour cells (sum over steps × dt)"),
    "tumor_live_ratio": ("1", "N_end / N₀"),
    "growth_rate_per_day": ("1/day", "net specific growth rate ln(N_end / N₀) / T, T in days from the "
                            "first to the last step (-inf when the tumour is eradicated)"),
    "time_to_control_day": ("day", "first time LIVE cells fall below 10 % of N₀ (NaN: not within the run)"),
    "time_to_escape_day": ("day", "first time LIVE cells exceed 2 × N₀ (NaN: not within the run)"),
    "controlled": ("bool", "LIVE cells fell below 10 % of N₀ at some step"),
    "escaped": ("bool", "LIVE cells exceeded 2 × N₀ at some step"),
    "tumor_dead_final": ("cells", "DEAD (apoptotic, not yet cleared) tumour cells at the end"),
    "tumor_necrotic_final": ("cells", "NECROTIC tumour cells at the end"),
    "tcells_final": ("cells", "living T cells at the end"),
    "tcells_mean": ("cells", "time-averaged living T cells"),
    "kills": ("kills", "cumulative kills by T cells"),
    "engagements": ("synapses", "cumulative engagements (synapses formed)"),
    "kills_per_tcell": ("kills/cell", "cumulative kills ÷ time-averaged T cells (as `gpusim run` reports)"),
    "kills_per_tcell_per_day": ("kills/cell/day", "kills_per_tcell ÷ simulated days"),
    "lfa1_mean_final": ("fraction", "mean LFA-1 extended fraction A over living T cells at the end"),
    "lfa1_mean_time_avg": ("fraction", "time average of the per-step mean LFA-1 extended fraction"),
    "mg_tumor_final_mM": ("mM", "mean ionised Mg over LIVE tumour voxels at the end"),
    "mg_tumor_time_avg_mM": ("mM", "time average of the per-step mean ionised Mg over LIVE tumour voxels"),
}


def outcomes(ts) -> dict:
    """The :data:`OUTCOMES` of one run from its timeseries (a DataFrame or dict of equal-length arrays
    with ``time_min``, ``tumor_live``, ``tcells``, ``kills``, ...); NaN where the run lacks a column."""
    from gpusim.agents.cells import summarize

    col = {k: np.asarray(ts[k]) for k in (ts.columns if hasattr(ts, "columns") else ts)}
    out = {k: math.nan for k in OUTCOMES}
    t = col.get("time_min")
    if t is None or len(t) == 0:
        return out
    out["minutes"] = float(t[-1])
    dt = float(t[1] - t[0]) if len(t) > 1 else float(t[0])
    live = col.get("tumor_live")
    if live is not None:
        live = live.astype(np.float64)
        n0, n1 = live[0], live[-1]
        days = (t[-1] - t[0]) / 1440.0
        out.update(tumor_live_start=n0, tumor_live_final=n1, tumor_live_mean=float(live.mean()),
                   tumor_live_auc=float(live.sum() * dt / 1440.0),
                   tumor_live_ratio=n1 / n0 if n0 > 0 else math.nan,
                   tumor_dead_final=float(col["tumor_dead"][-1]), tumor_necrotic_final=float(col["tumor_necrotic"][-1]))
        if n0 > 0 and days > 0:
            out["growth_rate_per_day"] = math.log(n1 / n0) / days if n1 > 0 else -math.inf
        below = np.nonzero(live < CONTROL_FRACTION * n0)[0]
        above = np.nonzero(live > ESCAPE_FACTOR * n0)[0]
        out["controlled"], out["escaped"] = bool(below.size), bool(above.size)
        out["time_to_control_day"] = float(t[below[0]]) / 1440.0 if below.size else math.nan
        out["time_to_escape_day"] = float(t[above[0]]) / 1440.0 if above.size else math.nan
    cells = summarize(col)
    if cells:
        out.update(tcells_final=float(cells["tcells"]), tcells_mean=float(np.mean(col["tcells"])),
                   kills=float(cells["kills"]), engagements=float(cells["engagements"]),
                   kills_per_tcell=cells["kills_per_tcell"], kills_per_tcell_per_day=cells["kills_per_tcell_per_day"],
                   lfa1_mean_final=cells["lfa1_mean"])
        lfa = col["lfa1_mean"]
        out["lfa1_mean_time_avg"] = float(np.nanmean(lfa)) if np.isfinite(lfa).any() else math.nan
    mg = col.get("mg_tumor_mean_mM")
    if mg is not None:
        out["mg_tumor_final_mM"] = float(mg[-1])
        out["mg_tumor_time_avg_mM"] = float(np.nanmean(mg)) if np.isfinite(mg).any() else math.nan
    return out


def store_outcomes(store) -> dict:
    """:func:`outcomes` of the run store at ``store``."""
    from gpusim.io.reader import open_run

    return outcomes(open_run(store).timeseries)


def param_value(v):
    """A parameter value as a table cell: scalars as they are, lists and tables as JSON text."""
    return v if isinstance(v, (int, float, str, bool)) else json.dumps(v)


def summary_frame(plan: list[dict], records: dict, param_paths: list[str]):
    """The tidy summary: one row per member of ``plan`` (dicts with id, arm, point, seed, params) in plan
    order; ``records[id]`` holds status, error, wall_s and outcomes."""
    import pandas as pd

    rows = []
    for m in plan:
        rec = records.get(m["id"], {"status": "pending"})
        row = {"member": m["id"], "arm": m["arm"], "point": m["point"], "seed": m["seed"]}
        row.update({p: param_value(m["params"].get(p)) for p in param_paths})
        row.update(status=rec.get("status", "pending"), error=rec.get("error") or "",
                   wall_s=float(rec.get("wall_s", math.nan)))
        oc = rec.get("outcomes") or {}
        row.update({k: oc.get(k, math.nan) for k in OUTCOMES})
        rows.append(row)
    df = pd.DataFrame(rows)
    for k in ("controlled", "escaped"):  # NaN for members without outcomes: keep a float column
        df[k] = df[k].astype("float64")
    return df


def write_summary(df, out_dir, csv: bool = False) -> list[Path]:
    """``summary.parquet`` (and ``summary.csv``) in ``out_dir``, each written to a temporary name and
    renamed, so a reader never sees half a table."""
    out_dir = Path(out_dir)
    written = []
    tmp = out_dir / (SUMMARY_FILE + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out_dir / SUMMARY_FILE)
    written.append(out_dir / SUMMARY_FILE)
    if csv:
        tmp = out_dir / "summary.csv.tmp"
        df.to_csv(tmp, index=False)
        os.replace(tmp, out_dir / "summary.csv")
        written.append(out_dir / "summary.csv")
    return written


class Sweep:
    """A sweep directory opened for reading: ``summary`` (pandas, one row per member), ``spec`` (the
    validated :class:`~gpusim.sweep.spec.SweepSpec`), ``members`` (id -> run-store path of the members
    whose store exists), ``run(id)`` (:func:`gpusim.open_run` of one member)."""

    def __init__(self, path):
        self.path = Path(path)
        plan_file = self.path / PLAN_FILE
        if not plan_file.exists():
            from gpusim.io.store import StoreError

            raise StoreError(f"{str(self.path)!r} is not a sweep directory (no {PLAN_FILE}); write one with "
                             "`gpusim sweep SPEC --out DIR`")
        self.plan = json.loads(plan_file.read_text())

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, {len(self.plan['members'])} members)"

    @property
    def spec(self):
        from .spec import spec_from_dict

        return spec_from_dict(self.plan["spec"], f"{self.path / PLAN_FILE}:spec", self.plan.get("base_dir"))

    @property
    def summary(self):
        import pandas as pd

        return pd.read_parquet(self.path / SUMMARY_FILE)

    def member_path(self, member_id: str) -> Path:
        return self.path / "members" / f"{member_id}.zarr"

    @property
    def members(self) -> dict:
        out = {}
        for m in self.plan["members"]:
            p = self.member_path(m["id"])
            if p.exists():
                out[m["id"]] = p
        return out

    def run(self, member_id: str):
        from gpusim.io.reader import open_run

        return open_run(self.member_path(member_id))


def open_sweep(path) -> Sweep:
    """Open the sweep directory at ``path`` (see :class:`Sweep`)."""
    return Sweep(path)
