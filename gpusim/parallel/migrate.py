"""T cells kept by the ranks that own them: migration to the owner of each cell's voxel, and ghost
copies of the cells in each rank's region: the two messages of the distributed T-cell store of
:mod:`gpusim.parallel.cells` per step.

    cols = migrate(comm, decomp, cols, dx_um, drop_dead=True)   # each cell on the owner of its voxel
    halo = ghosts(comm, decomp, cols, CELL_GHOST, dx_um)        # the others' cells in region(rank)

A rank's T cells are a structure of arrays: a dict of column name -> array, names, dtypes and
per-row shapes as in :data:`gpusim.agents.tcell_store.COLUMNS` (any subset holding ``pos_um`` and
``uid``; every rank passes the same names). Neither call changes a row: rows move whole, bitwise.

**Which voxel, which rank.** A cell's voxel is computed by the backend's ``voxels`` kernel, i.e. the
rules' ``voxel_of_pos``/``axis_cell`` (float32 ``floor(p / dx)`` from IEEE basic operations,
clamped into the grid: a cell on or beyond a grid face counts in the face voxel) over the whole-grid
frame — the same voxel the sort and every phase see, so no cell sits on one rank by one rule and in
another rank's region by another. Its owner is the rank whose box holds that voxel
(:meth:`Decomposition.owner`, vectorised over the runs, which may be uneven:
``Decomposition.from_runs``, ``balanced_runs``). A rank's region is exactly
:func:`gpusim.parallel.cells.region` (box grown by ``width``, clipped to the grid).

**Routing: direct, one hop, counts first.** Both calls send each row straight to every rank that
needs it: first an all-to-all of row counts (``MPIComm.alltoall``: 8 B per peer, ``8 (P - 1)`` B
sent per rank), then one message per peer with a nonzero count, all posted at once
(``MPIComm.exchange``), each one contiguous buffer holding all columns (:func:`pack`). Per call and
rank, with ``b`` bytes a row (95 for all of ``COLUMNS``, 61 for ``STATE_COLUMNS``):

* migrate: ``b x`` (emigrants) bytes, one message per destination rank (≤ 26 when cells move less
  than a box, as a step's motion does; any rank after a re-cut of the boxes, still one hop);
* ghosts: ``b x`` (own cells within ``width`` of another box, counted once per rank whose region
  holds them) bytes, one message per rank whose region meets this box — 26 at most for boxes at
  least ``width`` thick, more (the boxes two or more away) where a neighbour is thinner than
  ``width``.

Why not the classic three-phase axis exchange (z, then y carrying what came from z, then x): it
needs 6 messages instead of up to 26, but in three dependent rounds, forwards edge and corner cells
through one or two intermediate ranks (a corner ghost crosses three messages, so its bytes count up
to three times), needs extra rounds when a box is thinner than ``width`` or a cell moved past a
neighbour after a re-cut, and its correctness depends on each round's order. Direct sends are one
round, every byte once, and correct for any boxes. The price is message count: at a few µs each,
26 concurrent messages cost less than three dependent rounds on an InfiniBand network; the counts
all-to-all is O(P) per rank (4 KB at 512 ranks) and is where ``MPI_Neighbor_alltoall`` over the
static neighbour graph would go at large P (the ghost neighbours never change between re-cuts).

**Device buffers.** :func:`pack`/:func:`unpack` use only the backend's row gather (the store's
``gather_rows``: numba on the CPU, ``take`` on CuPy) into views of one byte buffer, so on a GPU rank
the buffer is packed on the device. That is where a CUDA-aware MPI path slots in: hand the CuPy
buffers to :meth:`MPIComm.exchange` directly (mpi4py reads ``__cuda_array_interface__``; synchronise
the packing stream first); without CUDA-aware MPI, stage them through pinned host buffers in
:func:`exchange_rows` (one copy each way). Today ranks are CPU (``cells.CellWorker``), so all is NumPy.

Result order is deterministic whatever the message timing: a rank's kept rows in their input order,
then the arrivals by ascending source rank, each source's rows in its input order. Callers sort
(``sort_by_voxel_uid``), which makes the order immaterial anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..agents import rules as R
from ..agents.tcell_store import COLUMNS, check_column_names
from .decomposition import Box, Decomposition, region

__all__ = ["Traffic", "assemble_rows", "buffer_order", "exchange_rows", "ghost_sends", "ghost_targets", "ghosts",
           "migrate", "owners", "pack", "row_bytes", "unpack", "voxel_coords"]

_TAG_MIGRATE = 420
_TAG_GHOSTS = 421
_COUNT_BYTES = np.dtype(np.int64).itemsize


@dataclass
class Traffic:
    """What this rank sent in the calls given it (``traffic=``): data messages, their bytes and rows,
    and its share of the counts all-to-alls (8 B per peer and call); and the bytes it received."""

    calls: int = 0
    messages: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    rows_sent: int = 0
    count_bytes: int = 0


# -- one buffer per message --------------------------------------------------------------------------
def _column_names(columns) -> tuple:
    """The names of ``columns`` in ``COLUMNS`` order, checked."""
    check_column_names(columns, "an exchange of T cells")
    names = tuple(c for c in COLUMNS if c in columns)
    n = columns["uid"].shape[0]
    for c in names:
        dt, shape, _ = COLUMNS[c]
        a = columns[c]
        if a.dtype != np.dtype(dt) or a.shape != (n,) + shape:
            raise ValueError(f"column {c!r} is {a.dtype} {a.shape}; expected {np.dtype(dt)} {(n,) + shape}")
    return names


def _item(name) -> int:
    return np.dtype(COLUMNS[name][0]).itemsize


def _width(name) -> int:
    return int(np.prod(COLUMNS[name][1], dtype=np.int64))


def buffer_order(names) -> tuple:
    """The columns' order in a buffer: ``COLUMNS`` order, stably regrouped by falling item size (8,
    4, 2, 1 B), so each column's block starts on a multiple of its item size with no padding and
    unpacks as an aligned view."""
    return tuple(sorted(names, key=lambda c: -_item(c)))


def row_bytes(names=None) -> int:
    """Bytes of one row of ``names`` (default: all of ``COLUMNS``, 95 B)."""
    names = COLUMNS if names is None else names
    return sum(_item(c) * _width(c) for c in names)


def pack(columns, rows=None, names=None, backend=None):
    """One contiguous uint8 buffer of ``rows`` (indices; default all) of ``columns``: for each column
    (:func:`buffer_order`) its rows back to back. ``len(rows) * row_bytes(names)`` bytes; one gather
    pass (the backend's ``gather_rows``, the store's own), no temporaries."""
    be = _backend(backend)
    xp, gather = be.xp, be.kernels("agents").gather_rows
    names = _column_names(columns) if names is None else tuple(names)
    n = columns["uid"].shape[0] if rows is None else int(rows.shape[0])
    buf = xp.empty(n * row_bytes(names), dtype=xp.uint8)
    off = 0
    for c in buffer_order(names):
        dt, shape, _ = COLUMNS[c]
        m = n * _item(c) * _width(c)
        view = buf[off:off + m].view(dt).reshape((n,) + shape)
        if rows is None:
            view[...] = columns[c]
        else:
            gather(rows, columns[c], view)
        off += m
    return buf


def unpack(buf, n: int, names) -> dict:
    """The columns of a :func:`pack` buffer of ``n`` rows, as views of it (no copy)."""
    names = tuple(names)
    if buf.nbytes != n * row_bytes(names):
        raise ValueError(f"a buffer of {buf.nbytes} B cannot hold {n} rows of {row_bytes(names)} B")
    out, off = {}, 0
    for c in buffer_order(names):
        dt, shape, _ = COLUMNS[c]
        m = n * _item(c) * _width(c)
        out[c] = buf[off:off + m].view(dt).reshape((n,) + shape)
        off += m
    return {c: out[c] for c in names}


# -- voxel and owner ------------------------------------------------------------------------------
_CPU = None


def _backend(backend):
    global _CPU
    if backend is not None:
        return backend
    if _CPU is None:
        from ..backend import select_backend

        _CPU = select_backend("cpu")
    return _CPU


def voxel_coords(pos_um, dx_um, shape, backend=None):
    """(z, y, x) int64 global voxel coordinates of positions ``pos_um`` (n, 3) float32 µm: the rules'
    ``voxel_of_pos`` over the whole grid (the backend's ``voxels`` kernel, the sort's own)."""
    be = _backend(backend)
    xp = be.xp
    nz, ny, nx = (int(v) for v in shape)
    pos = xp.ascontiguousarray(pos_um, dtype=xp.float32)
    n = pos.shape[0]
    voxel = xp.empty(n, dtype=xp.int64)
    no_state = xp.zeros(max(n, 1), dtype=xp.uint8)  # read only when a dead bin is asked for
    be.kernels("agents").voxels(np.int64(n), np.float32(dx_um), np.int64(nz), np.int64(ny), np.int64(nx),
                                R.whole_frame(nz, ny, nx), pos, no_state, np.int64(-1), voxel)
    return voxel // (ny * nx), (voxel // nx) % ny, voxel % nx


def owners(decomp: Decomposition, z, y, x, xp=np):
    """The rank owning each global voxel (z, y, x): :meth:`Decomposition.owner`, vectorised."""
    c = []
    for a, v in enumerate((z, y, x)):
        starts = xp.asarray([s for s, _ in decomp.runs[a]], dtype=xp.int64)
        c.append(xp.searchsorted(starts, v, side="right") - 1)
    _, py, px = decomp.ranks_zyx
    return (c[0] * py + c[1]) * px + c[2]


def _inside(z, y, x, box: Box):
    (z0, y0, x0), (z1, y1, x1) = box.offset, box.stop
    return (z >= z0) & (z < z1) & (y >= y0) & (y < y1) & (x >= x0) & (x < x1)


def _meets(a: Box, b: Box) -> bool:
    return all(lo < hi2 and lo2 < hi for lo, hi, lo2, hi2 in zip(a.offset, a.stop, b.offset, b.stop))


def ghost_targets(decomp: Decomposition, rank: int, width: int) -> list:
    """``(r, region(decomp, r, width))`` for every other rank whose region meets ``rank``'s box: the
    ranks that may need ``rank``'s cells as ghosts (26 neighbours for thick boxes, more where a box
    is thinner than ``width``). Static for a decomposition."""
    box = decomp.box(rank)
    out = []
    for r in range(decomp.n_ranks):
        reg = region(decomp, r, width)
        if r != rank and _meets(reg, box):
            out.append((r, reg))
    return out


def ghost_sends(decomp: Decomposition, rank: int, width: int, z, y, x, xp=np) -> dict:
    """{rank r: indices of the cells (voxels z, y, x, all in ``rank``'s box) in r's region}, for the
    ranks of :func:`ghost_targets`; each index list ascending."""
    box = decomp.box(rank)
    inner = Box(tuple(o + width for o in box.offset), tuple(max(0, s - 2 * width) for s in box.shape))
    shell = xp.flatnonzero(~_inside(z, y, x, inner))  # only cells within width of a face are anyone's ghost
    zs, ys, xs = z[shell], y[shell], x[shell]
    return {r: shell[xp.flatnonzero(_inside(zs, ys, xs, reg))] for r, reg in ghost_targets(decomp, rank, width)}


# -- the exchanges --------------------------------------------------------------------------------
def _check(comm, decomp):
    if decomp.n_ranks != comm.size:
        raise ValueError(f"the decomposition has {decomp.n_ranks} ranks but the communicator {comm.size}")


def exchange_rows(comm, columns, names, outgoing: dict, tag: int, traffic, be) -> list:
    """Send ``outgoing`` {dest: row indices} of ``columns`` (store columns ``names``; counts first, then
    one buffer per nonzero peer); return the columns received, by ascending source rank. Collective:
    every rank calls it, with or without rows to send."""
    counts = np.zeros(comm.size, np.int64)
    for d, rows in outgoing.items():
        if d == comm.rank:
            raise ValueError("a rank does not send T cells to itself")
        counts[d] = int(rows.shape[0])
    xp = be.xp
    incoming = comm.alltoall(counts)  # collective: every rank calls it, senders or not
    rb = row_bytes(names)
    # CPU ranks: NumPy buffers. GPU ranks pack on the device (xp = cupy) and pass the buffers here as
    # they are with CUDA-aware MPI, or through pinned host copies without it (module docstring).
    sends = {d: pack(columns, rows, names, be) for d, rows in sorted(outgoing.items()) if rows.shape[0]}
    recvs = {s: xp.empty(int(incoming[s]) * rb, dtype=xp.uint8)
             for s in range(comm.size) if s != comm.rank and incoming[s]}
    if incoming[comm.rank]:
        raise RuntimeError("T-cell exchange: a rank was sent its own cells")
    comm.exchange(sends, recvs, tag)
    if traffic is not None:
        traffic.calls += 1
        traffic.messages += len(sends)
        traffic.bytes_sent += sum(int(b.nbytes) for b in sends.values())
        traffic.bytes_received += sum(int(b.nbytes) for b in recvs.values())
        traffic.rows_sent += int(counts.sum())
        traffic.count_bytes += _COUNT_BYTES * (comm.size - 1)
    return [unpack(recvs[s], int(incoming[s]), names) for s in sorted(recvs)]


def assemble_rows(columns, keep, parts, names, be) -> dict:
    """New arrays of the rows ``keep`` of ``columns`` followed by ``parts``: each byte written once
    (the kept rows gathered straight into place, no concatenation of a gathered copy)."""
    xp, gather = be.xp, be.kernels("agents").gather_rows
    k = int(keep.shape[0])
    n = k + sum(int(p["uid"].shape[0]) for p in parts)
    out = {}
    for c in names:
        dt, shape, _ = COLUMNS[c]
        a = xp.empty((n,) + shape, dtype=dt)
        gather(keep, columns[c], a[:k])
        at = k
        for p in parts:
            m = p[c].shape[0]
            a[at:at + m] = p[c]
            at += m
        out[c] = a
    return out


def migrate(comm, decomp: Decomposition, columns: dict, dx_um: float, *, drop_dead: bool = False,
            traffic: Traffic | None = None, backend=None) -> dict:
    """This rank's T cells after each went to the owner of its voxel (module docstring): the kept
    rows, then the arrivals by source rank. Cells may start on any rank (after a re-cut, far from
    their box). With ``drop_dead`` (needs ``state``) DEAD T cells (``rules.TDEAD``) are dropped, sent
    nowhere. ``traffic`` (a :class:`Traffic`) accumulates what this rank sent. Collective."""
    _check(comm, decomp)
    be = _backend(backend)
    xp = be.xp
    names = _column_names(columns)
    z, y, x = voxel_coords(columns["pos_um"], dx_um, decomp.shape, be)
    dest = owners(decomp, z, y, x, xp)
    if drop_dead:
        if "state" not in columns:
            raise ValueError("migrate(drop_dead=True) needs the 'state' column")
        dest[columns["state"] == np.uint8(R.TDEAD)] = -1
    me = comm.rank
    keep = xp.flatnonzero(dest == me)
    movers = xp.flatnonzero((dest >= 0) & (dest != me))
    movers = movers[xp.argsort(dest[movers], kind="stable")]
    to = dest[movers]
    bounds = xp.searchsorted(to, xp.arange(comm.size + 1))
    outgoing = {r: movers[int(bounds[r]):int(bounds[r + 1])] for r in range(comm.size)
                if r != me and bounds[r + 1] > bounds[r]}
    arrived = exchange_rows(comm, columns, names, outgoing, _TAG_MIGRATE, traffic, be)
    return assemble_rows(columns, keep, arrived, names, be)


def ghosts(comm, decomp: Decomposition, columns: dict, width: int, dx_um: float, *,
           traffic: Traffic | None = None, backend=None) -> dict:
    """Copies of the other ranks' T cells whose voxel lies in this rank's region
    (``decomposition.region(decomp, rank, width)``: faces, edges, corners, and boxes several away where
    boxes are thinner than ``width``), by ascending source rank. Every rank's ``columns`` must be its
    own cells (voxel in its box: call :func:`migrate` first). Own cells plus these, sorted with
    ``sort_by_voxel_uid`` in the region's frame, are the rows ``DistributedCells`` sends the rank.
    Collective."""
    _check(comm, decomp)
    width = int(width)
    if width < 0:
        raise ValueError(f"ghost width {width}: must be >= 0")
    be = _backend(backend)
    xp = be.xp
    names = _column_names(columns)
    z, y, x = voxel_coords(columns["pos_um"], dx_um, decomp.shape, be)
    box = decomp.box(comm.rank)
    stray = int(xp.count_nonzero(~_inside(z, y, x, box)))
    if stray:
        raise ValueError(f"ghosts: {stray} of rank {comm.rank}'s {z.shape[0]} T cells lie outside its box "
                         f"{box}: migrate them to their owners first")
    outgoing = ghost_sends(decomp, comm.rank, width, z, y, x, xp)
    arrived = exchange_rows(comm, columns, names, outgoing, _TAG_GHOSTS, traffic, be)
    return assemble_rows(columns, xp.zeros(0, dtype=xp.int64), arrived, names, be)
