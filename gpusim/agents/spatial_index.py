"""The T-cell spatial index: agents binned by voxel of the one grid (DESIGN.md §1, §2).

A T cell lives in the voxel ``floor(pos_um / dx_um)`` per axis (clamped into the grid), with global
index ``(z*ny + y)*nx + x``. After :func:`sort_by_voxel_uid` the agents of voxel v are the rows
``offsets[v]:offsets[v+1]`` in uid order, so rules gather from a voxel's 27 neighbours without
atomics and field reads coalesce (DESIGN.md §6).
"""

from __future__ import annotations

import numpy as np


def voxel_of(pos_um, dx_um, shape, xp=np):
    """int64 global voxel index of each position ``pos_um`` (n, 3) in µm, (z, y, x) order.

    The per-axis index is ``floor(pos / float32(dx_um))`` in float32 (an IEEE division: the same on
    every backend), clamped to [0, n_axis - 1], so an agent on or beyond a face counts in the face
    voxel. Positions must be finite. ``xp`` is the array module of ``pos_um``. The rules compute the
    same with :func:`gpusim.agents.rules.voxel_of_pos` (a test holds the two equal).
    """
    cell = xp.floor(pos_um / xp.float32(dx_um))
    nz, ny, nx = (int(v) for v in shape)
    iz = xp.clip(cell[:, 0], 0, nz - 1).astype(xp.int64)
    iy = xp.clip(cell[:, 1], 0, ny - 1).astype(xp.int64)
    ix = xp.clip(cell[:, 2], 0, nx - 1).astype(xp.int64)
    return (iz * ny + iy) * nx + ix


def sort_by_voxel_uid(store, dx_um, shape, drop_dead: bool = False, fr=None):
    """Permute every carried column of ``store`` into (voxel, uid) order; return ``(counts, offsets)``.

    The ``voxel`` column is filled from the positions (the rules' ``voxel_of_pos``). ``counts``
    (int32, one per voxel) is how many T cells sit in each voxel; ``offsets`` (int64, n_voxels + 1)
    is its exclusive cumulative sum, so voxel v holds rows ``offsets[v]:offsets[v+1]``. With
    ``drop_dead`` the DEAD agents go to a bin past the last voxel and are cut off the end: the sort
    is also the stable compaction (the survivors keep their (voxel, uid) order), in the same pass;
    ``store.removed`` says how many.

    ``fr`` (default: the whole grid) is the frame of a part of the grid held in arrays of ``shape``
    (the comment above ``rules.global_voxel``): voxels are then indexed in the part.

    Why this is deterministic on every backend: uids are unique (``check_unique``), so no two agents
    share a (voxel, uid) key and the sorted order of the keys is a single, fully determined
    permutation. The CPU's counting sort (stable by voxel, then uid within each voxel) and the GPU's
    lexsort therefore return the same permutation, and the store comes out bitwise identical
    whatever order its agents were in before.
    """
    kern = store.backend.kernels("agents")
    nz, ny, nx = (int(v) for v in shape)
    nvox = nz * ny * nx
    n = store.n
    nbins = nvox + 1 if drop_dead else nvox
    voxel = store.voxel
    fr = (np.int64(0), np.int64(0), np.int64(0), np.int64(nz), np.int64(ny), np.int64(nx)) if fr is None else fr
    kern.voxels(np.int64(n), np.float32(dx_um), np.int64(nz), np.int64(ny), np.int64(nx), fr, store.pos_um,
                store.state, np.int64(nvox if drop_dead else -1), voxel)
    order, counts, offsets = kern.sort_order(voxel, store.uid, nbins)
    store.permute(order)
    store.removed = 0
    if drop_dead:
        store.removed = int(counts[nvox])
        store.n -= store.removed
        counts, offsets = counts[:nvox], offsets[: nvox + 1]
    return counts, offsets


def write_counts(counts, n_tcell_u8) -> None:
    """Fill the uint8 per-voxel T-cell count array (any shape of n_voxels) from ``counts``,
    clamping at 255 (the uint8 limit; capacity rules keep real counts far below it)."""
    n_tcell_u8[...] = counts.clip(0, 255).astype(np.uint8).reshape(n_tcell_u8.shape)
