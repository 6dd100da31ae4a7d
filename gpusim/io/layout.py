"""The run store's layout: array names, dtypes, chunk and shard shapes, OME-Zarr metadata, and the
append operations that commit one frame (DESIGN.md §4; the full layout is in ``writer.py``'s docstring).

Every function here works on plain Zarr groups and host NumPy arrays; none knows about a Simulation.
A frame is appended data first, then its ``frames_committed`` counter: a reader ignores anything
beyond the counter, so a frame cut short by a crash never counts.
"""

from __future__ import annotations

import numpy as np

ROW_CHUNK = 65536
IMAGE_CHUNK = 64
#: chunks per axis in one shard of a large image (a shard is one file: 4^3 chunks of 64^3 float32 = 64 MiB)
SHARD_CHUNKS = 4
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


def event_rows(store, xp, to_host, step: int):
    """The events table's rows (EVENT_COLUMNS, host arrays) of step ``step`` from a T-cell store read
    at the step's end: a row per hit, kill, disengage and engage flagged on a T cell (``voxel``: the
    target's global index), sorted by (uid, kind). That order is canonical: the rows of several
    stores holding disjoint T cells (MPI ranks) give one store's rows by :func:`merge_event_rows`.
    None when the step has no events. ``xp``/``to_host``: the store's array module and its copy to
    the host."""
    from ..agents import rules as R

    s = store
    if s.n == 0:
        return None
    fl = s.flags
    mask = ((fl & np.uint8(R.FL_ENGAGED | R.FL_KILL | R.FL_DISENGAGED)) != 0) | (s.hit != 0)
    rows = xp.flatnonzero(mask)
    if int(rows.shape[0]) == 0:
        return None
    f, h = to_host(fl[rows]), to_host(s.hit[rows])
    uid, target = to_host(s.uid[rows]), to_host(s.target[rows])
    code = EVENT_KINDS.index
    parts = [(h != 0, code("hit")), ((f & R.FL_KILL) != 0, code("kill")),
             ((f & R.FL_DISENGAGED) != 0, code("disengage")), ((f & R.FL_ENGAGED) != 0, code("engage"))]
    uids = np.concatenate([uid[m] for m, _ in parts]).astype(np.uint64)
    kinds = np.concatenate([np.full(int(np.count_nonzero(m)), c, np.uint8) for m, c in parts])
    voxels = np.concatenate([target[m] for m, _ in parts]).astype(np.int64)
    order = np.lexsort((kinds, uids))
    return {"step": np.full(int(order.size), int(step), np.int64), "kind": kinds[order], "uid": uids[order],
            "voxel": voxels[order]}


