"""Checkpoints written by the ranks that hold the state (issue 6, item 5; DESIGN.md §4).

A checkpoint slot (gpusim.io.checkpoint) holds every array that carries state. Its grid arrays are
chunked as an image frame is (``checkpoint.create_slot_array``: chunks of <= 64³ in shards of up to
4³ chunks) and its T-cell columns in chunks of rows, so the ranks write them as they write frames:

* the fields the ranks hold and, while the ranks' lattice is the newest, the lattice arrays: each
  shard by the rank holding its first voxel (:class:`~gpusim.parallel.frames.FrameWriter`, level 0
  only, no time axis);
* the T cells, while the ranks hold the newest: every store column of every row (DEAD ones too, as
  one process captures them) in uid order, sorted between the ranks by uid ranges and each chunk of
  rows written by the rank holding its first row
  (:class:`~gpusim.parallel.snapshots.SnapshotWriter`, rule "all");
* the rest (the timeseries, the vessel mask, what rank 0's mirror holds newest) by rank 0, as one
  process writes them.

The order keeps the slot protocol: rank 0 empties the slot and creates its arrays, every rank writes
its parts and fsyncs the files it wrote (on a parallel file system only the writer's fsync makes its
data durable), reports its errors, and rank 0 then writes the meta, fsyncs the slot and replaces the
pointer. A failure anywhere leaves the pointer on the previous checkpoint. The slot is the one-process
slot byte for byte (the same arrays, chunks and values), so it resumes on any number of ranks.
"""

from __future__ import annotations

import numpy as np

from ..agents.tcell_store import COLUMNS, STATE_COLUMNS
from ..io import checkpoint as ckpt
from ..io.layout import ROW_CHUNK
from .frames import collect_errors, raise_errors, report_errors

__all__ = ["DistributedCheckpoints", "follow_checkpoint"]

_TAG = 740


def _write_parts(comm, frames, snapshots, msg: dict, sim=None, group=None) -> list:
    """Every rank: its shards and rows of the checkpoint ``msg``, fsynced; its errors."""
    frames.written, snapshots.written = [], []
    try:
        errors = frames.write(msg, sim, group)
        errors += snapshots.write(msg, sim, group)[0]
        try:
            ckpt.fsync_files(frames.written + snapshots.written)
        except OSError as exc:
            errors.append((exc.errno or 0, f"checkpoint fsync on rank {comm.rank}: {exc}"))
    finally:
        frames.written = snapshots.written = None
    return errors


class DistributedCheckpoints:
    """Rank 0: ``Simulation.checkpoint_writer`` of an MPI run (``Checkpointer`` calls
    ``sim.checkpoint_writer(store_path, sim)``): the checkpoint written by the ranks that hold the
    state (module docstring). ``frames_op``: rank 0's DistributedFrames (where each field's newest
    copy is); ``cells_op``: its DistributedCells, or None."""

    def __init__(self, comm, frames_op, snapshots, cells_op=None):
        self.comm, self.frames_op, self.snapshots, self.cells_op = comm, frames_op, snapshots, cells_op

    def _on_ranks(self, sim) -> tuple[list, bool]:
        """(the grid arrays whose newest copy the ranks hold, as (key, kind, name), whether the T cells)."""
        st, cells = sim.state, self.cells_op
        grid = [(f"fields/{n}", "field", n) for n in st.fields if self.frames_op.source("field", n) == "ranks"]
        if st.tumor is not None and cells is not None and cells.stale["lattice"]:
            grid += [(f"lattice/{n}", "lattice", n) for n in ckpt.LATTICE_ARRAYS]
        return grid, sim.cells is not None and cells is not None and cells.stale["tcells"]

    def __call__(self, store_path, sim) -> dict:
        import zarr

        grid, tcells = self._on_ranks(sim)
        skip = {key for key, _, _ in grid} | ({f"tcells/{c}" for c in STATE_COLUMNS} if tcells else set())
        arrays, meta = ckpt.capture(sim, skip=skip)
        try:
            g, slot, fault = ckpt.begin_slot(store_path)
            for key, a in arrays.items():  # what rank 0 holds: written as one process writes it
                a = np.ascontiguousarray(a)
                ckpt.create_slot_array(g, key, a.shape, a.dtype)[...] = a
                fault("array")
            images = []
            for key, kind, name in grid:
                src = sim.state.fields[name] if kind == "field" else getattr(sim.state, name)
                arr = ckpt.create_slot_array(g, key, src.shape, src.dtype)
                images.append({"arrays": [f"checkpoint/{slot}/{key.replace('/', '.')}"], "kind": kind, "name": name,
                               "k": None, "shapes": [list(arr.shape)], "units": [list(arr.shards or arr.chunks)],
                               "dtype": str(arr.dtype), "source": "ranks"})
            items = []
            if tcells:
                paths = {}
                for c in STATE_COLUMNS:
                    dt, shape, _ = COLUMNS[c]
                    ckpt.create_slot_array(g, f"tcells/{c}", (0,) + shape, dt)
                    paths[c] = f"checkpoint/{slot}/tcells.{c}"
                items.append({"arrays": paths, "rule": "all", "base": 0, "chunk": ROW_CHUNK,
                              "label": f"checkpoint {slot} T cells"})
        except OSError as exc:  # nothing collective has started: the ranks wait for the next message
            raise ckpt.write_error(exc, meta["step"], store_path) from None
        msg = {"op": "checkpoint", "path": str(store_path), "images": images, "items": items, "source": "ranks"}
        self.comm.bcast_json(msg)
        root = zarr.open_group(str(store_path), mode="r+")
        errors = _write_parts(self.comm, self.frames_op.worker, self.snapshots, msg, sim, root)
        try:
            raise_errors(errors + collect_errors(self.comm, _TAG))
            return ckpt.finish_slot(store_path, g, slot, meta, fault)
        except OSError as exc:
            raise ckpt.write_error(exc, meta["step"], store_path) from None


def follow_checkpoint(comm, frames, snapshots, msg: dict) -> None:
    """Ranks > 0: their parts of the checkpoint ``msg``, then their errors reported to rank 0."""
    report_errors(comm, _write_parts(comm, frames, snapshots, msg), _TAG)
