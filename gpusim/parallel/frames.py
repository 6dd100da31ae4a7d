"""Image frames (fields, tumour) written by every rank into its own shards of the run store (issue 6,
item 5; DESIGN.md §4: ranks write without locks).

A Zarr v3 image is stored as files of one *unit* each: a shard where the image is sharded
(``layout.image_shards``), else a chunk. Two writers of one file would need a lock, so every unit
has one owner: the rank whose box of the fields' decomposition holds the unit's first voxel (at
level 1, the level-0 voxel under it). A rank's units form a box, its *write box*
(:func:`write_boxes`): along each axis the units whose origin falls in its run. Where the boxes are
whole units (every axis's voxels divide into ranks x 256, say, for 64³ chunks in 4³ shards) the
write box is the rank's own box and no voxel moves; where a cut runs through a unit, the part of it
beyond the cut is sent to the unit's owner, who writes it (``regions.Regions``, copied values). On a
grid of one chunk rank 0 owns it and receives everything: the gather of before, through the same path.

A frame, all ranks together (rank 0's :class:`DistributedFrames` drives, every rank runs
:meth:`FrameWriter.write`):

1. rank 0 grows each image's arrays by one frame and broadcasts what to write and where it is held
   (the ranks' boxes, or rank 0's mirror when the mirror's copy is the newest: the initial frame,
   a field the mirror changed);
2. every rank fills its level-0 write box from the holders and writes it; from it the rank takes
   level 1 over half its box (the 2x2x2 means of a field, every second voxel of the tumour: whole
   units start at even voxels, so no block straddles two write boxes), and the level-1 values move
   from there to the level-1 owners the same way (an eighth of the voxels) and are written;
3. every rank reports to rank 0, which writes the frame's time and then its ``frames_committed``
   counter: metadata after the data, so a reader never sees a frame not all ranks wrote.

The values are the single-process frame's bit for bit: level 0 is copied, and a level-1 block's mean is
taken over the same eight voxels in the same order (``block_mean2`` of a box whose offset is even is
the whole grid's at the same blocks). Frames of an MPI run are written synchronously (the write queue
is drained first); the T-cell snapshots and tracks are written by the ranks too
(gpusim.parallel.snapshots), and a checkpoint's grid arrays through :class:`FrameWriter` (level 0, no
time axis: gpusim.parallel.checkpoints); the tables by rank 0.
"""

from __future__ import annotations

import errno as errno_mod
import time

import numpy as np

from ..io.layout import block_mean2
from .decomposition import Box, Decomposition
from .regions import Regions

__all__ = ["DistributedFrames", "FrameWriter", "collect_errors", "follow_frame", "halve", "raise_errors",
           "report_errors", "write_boxes"]

_TAG = 700


