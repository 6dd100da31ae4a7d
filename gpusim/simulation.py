"""Simulation: owns the State and an ordered list of operations; steps, runs and reports.

    sim = gpusim.Simulation(cfg)                  # cfg: Config, dict, or a TOML path
    sim.fields["mg"][32, 32, 32] = 1.0            # the live device array (NumPy or CuPy)
    sim.run(minutes=20, progress=False)
    sim.field_host("mg")                          # a NumPy copy

A new mechanism is a new operation appended to ``sim.operations`` (STYLE.md 1): each has ``name`` and
``apply(sim)``; a step calls them in order, then advances the clock.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import state as state_mod
from .backend import check_memory, select_backend
from .config import Config, ConfigError
from .events import ApplyEvents, Schedule
from .fields.solver import FieldUpdate
from .agents.cells import CellStep
from .agents.rules import LIVE, TumorState
from .agents.tcell_store import COLUMNS, snapshot
from .vessels import build_mask, vessel_density_inside

log = logging.getLogger("gpusim")


class _StopOnSignal:
    """Within the block, SIGINT/SIGTERM only request a stop (checked between steps), so a run ends on a
    whole step and can checkpoint; outside the main thread signals are left alone."""

    def __init__(self):
        self._flag = False
        self._old = {}

    def requested(self) -> bool:
        return self._flag

    def _handler(self, signum, frame):
        if self._flag:  # a second signal: stop at once
            raise KeyboardInterrupt
        self._flag = True
        log.warning("signal %d: stopping after this step (a second one stops at once)", signum)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class FieldNotFiniteError(FloatingPointError):
    """A field holds NaN or Inf: the run stops, naming field, voxel and time."""


@dataclass
class RunSummary:
    """What a run did: simulated minutes, steps, wall seconds and the final field statistics."""

    minutes: float
    steps: int
    wall_s: float
    fields: dict  # name -> {"unit", "mean", "min", "max"}
    cells: dict = None  # the last timeseries row of the cell columns (tumour_live, tcells, kills, ...)
    interrupted: bool = False  # stopped early by SIGINT/SIGTERM (checkpointed; resume continues)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.wall_s > 0 else math.inf


def _as_config(config) -> tuple[Config, Path | None]:
    if isinstance(config, Config):
        return config, None
    if isinstance(config, dict):
        return Config.model_validate(config), None
    if isinstance(config, (str, Path)):
        path = Path(config)
        return Config.from_toml(path), path.parent
    raise ConfigError.single("config", type(config).__name__, "give a gpusim.Config, a dict or a TOML path", "<argument>")


def field_summary(reduce, c, n_voxels: int) -> dict:
    """Mean (exact fixed-point sum / voxels, gpusim.reduce), min and max of one field (gpusim.census,
    the rule the MPI ranks share)."""
    from .census import field_stats

    return field_stats(reduce, c, n_voxels)


class Recorder:
    """Operation, last in a step: appends the timeseries row and stops the run on NaN/Inf."""

    name = "record"

    def __init__(self, sim):
        self._reduce = sim.backend.kernels("reduce")
        self.columns = {"time_min": []}
        self.cell_names = tuple(sim.cells.columns(sim)) if sim.cells is not None else ()
        for name in self.cell_names:
            self.columns[name] = []
        self.recorded_step = None  # the step of the last row this recorder appended
        for name, plan in sim.field_update.plans.items():
            for stat in ("mean", "min", "max"):
                self.columns[f"{name}_{stat}_{plan.unit}"] = []

    def apply(self, sim) -> None:
        st = sim.state
        t_end = st.time_min + sim.dt_min
        self.columns["time_min"].append(t_end)
        for name, plan in sim.field_update.plans.items():
            stats = self.field_stats(sim, name)
            if not math.isfinite(stats["mean"]):
                sim.synchronize_state(("fields",))
                where = self._reduce.first_nonfinite(st.fields[name])
                raise FieldNotFiniteError(
                    f"field {name!r} became non-finite at voxel (z, y, x) = {where} during the step "
                    f"ending at t = {t_end:g} min; check its rates and substeps (`gpusim info`)"
                )
            for stat, value in stats.items():
                self.columns[f"{name}_{stat}_{plan.unit}"].append(value)
        if sim.cells is not None:
            for name, value in self.cell_columns(sim).items():
                self.columns[name].append(value)
        self.recorded_step = int(st.step)

    def field_stats(self, sim, name: str) -> dict:
        """Mean, min and max of field ``name`` this step (an MPI driver's recorder combines the ranks')."""
        return field_summary(self._reduce, sim.state.fields[name], sim.state.n_voxels)

    def cell_columns(self, sim) -> dict:
        """The cell columns of this step's row."""
        return sim.cells.columns(sim)

    def final(self, sim):
        """A run's summary numbers of the current state: each field's {"unit", "mean", "min", "max"}
        and the cell columns (None without cells), from the last timeseries row, which holds exactly
        them (nothing changes the state after the recorder), so an MPI run's mirror need not gather
        the state at its end; computed from the state when no row was recorded yet."""
        if self.recorded_step != sim.state.step - 1:  # no row of the current state
            cells = sim.cells.columns(sim) if sim.cells is not None else None
            return sim.field_stats(), cells
        fields = {name: {"unit": plan.unit, **{stat: self.columns[f"{name}_{stat}_{plan.unit}"][-1]
                                                for stat in ("mean", "min", "max")}}
                  for name, plan in sim.field_update.plans.items()}
        cells = None if sim.cells is None else {name: self.columns[name][-1] for name in self.cell_names}
        return fields, cells


