"""Checkpoints written by the ranks that hold the state (gpusim.parallel.checkpoints): the fields and
the lattice as each rank's shards, the T cells as each rank's chunks of rows sorted by uid, the rest
by rank 0; in-process ranks (tests/threadcomm.py) write the slot that ``checkpoint.write`` writes on
one process, array for array and byte for byte, while rank 0's own (mirror) copy of what the ranks
hold is stale junk, so every value came from the ranks. Under ``mpiexec`` whole runs are compared
(and resumed on other rank counts) in tests/test_mpi.py."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from gpusim.agents.tcell_store import COLUMNS, STATE_COLUMNS, TCellState
from gpusim.backend import select_backend
from gpusim.io import checkpoint as ckpt
from gpusim.parallel.checkpoints import DistributedCheckpoints, follow_checkpoint
from gpusim.parallel.decomposition import Decomposition
from gpusim.parallel.frames import DistributedFrames, FrameWriter
from gpusim.parallel.snapshots import SnapshotWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threadcomm import run_ranks  # noqa: E402

_LATTICE_DTYPES = {"tumor": np.uint8, "damage": np.uint8, "last_hit": np.int32, "since": np.int32, "n_tumor": np.uint8}


def _state(shape, n_cells, seed=0):
    """Whole-grid arrays (one field, the lattice, a vessel mask) and T cells of every store column."""
    rng = np.random.default_rng(seed)
    grid = {"fields/mg": rng.random(shape, dtype=np.float32)}
    grid |= {f"lattice/{n}": rng.integers(0, 4, shape).astype(dt) for n, dt in _LATTICE_DTYPES.items()}
    cells = {}
    for c in STATE_COLUMNS:
        dt, per, _ = COLUMNS[c]
        cells[c] = (rng.random((n_cells,) + per) * 9).astype(dt)
    cells["uid"] = rng.integers(0, 2**63, n_cells, dtype=np.uint64) * np.uint64(2)
    cells["state"] = rng.choice([TCellState.FREE, TCellState.ENGAGED, TCellState.DEAD], n_cells).astype(np.uint8)
    cells["pos_um"] = (rng.random((n_cells, 3)) * np.array(shape) * 10).astype(np.float32)
    return grid, cells, rng.integers(0, 2, shape).astype(np.uint8)


def _sim(grid, cells, vessel):
    """What ``checkpoint.capture`` reads of a Simulation: the whole state (rank 0's mirror)."""
    lattice = {k.split("/")[1]: v for k, v in grid.items() if k.startswith("lattice/")}
    store = SimpleNamespace(to_host=lambda: dict(cells), **cells)
    return SimpleNamespace(
        state=SimpleNamespace(fields={"mg": grid["fields/mg"]}, vessel=vessel, step=12, time_min=6.0, **lattice),
        backend=SimpleNamespace(to_host=np.asarray, name="cpu"),
        cells=SimpleNamespace(store=store, totals={"tcells_died": 3}),
        timeseries={"tcells": np.arange(12, dtype=np.int64), "mg_mean": np.linspace(0, 1, 12)},
        config=SimpleNamespace(to_json=lambda: '{"seed": 1}'),
        field_update=SimpleNamespace(_last_steady={"o2": 5.0}), _manual_tcells=0, perf_extra={})


def _empty_store(path):
    zarr.open_group(str(path), mode="w")
    return path


def _slot_bytes(path) -> dict:
    g = zarr.open_group(str(path), mode="r")[f"checkpoint/{ckpt.latest_slot(path)['slot']}"]
    out = {"meta": dict(g.attrs["meta"])}
    for name in g.array_keys():
        a = g[name]
        out[name] = (a.shape, str(a.dtype), a.chunks, a.shards, a[...].tobytes())
    return out


@pytest.mark.parametrize("shape, ranks, cell_ranks", [((288, 6, 6), (2, 1, 1), (2, 1, 1)),
                                                      ((14, 12, 10), (2, 2, 1), (1, 2, 2)),
                                                      ((300, 5, 4), (3, 1, 1), (3, 1, 1))])
def test_the_ranks_write_the_one_process_checkpoint_byte_for_byte(tmp_path, shape, ranks, cell_ranks):
    grid, cells, vessel = _state(shape, 150)
    one = _empty_store(tmp_path / "one.zarr")
    ckpt.write(one, _sim(grid, cells, vessel))
    many = _empty_store(tmp_path / "many.zarr")
    d, cd = Decomposition(shape, ranks_zyx=ranks), Decomposition(shape, ranks_zyx=cell_ranks)
    holder = np.random.default_rng(1).integers(0, d.n_ranks, cells["uid"].shape[0])
    # rank 0's mirror: stale junk wherever the ranks hold the newest copy
    junk_grid = {k: np.zeros_like(v) for k, v in grid.items()}
    junk_cells = {c: v[:3].copy() for c, v in cells.items()}

    def work(comm):
        r = comm.rank
        mg_box = grid["fields/mg"][d.box(r).slices]
        fields_run = SimpleNamespace(decomp=d, held=("mg",), fields={"mg": None}, holder=lambda name: d,
                                     interior=lambda name: mg_box)
        mine = np.flatnonzero(holder == r)
        worker = SimpleNamespace(decomp=cd, own={n: np.ascontiguousarray(grid[f"lattice/{n}"][cd.box(r).slices])
                                                 for n in _LATTICE_DTYPES},
                                 tcells=SimpleNamespace(**{c: v[mine] for c, v in cells.items()}),
                                 backend=select_backend("cpu"))
        frames, rows = FrameWriter(comm, fields_run, worker), SnapshotWriter(comm, worker)
        if r != 0:
            follow_checkpoint(comm, frames, rows, comm.bcast_json(None))
            return None
        cells_op = SimpleNamespace(stale={"lattice": True, "tcells": True})
        frames_op = DistributedFrames(comm, frames, SimpleNamespace(box=fields_run, to_push=set()), cells_op)
        return DistributedCheckpoints(comm, frames_op, rows, cells_op)(many, _sim(junk_grid, junk_cells, vessel))

    pointer = run_ranks(d.n_ranks, work)[0]
    assert pointer == ckpt.latest_slot(many) and pointer["step"] == 12
    want, got = _slot_bytes(one), _slot_bytes(many)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    arrays, meta = ckpt.read(many)  # and it reads back as the state
    assert np.array_equal(arrays["fields/mg"], grid["fields/mg"])
    order = np.argsort(cells["uid"])
    assert all(np.array_equal(arrays[f"tcells/{c}"], cells[c][order]) for c in STATE_COLUMNS)


def test_a_rank_that_cannot_write_leaves_the_previous_checkpoint_in_place(tmp_path):
    shape = (288, 6, 6)
    grid, cells, vessel = _state(shape, 40)
    path = _empty_store(tmp_path / "many.zarr")
    before = ckpt.write(path, _sim(grid, cells, vessel))  # a complete checkpoint, slot A
    d = Decomposition(shape, ranks_zyx=(2, 1, 1))

    def work(comm):
        r = comm.rank
        fields_run = SimpleNamespace(decomp=d, held=("mg",), fields={"mg": None}, holder=lambda name: d,
                                     interior=lambda name: grid["fields/mg"][d.box(r).slices])
        frames, rows = FrameWriter(comm, fields_run), SnapshotWriter(comm, None)
        if r == 1:
            msg = comm.bcast_json(None)
            msg["path"] = str(tmp_path / "not-there.zarr")  # rank 1 cannot open the store
            follow_checkpoint(comm, frames, rows, msg)
            return None
        sim = _sim(grid, cells, vessel)
        sim.state.tumor = None  # fields only, the T cells on rank 0's mirror
        frames_op = DistributedFrames(comm, frames, SimpleNamespace(box=fields_run, to_push=set()))
        op = DistributedCheckpoints(comm, frames_op, rows, SimpleNamespace(stale={"lattice": False, "tcells": False}))
        with pytest.raises(ckpt.CheckpointError, match="checkpoint of step 12 .* previous checkpoint is intact"):
            op(path, sim)
        return ckpt.latest_slot(path)

    assert run_ranks(2, work)[0] == before  # the pointer still names slot A
    arrays, _ = ckpt.read(path)
    assert np.array_equal(arrays["fields/mg"], grid["fields/mg"])