def _unit_owner_runs(runs, n_level: int, unit: int, scale: int) -> list:
    """Per run of ``runs`` (level-0 ``(start, length)`` along one axis), the ``(start, length)`` of the
    level's units it owns (their first voxel, times ``scale``, lies in the run), or None."""
    out = [None] * len(runs)
    n_units = -(-n_level // unit)
    for j in range(n_units):
        origin = j * unit * scale
        i = next(i for i, (s, m) in enumerate(runs) if s <= origin < s + m)
        lo, hi = j * unit, min((j + 1) * unit, n_level)
        out[i] = (lo, hi - lo) if out[i] is None else (out[i][0], hi - out[i][0])
    return out


def write_boxes(decomp: Decomposition, level_shape, unit, level: int) -> list:
    """Every rank's write box (a Box in the level's voxels, or None when it owns no unit) of an image
    level of ``level_shape`` stored in files of ``unit`` voxels per axis (a shard, or a chunk), for
    the level-0 boxes of ``decomp`` (see the module docstring)."""
    per_axis = [_unit_owner_runs(decomp.runs[a], int(level_shape[a]), int(unit[a]), 2**level) for a in range(3)]
    out = []
    for r in range(decomp.n_ranks):
        parts = [per_axis[a][c] for a, c in enumerate(decomp.coords(r))]
        out.append(None if any(p is None for p in parts)
                   else Box(tuple(p[0] for p in parts), tuple(p[1] for p in parts)))
    return out


def halve(box: Box | None) -> Box | None:
    """The level-1 voxels over a level-0 ``box`` whose offset is even and whose stop is even or the
    grid's edge (the 2x2x2 blocks it holds whole; the last one partial at an odd edge, as in
    ``block_mean2``)."""
    if box is None:
        return None
    if any(o % 2 for o in box.offset):
        raise ValueError(f"halve: {box} starts at an odd voxel (a level-0 write box is whole units)")
    lo = tuple(o // 2 for o in box.offset)
    return Box(lo, tuple(-(-(o + n) // 2) - l for o, n, l in zip(box.offset, box.shape, lo)))


def unit_files(store_path, where: str, lo, hi, unit) -> list:
    """The files of array ``where`` (a path in the store at ``store_path``) that hold the elements
    ``lo`` to ``hi`` (per axis) in files of ``unit`` elements (its shards, or its chunks): Zarr v3's
    default chunk keys ``c/i/j/k``."""
    import itertools
    import os

    ranges = [range(int(a) // int(u), -(-int(b) // int(u))) for a, b, u in zip(lo, hi, unit)]
    base = os.path.join(str(store_path), *where.split("/"), "c")
    return [os.path.join(base, *(str(i) for i in idx)) for idx in itertools.product(*ranges)]


def _level1(kind: str, data: np.ndarray) -> np.ndarray:
    """Level 1 of an image's level-0 voxels (a box with an even offset): the 2x2x2 means of a field,
    every second voxel of the tumour labels (what the single-process writer stores)."""
    return block_mean2(data) if kind == "field" else np.ascontiguousarray(data[::2, ::2, ::2])


class FrameWriter:
    """Every rank's part of a frame: its write boxes filled from the holders and written (see the
    module docstring). ``fields_run``: the BoxFieldRun holding the fields; ``cells``: the CellWorker
    holding the lattice (None without cells). ``bytes_moved``: what this rank sent and received;
    ``written``: None, or a list to which each write adds the files it wrote (a checkpoint's, to fsync
    them)."""

    def __init__(self, comm, fields_run, cells=None):
        self.comm, self.box, self.cells = comm, fields_run, cells
        self.decomp = fields_run.decomp
        self.shape = tuple(self.decomp.shape)
        self.bytes_moved = 0
        self.written = None
        self._moves = {}

    def _holders(self, image: dict, sim=None):
        """(the ranks' source boxes, this rank's array over its box) of ``image``."""
        whole = Box((0, 0, 0), self.shape)
        name = image["name"]  # a field, or an array of the lattice ("tumor": the label image's)
        if image["source"] == "mirror":  # rank 0's mirror holds the newest copy
            local = None
            if sim is not None:
                st = sim.state
                local = np.asarray(st.fields[name] if image["kind"] == "field" else getattr(st, name))
            return [whole] + [None] * (self.comm.size - 1), local
        if image["kind"] == "field":
            return self.box.holder(name).boxes(), np.ascontiguousarray(self.box.interior(name))
        return self.cells.decomp.boxes(), self.cells.own[name]

    def _fill(self, src_boxes, local, regions, dtype):
        key = (tuple(src_boxes), tuple(regions))
        move = self._moves.get(key)
        if move is None:
            if len(self._moves) > 32:  # the cell boxes are re-cut now and then: keep the plans few
                self._moves.clear()
            move = self._moves[key] = Regions(self.comm, src_boxes, regions)
        mine = regions[self.comm.rank]
        out = None if mine is None else np.zeros(mine.shape, dtype)
        before = move.bytes_sent + move.bytes_received
        data = move.fill(local, out=out, tag=_TAG)
        self.bytes_moved += move.bytes_sent + move.bytes_received - before
        return data

    def write(self, msg: dict, sim=None, group=None) -> list:
        """Every rank: write its part of the frame ``msg`` (rank 0's, :class:`DistributedFrames`) into
        the store at ``msg["path"]`` (``group``: rank 0's open root group). Each image names its
        ``arrays``, one per level (an image frame's levels 0 and 1 at frame ``k``; a checkpoint's grid
        array has level 0 only and ``k`` None: no time axis). Returns this rank's write errors as
        (errno, message) pairs; the fills are collective and run whatever fails."""
        import zarr

        rank, errors = self.comm.rank, []
        for image in msg["images"]:
            src_boxes, local = self._holders(image, sim)
            dtype = np.dtype(image["dtype"])
            levels = len(image["arrays"])
            boxes = [write_boxes(self.decomp, image["shapes"][lv], image["units"][lv], lv) for lv in range(levels)]
            data = [self._fill(src_boxes, local, boxes[0], dtype)]
            if levels > 1:
                # level 1: each rank's write box of level 0 (whole units: an even offset, an even or the
                # grid's stop) gives the level-1 voxels over half of it, moved from there to the level-1 owners
                halves = [halve(b) for b in boxes[0]]
                own1 = None if data[0] is None else _level1(image["kind"], data[0])
                data.append(self._fill(halves, own1, boxes[1], dtype))
            k = image["k"]
            for level in range(levels):
                box = boxes[level][rank]
                if box is None:
                    continue
                where = image["arrays"][level]
                what = where if k is None else f"{where} frame {k}"
                try:
                    arr = group[where] if group is not None else zarr.open_array(msg["path"], path=where, mode="r+")
                    arr[box.slices if k is None else (int(k),) + box.slices] = data[level]
                    if self.written is not None:
                        t = () if k is None else (int(k),)  # an image's time axis
                        lo, hi = t + tuple(box.offset), tuple(i + 1 for i in t) + tuple(box.stop)
                        self.written += unit_files(msg["path"], where, lo, hi, arr.shards or arr.chunks)
                except OSError as exc:
                    errors.append((exc.errno or 0, f"{what} on rank {rank}: {exc}"))
                except Exception as exc:  # noqa: BLE001 - reported to rank 0, which raises it for the run
                    errors.append((0, f"{what} on rank {rank}: {type(exc).__name__}: {exc}"))
        return errors


class DistributedFrames:
    """Rank 0: ``Simulation.frame_writer`` of an MPI run whose ranks hold the fields and the lattice.
    ``sim.frame_writer(group, path, images, t)`` writes the frames ``images`` ((group path, kind,
    name) with kind "field" or "tumor") at time ``t`` on all ranks (see the module docstring) and
    commits them; an OS error on any rank raises on rank 0 (the writer turns it into a StoreError)
    after every rank has done its part. Records ``frames_rank0_bytes`` and ``frames_s`` in perf."""

    def __init__(self, comm, worker: FrameWriter, fields_op, cells_op=None):
        self.comm, self.worker, self.fields_op, self.cells_op = comm, worker, fields_op, cells_op

    def source(self, kind: str, name: str) -> str:
        """Where the newest copy of an image's data is: "ranks" (their boxes) or "mirror" (rank 0's)."""
        if kind == "field":
            f = self.fields_op
            held = name in f.box.held and name in f.box.fields and name not in f.to_push
            return "ranks" if held else "mirror"
        return "ranks" if self.cells_op is not None and self.cells_op.stale["lattice"] else "mirror"

    def __call__(self, sim, group, path, images, t: float) -> None:
        t0 = time.perf_counter()
        before = self.worker.bytes_moved
        items = []
        for where, kind, name in images:
            grp = group[where]
            k = int(grp.attrs["frames_committed"])
            shapes, units = [], []
            for lvl in ("0", "1"):
                arr = grp[lvl]
                arr.resize((k + 1,) + tuple(arr.shape[1:]))
                shapes.append([int(n) for n in arr.shape[1:]])
                units.append([int(n) for n in (arr.shards or arr.chunks)[1:]])
            items.append({"group": where, "arrays": [f"{where}/0", f"{where}/1"], "kind": kind, "name": name,
                          "k": k, "shapes": shapes, "units": units, "dtype": str(grp["0"].dtype),
                          "source": self.source(kind, name)})
        msg = {"op": "frame", "path": str(path), "images": items}
        self.comm.bcast_json(msg)
        errors = self.worker.write(msg, sim, group)
        raise_errors(errors + collect_errors(self.comm, _TAG + 1))
        for item in items:  # the data are on disk on every rank: the time, then the counter
            grp = group[item["group"]]
            ta = grp["time_min"]
            ta.resize((item["k"] + 1,))
            ta[item["k"]] = t
            grp.attrs["frames_committed"] = item["k"] + 1
        sim.perf_extra["frames_rank0_bytes"] = float(self.worker.bytes_moved - before)
        sim.perf_extra["frames_s"] = time.perf_counter() - t0


def follow_frame(comm, worker: FrameWriter, msg: dict) -> None:
    """Ranks > 0: their part of the frame ``msg``, then their errors reported to rank 0."""
    report_errors(comm, worker.write(msg), _TAG + 1)


# -- write errors: every rank does its part of a frame whatever fails, then tells rank 0 ---------------
def report_errors(comm, errors: list, tag: int) -> None:
    """Ranks > 0: this rank's write errors ((errno, message) pairs) sent to rank 0."""
    comm.send(np.array([len(errors), 0], np.int64), 0, tag)
    for code, text in errors:
        data = np.frombuffer(text.encode(), np.uint8).copy()
        comm.send(np.array([code, data.size], np.int64), 0, tag)
        comm.send(data, 0, tag)


def collect_errors(comm, tag: int) -> list:
    """Rank 0: the write errors of ranks 1.. (:func:`report_errors`), in rank order."""
    errors = []
    for r in range(1, comm.size):
        head = np.empty(2, np.int64)
        comm.recv(head, r, tag)
        for _ in range(int(head[0])):
            code = np.empty(2, np.int64)
            comm.recv(code, r, tag)
            text = np.empty(int(code[1]), np.uint8)
            comm.recv(text, r, tag)
            errors.append((int(code[0]), text.tobytes().decode()))
    return errors


def raise_errors(errors: list) -> None:
    """Rank 0: the first of all ranks' write errors as an OSError (the writer's StoreError), if any."""
    if errors:
        code, text = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise OSError(code or errno_mod.EIO, text + more)
