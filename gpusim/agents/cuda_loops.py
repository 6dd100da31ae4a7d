"""numba.cuda kernels around the cell rules of :mod:`gpusim.agents.rules`: one thread per item.

Same function names and arguments as :mod:`gpusim.agents.cpu_loops`. Arrays are CuPy arrays (numba
reads them through ``__cuda_array_interface__``) or, under ``NUMBA_ENABLE_CUDASIM=1``, NumPy arrays.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from gpusim.agents import rules as R

_THREADS = 256


def _grid(n):
    return (max(1, -(-int(n) // _THREADS)),)


@cuda.jit
def _voxels(n, dx, nz, ny, nx, fr, pos, state, dead_bin, voxel):
    i = cuda.grid(1)
    if i < n:
        R.voxel_one(i, dx, nz, ny, nx, fr, pos, state, dead_bin, voxel)


@cuda.jit
def _sense(n, seed, step, p, uid, state, voxel, lfa1, function, target, hit, flags, prop, timer, div_timer,
          hit_mark, mg):
    i = cuda.grid(1)
    if i < n:
        R.tcell_sense_one(i, seed, step, p, uid, state, voxel, lfa1, function, target, hit, flags, prop, timer,
                          div_timer, hit_mark, mg)


@cuda.jit(device=True)
def _box_voxel(i, box, ny, nx):
    """(v, z, y, x) of the i-th voxel of box (z0, y0, x0, bz, by, bx), x fastest."""
    plane = box[4] * box[5]
    zi = i // plane
    r = i - zi * plane
    yi = r // box[5]
    z, y, x = box[0] + zi, box[1] + yi, box[2] + (r - yi * box[5])
    return (z * ny + y) * nx + x, z, y, x


@cuda.jit
def _tumor_fate(nbox, box, fr, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, offsets,
                state, target, hit, hit_mark, o2):
    i = cuda.grid(1)
    if i < nbox:
        v, z, y, x = _box_voxel(i, box, ny, nx)
        R.tumor_fate_one(v, R.global_voxel(z, y, x, fr), z, y, x, seed, step, p, nz, ny, nx, tumor, damage,
                         last_hit, since, event, offsets, state, target, hit, hit_mark, o2)


@cuda.jit
def _tumor_propose(nbox, box, fr, seed, step, p, nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg):
    i = cuda.grid(1)
    if i < nbox:
        v, z, y, x = _box_voxel(i, box, ny, nx)
        R.tumor_propose_one(v, R.global_voxel(z, y, x, fr), z, y, x, seed, step, p, nz, ny, nx, tumor, vessel,
                            counts, div_dir, o2, mg)


@cuda.jit
def _tumor_claim(nbox, box, fr, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, vessel,
                 div_dir, n_tumor):
    i = cuda.grid(1)
    if i < nbox:
        v, z, y, x = _box_voxel(i, box, ny, nx)
        R.tumor_claim_one(v, R.global_voxel(z, y, x, fr), z, y, x, seed, step, p, nz, ny, nx, fr[4], fr[5], tumor,
                          damage, last_hit, since, event, vessel, div_dir, n_tumor)


@cuda.jit
def _respond(n, seed, step, p, nz, ny, nx, fr, offsets, uid, state, voxel, pos, direction, lfa1, function,
             target, timer, kills, div_timer, hit, flags, prop, prio, pos_new, tumor, event, chem):
    i = cuda.grid(1)
    if i < n:
        R.tcell_respond_one(i, seed, step, p, nz, ny, nx, fr, offsets, uid, state, voxel, pos, direction, lfa1,
                            function, target, timer, kills, div_timer, hit, flags, prop, prio, pos_new,
                            tumor, event, chem)


@cuda.jit
def _accept(n, seed, step, p, nz, ny, nx, offsets, counts, uid, state, voxel, pos, div_timer, flags, prop,
            prio, pos_new, tumor):
    i = cuda.grid(1)
    if i < n:
        R.tcell_accept_one(i, seed, step, p, nz, ny, nx, offsets, counts, uid, state, voxel, pos, div_timer,
                           flags, prop, prio, pos_new, tumor)


@cuda.jit
def _recruit(m, seed, step, p, nz, ny, nx, fr, vessel_list, rate_scale, half_nM, offsets, counts, voxel, flags,
             prop, tumor, chem, out_pos, out_flag):
    k = cuda.grid(1)
    if k < m:
        R.recruit_one(k, seed, step, p, nz, ny, nx, fr, vessel_list, rate_scale, half_nM, offsets, counts,
                      voxel, flags, prop, tumor, chem, out_pos, out_flag)


def _launcher(kernel):
    def launch(n, *args):
        if int(n) > 0:
            kernel[_grid(n), _THREADS](n, *args)
    launch.__name__ = kernel.__name__.lstrip("_") if hasattr(kernel, "__name__") else "kernel"
    return launch


def _box_launcher(kernel):
    def launch(box, *args):
        n = int(box[3]) * int(box[4]) * int(box[5])
        if n > 0:
            kernel[_grid(n), _THREADS](np.int64(n), box, *args)
    return launch


voxels = _launcher(_voxels)
sense = _launcher(_sense)
tumor_fate = _box_launcher(_tumor_fate)
tumor_propose = _box_launcher(_tumor_propose)
tumor_claim = _box_launcher(_tumor_claim)
respond = _launcher(_respond)
accept = _launcher(_accept)
recruit = _launcher(_recruit)


def gather_rows(order, src, dst) -> None:
    """dst[i] = src[order[i]] for a 1D or (n, k) device column."""
    _xp(src).take(src, order, axis=0, out=dst)


def sort_order(voxel, uid, nbins):
    """(order, counts, offsets) of the canonical (voxel, uid) order over ``nbins`` bins on the device.

    uids are unique, so the (voxel, uid) order is one permutation whatever sort makes it: this
    lexsort gives exactly the permutation of the CPU counting sort.
    """
    xp = _xp(voxel)
    order = xp.lexsort(xp.stack((uid, voxel.astype(xp.uint64))))
    counts = xp.bincount(voxel, minlength=nbins).astype(xp.int32)
    offsets = xp.zeros(nbins + 1, dtype=xp.int64)
    offsets[1:] = xp.cumsum(counts, dtype=xp.int64)
    return order, counts, offsets


def _xp(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy
