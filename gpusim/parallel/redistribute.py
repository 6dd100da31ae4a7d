"""Moving a distributed grid from one decomposition to another (the transposes of the ``bitwise`` LOD
mode): every rank sends each other rank the part of its source box that lies in that rank's target
box. Values are copied, never combined, so a redistribution cannot change a bit.

The pairs are exchanged in ``size`` rounds, round k pairing rank r with r + k (send) and r - k
(receive), modulo the rank count: every rank is in exactly one send and one receive per round, so the
blocking sendrecv calls cannot deadlock. Empty intersections send nothing (both sides know they are
empty: every rank can compute every box).
"""

from __future__ import annotations

import numpy as np

from .decomposition import Box, Decomposition

__all__ = ["intersect", "redistribute"]

_TAG = 300


def intersect(a: Box, b: Box):
    """The overlap of two boxes as a Box, or None."""
    lo = tuple(max(p, q) for p, q in zip(a.offset, b.offset))
    hi = tuple(min(p, q) for p, q in zip(a.stop, b.stop))
    if any(h <= l for l, h in zip(lo, hi)):
        return None
    return Box(lo, tuple(h - l for l, h in zip(lo, hi)))


def _local(box: Box, part: Box) -> tuple:
    """``part`` (inside ``box``) as slices of an array holding ``box``."""
    return tuple(slice(p - o, p - o + n) for p, o, n in zip(part.offset, box.offset, part.shape))


def redistribute(comm, src: Decomposition, dst: Decomposition, local: np.ndarray) -> tuple:
    """(this rank's box of ``dst`` as a new array, bytes sent) from ``local``, this rank's box of
    ``src`` (no ghosts)."""
    me, size = comm.rank, comm.size
    mine_src, mine_dst = src.box(me), dst.box(me)
    if local.shape[:3] != mine_src.shape:
        raise ValueError(f"redistribute: local array {local.shape} is not this rank's box {mine_src.shape}")
    out = np.empty(mine_dst.shape + local.shape[3:], local.dtype)
    sent = 0
    for k in range(size):
        to, frm = (me + k) % size, (me - k) % size
        part_out = intersect(mine_src, dst.box(to))
        part_in = intersect(src.box(frm), mine_dst)
        if k == 0:
            if part_out is not None:
                out[_local(mine_dst, part_out)] = local[_local(mine_src, part_out)]
            continue
        send = (np.ascontiguousarray(local[_local(mine_src, part_out)]) if part_out is not None
                else np.empty(0, local.dtype))
        recv = np.empty((part_in.shape + local.shape[3:]) if part_in is not None else (0,), local.dtype)
        comm.sendrecv(send, to if part_out is not None else None, recv, frm if part_in is not None else None,
                      _TAG + k)
        if part_out is not None:
            sent += send.nbytes
        if part_in is not None:
            out[_local(mine_dst, part_in)] = recv
    return out, sent
