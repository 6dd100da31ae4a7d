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
                    offsets[k]:offsets[k+1]), within a frame in uid order; ``time_min``. Only with a
                    [tcells] section.
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
``perf/``           ``step`` (int64), ``wall_s`` (float64, wall seconds of that step) and ``write_wait_s``
                    (float64, seconds of it spent waiting for a full write queue), plus the columns of
                    ``sim.perf_extra`` (an MPI run's per-rank phases; NaN in rows that did not measure
                    them): timings, never compared.

A frame is due at the end of a step when its end time ``t_end = sim.state.time_min + sim.dt_min`` is
(to 1e-9 relative) a multiple of the interval. Chunks are fixed at creation ((1, <=64, <=64, <=64) for
images, 65536 rows for ragged and 1D arrays), zstd level 3. An image larger than one chunk is sharded:
a shard is one frame of up to 4 chunks per axis (``layout.image_shards``), one file, so that MPI ranks
whose boxes are whole shards write without locks (``sim.frame_writer``, gpusim.parallel.frames: an MPI
run's image frames are written by its ranks, synchronously; its T-cell snapshots and tracks too, each
chunk of rows by one rank: ``sim.snapshot_writer``, gpusim.parallel.snapshots); the shard shape is kept
in the group attribute ``shard_shape``. Ragged and 1D arrays are not sharded (they grow by appends, and a shard would be
rewritten whole by each).

Writing overlaps compute: ``apply`` takes host copies of what is due (a device-to-host copy on a GPU)
and hands them, as one job per step, to a :class:`~gpusim.io.background.WriteQueue`; its thread
compresses and writes them in order while the next steps run. The step waits only when
``output.write_queue_steps`` jobs are already waiting (0: every write happens inside the step).
``flush``, ``close``, a checkpoint and ``n_frames`` wait for the queue to empty first, so a checkpoint
never names a step whose frames are not on disk.

