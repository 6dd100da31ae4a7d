"""napari layer data from a gpusim run store: fields, tumour, T cells, tracks and kill sites.

Each ``*_layer`` function takes a :class:`gpusim.io.reader.Run` and returns napari ``LayerData`` tuples
``(data, kwargs, layer_type)`` (no napari import: plain arrays, dicts and colour names), so they are
usable in scripts and tested without Qt.

World coordinates are those of the store: micrometres on z, y, x (voxel ``i`` covers ``[i, i + 1) * dx``,
its centre at ``(i + 1/2) * dx``, as the OME metadata say) and minutes on t. T-cell, track and kill-site
points carry positions in µm (scale 1), so a cell at ``z_um`` is drawn inside voxel ``floor(z_um / dx)``
of the images, the voxel the simulation bins it in (``gpusim.agents.spatial_index.voxel_of``).

Reads of image chunks are lazy (dask). A chunk that cannot be read does not raise inside napari's draw
loop: ``warn(reason)`` is called once for that array and the chunk is drawn as zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: a resting CD8+ T cell is about 7 µm across (lymphocyte diameters 6-8 µm); points are drawn that size
TCELL_DIAMETER_UM = 7.0
#: colormap per substrate (others: gray)
FIELD_COLORMAPS = {"mg": "magma", "o2": "cyan", "chemokine": "green"}
#: RGBA per T-cell state code (gpusim.TCellState: FREE 0, ENGAGED 1, DEAD 2)
TCELL_STATE_COLORS = {0: (0.30, 0.85, 0.35, 1.0), 1: (1.00, 0.65, 0.05, 1.0), 2: (0.50, 0.50, 0.50, 1.0)}
KILL_COLOR = (1.0, 0.1, 0.6, 1.0)
#: every layer's world axes: time in minutes, space in micrometres (as the store's OME metadata)
AXES = {"axis_labels": ("t", "z", "y", "x"), "units": ("minute", "micrometer", "micrometer", "micrometer")}


@dataclass
class Options:
    """How a store is shown. ``max_points``: above this many T-cell points over all frames the points
    are subsampled (the same cells in every frame) and a density image is added; ``color_by``:
    ``"state"`` or ``"lfa1"``."""

    max_points: int = 1_000_000
    color_by: str = "state"


class SafeArray:
    """A Zarr array whose failed reads give zeros and one ``warn`` call instead of an exception (for
    napari's draw loop, where an exception becomes a traceback dialog on every redraw)."""

    def __init__(self, arr, where: str, warn):
        self.arr, self.where, self.warn = arr, where, warn
        self.shape, self.dtype, self.ndim = tuple(arr.shape), arr.dtype, arr.ndim
        self.warned = False

    def __getitem__(self, sel):
        try:
            return np.asarray(self.arr[sel])
        except Exception as exc:  # codec errors, truncated or missing chunk files, bad metadata
            if not self.warned:
                self.warned = True
                self.warn(f"cannot read {self.where}: the data are damaged ({type(exc).__name__}: {exc}); "
                          "that part is drawn as zeros, other frames and layers are unaffected")
            return np.zeros(np.broadcast_to(np.zeros((), self.dtype), self.shape)[sel].shape, self.dtype)


def _lazy(arr, n: int, where: str, warn):
    import dask.array as da

    safe = SafeArray(arr, where, warn)
    return da.from_array(safe, chunks=arr.chunks, asarray=True, lock=False, name=False)[:n]


def _meta(run, key: str) -> dict:
    return {"gpusim": {"store": str(run.path), "key": key}}


def _ome_transform(grp) -> tuple[list, list]:
    """Level 0's (scale, translation) from the group's OME-Zarr multiscales (t in minutes, z y x in µm)."""
    ds = grp.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    scale = next(t["scale"] for t in ds if t["type"] == "scale")
    translation = next((t["translation"] for t in ds if t["type"] == "translation"), [0.0] * len(scale))
    return [float(v) for v in scale], [float(v) for v in translation]


def _image_levels(run, grp, key: str, warn):
    """(levels, n frames, scale, translate) of an OME image group over time (committed frames only)."""
    n = int(grp.attrs["frames_committed"])
    scale, translate = _ome_transform(grp)
    if n:
        translate[0] = float(np.asarray(grp["time_min"][:1])[0])  # the first frame's time (0 unless resumed)
    levels = [_lazy(grp[lvl], n, f"{run.path}: {key}/{lvl}", warn) for lvl in ("0", "1")]
    return levels, n, scale, translate


def _timeseries(run):
    """The run's timeseries, or None when it cannot be read (the image frames still give ranges)."""
    try:
        return run.timeseries
    except Exception:
        return None


def contrast_limits(ts, name: str, levels, unit: str) -> tuple[float, float]:
    """The field's range over the run: the stored per-step min/max (``ts``, the timeseries) together
    with the first and last frame of the coarse level (the initial state precedes the first row)."""
    lo, hi = math.inf, -math.inf
    cmin, cmax = f"{name}_min_{unit}", f"{name}_max_{unit}"
    if ts is not None and len(ts) and cmin in ts and cmax in ts:
        lo, hi = float(np.nanmin(ts[cmin])), float(np.nanmax(ts[cmax]))
    coarse = levels[-1]
    for k in sorted({0, coarse.shape[0] - 1}):
        if coarse.shape[0]:
            frame = np.asarray(coarse[k])
            lo, hi = min(lo, float(frame.min())), max(hi, float(frame.max()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:  # a uniform field: napari needs a non-empty range
        pad = max(abs(hi) * 1e-3, 1e-6)
        return lo - pad, hi + pad
    return lo, hi


def field_layers(run, warn, first_visible: str = "mg") -> list:
    """An Image layer per substrate: 2-level multiscale, colormap per field, unit in the name."""
    out = []
    if "fields" not in run.group:
        return out
    names = sorted(run.group["fields"].group_keys())
    visible = first_visible if first_visible in names else (names[0] if names else None)
    ts = _timeseries(run)
    for name in names:
        grp = run.group["fields"][name]
        unit = str(grp.attrs.get("unit", ""))
        levels, n, scale, translate = _image_levels(run, grp, f"fields/{name}", warn)
        if n == 0:
            continue
        limits = contrast_limits(ts, name, levels, unit)
        meta = _meta(run, f"fields/{name}")
        meta["gpusim"]["contrast_limits"] = limits  # a refresh follows the run's range unless changed
        kwargs = {"name": f"{name} ({unit})" if unit else name, "multiscale": True, "scale": scale,
                  "translate": translate, "colormap": FIELD_COLORMAPS.get(name, "gray"),
                  "contrast_limits": limits, "blending": "additive", "visible": name == visible, **AXES,
                  "metadata": meta}
        out.append((levels, kwargs, "image"))
    return out


def tumor_labels(run) -> tuple[dict, dict]:
    """(code -> name, code -> RGBA in 0..1) from the tumour group's OME image-label metadata."""
    lab = run.group["tumor"].attrs["ome"].get("image-label", {})
    names = {int(p["label-value"]): str(p["name"]) for p in lab.get("properties", [])}
    colors = {int(c["label-value"]): tuple(v / 255.0 for v in c["rgba"]) for c in lab.get("colors", [])}
    return names, colors


def tumor_layers(run, warn) -> list:
    """The tumour lattice as a Labels layer (EMPTY/LIVE/DEAD/NECROTIC named in its features)."""
    if "tumor" not in run.group:
        return []
    grp = run.group["tumor"]
    levels, n, scale, translate = _image_levels(run, grp, "tumor", warn)
    if n == 0:
        return []
    names, colors = tumor_labels(run)
    codes = sorted(set(names) | set(colors))
    features = {"index": codes, "state": [names.get(c, str(c)) for c in codes]}
    colormap = {c: colors.get(c, (0.5, 0.5, 0.5, 1.0)) for c in codes}
    colormap[None] = (0.0, 0.0, 0.0, 0.0)  # codes beyond the named ones: transparent
    kwargs = {"name": "tumour", "multiscale": True, "scale": scale, "translate": translate,
              "features": features, "colormap": colormap, "opacity": 0.6,
              **AXES, "metadata": _meta(run, "tumor")}
    return [(levels, kwargs, "labels")]


def uid_keep(uids, fraction: float) -> np.ndarray:
    """Rows to keep of a deterministic ``fraction`` of uids (a splitmix64 hash below the threshold): the
    same cells in every frame, independent of row order."""
    z = np.asarray(uids, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) < fraction * 2.0**53


def tcell_colors(features, by: str = "state") -> np.ndarray:
    """RGBA (N x 4) per T cell: by ``state`` (TCELL_STATE_COLORS) or by ``lfa1`` (viridis over 0..1)."""
    if by == "lfa1":
        from matplotlib import colormaps

        return colormaps["viridis"](np.clip(np.asarray(features["lfa1"], np.float64), 0.0, 1.0))
    if by != "state":
        raise ValueError(f"color_by {by!r}: use 'state' or 'lfa1'")
    codes = np.asarray(features["state_code"], np.int64)
    table = np.array([TCELL_STATE_COLORS.get(c, (1.0, 1.0, 1.0, 1.0)) for c in range(3)] + [(1.0, 1.0, 1.0, 1.0)])
    return table[np.clip(codes, 0, 3)]


def _state_names() -> list[str]:
    from gpusim import TCellState

    return [s.name for s in sorted(TCellState)]


def tcell_layers(run, warn, options: Options) -> list:
    """T cells as a Points layer (t, z, y, x); above ``options.max_points`` points in all, a subsample
    of them and a T-cell density Image layer."""
    if "tcells" not in run.group:
        return []
    import pandas as pd

    cg = run.group["tcells"]
    n = int(cg.attrs["frames_committed"])
    if n == 0:
        return []
    every = float(run.config.output.tcells_every_min)
    offsets = np.asarray(cg["offsets"][: n + 1], np.int64)
    total = int(offsets[-1] - offsets[0])
    fraction = 1.0 if total <= options.max_points else options.max_points / total
    times = run.tcell_times()
    frames = []
    for k in range(n):
        df = run.tcells(k)
        if fraction < 1.0:
            df = df[uid_keep(df["uid"].to_numpy(), fraction)]
        frames.append(df.assign(t_frame=times[k] / every))
    cells = pd.concat(frames, ignore_index=True)
    coords = cells[["t_frame", "z_um", "y_um", "x_um"]].to_numpy(np.float64)
    names = _state_names()
    codes = cells["state"].to_numpy().astype(np.int64)
    features = pd.DataFrame({
        "state": pd.Categorical.from_codes(np.clip(codes, 0, len(names) - 1), categories=names),
        "lfa1": cells["lfa1"].to_numpy(np.float64), "kills": cells["kills"].to_numpy(np.int64),
        "uid": cells["uid"].to_numpy(np.uint64), "time_min": cells["time_min"].to_numpy(np.float64),
        "state_code": codes})
    title = "T cells" if fraction == 1.0 else f"T cells ({fraction:.2%} shown)"
    kwargs = {"name": title, "features": features, "face_color": tcell_colors(features, options.color_by),
              "border_width": 0, "size": TCELL_DIAMETER_UM, "scale": (every, 1.0, 1.0, 1.0),
              **AXES, "metadata": _meta(run, "tcells") | {"color_by": options.color_by}}
    out = [(coords, kwargs, "points")]
    if fraction < 1.0:
        out.append(density_layer(run, every, n))
    return out


def density_layer(run, every: float, n: int):
    """T cells per 2 x 2 x 2-voxel block, each frame counted when drawn (dask, one chunk per frame)."""
    import dask
    import dask.array as da

    nz, ny, nx = (int(v) for v in run.attrs["grid_shape"])
    dx = run.dx_um
    shape = ((nz + 1) // 2, (ny + 1) // 2, (nx + 1) // 2)

    def count(k: int) -> np.ndarray:
        df = run.tcells(k)
        idx = [np.clip(np.floor(df[c].to_numpy() / (2.0 * dx)).astype(np.int64), 0, s - 1)
               for c, s in zip(("z_um", "y_um", "x_um"), shape)]
        flat = (idx[0] * shape[1] + idx[1]) * shape[2] + idx[2]
        return np.bincount(flat, minlength=shape[0] * shape[1] * shape[2]).astype(np.float32).reshape(shape)

    frames = [da.from_delayed(dask.delayed(count)(k), shape, np.float32) for k in range(n)]
    data = da.stack(frames)
    times = run.tcell_times()
    kwargs = {"name": f"T-cell density (cells per {2 * dx:g} µm cube)", "colormap": "turbo",
              "blending": "additive", "scale": (every, 2 * dx, 2 * dx, 2 * dx),
              "translate": (float(times[0]), dx, dx, dx), "opacity": 0.5,
              **AXES, "metadata": _meta(run, "tcells/density")}
    return (data, kwargs, "image")


def tracks_layers(run) -> list:
    """The tracked T-cell subset as a Tracks layer (track id, t, z, y, x), coloured by LFA-1."""
    tr = run.tracks
    if tr is None or len(tr) == 0:
        return []
    every = float(run.config.output.tracks_every_min)
    _, track_id = np.unique(tr["uid"].to_numpy(), return_inverse=True)
    t = np.rint(tr["time_min"].to_numpy() / every)
    data = np.column_stack([track_id, t, tr["z_um"], tr["y_um"], tr["x_um"]]).astype(np.float64)
    order = np.lexsort((data[:, 1], data[:, 0]))
    features = {"lfa1": tr["lfa1"].to_numpy(np.float64)[order], "state": tr["state"].to_numpy(np.int64)[order],
                "uid": tr["uid"].to_numpy(np.uint64)[order]}
    kwargs = {"name": "T-cell tracks", "features": features, "color_by": "lfa1", "colormap": "viridis",
              "tail_length": 30, "tail_width": 2, "scale": (every, 1.0, 1.0, 1.0),
              **AXES, "metadata": _meta(run, "tracks")}
    return [(data[order], kwargs, "tracks")]


def frame_every(run) -> float:
    """The image cadence (min): the fields', else the tumour's."""
    out = run.config.output
    return float(out.fields_every_min if "fields" in run.group else out.tumor_every_min)


def kill_layers(run) -> list:
    """Kill sites as Points at the killed voxel's centre, shown at the first image frame at or after
    the kill (a frame shows the kills since the previous one)."""
    ev = run.events
    if ev is None:
        return []
    kills = ev[ev["kind"] == "kill"]
    if len(kills) == 0:
        return []
    shape = tuple(int(v) for v in run.attrs["grid_shape"])
    dx, dt = run.dx_um, float(run.attrs["dt_min"])
    zyx = np.column_stack(np.unravel_index(kills["voxel"].to_numpy(np.int64), shape))  # flat index, C order
    t_end = (kills["step"].to_numpy(np.float64) + 1.0) * dt  # a step's events happen by its end
    every = frame_every(run)
    frame = np.ceil(t_end / every - 1e-9)
    coords = np.column_stack([frame, (zyx + 0.5) * dx])
    features = {"time_min": t_end, "uid": kills["uid"].to_numpy(np.uint64), "voxel": kills["voxel"].to_numpy()}
    kwargs = {"name": "kill sites", "features": features, "symbol": "x", "face_color": np.asarray(KILL_COLOR),
              "border_width": 0, "size": dx, "scale": (every, 1.0, 1.0, 1.0),
              **AXES, "metadata": _meta(run, "events/kill")}
    return [(coords, kwargs, "points")]
