"""``gpusim report RUN_OR_SWEEP [--out report.html]``: a self-contained HTML report.

Figures are matplotlib PNGs embedded as base64 (Agg backend: no display needed), so the file can be
mailed or printed alone. A run store gets populations, kills, Mg/O₂ slices and the LFA-1 histogram; a
sweep directory gets the dose–response, the arms side by side, Sobol bars (design 'sobol'), the
direction checks, the failures and the list of unverified assumptions.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

__all__ = ["write_report", "default_out"]

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:.9em;color:#444}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}
th{background:#eee}.reproduced{background:#d9f2d9}.contradicted{background:#f7d4d4}
.notresolved{background:#fff3cd}.warn{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}"""


def _is_sweep(path: Path) -> bool:
    from .summary import PLAN_FILE

    return (path / PLAN_FILE).exists()


def default_out(path) -> Path:
    """``DIR/report.html`` for a sweep, ``run.report.html`` beside a run store ``run.zarr``."""
    path = Path(path)
    if _is_sweep(path):
        return path / "report.html"
    return path.with_name(path.name.removesuffix(".zarr") + ".report.html")


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures_html(figs: dict) -> list[str]:
    parts = []
    for name, (fig, caption) in figs.items():
        parts.append(f'<figure id="fig-{name}"><img alt="{html.escape(name)}" '
                     f'src="data:image/png;base64,{_png(fig)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    return parts


def _table(df, floatfmt: str = "{:.4g}", classes=None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, (_, r) in enumerate(df.iterrows()):
        cells = []
        for v in r:
            text = floatfmt.format(v) if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        cls = f' class="{classes[i]}"' if classes else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")


def run_report(path) -> str:
    from gpusim.io.reader import open_run

    from .report_run import run_figures
    from .summary import OUTCOMES, outcomes

    run = open_run(path)
    cfg = run.config
    oc = outcomes(run.timeseries)
    body = [f"<p>run store <code>{html.escape(str(path))}</code>: status {html.escape(str(run.status))}, seed "
            f"{cfg.seed}, grid {'×'.join(map(str, cfg.grid.nzyx))} voxels of {cfg.grid.dx_um:g} µm, "
            f"backend {html.escape(str(run.attrs.get('backend', '?')))}</p>"]
    import pandas as pd

    body.append("<h2>Outcomes</h2>" + _table(pd.DataFrame(
        [{"outcome": k, "value": v, "unit": OUTCOMES[k][0]} for k, v in oc.items() if not _nan(v)])))
    body.append("<h2>Figures</h2>")
    body += _figures_html(run_figures(run))
    return _page(f"gpusim run report: {Path(path).name}", body)


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def sweep_report(path) -> str:
    from .checks import evaluate_checks
    from .report_sweep import ARM_OUTCOMES, mean_ci, sweep_figures
    from .sensitivity import sobol_all
    from .summary import open_sweep

    sw = open_sweep(path)
    spec, df = sw.spec, sw.summary
    n_done = int((df["status"] == "complete").sum())
    failed = df[df["status"] == "failed"]
    body = [f"<p>{html.escape(spec.description or spec.name)}</p>",
            f"<p>{len(df)} members ({len(spec.arm_names)} arm(s) × {df['point'].nunique()} point(s) × "
            f"{len(spec.seed_list)} seed(s)), {n_done} complete, {len(failed)} failed; "
            f"{spec.total_minutes:g} simulated min each; design {spec.design}.</p>"]
    import pandas as pd

    rows = []
    for (arm, point), g in df[df["status"] == "complete"].groupby(["arm", "point"]):
        row = {"arm": arm, "point": point}
        row.update({p.path: g[p.path].iloc[0] for p in spec.parameter_list})
        for o in ARM_OUTCOMES:
            m, h = mean_ci(g[o])
            row[o] = f"{m:.4g} ± {h:.2g}" if not math.isnan(h) else f"{m:.4g}"
        rows.append(row)
    if rows and len(rows) <= 200:
        body.append("<h2>Means over seeds (± 95 % t-interval)</h2>" + _table(pd.DataFrame(rows)))
    sobol = sobol_all(spec, df) if spec.design == "sobol" else []
    if spec.checks:
        checks = evaluate_checks(spec, df)
        n_ok = int((checks["verdict"] == "reproduced").sum())
        body.append(f"<h2>Expected directions: {n_ok} of {len(checks)} reproduced</h2>"
                    "<p>Paired by seed, one-sided paired t-test; interval: the mean difference's two-sided "
                    "(1 − 2α) t-interval; effect size: mean difference ÷ its sd.</p>")
        cols = ["claim", "outcome", "mean_arm", "mean_reference", "ratio", "diff", "diff_lo", "diff_hi",
                "effect_size", "p", "n_pairs", "verdict"]
        body.append(_table(checks[cols], classes=[v.replace(" ", "") for v in checks["verdict"]]))
    if spec.assumptions:
        body.append("<h2>Unverified assumptions</h2><p class='warn'>These inputs are not verified against "
                    "measurements; the directions above hold for the model as configured, not as facts "
                    "about patients or mice.</p><ul>"
                    + "".join(f"<li>{html.escape(a)}</li>" for a in spec.assumptions) + "</ul>")
    for r in sobol:
        body.append(f"<h2>Sobol indices: {html.escape(r.outcome)} ({html.escape(r.arm)})</h2>"
                    f"<p>Model output: mean over {r.n_seeds} seeds at each of {r.n_points} points. Seed-noise "
                    f"variance (one seed) {r.seed_noise_variance:.4g}; in the mean over seeds it is "
                    f"{r.noise_share:.1%} of the output variance {r.output_variance:.4g}.</p>" + _table(r.table))
    body.append("<h2>Figures</h2>")
    body += _figures_html(sweep_figures(spec, df, sobol))
    if len(failed):
        body.append("<h2>Failed members</h2>" + _table(failed[["member", "arm", "seed", "error"]]))
    return _page(f"gpusim sweep report: {spec.name}", body)


def write_report(path, out=None) -> Path:
    """Write the report of the run store or sweep directory ``path`` to ``out`` (default:
    :func:`default_out`); returns the path written."""
    from gpusim.io.store import StoreError

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{str(path)!r} does not exist: give a run store (run.zarr) or a sweep directory")
    text = sweep_report(path) if _is_sweep(path) else run_report(path)
    out = Path(out) if out is not None else default_out(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
