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
``tracks/``         ragged records of a fixed subset of T cells every ``output.tracks_every_min`` (with
                    ``output.tracks_count``): ``position_um`` (N x 3, z y x), ``uid``, ``state``, ``lfa1``,
                    ``offsets`` and ``time_min`` as in ``tcells/``; within a frame rows are in uid order. The
                    subset is chosen once, when the store is created, among the living T cells: the
                    ``tracks_count`` uids with the smallest 64-bit key ``(w0 << 32) | w1`` of the Philox words
                    ``philox_agent(seed, STREAM_SETUP, uid, 0, PURPOSE_PLACEMENT, TRACK_DRAW)`` (ties by uid;
                    no draw of the model uses that counter, and it consumes nothing). The uids are kept in the
                    group attribute ``tracked_uids`` (a resumed writer reuses them). A tracked T cell that
                    dies stops appearing.
``events/``         with ``output.events``: one row per engage, hit, kill and disengage of each step: ``step``
                    (int64), ``kind`` (uint8; names in the attribute ``kind_names``, code = index), ``uid``
                    (uint64), ``voxel`` (int64, the target's global voxel index). Taken at the end of the step
                    from the T-cell store's ``flags`` (FL_ENGAGED, FL_KILL, FL_DISENGAGED) and ``hit``; rows
                    of a step are in (uid, kind) order. Buffered; ``frames_committed`` counts rows.
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

A write that fails for lack of space (ENOSPC / EDQUOT) raises :class:`StoreError` naming the array that
could not be written and the store; any other OS error while writing is a StoreError as well. Frames
committed before the failure stay readable (their counters were raised only after their data).
"""

from __future__ import annotations

import contextlib
import errno
import math
import time

import numpy as np

from .store import StoreError, create_store, get_attrs, open_store, set_status

ROW_CHUNK = 65536
#: buffered table rows (steps) after which the tables are written without waiting for a flush
TABLE_FLUSH_ROWS = 1024
IMAGE_CHUNK = 64
TCELL_COLUMNS = {"position_um": np.float32, "uid": np.uint64, "state": np.uint8, "lfa1": np.float32,
                 "kills": np.uint16}
TRACK_COLUMNS = {"position_um": np.float32, "uid": np.uint64, "state": np.uint8, "lfa1": np.float32}
#: the Philox draw index of the track-selection key (see the module docstring)
TRACK_DRAW = 7
#: event kinds: code = index
EVENT_KINDS = ("engage", "hit", "kill", "disengage")
EVENT_COLUMNS = {"step": np.int64, "kind": np.uint8, "uid": np.uint64, "voxel": np.int64}
TUMOR_LABELS = ((0, "EMPTY", (0, 0, 0, 0)), (1, "LIVE", (230, 60, 60, 255)), (2, "DEAD", (90, 90, 230, 255)),
                (3, "NECROTIC", (70, 70, 70, 255)))


def is_due(t_end: float, every_min: float) -> bool:
    """True when ``t_end`` is a multiple of ``every_min`` to 1e-9 (relative to max(1, t))."""
    k = round(t_end / every_min)
    return abs(t_end - k * every_min) <= 1e-9 * max(1.0, abs(t_end))


def track_keys(seed: int, uids) -> np.ndarray:
    """The 64-bit track-selection key of each uid (see the module docstring), uint64."""
    uids = np.ascontiguousarray(uids, np.uint64)
    return _track_keys_jit(np.uint64(seed), uids)


def choose_tracked(seed: int, uids, count: int) -> np.ndarray:
    """The ``count`` uids (all when fewer) with the smallest track keys, sorted by uid (uint64)."""
    uids = np.unique(np.asarray(uids, np.uint64))
    if uids.size == 0 or count <= 0:
        return np.zeros(0, np.uint64)
    order = np.lexsort((uids, track_keys(seed, uids)))
    return np.sort(uids[order[:count]])


def _make_track_keys_jit():
    import numba

    from .. import rng

    stream, purpose, draw = rng.STREAM_SETUP, rng.PURPOSE_PLACEMENT, TRACK_DRAW

    @numba.njit(cache=True)
    def keys(seed, uids):
        out = np.empty(uids.shape[0], np.uint64)
        for i in range(uids.shape[0]):
            r0, r1, _r2, _r3 = rng.philox_agent(seed, stream, uids[i], 0, purpose, draw)
            out[i] = (np.uint64(r0) << np.uint64(32)) | np.uint64(r1)
        return out

    return keys


class _LazyJit:
    fn = None

    def __call__(self, *args):
        if _LazyJit.fn is None:
            _LazyJit.fn = _make_track_keys_jit()
        return _LazyJit.fn(*args)


_track_keys_jit = _LazyJit()


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


def _create_image(grp, ome: dict, dtype, shape, half, dims, zstd, **attrs) -> None:
    """An empty OME-Zarr image over time in ``grp``: levels "0" (``shape``) and "1" (``half``), a
    ``time_min`` coordinate, ``frames_committed`` 0 and the given extra attributes."""
    grp.attrs.update({"ome": ome, **attrs, "frames_committed": 0})
    for lvl, shp in (("0", shape), ("1", half)):
        grp.create_array(lvl, shape=(0,) + shp, dtype=dtype, chunks=_image_chunks(shp), compressors=zstd,
                         dimension_names=dims, fill_value=dtype(0))
    grp.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd,
                     dimension_names=("t",), fill_value=0.0)


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
        self.has_tracks = (self.has_tcells and out.tracks_every_min is not None and int(out.tracks_count) > 0)
        if self.has_tracks:
            self.every["tracks"] = float(out.tracks_every_min)
        self.has_events = self.has_tcells and bool(out.events)
        self._ev_pending: list[dict] = []
        self._ev_pending_rows = 0
        self._tracked = np.zeros(0, np.uint64)
        self.field_names = list(sim.field_update.plans)
        self._ts_cols = list(sim.recorder.columns)
        self._perf_step: list[int] = []
        self._perf_wall: list[float] = []
        self._closed = False
        if resume_step is None:
            with self._guard("the new store's metadata"):
                self.group = create_store(path, sim, overwrite=overwrite)
                if self.has_tracks:
                    alive = sim.tcell_snapshot()["uid"]
                    self._tracked = choose_tracked(int(sim.config.seed), alive, int(out.tracks_count))
                self._create_outputs()
            self._ts_written = 0
            self._write_frames(float(sim.state.time_min), initial=True)
        else:
            self.group = open_store(path, mode="r+")
            self._check_matches()
            if self.has_tracks:
                if "tracks" not in self.group:
                    raise StoreError(f"run store {str(path)!r} has no tracks/ group but the config asks for "
                                     "tracks; resume a store with the run's own config")
                self._tracked = np.asarray(self.group["tracks"].attrs["tracked_uids"], np.uint64)
            if self.has_events and "events" not in self.group:
                raise StoreError(f"run store {str(path)!r} has no events/ group but the config asks for "
                                 "events; resume a store with the run's own config")
            with self._guard("the truncation to the resume step"):
                self._truncate(int(resume_step))
            a = get_attrs(self.group)
            a.setdefault("resumes", []).append({"step": int(resume_step), "time_min": float(resume_step * sim.dt_min)})
            with self._guard("the root attributes"):
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
                ome = {"version": "0.5",
                       "multiscales": [_ome_multiscale(name, self.every["fields"], dx, "mean")]}
                _create_image(fields.create_group(name), ome, np.float32, shape, half, dims, zstd,
                              unit=str(sim.field_update.plans[name].unit))
        if self.has_tumor:
            ome = {"version": "0.5",
                   "multiscales": [_ome_multiscale("tumor", self.every["tumor"], dx, "nearest")],
                   "image-label": {"version": "0.5",
                                   "colors": [{"label-value": v, "rgba": list(c)} for v, _, c in TUMOR_LABELS],
                                   "properties": [{"label-value": v, "name": n} for v, n, _ in TUMOR_LABELS]}}
            _create_image(g.create_group("tumor"), ome, np.uint8, shape, half, dims, zstd)
        if self.has_tcells:
            cg = g.create_group("tcells")
            cg.attrs.update({"frames_committed": 0, "position_axes": ["z", "y", "x"], "position_unit": "micrometer"})
            self._create_ragged(cg, TCELL_COLUMNS, zstd)
        if self.has_tracks:
            kg = g.create_group("tracks")
            kg.attrs.update({"frames_committed": 0, "position_axes": ["z", "y", "x"], "position_unit": "micrometer",
                             "tracked_uids": [int(u) for u in self._tracked],
                             "every_min": self.every["tracks"],
                             "selection": "tracks_count uids of the living T cells at the store's creation with the "
                                          "smallest key (w0 << 32 | w1) of philox_agent(seed, STREAM_SETUP, uid, 0, "
                                          f"PURPOSE_PLACEMENT, {TRACK_DRAW}); ties by uid"})
            self._create_ragged(kg, TRACK_COLUMNS, zstd)
        if self.has_events:
            eg = g.create_group("events")
            eg.attrs.update({"frames_committed": 0, "kind_names": list(EVENT_KINDS),
                             "columns": list(EVENT_COLUMNS),
                             "note": "one row per engage/hit/kill/disengage; voxel: the target's global index "
                                     "(z * ny + y) * nx + x; frames_committed counts rows"})
            for col, dt in EVENT_COLUMNS.items():
                eg.create_array(col, shape=(0,), dtype=dt, chunks=(ROW_CHUNK,), compressors=zstd,
                                dimension_names=("row",), fill_value=0)
        tsg = g.create_group("timeseries")
        tsg.attrs.update({"frames_committed": 0, "columns": self._ts_cols})
        pg = g.create_group("perf")
        pg.attrs.update({"frames_committed": 0, "note": "wall-clock seconds per step; never compared"})
        pg.create_array("step", shape=(0,), dtype=np.int64, chunks=(ROW_CHUNK,), compressors=zstd, fill_value=0)
        pg.create_array("wall_s", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd, fill_value=0.0)

    @staticmethod
    def _create_ragged(grp, columns: dict, zstd) -> None:
        for col, dt in columns.items():
            if col == "position_um":
                grp.create_array(col, shape=(0, 3), dtype=dt, chunks=(ROW_CHUNK, 3), compressors=zstd,
                                 dimension_names=("row", "axis"), fill_value=0)
            else:
                grp.create_array(col, shape=(0,), dtype=dt, chunks=(ROW_CHUNK,), compressors=zstd,
                                 dimension_names=("row",), fill_value=0)
        off = grp.create_array("offsets", shape=(1,), dtype=np.int64, chunks=(ROW_CHUNK,), compressors=zstd,
                               dimension_names=("frame_edge",), fill_value=0)
        off[0] = 0
        grp.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd,
                         dimension_names=("frame",), fill_value=0.0)

    # -- disk errors ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self, what: str):
        """Turn an OS error while writing ``what`` into a StoreError naming it and the store."""
        try:
            yield
        except StoreError:
            raise
        except OSError as exc:
            where = f"{what} in the run store {str(self.path)!r}"
            keep = ("frames committed before it are intact and readable (open_run); free space, then continue "
                    f"from the last checkpoint with `gpusim resume {self.path}`")
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreError(f"the disk is full (no space left on device) while writing {where}; {keep}") from exc
            raise StoreError(f"could not write {where} ({type(exc).__name__}: {exc}); {keep}") from exc

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
        for name, columns in (("tcells", TCELL_COLUMNS), ("tracks", TRACK_COLUMNS)):
            if name not in g:
                continue
            cg = g[name]
            n = int(cg.attrs["frames_committed"])
            times = np.asarray(cg["time_min"][:n])
            keep = int(np.count_nonzero(times <= t_cut + tol))
            cg.attrs["frames_committed"] = keep
            rows = int(cg["offsets"][keep])
            for col in columns:
                arr = cg[col]
                arr.resize((rows,) + tuple(arr.shape[1:]))
            cg["offsets"].resize((keep + 1,))
            cg["time_min"].resize((keep,))
        if "events" in g:
            eg = g["events"]
            n = int(eg.attrs["frames_committed"])
            steps = np.asarray(eg["step"][:n])
            keep = int(np.searchsorted(steps, resume_step, side="left"))  # rows are in step order
            eg.attrs["frames_committed"] = keep
            for col in EVENT_COLUMNS:
                eg[col].resize((keep,))
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

    @staticmethod
    def _append_ragged(cg, snap: dict, columns: dict, t: float) -> None:
        k = int(cg.attrs["frames_committed"])
        base = int(cg["offsets"][k])
        n = int(np.asarray(snap["uid"]).shape[0])
        for col, dt in columns.items():
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

    def _tracks_snapshot(self, snap: dict) -> dict:
        """The rows of ``snap`` (living T cells) whose uid is tracked, in uid order."""
        keep = np.flatnonzero(np.isin(snap["uid"], self._tracked))
        keep = keep[np.argsort(snap["uid"][keep], kind="stable")]
        return {col: np.asarray(snap[col])[keep] for col in TRACK_COLUMNS}

    def _frame_where(self, grp, t: float) -> str:
        return f"{grp.path} frame {int(grp.attrs['frames_committed'])} (t = {t:g} min)"

    def _write_frames(self, t: float, initial: bool = False) -> bool:
        """Write the frames due at ``t``; True when a field, tumour or T-cell frame was written (the
        buffered rows are then written too)."""
        sim, g = self.sim, self.group
        wrote = False
        if self.field_names and (initial or is_due(t, self.every["fields"])):
            for name in self.field_names:
                c = np.asarray(sim.field_host(name), np.float32)
                fg = g["fields"][name]
                with self._guard(self._frame_where(fg, t)):
                    self._append_image(fg, c, block_mean2(c), t)
            wrote = True
        if self.has_tumor and (initial or is_due(t, self.every["tumor"])):
            lat = np.asarray(sim.tumor_state(), np.uint8)
            with self._guard(self._frame_where(g["tumor"], t)):
                self._append_image(g["tumor"], lat, lat[::2, ::2, ::2], t)
            wrote = True
        snap = None
        if self.has_tcells and (initial or is_due(t, self.every["tcells"])):
            snap = sim.tcell_snapshot()
            with self._guard(self._frame_where(g["tcells"], t)):
                self._append_ragged(g["tcells"], snap, TCELL_COLUMNS, t)
            wrote = True
        if self.has_tracks and (initial or is_due(t, self.every["tracks"])):
            snap = sim.tcell_snapshot() if snap is None else snap
            with self._guard(self._frame_where(g["tracks"], t)):
                self._append_ragged(g["tracks"], self._tracks_snapshot(snap), TRACK_COLUMNS, t)
            # not ``wrote``: tracks may be due every step, and rewriting the buffered timeseries that
            # often would cost more than the step (the rows reach disk with the next frame or flush)
        return wrote

    # -- events --------------------------------------------------------------------------------
    def _collect_events(self, sim) -> None:
        """Buffer this step's engage/hit/kill/disengage rows (read at the end of the step)."""
        from ..agents import rules as R

        s = sim.cells.store
        if s.n == 0:
            return
        xp, host = sim.backend.xp, sim.backend.to_host
        fl = s.flags
        mask = ((fl & np.uint8(R.FL_ENGAGED | R.FL_KILL | R.FL_DISENGAGED)) != 0) | (s.hit != 0)
        rows = xp.flatnonzero(mask)
        if int(rows.shape[0]) == 0:
            return
        f, h = host(fl[rows]), host(s.hit[rows])
        uid, target = host(s.uid[rows]), host(s.target[rows])
        parts = [(h != 0, 1), ((f & R.FL_KILL) != 0, 2), ((f & R.FL_DISENGAGED) != 0, 3),
                 ((f & R.FL_ENGAGED) != 0, 0)]
        uids = np.concatenate([uid[m] for m, _ in parts]).astype(np.uint64)
        kinds = np.concatenate([np.full(int(np.count_nonzero(m)), code, np.uint8) for m, code in parts])
        voxels = np.concatenate([target[m] for m, _ in parts]).astype(np.int64)
        order = np.lexsort((kinds, uids))
        m = int(order.size)
        self._ev_pending.append({"step": np.full(m, int(sim.state.step), np.int64), "kind": kinds[order],
                                 "uid": uids[order], "voxel": voxels[order]})
        self._ev_pending_rows += m

    def _write_events(self) -> None:
        if not self._ev_pending:
            return
        eg = self.group["events"]
        k = int(eg.attrs["frames_committed"])
        m = self._ev_pending_rows
        with self._guard(f"events/ rows {k}..{k + m - 1}"):
            for col, dt in EVENT_COLUMNS.items():
                values = np.concatenate([p[col] for p in self._ev_pending]).astype(dt, copy=False)
                arr = eg[col]
                arr.resize((k + m,))
                arr[k:k + m] = values
            eg.attrs["frames_committed"] = k + m
        self._ev_pending.clear()
        self._ev_pending_rows = 0

    def _write_rows(self) -> None:
        if self.has_events:
            self._write_events()
        cols = self.sim.recorder.columns
        n = len(cols["time_min"])
        start = self._ts_written
        if n > start:
            with self._guard(f"timeseries/ rows {start}..{n - 1}"):
                self._write_timeseries(cols, start, n)
            self._ts_written = n
        if self._perf_step:
            with self._guard("perf/ rows"):
                self._write_perf()
            self._perf_step.clear()
            self._perf_wall.clear()

    def _write_timeseries(self, cols, start: int, n: int) -> None:
        tsg = self.group["timeseries"]
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

    def _write_perf(self) -> None:
        pg = self.group["perf"]
        k = int(pg.attrs["frames_committed"])
        m = len(self._perf_step)
        for name, values in (("step", np.asarray(self._perf_step, np.int64)),
                             ("wall_s", np.asarray(self._perf_wall, np.float64))):
            arr = pg[name]
            arr.resize((k + m,))
            arr[k:k + m] = values
        pg.attrs["frames_committed"] = k + m

    # -- the operation -------------------------------------------------------------------------
    def apply(self, sim) -> None:
        if self._closed:  # the same simulation runs on (another run() or step()): the store is live again
            with self._guard("the root attributes (status)"):
                set_status(self.group, "running")
            self._closed = False
        now = time.perf_counter()
        self._perf_step.append(int(sim.state.step))
        self._perf_wall.append(now - self._last_wall)
        self._last_wall = now
        t_end = float(sim.state.time_min + sim.dt_min)
        if not math.isfinite(t_end):
            raise ValueError(f"step end time {t_end}")
        if self.has_events:
            self._collect_events(sim)
        self._write_frames(t_end)
        # tables (timeseries, perf, events) reach disk in batches, and at every flush: a checkpoint
        # flushes first and a resume refills lost rows from the checkpoint, so nothing is lost that
        # the checkpoint needs; batching keeps a table flush (a chunk rewrite per column) rare
        pending = len(sim.recorder.columns["time_min"]) - self._ts_written
        if pending >= TABLE_FLUSH_ROWS or self._ev_pending_rows >= ROW_CHUNK:
            self._write_rows()

    def flush(self) -> None:
        """Write the buffered timeseries and perf rows now."""
        self._write_rows()

    def close(self, status: str = "complete") -> None:
        """Flush and record ``status`` ("complete" or "interrupted") and the end time."""
        self._write_rows()
        with self._guard("the root attributes (status)"):
            set_status(self.group, status)
        self._closed = True

    def n_frames(self) -> dict:
        """Committed frames (rows for the timeseries) per output."""
        g = self.group
        out = {f"fields/{n}": int(g["fields"][n].attrs["frames_committed"]) for n in self.field_names}
        for name in ("tumor", "tcells", "tracks", "events", "timeseries", "perf"):
            if name in g:
                out[name] = int(g[name].attrs["frames_committed"])
        return out
