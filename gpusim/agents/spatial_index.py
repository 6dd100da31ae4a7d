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
    voxel. Positions must be finite. ``xp`` is the array module of ``pos_um``.
    """
    cell = xp.floor(pos_um / xp.float32(dx_um))
    nz, ny, nx = (int(v) for v in shape)
    iz = xp.clip(cell[:, 0], 0, nz - 1).astype(xp.int64)
    iy = xp.clip(cell[:, 1], 0, ny - 1).astype(xp.int64)
    ix = xp.clip(cell[:, 2], 0, nx - 1).astype(xp.int64)
    return (iz * ny + iy) * nx + ix


def sort_by_voxel_uid(store, dx_um, shape):
    """Permute every column of ``store`` into (voxel, uid) order; return ``(counts, offsets)``.

    ``counts`` (int32, one per voxel) is how many T cells sit in each voxel; ``offsets`` (int64,
    n_voxels + 1) is its exclusive cumulative sum, so voxel v holds rows
    ``offsets[v]:offsets[v+1]``.

    Why this is deterministic on every backend: uids are unique (``check_unique``), so no two agents
    share a (voxel, uid) key and the sorted order of the keys is a single, fully determined
    permutation. Any correct sort — numpy's or cupy's ``lexsort``, stable or not, at any thread
    count — therefore returns the same permutation, and the store comes out bitwise identical
    whatever order its agents were in before. (A stable sort by voxel alone would instead inherit
    the incoming order, which differs between backends and after appends.)
    """
    xp = store.backend.xp
    nvox = int(np.prod([int(v) for v in shape], dtype=np.int64))
    voxel = voxel_of(store.pos_um, dx_um, shape, xp=xp)
    # one uint64 key matrix (voxel >= 0 fits): mixing int64 and uint64 would promote to float64
    keys = xp.stack((store.uid, voxel.astype(xp.uint64)))
    order = xp.lexsort(keys)  # the last row (voxel) is the primary key
    store.permute(order)
    counts = xp.bincount(voxel, minlength=nvox).astype(xp.int32)  # order-free: integer counts
    offsets = xp.zeros(nvox + 1, dtype=xp.int64)
    offsets[1:] = xp.cumsum(counts, dtype=xp.int64)
    return counts, offsets


def write_counts(counts, n_tcell_u8) -> None:
    """Fill the uint8 per-voxel T-cell count array (any shape of n_voxels) from ``counts``,
    clamping at 255 (the uint8 limit; capacity rules keep real counts far below it)."""
    n_tcell_u8[...] = counts.clip(0, 255).astype(np.uint8).reshape(n_tcell_u8.shape)
