"""The complete state of a run as plain arrays and JSON-able values, and its exact restore.

``capture(sim)`` returns ``(arrays, meta)``: every array that carries state from one step to the next
(fields, vessel mask, tumour lattice, the T-cell store's state columns, the timeseries so far) as host
NumPy arrays keyed by a path-like name, and ``meta``, the scalars (step, clock, cumulative counters,
when each steady substrate was last solved, the config). ``restore(sim, arrays, meta)`` puts them into
a Simulation built from the same config, on any backend, after which it continues bitwise as the
captured run would have (DESIGN.md §2: the random numbers are counter-based, so there is no generator
state to save). What is not captured is recomputed each step from what is: the sort, per-voxel T-cell
counts, implant sources, serum values, per-step scratch.

The on-disk form (two slots and an atomically replaced pointer in the Zarr run store) is the run
store's; this module only defines what a checkpoint holds.
"""

from __future__ import annotations

import json

import numpy as np

from gpusim import rng
from gpusim.agents.tcell_store import STATE_COLUMNS

#: bump when what a checkpoint holds, or its meaning, changes
CHECKPOINT_VERSION = 1
LATTICE_ARRAYS = ("tumor", "damage", "last_hit", "since", "n_tumor")


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored into this simulation (says why and what to do)."""


def capture(sim, skip=()) -> tuple[dict, dict]:
    """Host copies of everything that carries state (but the keys in ``skip``: an MPI run's ranks
    write those themselves, gpusim.parallel.checkpoints), and the scalars beside them."""
    st, be = sim.state, sim.backend
    arrays = {f"fields/{name}": be.to_host(f) for name, f in st.fields.items() if f"fields/{name}" not in skip}
    if st.vessel is not None and "vessel" not in skip:
        arrays["vessel"] = be.to_host(st.vessel)
    if st.tumor is not None:
        for name in LATTICE_ARRAYS:
            if f"lattice/{name}" not in skip:
                arrays[f"lattice/{name}"] = be.to_host(getattr(st, name))
    if sim.cells is not None and "tcells/uid" not in skip:  # the T cells' columns go together
        host = sim.cells.store.to_host()
        order = np.argsort(host["uid"], kind="stable")  # canonical: whoever held the rows, the same arrays
        for name in STATE_COLUMNS:
            arrays[f"tcells/{name}"] = host[name][order]
    for name, values in sim.timeseries.items():
        arrays[f"timeseries/{name}"] = values
    meta = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "rng_scheme_version": rng.RNG_SCHEME_VERSION,
        "config": sim.config.to_json(),
        "step": int(st.step),
        "time_min": float(st.time_min),
        "last_steady_min": {k: float(v) for k, v in sim.field_update._last_steady.items()},
        "cell_totals": dict(sim.cells.totals) if sim.cells is not None else {},
        "manual_tcells": int(sim._manual_tcells),
        "backend": be.name,
    }
    return arrays, meta


def restore(sim, arrays: dict, meta: dict) -> None:
    """Make ``sim`` (built from the checkpoint's config, on any backend) continue the captured run."""
    version = meta.get("checkpoint_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint format version {version!r}; this gpusim reads version "
                              f"{CHECKPOINT_VERSION}: use the gpusim that wrote it")
    if meta.get("rng_scheme_version") != rng.RNG_SCHEME_VERSION:
        raise CheckpointError(f"checkpoint from RNG scheme {meta.get('rng_scheme_version')!r}, this gpusim "
                              f"draws with scheme {rng.RNG_SCHEME_VERSION}: a continued run would not be "
                              "the same run; use the gpusim that wrote it")
    mine, theirs = json.loads(sim.config.to_json()), json.loads(meta["config"])
    mine.pop("backend", None)
    theirs.pop("backend", None)  # a checkpoint resumes on either backend
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckpointError(f"the simulation's config differs from the checkpoint's in {diff}; build it "
                              "from the checkpoint's config (meta['config'])")
    st, be = sim.state, sim.backend
    for name in st.fields:
        st.fields[name] = be.asarray(_get(arrays, f"fields/{name}", st.fields[name].shape, np.float32))
    if st.vessel is not None:
        st.vessel = be.asarray(_get(arrays, "vessel", st.shape, np.uint8))
    if st.tumor is not None:
        for name in LATTICE_ARRAYS:
            cur = getattr(st, name)
            setattr(st, name, be.asarray(_get(arrays, f"lattice/{name}", cur.shape, cur.dtype)))
        st.hit_mark[...] = 0
        st.div_dir[...] = -1
        st.tumor_event[...] = 0
    st.step = int(meta["step"])
    st.time_min = float(meta["time_min"])
    sim.field_update._last_steady = {k: float(v) for k, v in meta["last_steady_min"].items()}
    sim._manual_tcells = int(meta["manual_tcells"])
    if sim.cells is not None:
        store = sim.cells.store
        cols = {name: arrays[f"tcells/{name}"] for name in STATE_COLUMNS}
        store.n = 0
        if cols["uid"].shape[0]:
            store.append(**{name: be.asarray(v) for name, v in cols.items()})
        sim.cells.totals = {k: int(v) for k, v in meta["cell_totals"].items()}
        sim.cells._vessel_list = None
        sim.cells.index(sim)
    n_rows = int(meta["step"])
    columns = sim.recorder.columns
    for name in columns:
        values = arrays.get(f"timeseries/{name}")
        if values is None or values.shape[0] != n_rows:
            raise CheckpointError(f"checkpoint timeseries {name!r} has "
                                  f"{'no rows' if values is None else values.shape[0]} rows; expected {n_rows}")
        columns[name] = values.tolist()


def _get(arrays, key, shape, dtype):
    if key not in arrays:
        raise CheckpointError(f"checkpoint has no array {key!r}")
    a = np.asarray(arrays[key])
    if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
        raise CheckpointError(f"checkpoint array {key!r} is {a.dtype}{list(a.shape)}; expected "
                              f"{np.dtype(dtype)}{list(shape)}")
    return a


# ------------------------------------------------------------------------------------------------
# On disk: two slots and an atomically replaced pointer inside the run store
# ------------------------------------------------------------------------------------------------
#: checkpoint/A and checkpoint/B hold the arrays; checkpoint/current is a tiny zarr group whose
#: zarr.json (attributes slot, step) is replaced by an atomic rename after the slot is complete
SLOTS = ("A", "B")


def _current_path(store_path) -> "os.PathLike":
    from pathlib import Path

    return Path(store_path) / "checkpoint" / "current" / "zarr.json"


def latest_slot(store_path) -> dict | None:
    """The pointer's attributes ({"slot", "step", "time_min"}) of the last complete checkpoint, or None."""
    path = _current_path(store_path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint pointer ({exc}); the store's checkpoint is "
                              "damaged, start the run again") from None
    return doc.get("attributes")


def write(store_path, sim) -> dict:
    """Write the run's state into the slot the pointer does not name, then point at it (write, fsync,
    rename: a kill at any moment leaves the previous checkpoint or the new one, never half of one)."""
    arrays, meta = capture(sim)
    try:
        return _write_slot(store_path, arrays, meta)
    except OSError as exc:
        raise write_error(exc, meta["step"], store_path) from None


def write_error(exc: OSError, step: int, store_path) -> CheckpointError:
    """The error of a checkpoint write that failed with ``exc`` (says that the previous one is intact)."""
    import errno

    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return CheckpointError(
        f"{'the disk is full' if full else f'cannot write ({exc})'} while writing the checkpoint of step "
        f"{step} into {store_path}; the previous checkpoint is intact (the pointer still names "
        "it): free space and `gpusim resume` the store")


def create_slot_array(g, key: str, shape, dtype):
    """The empty array ``key`` of a checkpoint slot ``g``, chunked so that MPI ranks write their parts
    without locks (gpusim.parallel.checkpoints): a grid array (3D) as an image frame is (chunks of
    <= 64³ in shards of up to 4³ chunks, ``layout.image_shards``), rows in chunks of ``ROW_CHUNK``."""
    from .layout import ROW_CHUNK, image_chunks, image_shards, zstd_codec

    shape = tuple(int(n) for n in shape)
    if len(shape) == 3:
        chunks, shards = image_chunks(shape)[1:], image_shards(shape)
        shards = None if shards is None else shards[1:]
    else:
        chunks, shards = (ROW_CHUNK,) + shape[1:], None
    return g.create_array(key.replace("/", "."), shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                          compressors=zstd_codec(), fill_value=0)


def begin_slot(store_path):
    """The slot the pointer does not name, emptied: (its group, its name, the fault hook)."""
    import zarr

    fault = _Fault()
    root = zarr.open_group(str(store_path), mode="r+")
    group = root.require_group("checkpoint")
    current = latest_slot(store_path)
    slot = SLOTS[1] if current is not None and current.get("slot") == SLOTS[0] else SLOTS[0]
    g = group.create_group(slot, overwrite=True)
    fault("slot")
    return g, slot, fault


def _write_slot(store_path, arrays, meta) -> dict:
    g, slot, fault = begin_slot(store_path)
    for key, a in arrays.items():
        a = np.ascontiguousarray(a)
        create_slot_array(g, key, a.shape, a.dtype)[...] = a
        fault("array")
    return finish_slot(store_path, g, slot, meta, fault)


def finish_slot(store_path, g, slot: str, meta: dict, fault) -> dict:
    """The slot's meta, everything in it on disk (fsync), then the pointer replaced to name it."""
    import os

    g.attrs["meta"] = meta
    fault("meta")
    _fsync_tree(os.path.join(str(store_path), "checkpoint", slot))
    pointer = {"slot": slot, "step": meta["step"], "time_min": meta["time_min"]}
    cur = _current_path(store_path)
    cur.parent.mkdir(parents=True, exist_ok=True)
    tmp = cur.parent.parent / ".current.json.tmp"
    with open(tmp, "w") as f:
        json.dump({"zarr_format": 3, "node_type": "group", "attributes": pointer}, f)
        f.flush()
        os.fsync(f.fileno())
    fault("pointer")
    os.replace(tmp, cur)
    fault("renamed")
    _fsync_dir(cur.parent)
    return pointer


#: test hook (tests/test_resume.py): ``"N:POINT:K"`` makes this process SIGKILL itself during its N-th
#: checkpoint write, the K-th time it passes POINT (slot, array, meta, pointer, renamed) - a kill aimed
#: inside a checkpoint write, which a timer from outside hits only by luck
FAULT_ENV = "GPUSIM_TEST_KILL_IN_CHECKPOINT"
_writes_in_process = [0]


class _Fault:
    def __init__(self):
        import os

        _writes_in_process[0] += 1
        spec = os.environ.get(FAULT_ENV)
        self.target = None
        if spec:
            n, point, k = spec.split(":")
            if int(n) == _writes_in_process[0]:
                self.target = (point, int(k))
        self.seen: dict[str, int] = {}

    def __call__(self, point: str) -> None:
        if self.target is None:
            return
        self.seen[point] = self.seen.get(point, 0) + 1
        if (point, self.seen[point]) == self.target:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def read(store_path) -> tuple[dict, dict]:
    """(arrays, meta) of the last complete checkpoint of a run store."""
    import zarr

    pointer = latest_slot(store_path)
    if pointer is None:
        raise CheckpointError(f"{store_path}: the run store holds no checkpoint yet (it was stopped before "
                              "its first one); start the run again")
    g = zarr.open_group(str(store_path), mode="r")[f"checkpoint/{pointer['slot']}"]
    meta = dict(g.attrs["meta"])
    arrays = {name.replace(".", "/"): np.asarray(g[name][...]) for name in g.array_keys()}
    return arrays, meta


def fsync_files(paths) -> None:
    """fsync each of ``paths`` that exists (a chunk equal to the fill value is not written)."""
    import os

    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(path) -> None:
    import os

    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path) -> None:
    import os

    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointer:
    """Operation, last in a step: writes a checkpoint every ``output.checkpoint_every_steps`` steps
    and every ``output.checkpoint_every_wall_min`` minutes of wall-clock time."""

    name = "checkpoint"

    def __init__(self, sim, store_path, flush=lambda: None):
        import time

        self.path = store_path
        self._flush = flush  # the writer's: its outputs reach disk before the checkpoint names the step
        out = sim.config.output
        self.every_steps = out.checkpoint_every_steps
        self.every_wall_s = None if out.checkpoint_every_wall_min is None else 60.0 * out.checkpoint_every_wall_min
        self._clock = time.monotonic
        self._last_wall = self._clock()
        self.last_step = None

    def apply(self, sim) -> None:
        done = sim.state.step + 1  # steps completed once this step ends
        due = self.every_steps is not None and done % self.every_steps == 0
        if not due and self.every_wall_s is not None and self._clock() - self._last_wall >= self.every_wall_s:
            due = True
        if due:
            self.write_now(sim, steps_done=done)

    def write_now(self, sim, steps_done=None) -> None:
        """Checkpoint now (the run's writer must have flushed first). ``steps_done``: the step count the
        state corresponds to, when called from inside a step (before the counter advances)."""
        self._flush()
        put = sim.checkpoint_writer  # an MPI run: the ranks write what they hold
        if put is None:
            sim.synchronize_state()
            put = write
        st = sim.state
        if steps_done is not None and steps_done != st.step:
            # inside a step: the clock is advanced after the operations; checkpoint the end-of-step state
            step0, t0 = st.step, st.time_min
            st.step, st.time_min = steps_done, steps_done * sim.dt_min
            try:
                put(self.path, sim)
            finally:
                st.step, st.time_min = step0, t0
        else:
            put(self.path, sim)
        self.last_step = steps_done if steps_done is not None else st.step
        self._last_wall = self._clock()
