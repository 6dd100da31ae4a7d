"""RunWriter: the operation that writes a run into its Zarr v3 store (DESIGN.md §4).

    w = RunWriter(sim, "run.zarr")                # creates the store, writes frame 0 (the state now)
    sim.operations.append(w)                      # after sim.recorder: runs at the end of each step
    sim.run(minutes=600, progress=False)
    w.close()                                     # flushes the buffered rows, status "complete"

Layout (every output group has the attribute ``frames_committed``, raised only after that frame's data
are written; a reader ignores anything beyond it, so a frame cut short by a crash never counts):

``fields/<name>/``  OME-Zarr 0.5 multiscale image, axes t, z, y, x (minute, micrometer); level ``0`` the
                    field, level ``1`` the mean of 2x2x2 blocks (partial blocks at odd edges averaged over
                    the voxels they hold); ``time_min`` (float64, one per frame). Every
                    ``output.fields_every_min``.
``tumor/``          OME-Zarr 0.5 label image of the lattice codes (uint8, EMPTY/LIVE/DEAD/NECROTIC named
                    in ``image-label.properties``); level ``1`` is nearest (every 2nd voxel). Every
                    ``output.tumor_every_min``; only with a tumour lattice.
``tcells/``         ragged snapshots every ``output.tcells_every_min``: ``position_um`` (N x 3, z y x,
                    float32), ``uid`` (uint64), ``state`` (uint8), ``lfa1`` (float32), ``kills`` (uint16)
                    concatenated over frames; ``offsets`` (int64, frames + 1; frame k is rows
                    offsets[k]:offsets[k+1]); ``time_min``. Only with a [tcells] section.
``timeseries/``     one 1D array per column of ``sim.timeseries`` (row i = step i), buffered in memory and
                    written at every frame and at flush/close; ``frames_committed`` counts rows; the
                    attribute ``columns`` keeps their order.
``perf/``           ``step`` (int64) and ``wall_s`` (float64, wall seconds of that step): timings, never
                    compared.

A frame is due at the end of a step when its end time ``t_end = sim.state.time_min + sim.dt_min`` is
(to 1e-9 relative) a multiple of the interval. Chunks are fixed at creation ((1, <=64, <=64, <=64) for
images, 65536 rows for ragged and 1D arrays), zstd level 3; no sharding yet.

This first version writes **synchronously** inside ``apply`` (the step waits for the disk); a bounded
queue with a writer thread is a later improvement.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .store import StoreError, create_store, get_attrs, open_store, set_status

ROW_CHUNK = 65536
IMAGE_CHUNK = 64
TCELL_COLUMNS = {"position_um": np.float32, "uid": np.uint64, "state": np.uint8, "lfa1": np.float32,
                 "kills": np.uint16}
TUMOR_LABELS = ((0, "EMPTY", (0, 0, 0, 0)), (1, "LIVE", (230, 60, 60, 255)), (2, "DEAD", (90, 90, 230, 255)),
                (3, "NECROTIC", (70, 70, 70, 255)))


def is_due(t_end: float, every_min: float) -> bool:
    """True when ``t_end`` is a multiple of ``every_min`` to 1e-9 (relative to max(1, t))."""
    k = round(t_end / every_min)
    return abs(t_end - k * every_min) <= 1e-9 * max(1.0, abs(t_end))


def block_mean2(a: np.ndarray) -> np.ndarray:
    """Mean over 2x2x2 blocks of a 3D array (float64 sums, float32 result); a partial block at an odd
    edge is the mean of the voxels it holds. Shape: ceil(n / 2) per axis."""
    s = np.asarray(a, np.float64)
    count = np.ones((1, 1, 1), np.float64)
    for axis in range(3):
        n = s.shape[axis]
        starts = np.arange(0, n, 2)
        s = np.add.reduceat(s, starts, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = starts.size
        count = count * np.minimum(2, n - starts).astype(np.float64).reshape(shape)
    return (s / count).astype(np.float32)


def _image_chunks(shape) -> tuple:
    return (1,) + tuple(min(IMAGE_CHUNK, max(1, int(n))) for n in shape)


def _zstd():
    import zarr

    return zarr.codecs.ZstdCodec(level=3)


def _ome_multiscale(name: str, every_min: float, dx: float, kind: str) -> dict:
    axes = [{"name": "t", "type": "time", "unit": "minute"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in ("z", "y", "x")]
    datasets = []
    for level in (0, 1):
        f = float(2**level)
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [float(every_min), f * dx, f * dx, f * dx]},
            # voxel centres: level 0 at (i + 1/2) dx, level 1 (block of 2) at (2j + 1) dx
            {"type": "translation", "translation": [0.0, f * dx / 2, f * dx / 2, f * dx / 2]},
        ]})
    return {"name": name, "axes": axes, "datasets": datasets, "type": kind}


class RunWriter:
    """Operation writing ``sim`` into the run store at ``path`` (see the module docstring).

    Without ``resume_step`` it creates the store (refusing an existing one unless ``overwrite``) and
    writes frame 0 of every output from the state now. With ``resume_step`` (an int, ``sim`` restored to
    that step) it opens the store and truncates every output to what the run had at the end of step
    ``resume_step - 1`` (frames with time <= resume_step * dt_min, ``resume_step`` timeseries rows), then
    continues. Append it after ``sim.recorder``; call :meth:`close` at the end.
    """

    name = "write"

    def __init__(self, sim, path, overwrite: bool = False, resume_step: int | None = None):
        self.sim = sim
        self.path = path
        out = sim.config.output
        self.every = {"fields": float(out.fields_every_min), "tumor": float(out.tumor_every_min),
                      "tcells": float(out.tcells_every_min)}
        self.has_tumor = sim.state.tumor is not None
        self.has_tcells = sim.config.tcells is not None and sim.cells is not None
        self.field_names = list(sim.field_update.plans)
        self._ts_cols = list(sim.recorder.columns)
        self._perf_step: list[int] = []
        self._perf_wall: list[float] = []
        self._closed = False
        if resume_step is None:
            self.group = create_store(path, sim, overwrite=overwrite)
            self._create_outputs()
            self._ts_written = 0
            self._write_frames(float(sim.state.time_min), initial=True)
        else:
            self.group = open_store(path, mode="r+")
            self._check_matches()
            self._truncate(int(resume_step))
            a = get_attrs(self.group)
            a.setdefault("resumes", []).append({"step": int(resume_step), "time_min": float(resume_step * sim.dt_min)})
            self.group.attrs["gpusim"] = a
            set_status(self.group, "running")
        self._last_wall = time.perf_counter()

    # -- creation ------------------------------------------------------------------------------
    def _create_outputs(self) -> None:
        g, sim = self.group, self.sim
        shape = tuple(int(n) for n in sim.state.shape)
        half = tuple((n + 1) // 2 for n in shape)
        dx = float(sim.state.dx_um)
        zstd = _zstd()
        dims = ("t", "z", "y", "x")
        if self.field_names:
            fields = g.require_group("fields")
            for name in self.field_names:
                fg = fields.create_group(name)
                fg.attrs.update({
                    "ome": {"version": "0.5",
                            "multiscales": [_ome_multiscale(name, self.every["fields"], dx, "mean")]},
                    "unit": str(sim.field_update.plans[name].unit), "frames_committed": 0,
                })
                for lvl, shp in (("0", shape), ("1", half)):
                    fg.create_array(lvl, shape=(0,) + shp, dtype=np.float32, chunks=_image_chunks(shp),
                                    compressors=zstd, dimension_names=dims, fill_value=0.0)
                fg.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,),
                                compressors=zstd, dimension_names=("t",), fill_value=0.0)
        if self.has_tumor:
            tg = g.create_group("tumor")
            tg.attrs.update({
                "ome": {"version": "0.5",
                        "multiscales": [_ome_multiscale("tumor", self.every["tumor"], dx, "nearest")],
                        "image-label": {"version": "0.5",
                                        "colors": [{"label-value": v, "rgba": list(c)} for v, _, c in TUMOR_LABELS],
                                        "properties": [{"label-value": v, "name": n} for v, n, _ in TUMOR_LABELS]}},
                "frames_committed": 0,
            })
            for lvl, shp in (("0", shape), ("1", half)):
                tg.create_array(lvl, shape=(0,) + shp, dtype=np.uint8, chunks=_image_chunks(shp),
                                compressors=zstd, dimension_names=dims, fill_value=0)
            tg.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,),
                            compressors=zstd, dimension_names=("t",), fill_value=0.0)
        if self.has_tcells:
            cg = g.create_group("tcells")
            cg.attrs.update({"frames_committed": 0, "position_axes": ["z", "y", "x"], "position_unit": "micrometer"})
            for col, dt in TCELL_COLUMNS.items():
                if col == "position_um":
                    cg.create_array(col, shape=(0, 3), dtype=dt, chunks=(ROW_CHUNK, 3), compressors=zstd,
                                    dimension_names=("row", "axis"), fill_value=0)
                else:
                    cg.create_array(col, shape=(0,), dtype=dt, chunks=(ROW_CHUNK,), compressors=zstd,
                                    dimension_names=("row",), fill_value=0)
            off = cg.create_array("offsets", shape=(1,), dtype=np.int64, chunks=(ROW_CHUNK,), compressors=zstd,
                                  dimension_names=("frame_edge",), fill_value=0)
            off[0] = 0
            cg.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd,
                            dimension_names=("frame",), fill_value=0.0)
        tsg = g.create_group("timeseries")
        tsg.attrs.update({"frames_committed": 0, "columns": self._ts_cols})
        pg = g.create_group("perf")
        pg.attrs.update({"frames_committed": 0, "note": "wall-clock seconds per step; never compared"})
        pg.create_array("step", shape=(0,), dtype=np.int64, chunks=(ROW_CHUNK,), compressors=zstd, fill_value=0)
        pg.create_array("wall_s", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd, fill_value=0.0)

    # -- resume --------------------------------------------------------------------------------
    def _check_matches(self) -> None:
        a, sim = get_attrs(self.group), self.sim
        want = {"grid_shape": [int(n) for n in sim.state.shape], "dx_um": float(sim.state.dx_um),
                "dt_min": float(sim.dt_min), "units": {n: str(p.unit) for n, p in sim.field_update.plans.items()}}
        for key, value in want.items():
            if a.get(key) != value:
                raise StoreError(f"run store {str(self.path)!r} has {key} = {a.get(key)!r}, this simulation "
                                 f"{value!r}; resume a store with the run's own config")

    def _truncate(self, resume_step: int) -> None:
        sim, g = self.sim, self.group
        if resume_step < 0:
            raise StoreError(f"resume_step {resume_step}: must be >= 0")
        if int(sim.state.step) != resume_step:
            raise StoreError(f"resume_step {resume_step} but the simulation is at step {sim.state.step}; "
                             "restore the checkpoint of that step first")
        t_cut = resume_step * sim.dt_min
        tol = 1e-9 * max(1.0, abs(t_cut))
        for grp in self._image_groups():
            n = int(grp.attrs["frames_committed"])
            times = np.asarray(grp["time_min"][:n])
            keep = int(np.count_nonzero(times <= t_cut + tol))
            grp.attrs["frames_committed"] = keep  # lower the counter first: a crash now loses nothing kept
            for lvl in ("0", "1"):
                arr = grp[lvl]
                arr.resize((keep,) + tuple(arr.shape[1:]))
            grp["time_min"].resize((keep,))
        if "tcells" in g:
            cg = g["tcells"]
            n = int(cg.attrs["frames_committed"])
            times = np.asarray(cg["time_min"][:n])
            keep = int(np.count_nonzero(times <= t_cut + tol))
            cg.attrs["frames_committed"] = keep
            rows = int(cg["offsets"][keep])
            for col in TCELL_COLUMNS:
                arr = cg[col]
                arr.resize((rows,) + tuple(arr.shape[1:]))
            cg["offsets"].resize((keep + 1,))
            cg["time_min"].resize((keep,))
        tsg = g["timeseries"]
        have = int(tsg.attrs["frames_committed"])
        keep = min(have, resume_step)
        n_sim = len(sim.recorder.columns["time_min"])
        if n_sim < resume_step:
            raise StoreError(f"the simulation holds {n_sim} timeseries rows, fewer than resume_step {resume_step}; "
                             "restore the checkpoint (it carries the timeseries) before resuming")
        tsg.attrs["frames_committed"] = keep
        for name in tsg.array_keys():
            tsg[name].resize((keep,))
        self._ts_cols = list(tsg.attrs.get("columns", self._ts_cols))
        self._ts_written = keep
        pg = g["perf"]
        n = int(pg.attrs["frames_committed"])
        steps = np.asarray(pg["step"][:n])
        keep = int(np.count_nonzero(steps < resume_step))
        pg.attrs["frames_committed"] = keep
        pg["step"].resize((keep,))
        pg["wall_s"].resize((keep,))

    def _image_groups(self):
        g = self.group
        out = []
        if "fields" in g:
            out += [g["fields"][n] for n in g["fields"].group_keys()]
        if "tumor" in g:
            out.append(g["tumor"])
        return out

    # -- frames --------------------------------------------------------------------------------
    @staticmethod
    def _append_image(grp, level0: np.ndarray, level1: np.ndarray, t: float) -> None:
        k = int(grp.attrs["frames_committed"])
        for lvl, data in (("0", level0), ("1", level1)):
            arr = grp[lvl]
            arr.resize((k + 1,) + tuple(arr.shape[1:]))
            arr[k] = data
        ta = grp["time_min"]
        ta.resize((k + 1,))
        ta[k] = t
        grp.attrs["frames_committed"] = k + 1

    def _append_tcells(self, t: float) -> None:
        cg = self.group["tcells"]
        snap = self.sim.tcell_snapshot()
        k = int(cg.attrs["frames_committed"])
        base = int(cg["offsets"][k])
        n = int(np.asarray(snap["uid"]).shape[0])
        for col, dt in TCELL_COLUMNS.items():
            data = np.asarray(snap[col], dt)
            arr = cg[col]
            arr.resize((base + n,) + tuple(arr.shape[1:]))
            if n:
                arr[base:base + n] = data
        off = cg["offsets"]
        off.resize((k + 2,))
        off[k + 1] = base + n
        ta = cg["time_min"]
        ta.resize((k + 1,))
        ta[k] = t
        cg.attrs["frames_committed"] = k + 1

    def _write_frames(self, t: float, initial: bool = False) -> bool:
        sim, g = self.sim, self.group
        wrote = False
        if self.field_names and (initial or is_due(t, self.every["fields"])):
            for name in self.field_names:
                c = np.asarray(sim.field_host(name), np.float32)
                self._append_image(g["fields"][name], c, block_mean2(c), t)
            wrote = True
        if self.has_tumor and (initial or is_due(t, self.every["tumor"])):
            lat = np.asarray(sim.tumor_state(), np.uint8)
            self._append_image(g["tumor"], lat, lat[::2, ::2, ::2], t)
            wrote = True
        if self.has_tcells and (initial or is_due(t, self.every["tcells"])):
            self._append_tcells(t)
            wrote = True
        return wrote

    def _write_rows(self) -> None:
        g = self.group
        cols = self.sim.recorder.columns
        n = len(cols["time_min"])
        start = self._ts_written
        if n > start:
            tsg = g["timeseries"]
            zstd = _zstd()
            for name in self._ts_cols:
                values = np.asarray(cols[name][start:n])
                if name not in tsg:
                    tsg.create_array(name, shape=(start,), dtype=values.dtype, chunks=(ROW_CHUNK,),
                                     compressors=zstd, fill_value=0)
                arr = tsg[name]
                arr.resize((n,))
                arr[start:n] = values
            tsg.attrs["frames_committed"] = n
            self._ts_written = n
        if self._perf_step:
            pg = g["perf"]
            k = int(pg.attrs["frames_committed"])
            m = len(self._perf_step)
            for name, values in (("step", np.asarray(self._perf_step, np.int64)),
                                 ("wall_s", np.asarray(self._perf_wall, np.float64))):
                arr = pg[name]
                arr.resize((k + m,))
                arr[k:k + m] = values
            pg.attrs["frames_committed"] = k + m
            self._perf_step.clear()
            self._perf_wall.clear()

    # -- the operation -------------------------------------------------------------------------
    def apply(self, sim) -> None:
        if self._closed:
            raise RuntimeError("RunWriter.apply after close(); remove the writer from sim.operations")
        now = time.perf_counter()
        self._perf_step.append(int(sim.state.step))
        self._perf_wall.append(now - self._last_wall)
        self._last_wall = now
        t_end = float(sim.state.time_min + sim.dt_min)
        if not math.isfinite(t_end):
            raise ValueError(f"step end time {t_end}")
        if self._write_frames(t_end):
            self._write_rows()

    def flush(self) -> None:
        """Write the buffered timeseries and perf rows now."""
        self._write_rows()

    def close(self, status: str = "complete") -> None:
        """Flush and record ``status`` ("complete" or "interrupted") and the end time."""
        self._write_rows()
        set_status(self.group, status)
        self._closed = True

    def n_frames(self) -> dict:
        """Committed frames (rows for the timeseries) per output."""
        g = self.group
        out = {f"fields/{n}": int(g["fields"][n].attrs["frames_committed"]) for n in self.field_names}
        for name in ("tumor", "tcells", "timeseries", "perf"):
            if name in g:
                out[name] = int(g[name].attrs["frames_committed"])
        return out
