"""T-cell snapshots and tracks written by the ranks that hold the T cells (issue 6, item 5: "T-cell
snapshots written per rank with offsets"; DESIGN.md §4: ranks write without locks).

A ragged frame of ``tcells/`` or ``tracks/`` is rows ``base .. base + N`` of each column, the living T
cells (tracks: the tracked ones) in uid order (``tcell_store.snapshot``), stored in chunks of
``chunk`` rows (``layout.ROW_CHUNK``). The order is global while the rows are spread over the ranks
by voxel, so the ranks first sort them between them, then write:

1. **Sort by uid ranges.** Rank r takes the uids in the r-th of ``P`` equal ranges of the 64-bit uid
   space (:func:`uid_ranks`; uids are Philox outputs, ``tcell_store``, so the ranges hold about N/P
   rows each whatever the layout: no sampling round is needed). Every rank sends each of its rows
   to the range's rank (one all-to-all of counts, one message per peer: ``migrate.exchange_rows``)
   and sorts what it holds. Rank r's rows are then rows ``base + sum(m_q, q < r)`` on, ``m_q`` the
   ranks' counts (an all-to-all of one count each).
2. **One writer per chunk.** A chunk is one file; two ranks writing parts of it would need a lock,
   so every chunk the frame touches has one writer, the rank holding the chunk's first row of this
   frame (:func:`chunk_writers`; the first chunk may also hold the end of the frame before, on disk
   already: its writer rewrites it whole). A rank's rows before its first chunk start go to the
   writer of that chunk, an earlier rank (one more exchange, at most ``chunk`` rows per rank: none
   when the ranks' shares are whole chunks).
3. Rank 0 grows the columns to ``base + N`` rows, tells the ranks, every rank writes its rows, reports
   its errors, and rank 0 writes the frame's offset, time and ``frames_committed`` after: metadata after
   the data, as for the image frames (gpusim.parallel.frames).

Rows are copied whole, so the frame is the single-process one bit for bit. Rank 0 moves only its own
share (about ``N / P`` rows) instead of gathering all N; each rank sends its rows once and a chunk's
worth at most twice. Written synchronously, like the image frames.
"""

from __future__ import annotations

import time

import numpy as np

from ..agents.tcell_store import COLUMNS, SNAPSHOT_COLUMNS, TCellState, snapshot
from .frames import collect_errors, raise_errors, report_errors, unit_files
from .migrate import Traffic, assemble_rows, exchange_rows

__all__ = ["DistributedSnapshots", "SnapshotWriter", "chunk_writers", "follow_snapshots", "uid_ranks"]

_TAG = 720
_TAG_SORT, _TAG_SHIFT, _TAG_ERRORS = _TAG, _TAG + 1, _TAG + 2


def uid_ranks(uid, size: int) -> np.ndarray:
    """The rank holding each uid in the sort: ``floor(hi * size / 2**32)`` of the uid's high 32 bits
    ``hi``, i.e. equal ranges of the uid space, in uid order (non-decreasing in the uid, so rank r's
    uids all precede rank r + 1's). int64."""
    hi = np.asarray(uid, np.uint64) >> np.uint64(32)
    return ((hi * np.uint64(size)) >> np.uint64(32)).astype(np.int64)


