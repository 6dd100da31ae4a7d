"""Filling any box of the global grid from the ranks that hold it: the one primitive that moves grid
data between layouts (docs/owned_state.md, 'The one new primitive').

Every rank holds an array over its *source box* and wants an array over its *region*, which may be
any box of the grid (clipped to it), overlap other ranks' regions, or be empty. Each rank sends every
other rank the intersection of its source box with that rank's region, all in one exchange. Its uses:

- the transposes of the ``bitwise`` LOD mode (decomposition to decomposition: :meth:`Regions.between`);
- a rank's cell region, its box grown by the ghost width, read from the boxes of another layout;
- the operands of one layout from another (zero bytes where the two layouts agree);
- re-cutting boxes, the scatter of a whole grid from one rank (the others' source boxes empty) and
  the gather onto one rank (the reverse).

Values are copied, never combined, so a fill cannot change a bit. Source boxes must not overlap (each
voxel has one holder). Voxels of a region that no source box holds keep the value the output array
was given. Every rank computes the same plan from the same boxes, so empty intersections send and
receive nothing without being told.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decomposition import Box, Decomposition

__all__ = ["Regions", "intersect", "plan"]

_TAG = 300


def intersect(a: Box | None, b: Box | None) -> Box | None:
    """The overlap of two boxes as a Box, or None (also when either is None)."""
    if a is None or b is None:
        return None
    lo = tuple(max(p, q) for p, q in zip(a.offset, b.offset))
    hi = tuple(min(p, q) for p, q in zip(a.stop, b.stop))
    if any(h <= l for l, h in zip(lo, hi)):
        return None
    return Box(lo, tuple(h - l for l, h in zip(lo, hi)))


def local_slices(box: Box, part: Box) -> tuple:
    """``part`` (inside ``box``) as slices of an array holding ``box``."""
    return tuple(slice(p - o, p - o + n) for p, o, n in zip(part.offset, box.offset, part.shape))


def _nonempty(box: Box | None) -> Box | None:
    return None if box is None or any(n <= 0 for n in box.shape) else box


@dataclass(frozen=True)
class Plan:
    """What one rank does in a fill: the part of its source it copies to itself, and per peer rank
    the part it sends (of its source box) and the part it receives (of its region)."""

    own: Box | None
    sends: dict
    recvs: dict


def plan(src_boxes, dst_regions, rank: int) -> Plan:
    """The fill plan of ``rank`` (pure: every rank computes every rank's plan the same way). O(P) in
    the ranks: ``rank`` checks its own source box against the others' (every overlap is refused by
    the two ranks it involves; checking all pairs on every rank took 0.4 s a plan at 512 ranks)."""
    src = [_nonempty(b) for b in src_boxes]
    dst = [_nonempty(b) for b in dst_regions]
    if len(src) != len(dst):
        raise ValueError(f"Regions: {len(src)} source boxes but {len(dst)} regions (one of each per rank)")
    for j, b in enumerate(src):
        both = intersect(src[rank], b) if j != rank else None
        if both is not None:
            i, j = min(rank, j), max(rank, j)
            raise ValueError(f"Regions: the source boxes of ranks {i} and {j} overlap in {both}: "
                             "every voxel needs exactly one holder")
    sends = {r: p for r in range(len(src)) if r != rank and (p := intersect(src[rank], dst[r])) is not None}
    recvs = {r: p for r in range(len(src)) if r != rank and (p := intersect(src[r], dst[rank])) is not None}
    return Plan(intersect(src[rank], dst[rank]), sends, recvs)


class Regions:
    """Fill each rank's region (``dst_regions[rank]``, a Box or None) from the ranks' source boxes
    (``src_boxes[rank]``, a Box or None; not overlapping). The plan is computed once; :meth:`fill`
    moves one array (3D, or 3D with trailing axes) and may be called any number of times.
    ``bytes_sent`` and ``bytes_received`` count what this rank sent to and received from others."""

    def __init__(self, comm, src_boxes, dst_regions):
        src_boxes, dst_regions = list(src_boxes), list(dst_regions)
        if len(src_boxes) != comm.size or len(dst_regions) != comm.size:
            raise ValueError(f"Regions: need one source box and one region per rank ({comm.size}); got "
                             f"{len(src_boxes)} and {len(dst_regions)}")
        self.comm = comm
        self.src = src_boxes[comm.rank]
        self.dst = dst_regions[comm.rank]
        self.plan = plan(src_boxes, dst_regions, comm.rank)
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def between(cls, comm, src: Decomposition, dst: Decomposition) -> "Regions":
        """From one decomposition's boxes to another's (a redistribution)."""
        return cls(comm, src.boxes(), dst.boxes())

    @classmethod
    def scatter(cls, comm, decomp: Decomposition, root: int = 0) -> "Regions":
        """From the whole grid on ``root`` to every rank's box of ``decomp``."""
        whole = Box((0, 0, 0), tuple(decomp.shape))
        return cls(comm, [whole if r == root else None for r in range(comm.size)], decomp.boxes())

    @classmethod
    def gather(cls, comm, boxes, shape, root: int = 0) -> "Regions":
        """From every rank's box (``boxes``, a list, one per rank) to the whole grid on ``root``."""
        whole = Box((0, 0, 0), tuple(shape))
        return cls(comm, boxes, [whole if r == root else None for r in range(comm.size)])

    def fill(self, local, out=None, fill_value=0, tag: int = _TAG):
        """This rank's region as an array, from ``local`` (this rank's source box; ignored, and may be
        None, when the source box is None). ``out`` (over the region) is filled in place when given,
        else a new array of ``fill_value``; returns it (None when this rank has no region)."""
        src, dst, p = self.src, _nonempty(self.dst), self.plan
        if _nonempty(src) is not None:
            local = np.asarray(local)
            if local.shape[:3] != tuple(src.shape):
                raise ValueError(f"Regions.fill: the local array {local.shape} is not this rank's source box "
                                 f"{tuple(src.shape)}")
            dtype, tail = local.dtype, local.shape[3:]
        else:
            if out is None and dst is not None:
                raise ValueError("Regions.fill: a rank with no source box needs `out` to know the region's dtype")
            dtype, tail = (out.dtype, out.shape[3:]) if out is not None else (np.uint8, ())
        if dst is not None:
            if out is None:
                out = np.full(tuple(dst.shape) + tail, fill_value, dtype)
            elif out.shape[:3] != tuple(dst.shape):
                raise ValueError(f"Regions.fill: `out` {out.shape} is not this rank's region {tuple(dst.shape)}")
        sends = {r: np.ascontiguousarray(local[local_slices(src, part)]) for r, part in p.sends.items()}
        recvs = {r: np.empty(tuple(part.shape) + tail, dtype) for r, part in p.recvs.items()}
        if sends or recvs:
            self.comm.exchange(sends, recvs, tag)
        self.bytes_sent += sum(b.nbytes for b in sends.values())
        self.bytes_received += sum(b.nbytes for b in recvs.values())
        if p.own is not None:
            out[local_slices(dst, p.own)] = local[local_slices(src, p.own)]
        for r, part in p.recvs.items():
            out[local_slices(dst, part)] = recvs[r]
        return out if dst is not None else None

