"""Domain decomposition: the global voxel grid split into a 3D process grid of boxes (DESIGN.md §2).

    d = Decomposition((64, 48, 40), n_ranks=4)         # process grid chosen to minimise the cut surface
    d.ranks_zyx                                        # (2, 2, 1)
    d.box(3)                                           # Box(offset=(32, 24, 0), shape=(32, 24, 40))
    d.neighbour(3, axis=0, side=-1)                    # rank 1 (below in z), None at a global face

Ranks are numbered in C order over the process grid, ``rank = (cz * py + cy) * px + cx``. Along each
axis the voxels are dealt out in contiguous runs whose lengths differ by at most one, the longer runs
first (``split``); with ``align`` the runs are whole multiples of it (the run store's shard shape), the
last taking the remainder. Nothing here talks to MPI: the same object, built on every rank from the
same arguments, tells every rank every box.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["Box", "Decomposition", "balanced_runs", "choose_process_grid", "region", "split"]


@dataclass(frozen=True)
class Box:
    """A rank's voxels: ``offset`` (z, y, x) of its first voxel in the global grid and ``shape``."""

    offset: tuple
    shape: tuple

    @property
    def stop(self) -> tuple:
        return tuple(o + n for o, n in zip(self.offset, self.shape))

    @property
    def slices(self) -> tuple:
        """The box as slices of a global array."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.shape))

    @property
    def n_voxels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    def contains(self, z: int, y: int, x: int) -> bool:
        return all(o <= v < o + n for v, o, n in zip((z, y, x), self.offset, self.shape))


def split(n: int, p: int, align: int = 1) -> list:
    """``(start, length)`` of ``p`` contiguous runs covering ``range(n)``: lengths differ by at most one
    (longer first); with ``align`` > 1 every run but the last is a multiple of ``align``."""
    if p < 1 or n < p:
        raise ValueError(f"cannot split {n} voxels into {p} runs: need 1 <= ranks <= voxels on the axis")
    if align > 1:
        blocks = -(-n // align)
        if blocks < p:
            raise ValueError(f"cannot split {n} voxels into {p} runs of whole {align}-voxel blocks "
                             f"({blocks} blocks): use fewer ranks on this axis or a smaller shard shape")
        runs = [(b0 * align, min(nb * align, n - b0 * align)) for b0, nb in split(blocks, p)]
        return runs
    base, extra = divmod(n, p)
    out, start = [], 0
    for i in range(p):
        length = base + (1 if i < extra else 0)
        out.append((start, length))
        start += length
    return out


def balanced_runs(weights, p: int) -> list:
    """``(start, length)`` of ``p`` contiguous runs over ``len(weights)`` voxels, each holding about
    1/p of the total weight: the k-th cut is the first voxel where the cumulative weight reaches k/p
    of it, moved so every run keeps at least one voxel. Equal runs (:func:`split`) when the weight is 0."""
    w = np.asarray(weights, np.float64)
    n = w.shape[0]
    total = float(w.sum())
    if total <= 0.0:
        return split(n, p)
    cum = np.cumsum(w)
    cuts = [0]
    for k in range(1, p):
        c = int(np.searchsorted(cum, total * k / p, side="left")) + 1  # the run ends after that voxel
        cuts.append(min(max(c, cuts[-1] + 1), n - (p - k)))
    cuts.append(n)
    return [(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]


def _factorisations(n_ranks: int):
    for pz in range(1, n_ranks + 1):
        if n_ranks % pz:
            continue
        rest = n_ranks // pz
        for py in range(1, rest + 1):
            if rest % py == 0:
                yield pz, py, rest // py


def choose_process_grid(n_ranks: int, shape) -> tuple:
    """The process grid (pz, py, px) with ``pz * py * px == n_ranks`` and each ``p <= n`` on its axis
    that minimises the total area of the cuts between boxes, sum_a (p_a - 1) * N / n_a (the voxels on
    the faces a halo exchange moves). Ties go to more ranks on z, then on y (slabs along the slowest
    axis keep each box's rows contiguous)."""
    nz, ny, nx = (int(n) for n in shape)
    total = nz * ny * nx
    best = None
    for p in _factorisations(int(n_ranks)):
        if any(pa > na for pa, na in zip(p, (nz, ny, nx))):
            continue
        cut = sum((pa - 1) * (total // na) for pa, na in zip(p, (nz, ny, nx)))
        key = (cut, -p[0], -p[1])
        if best is None or key < best[0]:
            best = (key, p)
    if best is None:
        raise ValueError(f"{n_ranks} ranks cannot split a {nz} x {ny} x {nx} grid (each axis needs at least "
                         "as many voxels as ranks on it): use fewer ranks or a larger grid")
    return best[1]


class Decomposition:
    """The boxes of ``n_ranks`` ranks over a grid of ``shape`` (see the module docstring)."""

    def __init__(self, shape, n_ranks: int | None = None, ranks_zyx=None, align=(1, 1, 1)):
        self.shape = tuple(int(n) for n in shape)
        if ranks_zyx is None:
            if n_ranks is None:
                raise ValueError("give n_ranks or ranks_zyx")
            ranks_zyx = choose_process_grid(n_ranks, self.shape)
        self.ranks_zyx = tuple(int(p) for p in ranks_zyx)
        if n_ranks is not None and self.n_ranks != int(n_ranks):
            raise ValueError(f"parallel.ranks_zyx = {list(self.ranks_zyx)} makes {self.n_ranks} ranks but the "
                             f"run has {n_ranks}: make their product equal to the MPI rank count")
        if any(p < 1 for p in self.ranks_zyx):
            raise ValueError(f"parallel.ranks_zyx = {list(self.ranks_zyx)}: each must be >= 1")
        self.runs = [split(n, p, a) for n, p, a in zip(self.shape, self.ranks_zyx, align)]

    @classmethod
    def from_runs(cls, shape, runs) -> "Decomposition":
        """The decomposition whose boxes are the products of ``runs`` (per axis, ``(start, length)``
        runs tiling the axis in order), e.g. from :func:`balanced_runs`."""
        d = cls(shape, ranks_zyx=tuple(len(r) for r in runs))
        for n, axis_runs in zip(d.shape, runs):
            starts = [int(s) for s, _ in axis_runs]
            stops = [int(s) + int(m) for s, m in axis_runs]
            if starts[0] != 0 or stops[-1] != n or starts[1:] != stops[:-1] or min(m for _, m in axis_runs) < 1:
                raise ValueError(f"runs {axis_runs} do not tile an axis of {n} voxels")
        d.runs = [[(int(s), int(m)) for s, m in axis_runs] for axis_runs in runs]
        return d

    @property
    def n_ranks(self) -> int:
        pz, py, px = self.ranks_zyx
        return pz * py * px

    def coords(self, rank: int) -> tuple:
        """(cz, cy, cx) of ``rank`` in the process grid."""
        pz, py, px = self.ranks_zyx
        if not 0 <= rank < self.n_ranks:
            raise ValueError(f"rank {rank}: the decomposition has ranks 0..{self.n_ranks - 1}")
        return rank // (py * px), (rank // px) % py, rank % px

    def rank_of(self, coords) -> int:
        pz, py, px = self.ranks_zyx
        cz, cy, cx = coords
        return (cz * py + cy) * px + cx

    def box(self, rank: int) -> Box:
        c = self.coords(rank)
        runs = [self.runs[a][c[a]] for a in range(3)]
        return Box(tuple(r[0] for r in runs), tuple(r[1] for r in runs))

    def boxes(self) -> list:
        return [self.box(r) for r in range(self.n_ranks)]

    def neighbour(self, rank: int, axis: int, side: int):
        """The rank across the face of ``rank``'s box on ``axis`` (side -1: lower, +1: upper), or None
        at a face of the global grid (the boundary conditions apply there)."""
        c = list(self.coords(rank))
        c[axis] += side
        if not 0 <= c[axis] < self.ranks_zyx[axis]:
            return None
        return self.rank_of(c)

    def owner(self, z: int, y: int, x: int) -> int:
        """The rank whose box holds global voxel (z, y, x)."""
        c = []
        for a, v in enumerate((z, y, x)):
            if not 0 <= v < self.shape[a]:
                raise ValueError(f"voxel {(z, y, x)} is outside the {self.shape} grid")
            c.append(next(i for i, (s, n) in enumerate(self.runs[a]) if s <= v < s + n))
        return self.rank_of(c)

    def ghosts(self, rank: int, width: int = 1) -> tuple:
        """((lo, hi) per axis): ghost layers of ``rank``'s local array, ``width`` where a neighbour lies
        across the face, 0 at a global face."""
        return tuple(tuple(width if self.neighbour(rank, a, s) is not None else 0 for s in (-1, 1))
                     for a in range(3))

    def cut_voxels(self) -> int:
        """Voxels on one side of all cuts between boxes (one halo layer's worth, summed over ranks)."""
        total = 0
        for r, a in itertools.product(range(self.n_ranks), range(3)):
            b = self.box(r)
            if self.neighbour(r, a, 1) is not None:
                total += b.n_voxels // b.shape[a]
        return total

    def __repr__(self) -> str:
        return f"Decomposition(shape={self.shape}, ranks_zyx={self.ranks_zyx})"


def region(decomp: Decomposition, rank: int, width: int) -> Box:
    """``rank``'s box grown by ``width`` voxels (``parallel.cells.ghost_width``: the T cells a rank gets) on
    every side, clipped to the grid; one voxel more for the lattice and fields: ``width + 1``."""
    width = int(width)
    b = decomp.box(rank)
    lo = [max(0, o - width) for o in b.offset]
    hi = [min(n, s + width) for n, s in zip(decomp.shape, b.stop)]
    return Box(tuple(lo), tuple(h - l for l, h in zip(lo, hi)))