def merge_event_rows(parts):
    """One step's event rows from the rows of stores holding disjoint T cells (:func:`event_rows` of
    each; None entries skipped): concatenated and sorted by (uid, kind), the one-store order. None
    when no part has rows."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    rows = {c: np.concatenate([p[c] for p in parts]).astype(dt) for c, dt in EVENT_COLUMNS.items()}
    order = np.lexsort((rows["kind"], rows["uid"]))
    return {c: a[order] for c, a in rows.items()}


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


def create_image(grp, ome: dict, dtype, shape, half, dims, zstd, **attrs) -> None:
    """An empty OME-Zarr image over time in ``grp``: levels "0" (``shape``) and "1" (``half``), a
    ``time_min`` coordinate, ``frames_committed`` 0 and the given extra attributes."""
    grp.attrs.update({"ome": ome, **attrs, "frames_committed": 0})
    for lvl, shp in (("0", shape), ("1", half)):
        grp.create_array(lvl, shape=(0,) + shp, dtype=dtype, chunks=image_chunks(shp), shards=image_shards(shp),
                         compressors=zstd,
                         dimension_names=dims, fill_value=dtype(0))
    grp.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd,
                     dimension_names=("t",), fill_value=0.0)


def image_chunks(shape) -> tuple:
    """Chunk shape of an image over time: one frame, up to IMAGE_CHUNK voxels per axis."""
    return (1,) + tuple(min(IMAGE_CHUNK, max(1, int(n))) for n in shape)


def image_shards(shape) -> tuple | None:
    """Shard shape of an image over time, or None when one chunk covers the grid (small images are not
    sharded). A shard is one frame and up to SHARD_CHUNKS chunks per axis, a whole number of chunks, so
    that MPI ranks whose boxes are multiples of it write their own shard files without locks."""
    chunks = image_chunks(shape)[1:]
    if all(int(n) <= c for n, c in zip(shape, chunks)):
        return None
    return (1,) + tuple(min(-(-int(n) // c), SHARD_CHUNKS) * c for n, c in zip(shape, chunks))


def zstd_codec():
    import zarr

    return zarr.codecs.ZstdCodec(level=3)


def ome_multiscale(name: str, every_min: float, dx: float, kind: str) -> dict:
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


def create_ragged(grp, columns: dict, zstd, chunk: int = ROW_CHUNK) -> None:
    """Empty ragged columns (rows, in chunks of ``chunk``), ``offsets`` (frames + 1, starting at 0) and
    ``time_min`` in ``grp``."""
    for col, dt in columns.items():
        if col == "position_um":
            grp.create_array(col, shape=(0, 3), dtype=dt, chunks=(chunk, 3), compressors=zstd,
                             dimension_names=("row", "axis"), fill_value=0)
        else:
            grp.create_array(col, shape=(0,), dtype=dt, chunks=(chunk,), compressors=zstd,
                             dimension_names=("row",), fill_value=0)
    off = grp.create_array("offsets", shape=(1,), dtype=np.int64, chunks=(ROW_CHUNK,), compressors=zstd,
                           dimension_names=("frame_edge",), fill_value=0)
    off[0] = 0
    grp.create_array("time_min", shape=(0,), dtype=np.float64, chunks=(ROW_CHUNK,), compressors=zstd,
                     dimension_names=("frame",), fill_value=0.0)


def create_table(grp, columns: dict, zstd) -> None:
    """Empty 1D row arrays of ``columns`` (name -> dtype) in ``grp``."""
    for col, dt in columns.items():
        grp.create_array(col, shape=(0,), dtype=dt, chunks=(ROW_CHUNK,), compressors=zstd,
                         dimension_names=("row",), fill_value=0)


def append_image(grp, level0: np.ndarray, level1: np.ndarray, t: float) -> None:
    """Append one frame (both levels and its time) to an image group, then raise its counter."""
    k = int(grp.attrs["frames_committed"])
    for lvl, data in (("0", level0), ("1", level1)):
        arr = grp[lvl]
        arr.resize((k + 1,) + tuple(arr.shape[1:]))
        arr[k] = data
    ta = grp["time_min"]
    ta.resize((k + 1,))
    ta[k] = t
    grp.attrs["frames_committed"] = k + 1


def append_ragged(cg, snap: dict, columns: dict, t: float) -> None:
    """Append one ragged frame (``snap``: column -> rows) with its offset and time, then the counter."""
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


def append_rows(grp, rows: dict, start: int | None = None) -> int:
    """Write the 1D ``rows`` (name -> values, equal lengths) at row ``start`` (default: the committed
    count), creating missing arrays; then set the counter to the new row count, which is returned."""
    k = int(grp.attrs["frames_committed"]) if start is None else int(start)
    m = 0
    for name, values in rows.items():
        values = np.asarray(values)
        m = int(values.shape[0])
        if name not in grp:
            # a column new after k rows: its earlier rows are "not recorded" (NaN; 0 for integers)
            grp.create_array(name, shape=(k,), dtype=values.dtype, chunks=(ROW_CHUNK,), compressors=zstd_codec(),
                             dimension_names=("row",), fill_value=np.nan if values.dtype.kind == "f" else 0)
        arr = grp[name]
        arr.resize((k + m,))
        if m:
            arr[k:k + m] = values
    grp.attrs["frames_committed"] = k + m
    return k + m