A write that fails for lack of space (ENOSPC / EDQUOT) raises :class:`StoreError` naming the array that
could not be written and the store; any other OS error while writing is a StoreError as well. It is
raised in the step loop at the next step, flush or close after the failed write (the write ran in the
background); the jobs queued behind it are dropped. Frames committed before the failure stay readable
(their counters were raised only after their data).
"""
from __future__ import annotations

import contextlib
import errno
import math
import time

import numpy as np

from .background import WriteQueue
from .layout import (EVENT_COLUMNS, EVENT_KINDS, ROW_CHUNK, TCELL_COLUMNS, TRACK_COLUMNS, TRACK_DRAW, TUMOR_LABELS,
                     append_image, append_ragged, append_rows, block_mean2, choose_tracked, create_image,
                     create_ragged, create_table, image_shards, is_due, ome_multiscale, zstd_codec)
from .store import StoreError, create_store, get_attrs, open_store, set_status

__all__ = ["RunWriter", "TABLE_FLUSH_ROWS"]

#: buffered table rows (steps) after which the tables are written without waiting for a flush
TABLE_FLUSH_ROWS = 1024
PERF_COLUMNS = {"step": np.int64, "wall_s": np.float64, "write_wait_s": np.float64}


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
        self._perf: dict[str, list] = {name: [] for name in PERF_COLUMNS}
        self._queue = WriteQueue(int(out.write_queue_steps))
        self._waited_s = 0.0
        self._closed = False
        if resume_step is None:
            with self._guard("the new store's metadata"):
                self.group = create_store(path, sim, overwrite=overwrite)
                if self.has_tracks:
                    alive = sim.tcell_snapshot()["uid"]
                    self._tracked = choose_tracked(int(sim.config.seed), alive, int(out.tracks_count))
                self._create_outputs()
            self._ts_written = 0
            self._submit(self._take_frames(float(sim.state.time_min), initial=True), None)
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
        zstd = zstd_codec()
        dims = ("t", "z", "y", "x")
        shards = image_shards(shape)
        layout = {"shard_shape": None if shards is None else list(shards)}
        if self.field_names:
            fields = g.require_group("fields")
            for name in self.field_names:
                ome = {"version": "0.5",
                       "multiscales": [ome_multiscale(name, self.every["fields"], dx, "mean")]}
                create_image(fields.create_group(name), ome, np.float32, shape, half, dims, zstd,
                             unit=str(sim.field_update.plans[name].unit), **layout)
        if self.has_tumor:
            ome = {"version": "0.5",
                   "multiscales": [ome_multiscale("tumor", self.every["tumor"], dx, "nearest")],
                   "image-label": {"version": "0.5",
                                   "colors": [{"label-value": v, "rgba": list(c)} for v, _, c in TUMOR_LABELS],
                                   "properties": [{"label-value": v, "name": n} for v, n, _ in TUMOR_LABELS]}}
            create_image(g.create_group("tumor"), ome, np.uint8, shape, half, dims, zstd, **layout)
        if self.has_tcells:
            cg = g.create_group("tcells")
            cg.attrs.update({"frames_committed": 0, "position_axes": ["z", "y", "x"], "position_unit": "micrometer"})
            create_ragged(cg, TCELL_COLUMNS, zstd)
        if self.has_tracks:
            kg = g.create_group("tracks")
            kg.attrs.update({"frames_committed": 0, "position_axes": ["z", "y", "x"], "position_unit": "micrometer",
                             "tracked_uids": [int(u) for u in self._tracked],
                             "every_min": self.every["tracks"],
                             "selection": "tracks_count uids of the living T cells at the store's creation with the "
                                          "smallest key (w0 << 32 | w1) of philox_agent(seed, STREAM_SETUP, uid, 0, "
                                          f"PURPOSE_PLACEMENT, {TRACK_DRAW}); ties by uid"})
            create_ragged(kg, TRACK_COLUMNS, zstd)
        if self.has_events:
            eg = g.create_group("events")
            eg.attrs.update({"frames_committed": 0, "kind_names": list(EVENT_KINDS),
                             "columns": list(EVENT_COLUMNS),
                             "note": "one row per engage/hit/kill/disengage; voxel: the target's global index "
                                     "(z * ny + y) * nx + x; frames_committed counts rows"})
            create_table(eg, EVENT_COLUMNS, zstd)
        tsg = g.create_group("timeseries")
        tsg.attrs.update({"frames_committed": 0, "columns": self._ts_cols})
        pg = g.create_group("perf")
        pg.attrs.update({"frames_committed": 0, "columns": list(PERF_COLUMNS),
                         "note": "wall-clock seconds per step, and of it the wait for the write queue; never compared"})
        create_table(pg, PERF_COLUMNS, zstd)

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
        for name in pg.array_keys():
            pg[name].resize((keep,))

    def _image_groups(self):
        g = self.group
        out = []
        if "fields" in g:
            out += [g["fields"][n] for n in g["fields"].group_keys()]
        if "tumor" in g:
            out.append(g["tumor"])
        return out


    # -- frames: taken in the step loop (host copies), written by the queue's thread ----------------
    def _take_frames(self, t: float, initial: bool = False) -> list:
        """Host copies of the frames due at ``t``, as (write function, group path, arguments) items."""
        sim = self.sim
        jobs = []
        images = []
        if self.field_names and (initial or is_due(t, self.every["fields"])):
            images += [(f"fields/{name}", "field", name) for name in self.field_names]
        if self.has_tumor and (initial or is_due(t, self.every["tumor"])):
            images.append(("tumor", "tumor", "tumor"))
        if images and sim.frame_writer is not None:  # an MPI run: every rank writes its shards, now
            self._queue.drain()
            with self._guard(f"the frames at t = {t:g} min ({', '.join(w for w, _, _ in images)})"):
                sim.frame_writer(sim, self.group, self.path, images, t)
            images = []
        for where, kind, name in images:
            if kind == "field":
                c = np.asarray(sim.field_host(name), np.float32)
                jobs.append((append_image, where, (c, block_mean2(c), t)))
            else:
                lat = np.asarray(sim.tumor_state(), np.uint8)
                jobs.append((append_image, where, (lat, np.ascontiguousarray(lat[::2, ::2, ::2]), t)))
        ragged = []
        if self.has_tcells and (initial or is_due(t, self.every["tcells"])):
            ragged.append(("tcells", TCELL_COLUMNS))
        if self.has_tracks and (initial or is_due(t, self.every["tracks"])):
            ragged.append(("tracks", TRACK_COLUMNS))
        if ragged and sim.snapshot_writer is not None:  # an MPI run: the ranks write their T cells' rows, now
            self._queue.drain()
            with self._guard(f"the T-cell rows at t = {t:g} min ({', '.join(w for w, _ in ragged)})"):
                sim.snapshot_writer(sim, self.group, self.path, ragged, t, self._tracked if self.has_tracks else None)
            ragged = []
        snap = sim.tcell_snapshot() if ragged else None
        for where, columns in ragged:
            rows = {c: snap[c] for c in TCELL_COLUMNS} if where == "tcells" else self._tracks_snapshot(snap)
            jobs.append((append_ragged, where, (rows, columns, t)))
        return jobs

    def _tracks_snapshot(self, snap: dict) -> dict:
        """The rows of ``snap`` (living T cells, in uid order: ``Simulation.tcell_snapshot``) whose uid is
        tracked, in the snapshot's order."""
        keep = np.flatnonzero(np.isin(snap["uid"], self._tracked))
        return {col: np.asarray(snap[col])[keep] for col in TRACK_COLUMNS}

    def _take_rows(self) -> dict:
        """The buffered table rows (events, timeseries, perf) as host arrays, handed over: the buffers
        start empty again."""
        rows = {}
        if self._ev_pending:
            rows["events"] = {col: np.concatenate([p[col] for p in self._ev_pending]).astype(dt, copy=False)
                              for col, dt in EVENT_COLUMNS.items()}
            self._ev_pending, self._ev_pending_rows = [], 0
        cols = self.sim.recorder.columns
        n = len(cols["time_min"])
        if n > self._ts_written:
            rows["timeseries"] = (self._ts_written, {name: np.asarray(cols[name][self._ts_written:n])
                                                     for name in self._ts_cols})
            self._ts_written = n
        if self._perf["step"]:
            rows["perf"] = {name: np.asarray(values, PERF_COLUMNS.get(name, np.float64))
                            for name, values in self._perf.items()}
            self._perf = {name: [] for name in self._perf}
        return rows

    def _submit(self, frames: list, rows: dict | None) -> None:
        if frames or rows:
            self._queue.submit(lambda: self._commit(frames, rows or {}))

    def _commit(self, frames: list, rows: dict) -> None:
        """Write ``frames`` and ``rows`` (on the queue's thread), each under its own error guard."""
        g = self.group
        for append, where, args in frames:
            grp = g[where]
            with self._guard(f"{grp.path} frame {int(grp.attrs['frames_committed'])} (t = {args[-1]:g} min)"):
                append(grp, *args)
        if "events" in rows:
            eg = g["events"]
            k, m = int(eg.attrs["frames_committed"]), int(rows["events"]["step"].shape[0])
            with self._guard(f"events/ rows {k}..{k + m - 1}"):
                append_rows(eg, rows["events"])
        if "timeseries" in rows:
            start, values = rows["timeseries"]
            n = start + int(values["time_min"].shape[0])
            with self._guard(f"timeseries/ rows {start}..{n - 1}"):
                append_rows(g["timeseries"], values, start=start)
        if "perf" in rows:
            with self._guard("perf/ rows"):
                pg = g["perf"]
                m = len(rows["perf"]["step"])
                for name in pg.array_keys():  # a column this run does not measure (another rank count): NaN
                    rows["perf"].setdefault(name, np.full(m, np.nan))
                append_rows(pg, rows["perf"])
                known = list(pg.attrs.get("columns", PERF_COLUMNS))
                if any(name not in known for name in rows["perf"]):
                    pg.attrs["columns"] = known + [name for name in rows["perf"] if name not in known]

    # -- events --------------------------------------------------------------------------------
    def _collect_events(self, sim) -> None:
        """Buffer this step's engage/hit/kill/disengage rows (read at the end of the step)."""
        rows = sim.cells.step_events(sim)  # an MPI run's merged from its ranks
        if rows is not None:
            self._ev_pending.append(rows)
            self._ev_pending_rows += int(rows["step"].shape[0])

    # -- the operation -------------------------------------------------------------------------
    def apply(self, sim) -> None:
        if self._closed:  # the same simulation runs on (another run() or step()): the store is live again
            with self._guard("the root attributes (status)"):
                set_status(self.group, "running")
            self._closed = False
        now = time.perf_counter()
        self._perf["step"].append(int(sim.state.step))
        self._perf["wall_s"].append(now - self._last_wall)
        self._perf["write_wait_s"].append(self._queue.waited_s - self._waited_s)
        self._waited_s = self._queue.waited_s
        self._last_wall = now
        t_end = float(sim.state.time_min + sim.dt_min)
        if not math.isfinite(t_end):
            raise ValueError(f"step end time {t_end}")
        if self.has_events:
            self._collect_events(sim)
        frames = self._take_frames(t_end)
        for name, value in sim.perf_extra.items():  # the MPI ranks' phases (set every step from the first)
            self._perf.setdefault(name, []).append(float(value))
        # tables (timeseries, perf, events) reach disk with every image or T-cell frame, in batches,
        # and at every flush: a checkpoint flushes first and a resume refills lost rows from the
        # checkpoint, so nothing is lost that the checkpoint needs; tracks alone do not take them
        # along (tracks may be due every step, and a table write rewrites a chunk per column)
        pending = len(sim.recorder.columns["time_min"]) - self._ts_written
        with_tables = any(where != "tracks" for _, where, _ in frames)
        rows = (self._take_rows() if with_tables or pending >= TABLE_FLUSH_ROWS or self._ev_pending_rows >= ROW_CHUNK
                else None)
        self._submit(frames, rows)

    def flush(self) -> None:
        """Write the buffered rows and wait until everything handed to the write queue is on disk."""
        self._submit([], self._take_rows())
        self._queue.drain()

    def set_attr(self, key: str, value) -> None:
        """Set root attribute ``key`` once the queued writes are done (the queue never writes the root)."""
        self._queue.drain()
        with self._guard(f"the root attribute {key!r}"):
            self.group.attrs[key] = value

    def close(self, status: str = "complete") -> None:
        """Flush, end the write thread, and record ``status`` ("complete" or "interrupted") and the end time."""
        self._submit([], self._take_rows())
        self._queue.stop()
        with self._guard("the root attributes (status)"):
            set_status(self.group, status)
        self._closed = True

    def n_frames(self) -> dict:
        """Committed frames (rows for the timeseries) per output, once the queued writes are done."""
        self._queue.drain()
        g = self.group
        out = {f"fields/{n}": int(g["fields"][n].attrs["frames_committed"]) for n in self.field_names}
        for name in ("tumor", "tcells", "tracks", "events", "timeseries", "perf"):
            if name in g:
                out[name] = int(g[name].attrs["frames_committed"])
        return out