class Simulation:
    """A gpusim run. ``config`` is a :class:`Config`, a dict or a TOML path; ``backend`` ("auto",
    "cpu", "cuda") and ``seed`` override the config's."""

    def __init__(self, config, backend: str | None = None, seed: int | None = None):
        cfg, base_dir = _as_config(config)
        overrides = {}
        if backend is not None:
            overrides["backend"] = backend
        if seed is not None:
            overrides["seed"] = seed
        if overrides:
            cfg = cfg.with_overrides(overrides)
        self.config = cfg
        self.backend = select_backend(cfg.backend)
        check_memory(self.backend, state_mod.estimate_bytes(cfg), f"a {'x'.join(map(str, cfg.grid.nzyx))} run")
        self.dt_min = float(cfg.time.dt_min)
        self.state = self._allocate(cfg, base_dir)
        self.schedule = Schedule(cfg, self.state)
        self.field_update = FieldUpdate(cfg, self.backend)
        self.operations = [ApplyEvents()]
        self.synchronizer = None  # set by an MPI driver whose ranks hold parts of the state (synchronize_state)
        #: set by an MPI driver whose ranks write their own shards of the image frames (the run store's
        #: writer calls it instead of reading the fields and the lattice whole): gpusim.parallel.frames
        self.frame_writer = None
        #: likewise for the T-cell snapshots and tracks (the ranks holding the T cells write their rows):
        #: gpusim.parallel.snapshots
        self.snapshot_writer = None
        #: likewise for checkpoints (``Checkpointer`` calls it instead of ``checkpoint.write``):
        #: gpusim.parallel.checkpoints
        self.checkpoint_writer = None
        self.cells = None
        self._manual_tcells = 0
        self._store = None
        if self.state.tumor is not None:
            self.cells = CellStep(self)
            self.operations.append(self.cells)
        self.operations.append(self.field_update)
        self.recorder = Recorder(self)
        #: this step's timings and counts from operations that have them (the MPI ranks' phases):
        #: name -> float, written as perf/ columns by the run store (never compared, never in the timeseries)
        self.perf_extra: dict[str, float] = {}
        self.operations.append(self.recorder)
        if self.cells is not None:
            self.cells.place_initial(self)
        if cfg.init == "steady":
            self._init_steady()

    # -- set-up -------------------------------------------------------------------------------
    def _allocate(self, cfg, base_dir):
        xp = self.backend.xp
        shape = tuple(int(v) for v in cfg.grid.nzyx)
        fields = {s.name: xp.full(shape, np.float32(s.initial), dtype=xp.float32) for s in cfg.substrates}
        st = state_mod.State(shape=shape, dx_um=float(cfg.grid.dx_um), fields=fields)
        if cfg.vessels is not None:
            st.vessel = self.backend.asarray(build_mask(cfg.vessels, shape, st.dx_um, cfg.seed, base_dir))
        if cfg.tumor is not None or cfg.tcells is not None:
            sphere = np.zeros(shape, np.uint8)
            if cfg.tumor is not None:
                center = cfg.tumor.center_um or tuple(n * st.dx_um / 2 for n in shape)
                inside = st.sphere_mask(center, cfg.tumor.initial_radius_um)
                if cfg.vessels is not None and cfg.vessels.tumor_voxel_fraction is not None:
                    st.vessel = self.backend.asarray(
                        vessel_density_inside(self.backend.to_host(st.vessel), inside, cfg.vessels, cfg.seed))
                sphere = inside.astype(np.uint8)
                if st.vessel is not None:  # one occupant per voxel: vessels are not tumour sites
                    sphere[self.backend.to_host(st.vessel) > 0] = 0
            st.n_tumor = self.backend.asarray(sphere)
            st.tumor = self.backend.asarray(sphere * np.uint8(LIVE))
            st.damage = xp.zeros(shape, dtype=xp.uint8)
            st.last_hit = xp.zeros(shape, dtype=xp.int32)
            st.since = xp.zeros(shape, dtype=xp.int32)
            st.tumor_event = xp.zeros(shape, dtype=xp.uint8)
            st.div_dir = xp.full(shape, -1, dtype=xp.int8)
            st.hit_mark = xp.zeros(shape, dtype=xp.uint8)
        if cfg.tcells is not None:
            st.n_tcell = xp.zeros(shape, dtype=xp.uint8)
        return st

    def _init_steady(self, solve=None):
        """``init = "steady"``: every substrate at its steady state (``solve``: as in
        ``FieldUpdate.solve_steady``; an MPI run's mirror solves on all ranks, gpusim.parallel.run)."""
        from .fields.steady import SteadyStateUndefined

        for name in self.field_update.plans:
            try:
                self.field_update.solve_steady(self.state, name, solve=solve)
            except SteadyStateUndefined as exc:
                log.info("init = 'steady': %s keeps its initial value (%s)", name, exc)

    # -- stepping ------------------------------------------------------------------------------
    @property
    def time_min(self) -> float:
        """Simulated time (min) at the start of the next step."""
        return self.state.time_min

    @property
    def fields(self) -> dict:
        """The live field arrays by name (NumPy on the CPU, CuPy on the GPU); not valid across steps
        for the explicit solver, which swaps buffers."""
        return self.state.fields

    def field_host(self, name: str) -> np.ndarray:
        """A NumPy copy of field ``name``."""
        self.synchronize_state(("fields",))
        if name not in self.state.fields:
            raise KeyError(f"no substrate {name!r}; the run has {sorted(self.state.fields)}")
        return self.backend.to_host(self.state.fields[name])

    @property
    def timeseries(self) -> dict:
        """Per-step scalars as equal-length 1D NumPy arrays (``pandas.DataFrame(sim.timeseries)`` works)."""
        return {k: np.asarray(v) for k, v in self.recorder.columns.items()}

    @property
    def tcells(self):
        """The live T-cell store (:class:`~gpusim.agents.tcell_store.TCellStore`; device arrays), or
        None without a [tcells] or [tumor] section. Rows with state DEAD are removed at the next step."""
        return None if self.cells is None else self.cells.store

    def tcell_snapshot(self) -> dict:
        """Host arrays of the living T cells in uid order: ``uid`` (uint64), ``position_um`` (N x 3,
        z y x, µm), ``state`` (uint8, :class:`TCellState`), ``lfa1`` (A, fraction), ``kills`` (uint16),
        ``function`` (1 - E), ``target`` (global voxel of an engaged cell's target, -1 otherwise).
        The order is canonical (not the store's, which depends on the last sort and on where new
        cells were appended), so a snapshot is the same whichever process or rank held the cells."""
        if self.cells is None:
            return snapshot({c: np.zeros((0,) + COLUMNS[c][1], COLUMNS[c][0]) for c in COLUMNS})
        self.synchronize_state(("tcells",))  # MPI: the ranks hold the T cells
        return snapshot(self.cells.store.to_host())

    def add_tcells(self, position_um, **columns) -> np.ndarray:
        """Append T cells at ``position_um`` (N x 3, z y x, µm) with optional columns of the store
        (``state``, ``target``, ``lfa1``, ``timer_min``, ``function``, ``dir``...); returns their uids.

        For set-ups and tests: uids come from a reserved infusion index (2**32 - 1) and a running
        count, so they never collide with the model's own. The next step re-sorts the store.
        """
        if self.cells is None:
            raise ValueError("this run has no T-cell model: add a [tcells] section to the config")
        from .agents.tcell_store import check_unique, uid_infused

        pos = np.asarray(position_um, np.float32).reshape(-1, 3)
        start = self._manual_tcells
        uids = np.atleast_1d(uid_infused(2**32 - 1, np.arange(start, start + pos.shape[0], dtype=np.int64)))
        self._manual_tcells += pos.shape[0]
        be = self.backend
        extra = {k: be.asarray(np.asarray(v)) for k, v in columns.items()}
        self.cells.store.append(pos_um=be.asarray(pos), uid=be.asarray(uids, np.uint64), **extra)
        check_unique(self.cells.store.uid)
        self.cells.index(self)
        return uids

    def set_tumor(self, tumor_state) -> None:
        """Replace the tumour lattice by ``tumor_state`` (uint8 (z, y, x), :class:`TumorState` codes):
        damage, clocks and the LIVE counts the fields read are reset to match."""
        st = self.state
        if st.tumor is None:
            raise ValueError("this run has no tumour lattice: add a [tumor] or [tcells] section to the config")
        a = np.asarray(tumor_state, np.uint8)
        if a.shape != tuple(st.shape):
            raise ValueError(f"tumour state of shape {a.shape}; the grid is {tuple(st.shape)} (z, y, x)")
        if a.max(initial=0) > max(TumorState):
            raise ValueError(f"tumour state codes must be {[int(c) for c in TumorState]} ({list(TumorState.__members__)})")
        if st.vessel is not None and (a[self.backend.to_host(st.vessel) > 0] != 0).any():
            raise ValueError("tumour cells on vessel voxels: a voxel holds one occupant")
        be = self.backend
        st.tumor[...] = be.asarray(a)
        st.n_tumor[...] = be.asarray((a == LIVE).astype(np.uint8))
        st.damage[...] = 0
        st.hit_mark[...] = 0
        st.last_hit[...] = st.step
        st.since[...] = st.step

    def tumor_state(self) -> np.ndarray:
        """Host copy of the tumour lattice, uint8 (z, y, x), codes :class:`TumorState`."""
        if self.state.tumor is None:
            return np.zeros(self.state.shape, np.uint8)
        self.synchronize_state(("lattice",))  # MPI: the ranks hold the lattice
        return self.backend.to_host(self.state.tumor)

    def step(self) -> None:
        """Advance one step of ``time.dt_min``: every operation in order, then the clock."""
        for op in self.operations:
            op.apply(self)
        self.state.step += 1
        self.state.time_min = self.state.step * self.dt_min

    def run(self, minutes: float | None = None, days: float | None = None, out=None, overwrite: bool = False,
            progress: bool = True) -> RunSummary:
        """Advance by ``minutes`` or ``days`` of simulated time (rounded to whole steps).

        ``out``: a run-store path (Zarr): outputs on the ``[output]`` schedules, checkpoints, and a
        final checkpoint at the end; an existing store is refused unless ``overwrite``. SIGINT/SIGTERM
        during the run finish the current step, checkpoint, mark the store ``interrupted`` and return
        (``summary.interrupted``); ``Simulation.resume(path)`` continues it.
        """
        if (minutes is None) == (days is None):
            raise ValueError("give exactly one of minutes= or days=")
        total_min = float(minutes if minutes is not None else days * 1440.0)
        if total_min < 0 or not math.isfinite(total_min):
            raise ValueError(f"run length {total_min} min: must be a finite number >= 0")
        n_steps = int(round(total_min / self.dt_min))
        if out is not None:
            self.attach_store(out, overwrite=overwrite)
        if self._store is not None:  # through the writer's group, whose attributes it rewrites later
            self._store["writer"].set_attr("run", {"planned_end_min": self.time_min + n_steps * self.dt_min})
        t0 = time.perf_counter()
        with _StopOnSignal() as stop:
            if progress:
                from .progress import run_with_progress

                done = run_with_progress(self, n_steps, stop.requested)
            else:
                done = 0
                for _ in range(n_steps):
                    if stop.requested():
                        break
                    self.step()
                    done += 1
        self.backend.synchronize()
        interrupted = done < n_steps
        if self._store is not None:  # (an MPI run's ranks write the final checkpoint from what they hold)
            self._store["writer"].flush()
            if self._store["checkpointer"].last_step != self.state.step:
                self._store["checkpointer"].write_now(self)
            self._store["writer"].close("interrupted" if interrupted else "complete")
        wall = time.perf_counter() - t0
        fields, cells = self.recorder.final(self)
        return RunSummary(done * self.dt_min, done, wall, fields, cells, interrupted)

    # -- the run store ---------------------------------------------------------------------------
    def synchronize_state(self, parts=None) -> None:
        """Bring this object's whole-grid state up to date before it is read as a whole (a field frame,
        a lattice frame, a T-cell snapshot, a checkpoint, the run's end, ``field_stats``); ``parts``:
        some of "fields", "lattice", "tcells" (default: all). Nothing to do on one process, where the
        state is this object's; on rank 0 of an MPI run whose ranks keep their own state, the driver's
        ``synchronizer`` gathers it (gpusim.parallel.run, docs/owned_state.md)."""
        if self.synchronizer is not None:
            self.synchronizer(parts)

    def attach_store(self, path, overwrite: bool = False, resume_step: int | None = None) -> None:
        """Write this run to the Zarr run store at ``path`` from now on (a writer and a checkpointer
        appended to the operations). ``resume_step``: continue an existing store from that step."""
        from .io.checkpoint import Checkpointer
        from .io.writer import RunWriter

        if self._store is not None:
            if str(self._store["path"]) == str(path):
                return
            raise ValueError(f"this simulation already writes to {self._store['path']}; one store per run")
        writer = RunWriter(self, path, overwrite=overwrite, resume_step=resume_step)
        checkpointer = Checkpointer(self, path, flush=writer.flush)
        self.operations += [writer, checkpointer]
        self._store = {"path": path, "writer": writer, "checkpointer": checkpointer}

    @classmethod
    def resume(cls, path, backend: str | None = None) -> "Simulation":
        """The run of the store at ``path``, restored from its last complete checkpoint (on any
        backend) and writing on into the same store; outputs after the checkpoint are dropped, so
        nothing is duplicated. Then ``sim.run(minutes=...)`` continues it, bitwise as if uninterrupted."""
        from .io import checkpoint
        from .io.store import open_store

        root = open_store(path, mode="r")
        cfg = Config.from_json(root.attrs["gpusim"]["config"], source=f"{path} (stored config)")
        arrays, meta = checkpoint.read(path)
        sim = cls(cfg, backend=backend)
        checkpoint.restore(sim, arrays, meta)
        sim.attach_store(path, resume_step=int(meta["step"]))
        return sim

    def field_stats(self) -> dict:
        """Current mean/min/max of each field (exact fixed-point mean)."""
        self.synchronize_state(("fields",))
        red = self.backend.kernels("reduce")
        return {
            name: {"unit": plan.unit, **field_summary(red, self.state.fields[name], self.state.n_voxels)}
            for name, plan in self.field_update.plans.items()
        }

    def info(self) -> list[str]:
        """Lines describing device, memory estimate and each substrate's method and sub-steps."""
        cfg = self.config
        nz, ny, nx = cfg.grid.nzyx
        parts = state_mod.bytes_per_voxel(cfg)
        lines = [
            f"backend: {self.backend.describe()} ({self.backend.reason})",
            f"grid: {nz} x {ny} x {nx} voxels of {cfg.grid.dx_um:g} um "
            f"({nz * cfg.grid.dx_um / 1000:.3g} x {ny * cfg.grid.dx_um / 1000:.3g} x {nx * cfg.grid.dx_um / 1000:.3g} mm), dt = {self.dt_min:g} min",
            f"memory: {state_mod.estimate_bytes(cfg) / 2**20:.1f} MiB ({sum(parts.values()):.1f} B/voxel: "
            + ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if v)
            + ")",
        ]
        lines += ["substrate " + plan.describe() for plan in self.field_update.plans.values()]
        if self.cells is not None:
            from .agents.tcell_store import STATE_COLUMNS, bytes_per_tcell

            full, kept = bytes_per_tcell(), bytes_per_tcell(STATE_COLUMNS)
            tum = self.cells.columns(self)
            lines.append(f"tumour: {tum['tumor_live']} LIVE cells; T cells: {tum['tcells']} "
                         f"({kept} B of state + {full - kept} B of per-step scratch per T cell, "
                         f"capacity {self.cells.store.capacity})")
        return lines
