"""Where new T cells appear: the initial population and T-cell infusions (host-side set-up).

A placement is a set of candidate voxels with free room (capacity minus T cells already there,
DESIGN.md rule 3). Every free slot (voxel, k) gets a Philox hash; the ``count`` slots with the
smallest (hash, voxel, k) are filled, so the choice is uniform over the free room, the same on every
backend and thread count, and never over capacity. Each new cell sits at a Philox-drawn point in the
middle 90 % of its voxel.

Placements (``tcells.placement``, ``events.<name>.placement``):

* ``tumor``: voxels holding a LIVE tumour cell;
* ``shell``: voxels whose centre lies ``shell_um = [inner, outer]`` outside the tumour surface,
  the surface being the sphere of the LIVE cells' volume around their centroid;
* ``uniform``: every voxel of the block;
* ``vessels``: vessel voxels.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

from gpusim import rng
from gpusim.agents import rules as R

log = logging.getLogger("gpusim")


class PlacementError(ValueError):
    """No room for any T cell where a placement asks for them (says where and what to change)."""


def tumor_extent(tumor_state: np.ndarray, dx_um: float):
    """(centre µm (z, y, x), radius µm) of the sphere with the LIVE cells' volume around their
    centroid; ``None`` without LIVE cells."""
    live = np.argwhere(tumor_state == R.LIVE)
    if live.shape[0] == 0:
        return None
    centre = (live.mean(axis=0) + 0.5) * dx_um
    radius = (3.0 * live.shape[0] / (4.0 * np.pi)) ** (1.0 / 3.0) * dx_um
    return centre, radius


def candidates(placement: str, shell_um, tumor_state: np.ndarray, vessel, dx_um: float) -> np.ndarray:
    """Global indices (int64, ascending) of the voxels a placement may use."""
    shape = tumor_state.shape
    if placement == "uniform":
        return np.arange(tumor_state.size, dtype=np.int64)
    if placement == "vessels":
        if vessel is None:
            raise PlacementError("placement 'vessels' needs a [vessels] section; add one or choose another "
                                 "placement ('tumor', 'shell', 'uniform')")
        return np.flatnonzero(vessel.reshape(-1) != 0).astype(np.int64)
    if placement == "tumor":
        return np.flatnonzero(tumor_state.reshape(-1) == R.LIVE).astype(np.int64)
    # shell
    ext = tumor_extent(tumor_state, dx_um)
    if ext is None:
        raise PlacementError("placement 'shell' is measured from the tumour surface, but there are no LIVE "
                             "tumour cells; add a [tumor] section or choose 'uniform' / 'vessels'")
    (cz, cy, cx), radius = ext
    z = (np.arange(shape[0]) + 0.5) * dx_um - cz
    y = (np.arange(shape[1]) + 0.5) * dx_um - cy
    x = (np.arange(shape[2]) + 0.5) * dx_um - cx
    d = np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2) - radius
    inside = (d >= shell_um[0]) & (d <= shell_um[1])
    return np.flatnonzero(inside.reshape(-1)).astype(np.int64)


@numba.njit(cache=True)
def _slot_hashes(voxels, free, seed, stream, salt, purpose, out_voxel, out_slot, out_hash):
    m = 0
    for a in range(voxels.shape[0]):
        v = voxels[a]
        for k in range(free[a]):
            h0, h1, _h2, _h3 = rng.philox_voxel(seed, stream, v, salt, purpose, k)
            out_voxel[m] = v
            out_slot[m] = k
            out_hash[m] = np.uint64(h0) | (np.uint64(h1) << np.uint64(32))
            m += 1
    return m


@numba.njit(cache=True)
def _jitter(voxels, slots, seed, stream, salt, purpose, ny, nx, dx, out):
    for a in range(voxels.shape[0]):
        v = voxels[a]
        z, y, x = R.split_voxel(v, ny, nx)
        _r0, r1, r2, r3 = rng.philox_voxel(seed, stream, v, salt, purpose, slots[a] + 1024)
        out[a, 0] = R.jitter(z, r1, dx)
        out[a, 1] = R.jitter(y, r2, dx)
        out[a, 2] = R.jitter(x, r3, dx)


def smallest_slots(h, voxel, slot, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest (hash, voxel, slot) keys, in that order: the first ``count``
    of ``np.lexsort((slot, voxel, h))``, found by a partition (O(n)) and a sort of the chosen only,
    so placing 10⁷ T cells among 10⁸ free slots does not sort 10⁸ keys."""
    n = h.shape[0]
    if count >= n:
        return np.lexsort((slot, voxel, h))
    if count <= 0:
        return np.zeros(0, np.int64)
    kth = np.partition(h, count - 1)[count - 1]
    below = np.flatnonzero(h < kth)
    tied = np.flatnonzero(h == kth)
    tied = tied[np.lexsort((slot[tied], voxel[tied]))][: count - below.shape[0]]
    chosen = np.concatenate((below, tied))
    return chosen[np.lexsort((slot[chosen], voxel[chosen], h[chosen]))]


def place(count: int, placement: str, shell_um, tumor_state: np.ndarray, vessel, occupancy: np.ndarray,
          cap: int, cap_tumor: int, dx_um: float, seed: int, stream: int, salt: int, purpose: int,
          what: str) -> np.ndarray:
    """float32 (m, 3) positions (µm, z y x) of up to ``count`` new T cells; m < count only when the
    placement has less free room, which is logged. ``occupancy`` holds the T cells already in each
    voxel (flat, int); ``salt`` makes two placements in one run draw differently."""
    shape = tumor_state.shape
    vox = candidates(placement, shell_um, tumor_state, vessel, dx_um)
    flat_state = tumor_state.reshape(-1)
    cap_of = np.where((flat_state[vox] == R.LIVE) | (flat_state[vox] == R.NECROTIC), cap_tumor, cap)
    free = np.maximum(cap_of - occupancy.reshape(-1)[vox], 0).astype(np.int64)
    total = int(free.sum())
    if total == 0:
        raise PlacementError(f"{what}: no free room for T cells with placement {placement!r} "
                             f"({vox.shape[0]} candidate voxels, all at capacity); raise tcells.max_per_voxel"
                             "/max_per_voxel_with_tumor or choose another placement")
    sv = np.empty(total, np.int64)
    ss = np.empty(total, np.int64)
    sh = np.empty(total, np.uint64)
    _slot_hashes(vox, free, np.uint64(seed), np.uint64(stream), np.int64(salt), np.int64(purpose), sv, ss, sh)
    order = smallest_slots(sh, sv, ss, int(count))
    if order.shape[0] < count:
        log.warning("%s: only %d of %d T cells fit with placement %r (the rest would exceed capacity)",
                    what, order.shape[0], count, placement)
    pos = np.empty((order.shape[0], 3), np.float32)
    _jitter(sv[order], ss[order], np.uint64(seed), np.uint64(stream), np.int64(salt), np.int64(purpose),
            np.int64(shape[1]), np.int64(shape[2]), np.float32(dx_um), pos)
    return pos
