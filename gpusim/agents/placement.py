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


def extent_from_sums(n_live: int, sums, dx_um: float):
    """(centre µm (z, y, x), radius µm) of the sphere with the volume of ``n_live`` LIVE cells around
    their centroid, from the sums of their (z, y, x) indices (int, exact: what MPI ranks add up);
    ``None`` without LIVE cells."""
    if n_live == 0:
        return None
    # float64(sum) / n is np.mean of the indices bit for bit (their sums are exact below 2**53)
    centre = (np.asarray(sums, np.int64).astype(np.float64) / n_live + 0.5) * dx_um
    radius = (3.0 * n_live / (4.0 * np.pi)) ** (1.0 / 3.0) * dx_um
    return centre, radius


def live_sums(tumor_state: np.ndarray, offset=(0, 0, 0)) -> np.ndarray:
    """[n, Σz, Σy, Σx] (int64) of the LIVE cells of a block of the lattice at ``offset``: they add up
    over the blocks of a grid (:func:`extent_from_sums`)."""
    live = np.argwhere(tumor_state == R.LIVE)
    n = live.shape[0]
    return np.concatenate(([n], live.sum(axis=0) + n * np.asarray(offset, np.int64))).astype(np.int64)


def tumor_extent(tumor_state: np.ndarray, dx_um: float):
    """(centre µm (z, y, x), radius µm) of the sphere with the LIVE cells' volume around their
    centroid; ``None`` without LIVE cells."""
    sums = live_sums(tumor_state)
    return extent_from_sums(int(sums[0]), sums[1:], dx_um)


def candidates(placement: str, shell_um, tumor_state: np.ndarray, vessel, dx_um: float, offset=(0, 0, 0),
               extent=None) -> np.ndarray:
    """Indices (int64, ascending) into the flattened ``tumor_state`` of the voxels a placement may
    use. ``tumor_state`` and ``vessel`` are the whole grid or (an MPI rank's) block of it at voxel
    ``offset``; a block's ``shell`` needs the whole tumour's ``extent`` (:func:`extent_from_sums`)."""
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
    ext = extent if extent is not None else tumor_extent(tumor_state, dx_um)
    if ext is None:
        raise PlacementError("placement 'shell' is measured from the tumour surface, but there are no LIVE "
                             "tumour cells; add a [tumor] section or choose 'uniform' / 'vessels'")
    (cz, cy, cx), radius = ext
    z = (np.arange(offset[0], offset[0] + shape[0]) + 0.5) * dx_um - cz
    y = (np.arange(offset[1], offset[1] + shape[1]) + 0.5) * dx_um - cy
    x = (np.arange(offset[2], offset[2] + shape[2]) + 0.5) * dx_um - cx
    d = np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2) - radius
    inside = (d >= shell_um[0]) & (d <= shell_um[1])
    return np.flatnonzero(inside.reshape(-1)).astype(np.int64)


def free_room(local, tumor_state, occupancy, cap: int, cap_tumor: int) -> np.ndarray:
    """Free T-cell slots (int64) of the voxels ``local`` (indices into the flattened block): capacity
    (``cap_tumor`` where the lattice holds a LIVE or NECROTIC cell) minus the T cells already there."""
    flat_state = tumor_state.reshape(-1)
    cap_of = np.where((flat_state[local] == R.LIVE) | (flat_state[local] == R.NECROTIC), cap_tumor, cap)
    return np.maximum(cap_of - occupancy.reshape(-1)[local], 0).astype(np.int64)


def no_room(what: str, placement: str, n_candidates: int) -> PlacementError:
    return PlacementError(f"{what}: no free room for T cells with placement {placement!r} "
                          f"({n_candidates} candidate voxels, all at capacity); raise tcells.max_per_voxel"
                          "/max_per_voxel_with_tumor or choose another placement")


def warn_short(what: str, placed: int, count: int, placement: str) -> None:
    if placed < count:
        log.warning("%s: only %d of %d T cells fit with placement %r (the rest would exceed capacity)",
                    what, placed, count, placement)


def slot_keys(voxels, free, seed: int, stream: int, salt: int, purpose: int):
    """Every free slot (voxel, k) of the global ``voxels`` (``free`` slots each) and its Philox hash:
    (voxel int64, slot int64, hash uint64) arrays, voxel by voxel."""
    total = int(free.sum())
    sv = np.empty(total, np.int64)
    ss = np.empty(total, np.int64)
    sh = np.empty(total, np.uint64)
    _slot_hashes(voxels, free, np.uint64(seed), np.uint64(stream), np.int64(salt), np.int64(purpose), sv, ss, sh)
    return sv, ss, sh


def positions(voxels, slots, shape, dx_um: float, seed: int, stream: int, salt: int, purpose: int) -> np.ndarray:
    """float32 (m, 3) positions (µm, z y x) of the T cells filling slots (``voxels``, ``slots``)."""
    pos = np.empty((voxels.shape[0], 3), np.float32)
    _jitter(voxels, slots, np.uint64(seed), np.uint64(stream), np.int64(salt), np.int64(purpose),
            np.int64(shape[1]), np.int64(shape[2]), np.float32(dx_um), pos)
    return pos


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
    free = free_room(vox, tumor_state, occupancy, cap, cap_tumor)
    if int(free.sum()) == 0:
        raise no_room(what, placement, vox.shape[0])
    sv, ss, sh = slot_keys(vox, free, seed, stream, salt, purpose)
    order = smallest_slots(sh, sv, ss, int(count))
    warn_short(what, order.shape[0], count, placement)
    return positions(sv[order], ss[order], shape, dx_um, seed, stream, salt, purpose)
