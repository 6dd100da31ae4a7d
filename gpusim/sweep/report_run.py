"""Figures of one run store: populations and kills over time, Mg/O₂ slices through the tumour, the
LFA-1 histogram. Each function returns a matplotlib Figure (Agg) whose axes hold the plotted data,
so tests read the data back rather than pixels."""

from __future__ import annotations

import numpy as np

__all__ = ["run_figures", "populations", "kills", "slices", "lfa1_histogram", "time_axis"]

SLICE_LABELS = {"mg": "ionised Mg²⁺", "o2": "O₂", "chemokine": "chemokine"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})
    return plt


def time_axis(minutes) -> tuple[np.ndarray, str]:
    """Times in hours for runs up to two days, else in days, with the axis label."""
    t = np.asarray(minutes, np.float64)
    if t.size and t[-1] > 2 * 1440:
        return t / 1440.0, "time (days)"
    return t / 60.0, "time (h)"


def populations(ts):
    """Tumour cells LIVE/DEAD/NECROTIC and T cells (all, engaged) against time."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    t, xlabel = time_axis(ts["time_min"])
    for col, label in (("tumor_live", "tumour LIVE"), ("tumor_dead", "tumour DEAD"),
                       ("tumor_necrotic", "tumour NECROTIC"), ("tcells", "T cells"),
                       ("tcells_engaged", "T cells engaged")):
        if col in ts:
            ax.plot(t, np.asarray(ts[col], np.float64), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cells (count)")
    ax.set_title("populations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kills(ts):
    """Cumulative kills and engagements, and the kill rate per hour (kills in each hour of the run)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    t, xlabel = time_axis(ts["time_min"])
    k = np.asarray(ts["kills"], np.float64)
    a.plot(t, k, label="kills")
    a.plot(t, np.asarray(ts["engagements"], np.float64), label="engagements")
    a.set_xlabel(xlabel)
    a.set_ylabel("cumulative count")
    a.set_title("kills and engagements")
    a.legend(fontsize=8)
    minutes = np.asarray(ts["time_min"], np.float64)
    hour = np.floor((minutes - 1e-9) / 60.0).astype(np.int64)
    per_step = np.diff(np.concatenate([[0.0], k]))  # the store's first row counts kills since t = 0
    n_h = int(hour.max()) + 1 if hour.size else 0
    rate = np.bincount(hour, weights=per_step, minlength=n_h) if n_h else np.zeros(0)
    b.bar(np.arange(n_h) + 0.5, rate, width=0.9)
    b.set_xlabel("time (h)")
    b.set_ylabel("kills per hour")
    b.set_title("kill rate")
    fig.tight_layout()
    return fig


def _slice_index(run) -> tuple[int, float]:
    """The z voxel through the tumour centre (grid centre without a tumour) and its depth in µm."""
    cfg = run.config
    c = cfg.tumor_center_um
    dx = run.dx_um
    nz = cfg.grid.nzyx[0]
    z = c[0] if c is not None else nz * dx / 2
    k = min(max(int(z // dx), 0), nz - 1)
    return k, (k + 0.5) * dx


def slices(run, name: str, frames=None):
    """z slices of field ``name`` through the tumour centre at ``frames`` (default: first, middle, last),
    with the LIVE tumour outline of the nearest tumour frame; colour bar in the substrate's unit."""
    plt = _plt()
    da = run.fields[name]
    n = da.sizes["t"]
    if frames is None:
        frames = sorted({0, n // 2, n - 1})
    k, z_um = _slice_index(run)
    unit = da.attrs.get("units", "")
    tumor = run.tumor
    fig, axes = plt.subplots(1, len(frames), figsize=(max(3.4 * len(frames) + 1.2, 6.0), 3.8), squeeze=False,
                             layout="constrained")
    ny, nx = da.sizes["y"], da.sizes["x"]
    dx = run.dx_um
    extent = (0, nx * dx, ny * dx, 0)
    data = [np.asarray(da.isel(t=f, z=k).values, np.float64) for f in frames]
    lo = min(float(d.min()) for d in data)
    hi = max(float(d.max()) for d in data)
    im = None
    for ax, f, d in zip(axes[0], frames, data):
        im = ax.imshow(d, extent=extent, vmin=lo, vmax=hi if hi > lo else lo + 1e-9, cmap="viridis")
        t = float(da.time_min.values[f])
        ax.set_title(f"t = {t / 60:.3g} h")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        if tumor is not None and tumor.sizes["t"]:
            j = int(np.argmin(np.abs(tumor.time_min.values - t)))
            live = np.asarray(tumor.isel(t=j, z=k).values) == 1
            if live.any() and not live.all():
                yy = (np.arange(ny) + 0.5) * dx
                xx = (np.arange(nx) + 0.5) * dx
                ax.contour(xx, yy, live.astype(float), levels=[0.5], colors="white", linewidths=0.8)
    label = SLICE_LABELS.get(name, name)
    fig.colorbar(im, ax=list(axes[0]), label=f"{label} ({unit})" if unit else label, shrink=0.9)
    fig.suptitle(f"{label} at z = {z_um:.0f} µm (tumour centre); white: LIVE tumour", fontsize=10)
    return fig


def lfa1_histogram(run, frames=None):
    """Histogram of the T cells' LFA-1 extended fraction A at the first and last T-cell snapshots."""
    plt = _plt()
    times = run.tcell_times()
    if frames is None:
        frames = sorted({0, len(times) - 1})
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    bins = np.linspace(0.0, 1.0, 41)
    for f in frames:
        cells = run.tcells(f)
        ax.hist(np.asarray(cells["lfa1"], np.float64), bins=bins, alpha=0.6,
                label=f"t = {times[f] / 60:.3g} h ({len(cells)} T cells)")
    ax.set_xlabel("LFA-1 extended fraction A (1)")
    ax.set_ylabel("T cells (count)")
    ax.set_title("LFA-1 activity of the T cells")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_figures(run) -> dict:
    """name -> (Figure, caption) for every figure the run's data allow."""
    ts = run.timeseries
    out = {}
    if "tumor_live" in ts:
        out["populations"] = (populations(ts), "Tumour and T-cell populations over time.")
        out["kills"] = (kills(ts), "Cumulative kills and engagements; kills in each hour.")
    for name in ("mg", "o2"):
        if name in run.fields and run.fields[name].sizes["t"]:
            out[f"slice_{name}"] = (slices(run, name), f"{SLICE_LABELS[name]} through the tumour centre at "
                                    "the first, middle and last field frames.")
    if "tcells" in run.n_frames and run.n_frames["tcells"] > 0:
        out["lfa1"] = (lfa1_histogram(run), "LFA-1 extended fraction of the T cells (first and last snapshot).")
    return out
