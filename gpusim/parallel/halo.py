"""Halo exchange of box-local arrays with ghost layers, and the gather/scatter of whole grids.

A rank's local array is its box plus ``width`` ghost layers on each face that has a neighbour (none on
a face of the global grid: the boundary conditions apply there), see ``Decomposition.ghosts``. One
exchange goes axis by axis (z, then y, then x); each axis sends the box's outermost interior layers
across both faces with the full extent of the other two axes, ghosts included, so that after the three
passes the edge and corner ghosts hold their diagonal neighbours' voxels too (the 26-neighbourhood).
Every value is copied, never combined: the exchange cannot change a bit.
"""

from __future__ import annotations

import numpy as np

from .decomposition import Decomposition

__all__ = ["Halo", "gather", "scatter", "scatter_box"]

_TAG_HALO = 100
_TAG_GATHER = 200


class Halo:
    """Ghost-layer bookkeeping and exchange for one rank (``comm.rank``) of ``decomp``."""

    def __init__(self, comm, decomp: Decomposition, width: int = 1):
        self.comm, self.decomp, self.width = comm, decomp, int(width)
        self.rank = comm.rank
        self.box = decomp.box(self.rank)
        self.ghosts = decomp.ghosts(self.rank, self.width)
        self.bytes_sent = 0  # by exchange(), for the message-volume report

    @property
    def local_shape(self) -> tuple:
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.box.shape, self.ghosts))

    @property
    def interior(self) -> tuple:
        """Slices of the local array that are this rank's own voxels."""
        return tuple(slice(lo, lo + n) for n, (lo, _hi) in zip(self.box.shape, self.ghosts))

    def local_from_global(self, a: np.ndarray) -> np.ndarray:
        """This rank's local array (box plus ghosts) cut from a whole-grid array every rank holds."""
        sl = tuple(slice(o - lo, o + n + hi) for o, n, (lo, hi) in zip(self.box.offset, self.box.shape, self.ghosts))
        return np.ascontiguousarray(a[sl])

    def exchange(self, a: np.ndarray) -> None:
        """Fill ``a``'s ghost layers (a local array of ``local_shape``) from the neighbours' boxes."""
        if a.shape[:3] != self.local_shape:
            raise ValueError(f"halo exchange of a {a.shape} array; this rank's local shape is {self.local_shape}")
        w = self.width
        for axis in range(3):
            lo_nb = self.decomp.neighbour(self.rank, axis, -1)
            hi_nb = self.decomp.neighbour(self.rank, axis, +1)
            if lo_nb is None and hi_nb is None:
                continue
            lo_g, hi_g = self.ghosts[axis]
            n = a.shape[axis]
            # upwards: my top interior layers to hi_nb, my lower ghosts from lo_nb; then downwards
            for send_sl, dest, recv_sl, source, tag in (
                    (slice(n - hi_g - w, n - hi_g), hi_nb, slice(0, lo_g), lo_nb, _TAG_HALO + 2 * axis),
                    (slice(lo_g, lo_g + w), lo_nb, slice(n - hi_g, n), hi_nb, _TAG_HALO + 2 * axis + 1)):
                send = np.ascontiguousarray(_take(a, axis, send_sl)) if dest is not None else _empty(a, axis, w)
                recv = _empty(a, axis, w)
                self.comm.sendrecv(send, dest, recv, source, tag)
                if dest is not None:
                    self.bytes_sent += send.nbytes
                if source is not None:
                    _put(a, axis, recv_sl, recv)


def _take(a, axis, sl):
    idx = [slice(None)] * a.ndim
    idx[axis] = sl
    return a[tuple(idx)]


def _put(a, axis, sl, values):
    idx = [slice(None)] * a.ndim
    idx[axis] = sl
    a[tuple(idx)] = values


def _empty(a, axis, w):
    shape = list(a.shape)
    shape[axis] = w
    return np.empty(shape, a.dtype)


def gather(comm, decomp: Decomposition, interior: np.ndarray, root: int = 0):
    """The whole grid on ``root`` from every rank's ``interior`` (its box, no ghosts); None elsewhere."""
    if comm.size == 1:
        return np.array(interior, copy=True)
    if comm.rank != root:
        comm.send(np.ascontiguousarray(interior), root, _TAG_GATHER)
        return None
    out = np.empty(decomp.shape + tuple(interior.shape[3:]), interior.dtype)
    for r, box in enumerate(decomp.boxes()):
        if r == root:
            out[box.slices] = interior
        else:
            buf = np.empty(box.shape + tuple(interior.shape[3:]), interior.dtype)
            comm.recv(buf, r, _TAG_GATHER)
            out[box.slices] = buf
    return out


def scatter(comm, halo: Halo, whole: np.ndarray | None, root: int = 0) -> np.ndarray:
    """This rank's local array (box plus ghosts, ghosts filled) from a whole grid held on ``root``."""
    decomp = halo.decomp
    if comm.size == 1:
        return np.ascontiguousarray(whole)
    dtype = np.dtype(comm.bcast_json(None if whole is None else np.dtype(whole.dtype).str, root))
    if comm.rank == root:
        for r, box in enumerate(decomp.boxes()):
            if r != root:
                comm.send(np.ascontiguousarray(whole[box.slices]), r, _TAG_GATHER + 1)
        mine = np.ascontiguousarray(whole[halo.box.slices])
    else:
        mine = np.empty(halo.box.shape, dtype)
        comm.recv(mine, root, _TAG_GATHER + 1)
    local = np.zeros(halo.local_shape, mine.dtype)
    local[halo.interior] = mine
    halo.exchange(local)
    return local


def scatter_box(comm, decomp: Decomposition, whole: np.ndarray | None, dtype, root: int = 0) -> np.ndarray:
    """This rank's box of ``decomp`` (no ghosts) cut from a whole grid held on ``root``; ``dtype``
    is the array's, known to every rank (no message to agree on it)."""
    if comm.size == 1:
        return np.ascontiguousarray(whole)
    if comm.rank == root:
        for r, box in enumerate(decomp.boxes()):
            if r != root:
                comm.send(np.ascontiguousarray(whole[box.slices]), r, _TAG_GATHER + 2)
        return np.ascontiguousarray(whole[decomp.box(root).slices])
    mine = np.empty(decomp.box(comm.rank).shape, dtype)
    comm.recv(mine, root, _TAG_GATHER + 2)
    return mine