def chunk_writers(counts, base: int, chunk: int) -> list:
    """Per rank, the rows ``(start, stop)`` it writes of a frame whose rows ``base ..`` are held by
    the ranks in rank order (``counts[r]`` rows each), or None: each chunk of ``chunk`` rows that the
    frame touches is written by the rank holding its first row of the frame (module docstring). The
    writers' ranges tile the frame's rows and start at chunk starts (or at ``base``)."""
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    out = [None] * counts.shape[0]
    if n == 0:
        return out
    ends = base + np.cumsum(counts)
    chunks = np.arange(base // chunk, (base + n - 1) // chunk + 1, dtype=np.int64)
    firsts = np.maximum(chunks * chunk, base)
    owner = np.searchsorted(ends, firsts, side="right")  # the rank whose rows hold each chunk's first row
    for r in np.unique(owner):
        mine = np.flatnonzero(owner == r)
        out[int(r)] = (int(firsts[mine[0]]), int(min((chunks[mine[-1]] + 1) * chunk, base + n)))
    return out


def _writer_of(rows, writers) -> np.ndarray:
    """The rank writing each global row (``writers``: :func:`chunk_writers`)."""
    ranks = np.array([r for r, w in enumerate(writers) if w is not None], np.int64)
    starts = np.array([writers[r][0] for r in ranks], np.int64)
    return ranks[np.searchsorted(starts, rows, side="right") - 1]


def _take(columns: dict, rows, names) -> dict:
    return {c: np.ascontiguousarray(columns[c][rows]) for c in names}


class SnapshotWriter:
    """Every rank's part of a ragged frame (see the module docstring). ``cells``: this rank's
    CellWorker (its ``tcells`` are the T cells of its box); ``bytes_moved``: what it sent and
    received; ``written``: None, or a list to which each write adds the files it wrote (a
    checkpoint's, to fsync them)."""

    def __init__(self, comm, cells):
        from ..backend import select_backend

        self.comm, self.cells = comm, cells
        self.be = cells.backend if cells is not None else select_backend("cpu")  # where the rows are
        self.traffic = Traffic()
        self.tracked = np.zeros(0, np.uint64)
        self.written = None

    @property
    def bytes_moved(self) -> int:
        return int(self.traffic.bytes_sent + self.traffic.bytes_received + self.traffic.count_bytes)

    def _rows(self, msg: dict, names, sim=None) -> dict:
        """This rank's store rows (``names``) of the newest copy: its T cells, or rank 0's mirror's
        (none on the other ranks then)."""
        if msg["source"] == "mirror":
            if sim is None:
                return {c: np.zeros((0,) + COLUMNS[c][1], COLUMNS[c][0]) for c in names}
            store = sim.cells.store
        else:
            store = self.cells.tcells
        return {c: np.asarray(getattr(store, c)) for c in names}

    def _sorted_share(self, cols: dict, names, rule: str) -> dict:
        """Step 1: this rank's share of the frame's rows (its uid range), in uid order. ``rule``:
        "living" (a snapshot), "tracked" (the living tracked ones) or "all" (a checkpoint's)."""
        comm = self.comm
        keep = np.ones(cols["uid"].shape[0], bool) if rule == "all" else cols["state"] != np.uint8(TCellState.DEAD)
        if rule == "tracked":
            keep &= np.isin(cols["uid"], self.tracked)
        rows = np.flatnonzero(keep)
        dest = uid_ranks(cols["uid"][rows], comm.size)
        outgoing = {d: rows[dest == d] for d in np.unique(dest).tolist() if d != comm.rank}
        arrived = exchange_rows(comm, cols, names, outgoing, _TAG_SORT, self.traffic, self.be)
        share = assemble_rows(cols, rows[dest == comm.rank], arrived, names, self.be)
        return _take(share, np.argsort(share["uid"], kind="stable"), names)

    def write(self, msg: dict, sim=None, group=None):
        """Every rank: its part of the ragged frames ``msg["items"]`` (rank 0's,
        :class:`DistributedSnapshots`; each names its ``arrays``, column -> array path, its ``rule``,
        see :meth:`_sorted_share`, and its ``label`` for errors; "all" writes the store's columns as
        they are, in uid order, the others the snapshot's: ``tcell_store.snapshot``). Returns (this
        rank's write errors as (errno, message) pairs, each frame's row count). The exchanges are
        collective and run whatever fails."""
        import zarr

        comm, rank = self.comm, self.comm.rank
        if "tracked" in msg:
            self.tracked = np.array(msg["tracked"], np.uint64)
        errors, totals = [], []
        for item in msg["items"]:
            arrays, rule, label = item["arrays"], item["rule"], item["label"]
            columns = list(arrays)
            store_names = columns if rule == "all" else [SNAPSHOT_COLUMNS[c] for c in columns]
            names = tuple(dict.fromkeys(["state", "uid"] + store_names))
            share = self._sorted_share(self._rows(msg, names, sim), names, rule)
            m = int(share["uid"].shape[0])
            counts = comm.alltoall(np.full(comm.size, m, np.int64))  # every rank's share
            self.traffic.count_bytes += 8 * (comm.size - 1)
            base, chunk = int(item["base"]), int(item["chunk"])
            n = int(counts.sum())
            totals.append(n)
            grown = [None]
            if rank == 0:  # the columns grow before anyone writes (the metadata of each array: rank 0's)
                try:
                    for c in columns:
                        arr = group[arrays[c]]
                        arr.resize((base + n,) + tuple(arr.shape[1:]))
                except OSError as exc:
                    grown = [exc.errno or 0, f"{label}: growing the columns: {exc}"]
            grown = comm.bcast_json(grown)
            # step 2: the rows before this rank's first chunk start go to that chunk's writer
            writers = chunk_writers(counts, base, chunk)
            start = base + int(counts[:rank].sum())
            dest = _writer_of(np.arange(start, start + m, dtype=np.int64), writers) if m else np.zeros(0, np.int64)
            outgoing = {d: np.flatnonzero(dest == d) for d in np.unique(dest).tolist() if d != rank}
            arrived = exchange_rows(comm, share, names, outgoing, _TAG_SHIFT, self.traffic, self.be)
            mine = assemble_rows(share, np.flatnonzero(dest == rank), arrived, names, self.be)
            if grown[0] is not None:
                if rank == 0:
                    errors.append(tuple(grown))
                continue
            if writers[rank] is None:
                continue
            lo, hi = writers[rank]
            rows = mine if rule == "all" else snapshot(mine, columns)
            if rows["uid"].shape[0] != hi - lo:
                raise RuntimeError(f"{label} on rank {rank}: {rows['uid'].shape[0]} rows for rows {lo}:{hi}: a T "
                                   "cell lost or duplicated in the sort")
            for c in columns:
                where = arrays[c]
                try:
                    arr = group[where] if group is not None else zarr.open_array(msg["path"], path=where, mode="r+")
                    arr[lo:hi] = rows[c]
                    if self.written is not None:
                        self.written += unit_files(msg["path"], where, (lo,) + (0,) * (arr.ndim - 1),
                                                   (hi,) + tuple(arr.shape[1:]), arr.chunks)
                except OSError as exc:
                    errors.append((exc.errno or 0, f"{where} ({label}) on rank {rank}: {exc}"))
                except Exception as exc:  # noqa: BLE001 - reported to rank 0, which raises it for the run
                    errors.append((0, f"{where} ({label}) on rank {rank}: {type(exc).__name__}: {exc}"))
        return errors, totals


class DistributedSnapshots:
    """Rank 0: ``Simulation.snapshot_writer`` of an MPI run whose ranks hold the T cells.
    ``sim.snapshot_writer(sim, group, path, items, t, tracked)`` writes the ragged frames ``items``
    ((group path, columns): ``tcells`` and/or ``tracks``; ``tracked``: the tracked uids) at time ``t``
    on all ranks (module docstring) and commits them; an OS error on any rank raises on rank 0 after
    every rank has done its part. Records ``snapshots_rank0_bytes`` and ``snapshots_s`` in perf."""

    def __init__(self, comm, worker: SnapshotWriter, cells_op):
        self.comm, self.worker, self.cells_op = comm, worker, cells_op
        self._tracked_sent = None

    def __call__(self, sim, group, path, items, t: float, tracked=None) -> None:
        t0 = time.perf_counter()
        before = self.worker.bytes_moved
        entries = []
        for where, columns in items:
            grp = group[where]
            k = int(grp.attrs["frames_committed"])
            entries.append({"group": where, "k": k, "base": int(grp["offsets"][k]), "label": f"{where} frame {k}",
                            "arrays": {c: f"{where}/{c}" for c in columns}, "chunk": int(grp["uid"].chunks[0]),
                            "rule": "tracked" if where == "tracks" else "living"})
        msg = {"op": "snapshots", "path": str(path), "items": entries,
               "source": "ranks" if self.cells_op.stale["tcells"] else "mirror"}
        if tracked is not None and (self._tracked_sent is None or not np.array_equal(self._tracked_sent, tracked)):
            msg["tracked"] = [int(u) for u in np.asarray(tracked, np.uint64)]  # once: the ranks keep them
            self._tracked_sent = np.array(tracked, np.uint64)
        self.comm.bcast_json(msg)
        errors, totals = self.worker.write(msg, sim, group)
        raise_errors(errors + collect_errors(self.comm, _TAG_ERRORS))
        for item, n in zip(entries, totals):  # the rows are on disk on every rank: offset, time, counter
            grp, k = group[item["group"]], item["k"]
            off = grp["offsets"]
            off.resize((k + 2,))
            off[k + 1] = item["base"] + n
            ta = grp["time_min"]
            ta.resize((k + 1,))
            ta[k] = t
            grp.attrs["frames_committed"] = k + 1
        sim.perf_extra["snapshots_rank0_bytes"] = float(self.worker.bytes_moved - before)
        sim.perf_extra["snapshots_s"] = time.perf_counter() - t0


def follow_snapshots(comm, worker: SnapshotWriter, msg: dict) -> None:
    """Ranks > 0: their part of the ragged frames ``msg``, then their errors reported to rank 0."""
    errors, _ = worker.write(msg)
    report_errors(comm, errors, _TAG_ERRORS)
