"""T-cell snapshots and tracks written by the ranks holding the T cells (gpusim.parallel.snapshots):
the ranks sort the rows between them by uid ranges, every chunk of rows has one writer (the rank
holding its first row of the frame), and the frames written by in-process ranks (tests/threadcomm.py,
one thread per rank writing one Zarr store) are byte for byte the single-process writer's
(``layout.append_ragged`` of ``tcell_store.snapshot``), however the T cells are spread over the
ranks, whatever the chunk size against the ranks' shares, and from the ranks or rank 0's mirror.
Under ``mpiexec`` the whole run's store is compared in tests/test_mpi.py."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from gpusim.agents.tcell_store import COLUMNS, TCellState, snapshot
from gpusim.backend import select_backend
from gpusim.io.layout import TCELL_COLUMNS, TRACK_COLUMNS, append_ragged, create_ragged, zstd_codec
from gpusim.parallel.snapshots import DistributedSnapshots, SnapshotWriter, chunk_writers, follow_snapshots, uid_ranks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threadcomm import run_ranks  # noqa: E402

MOVED = ("pos_um", "uid", "state", "lfa1", "kills")
CPU = select_backend("cpu")  # the backend of the rows a rank's CellWorker holds


@pytest.mark.parametrize("seed", range(40))
def test_every_chunk_of_a_frame_has_one_writer_the_rank_holding_its_first_row(seed):
    rng = np.random.default_rng(seed)
    p = int(rng.integers(1, 6))
    counts = rng.integers(0, 12, p) * rng.integers(0, 2, p)  # some ranks hold nothing
    base, chunk = int(rng.integers(0, 40)), int(rng.choice([1, 3, 7, 16, 65536]))
    n = int(counts.sum())
    writers = chunk_writers(counts, base, chunk)
    holder = np.repeat(np.arange(p), counts)  # the rank holding each row of the frame, in order
    written = [(r, w) for r, w in enumerate(writers) if w is not None]
    rows = np.concatenate([np.arange(lo, hi) for _, (lo, hi) in written]) if written else np.zeros(0, int)
    assert np.array_equal(rows, np.arange(base, base + n))  # the writers tile the frame, in rank order
    for r, (lo, hi) in written:
        assert lo == base or lo % chunk == 0
        assert holder[lo - base] == r  # a writer holds the first row of its first chunk
        for c in range(lo // chunk, (hi - 1) // chunk + 1):  # ... and of each of its chunks
            assert holder[max(c * chunk, base) - base] == r
            assert min((c + 1) * chunk, base + n) <= hi  # whole: no other rank writes into it
    assert chunk_writers([0] * p, base, chunk) == [None] * p


def test_uid_ranges_are_in_uid_order_and_cover_the_uid_space():
    uids = np.concatenate([np.array([0, 1, 2**63, 2**64 - 1], np.uint64),
                           np.random.default_rng(1).integers(0, 2**63, 5000, dtype=np.uint64) * np.uint64(2)])
    order = np.sort(uids)
    for p in (1, 2, 3, 4, 7, 512):
        ranks = uid_ranks(order, p)
        assert ranks[0] == 0 and ranks[-1] == p - 1 and (np.diff(ranks) >= 0).all()
    ranks = uid_ranks(uids[4:], 4)  # hashed uids: about a quarter each
    assert (np.abs(np.bincount(ranks, minlength=4) - 1250) < 150).all()


def _cells(rng, n):
    """``n`` T cells with random uids, some DEAD and some ENGAGED (store columns ``MOVED``)."""
    return {"pos_um": rng.random((n, 3), dtype=np.float32) * 500,
            "uid": rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64),
            "state": rng.choice([TCellState.FREE, TCellState.ENGAGED, TCellState.DEAD], n,
                                p=[0.6, 0.3, 0.1]).astype(np.uint8),
            "lfa1": rng.random(n, dtype=np.float32), "kills": rng.integers(0, 9, n).astype(np.uint16)}


def _store(path, chunk):
    g = zarr.open_group(str(path), mode="w")
    create_ragged(g.create_group("tcells"), TCELL_COLUMNS, zstd_codec(), chunk)
    create_ragged(g.create_group("tracks"), TRACK_COLUMNS, zstd_codec(), chunk)
    for where in ("tcells", "tracks"):
        g[where].attrs["frames_committed"] = 0
    return g


def _tracked(frames, count):
    alive = np.unique(np.concatenate([f["uid"] for f in frames]))
    return np.sort(np.random.default_rng(5).choice(alive, count, replace=False))


def _same(a, b, where):
    for name in list(TCELL_COLUMNS if where == "tcells" else TRACK_COLUMNS) + ["offsets", "time_min"]:
        x, y = a[f"{where}/{name}"], b[f"{where}/{name}"]
        assert x.shape == y.shape and x[...].tobytes() == y[...].tobytes(), (where, name)
    assert a[where].attrs["frames_committed"] == b[where].attrs["frames_committed"]


@pytest.mark.parametrize("source", ["ranks", "mirror"])
@pytest.mark.parametrize("size, chunk", [(1, 7), (2, 3), (3, 7), (4, 1), (4, 16), (4, 65536)])
def test_rows_written_by_the_ranks_are_the_single_process_frames(tmp_path, size, chunk, source):
    rng = np.random.default_rng(size * 100 + chunk)
    frames = [_cells(rng, n) for n in (23, 0, 41, 5)]  # one frame without T cells
    tracked = _tracked(frames, 9)
    ref = _store(tmp_path / "one.zarr", chunk)
    for k, cells in enumerate(frames):
        snap = snapshot(cells, TCELL_COLUMNS)
        append_ragged(ref["tcells"], snap, TCELL_COLUMNS, float(k))
        keep = np.isin(snap["uid"], tracked)
        append_ragged(ref["tracks"], {c: snap[c][keep] for c in TRACK_COLUMNS}, TRACK_COLUMNS, float(k))
    many_path = tmp_path / "many.zarr"
    group = _store(many_path, chunk)
    # where each frame's T cells are: any rank (rank 0 too), some ranks none
    holders = [rng.integers(0, size, f["uid"].shape[0]) * (rng.random(f["uid"].shape[0]) < 0.9) for f in frames]

    def work(comm):
        cells = SimpleNamespace(tcells=None, backend=CPU)
        writer = SnapshotWriter(comm, cells)
        op = DistributedSnapshots(comm, writer, SimpleNamespace(stale={"tcells": source == "ranks"}))
        for k, (f, at) in enumerate(zip(frames, holders)):
            mine = np.flatnonzero(at == comm.rank) if source == "ranks" else np.zeros(0, np.int64)
            cells.tcells = SimpleNamespace(**{c: f[c][mine] for c in MOVED})
            if comm.rank != 0:
                follow_snapshots(comm, writer, comm.bcast_json(None))
                continue
            sim = SimpleNamespace(cells=SimpleNamespace(store=SimpleNamespace(**f)), perf_extra={})
            items = [("tcells", TCELL_COLUMNS)] + ([("tracks", TRACK_COLUMNS)] if k % 2 == 0 else [])
            op(sim, group, many_path, items, float(k), tracked)
        return writer.bytes_moved

    run_ranks(size, work)
    # tracks were due at frames 0 and 2 only: the reference store's frames 1 and 3 dropped
    ref2 = _store(tmp_path / "two.zarr", chunk)
    for k in (0, 2):
        snap = snapshot(frames[k], TCELL_COLUMNS)
        keep = np.isin(snap["uid"], tracked)
        append_ragged(ref2["tracks"], {c: snap[c][keep] for c in TRACK_COLUMNS}, TRACK_COLUMNS, float(k))
    many = zarr.open_group(str(many_path), mode="r")
    _same(many, ref, "tcells")
    _same(many, ref2, "tracks")


def test_rank_0_moves_its_share_not_the_whole_frame(tmp_path):
    rng = np.random.default_rng(3)
    cells = _cells(rng, 4000)
    cells["state"][:] = TCellState.FREE
    group = _store(tmp_path / "many.zarr", 65536)
    at = 3 - uid_ranks(cells["uid"], 4)  # every cell starts away from its uid range's rank

    def work(comm):
        mine = np.flatnonzero(at == comm.rank)
        writer = SnapshotWriter(comm, SimpleNamespace(tcells=SimpleNamespace(**{c: cells[c][mine] for c in MOVED}),
                                                   backend=CPU))
        if comm.rank != 0:
            follow_snapshots(comm, writer, comm.bcast_json(None))
        else:
            op = DistributedSnapshots(comm, writer, SimpleNamespace(stale={"tcells": True}))
            op(SimpleNamespace(perf_extra={}), group, tmp_path / "many.zarr", [("tcells", TCELL_COLUMNS)], 0.0)
        return writer.traffic

    traffic = run_ranks(4, work)
    row = sum(np.dtype(COLUMNS[c][0]).itemsize * int(np.prod(COLUMNS[c][1], dtype=int)) for c in MOVED)
    # one chunk: rank 0 writes it, receiving every row once after the sort; what it sends is its own
    # cells (a quarter) to their ranges' ranks
    r0 = traffic[0]
    assert r0.bytes_sent == int(np.count_nonzero(at == 0)) * row
    assert r0.rows_sent == int(np.count_nonzero(at == 0))
    assert group["tcells/uid"][...].tobytes() == np.sort(cells["uid"]).tobytes()
    assert all(t.bytes_sent + t.bytes_received <= 2 * 4000 * row for t in traffic)


def test_a_write_error_on_another_rank_raises_on_rank_0_and_commits_nothing(tmp_path):
    rng = np.random.default_rng(4)
    cells = _cells(rng, 60)
    path = tmp_path / "many.zarr"
    group = _store(path, 4)  # small chunks: both ranks write

    def work(comm):
        mine = np.flatnonzero(np.arange(60) % 2 == comm.rank)
        writer = SnapshotWriter(comm, SimpleNamespace(tcells=SimpleNamespace(**{c: cells[c][mine] for c in MOVED}),
                                                   backend=CPU))
        if comm.rank == 1:
            msg = comm.bcast_json(None)
            msg["path"] = str(tmp_path / "not-there.zarr")  # rank 1 cannot open the store
            follow_snapshots(comm, writer, msg)
            return None
        op = DistributedSnapshots(comm, writer, SimpleNamespace(stale={"tcells": True}))
        with pytest.raises(OSError, match=r"tcells/.*\(tcells frame 0\) on rank 1"):
            op(SimpleNamespace(perf_extra={}), group, path, [("tcells", TCELL_COLUMNS)], 0.0)
        return int(group["tcells"].attrs["frames_committed"]), int(group["tcells/offsets"].shape[0])

    assert run_ranks(2, work)[0] == (0, 1)  # the frame is not committed, its offset not written


@pytest.mark.parametrize("n, p", itertools.product([0, 1, 50], [1, 3]))
def test_the_snapshot_rule_keeps_the_living_in_uid_order(n, p):
    cells = _cells(np.random.default_rng(n + p), n)
    cells.update(function=np.ones(n, np.float32), target=np.arange(n, dtype=np.int64))
    snap = snapshot(cells)
    alive = cells["state"] != TCellState.DEAD
    assert np.array_equal(snap["uid"], np.sort(cells["uid"][alive]))
    engaged = snap["state"] == TCellState.ENGAGED
    assert (snap["target"][~engaged] == -1).all() and (snap["target"][engaged] >= 0).all()
