"""numba CPU loops around the cell rules of :mod:`gpusim.agents.rules`: one ``prange`` per phase.

The CUDA twin is :mod:`gpusim.agents.cuda_loops`, with the same function names and arguments; the
backend hands out one or the other (``backend.kernels("agents")``).
"""

from __future__ import annotations

import numba
import numpy as np

from gpusim.agents import rules as R


@numba.njit(parallel=True, cache=True)
def voxels(n, dx, nz, ny, nx, fr, pos, state, dead_bin, voxel):
    for i in numba.prange(n):
        R.voxel_one(i, dx, nz, ny, nx, fr, pos, state, dead_bin, voxel)


@numba.njit(parallel=True, cache=True)
def sense(n, seed, step, p, uid, state, voxel, lfa1, function, target, hit, flags, prop, timer, div_timer,
          hit_mark, mg):
    for i in numba.prange(n):
        R.tcell_sense_one(i, seed, step, p, uid, state, voxel, lfa1, function, target, hit, flags, prop, timer,
                          div_timer, hit_mark, mg)


# The lattice phases walk a box of the arrays (z0, y0, x0, bz, by, bx): the tumour's bounding box
# grown by one voxel, where every lattice event of a step can happen (cells.run_phases); ``fr`` is the
# arrays' frame in the global grid (the comment above rules.global_voxel), whose indices key the voxels' draws.
@numba.njit(parallel=True, cache=True)
def tumor_fate(box, fr, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, offsets, state,
               target, hit, hit_mark, o2):
    z0, y0, x0, bz, by, bx = box
    for zi in numba.prange(bz):
        z = z0 + zi
        for y in range(y0, y0 + by):
            for x in range(x0, x0 + bx):
                R.tumor_fate_one((z * ny + y) * nx + x, R.global_voxel(z, y, x, fr), z, y, x, seed, step, p,
                                 nz, ny, nx, tumor, damage, last_hit, since, event, offsets, state, target, hit,
                                 hit_mark, o2)


@numba.njit(parallel=True, cache=True)
def tumor_propose(box, fr, seed, step, p, nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg):
    z0, y0, x0, bz, by, bx = box
    for zi in numba.prange(bz):
        z = z0 + zi
        for y in range(y0, y0 + by):
            for x in range(x0, x0 + bx):
                R.tumor_propose_one((z * ny + y) * nx + x, R.global_voxel(z, y, x, fr), z, y, x, seed, step, p,
                                    nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg)


@numba.njit(parallel=True, cache=True)
def tumor_claim(box, fr, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, vessel, div_dir,
                n_tumor):
    z0, y0, x0, bz, by, bx = box
    for zi in numba.prange(bz):
        z = z0 + zi
        for y in range(y0, y0 + by):
            for x in range(x0, x0 + bx):
                R.tumor_claim_one((z * ny + y) * nx + x, R.global_voxel(z, y, x, fr), z, y, x, seed, step, p,
                                  nz, ny, nx, fr[4], fr[5], tumor, damage, last_hit, since, event, vessel, div_dir,
                                  n_tumor)


@numba.njit(parallel=True, cache=True)
def respond(n, seed, step, p, nz, ny, nx, fr, offsets, uid, state, voxel, pos, direction, lfa1, function,
            target, timer, kills, div_timer, hit, flags, prop, prio, pos_new, tumor, event, chem):
    for i in numba.prange(n):
        R.tcell_respond_one(i, seed, step, p, nz, ny, nx, fr, offsets, uid, state, voxel, pos, direction, lfa1,
                            function, target, timer, kills, div_timer, hit, flags, prop, prio, pos_new,
                            tumor, event, chem)


@numba.njit(parallel=True, cache=True)
def accept(n, seed, step, p, nz, ny, nx, offsets, counts, uid, state, voxel, pos, div_timer, flags, prop,
           prio, pos_new, tumor):
    for i in numba.prange(n):
        R.tcell_accept_one(i, seed, step, p, nz, ny, nx, offsets, counts, uid, state, voxel, pos, div_timer,
                           flags, prop, prio, pos_new, tumor)


@numba.njit(parallel=True, cache=True)
def recruit(m, seed, step, p, nz, ny, nx, fr, vessel_list, rate_scale, half_nM, offsets, counts, voxel, flags,
            prop, tumor, chem, out_pos, out_flag):
    for k in numba.prange(m):
        R.recruit_one(k, seed, step, p, nz, ny, nx, fr, vessel_list, rate_scale, half_nM, offsets, counts,
                      voxel, flags, prop, tumor, chem, out_pos, out_flag)


@numba.njit(parallel=True, cache=True)
def _gather_2d(order, src, dst):
    for i in numba.prange(order.shape[0]):
        j = order[i]
        for c in range(src.shape[1]):
            dst[i, c] = src[j, c]


def gather_rows(order, src, dst) -> None:
    """dst[i] = src[order[i]] for a 1D or (n, k) column (a parallel gather)."""
    if src.ndim == 1:
        _gather_2d(order, src.reshape(-1, 1), dst.reshape(-1, 1))
    else:
        _gather_2d(order, src, dst)


@numba.njit(cache=True)
def _counting_order(voxel, uid, counts, offsets, order):
    """Stable counting sort by voxel (serial: the scatter into ``order`` is in input order)."""
    n = voxel.shape[0]
    nvox = counts.shape[0]
    for v in range(nvox):
        counts[v] = 0
    for i in range(n):
        counts[voxel[i]] += 1
    offsets[0] = 0
    for v in range(nvox):
        offsets[v + 1] = offsets[v] + counts[v]
    fill = offsets[:-1].copy()
    for i in range(n):
        v = voxel[i]
        order[fill[v]] = i
        fill[v] += 1


@numba.njit(parallel=True, cache=True)
def _sort_segments(offsets, uid, order):
    """Each voxel's rows by uid (insertion sort: a voxel holds a few T cells); voxels in parallel."""
    for v in numba.prange(offsets.shape[0] - 1):
        lo = offsets[v]
        hi = offsets[v + 1]
        for a in range(lo + 1, hi):
            j = order[a]
            key = uid[j]
            b = a - 1
            while b >= lo and uid[order[b]] > key:
                order[b + 1] = order[b]
                b -= 1
            order[b + 1] = j


def sort_order(voxel, uid, nbins):
    """(order, counts, offsets) of the canonical (voxel, uid) order over ``nbins`` bins; O(n + bins)."""
    counts = np.empty(nbins, np.int32)
    offsets = np.empty(nbins + 1, np.int64)
    order = np.empty(voxel.shape[0], np.int64)
    _counting_order(voxel, uid, counts, offsets, order)
    _sort_segments(offsets, uid, order)
    return order, counts, offsets
