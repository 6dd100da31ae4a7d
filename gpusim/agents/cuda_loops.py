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
def _voxels(n, dx, nz, ny, nx, pos, voxel):
    i = cuda.grid(1)
    if i < n:
        R.voxel_one(i, dx, nz, ny, nx, pos, voxel)


@cuda.jit
def _sense(n, seed, step, p, uid, state, voxel, lfa1, function, hit, timer, div_timer, mg):
    i = cuda.grid(1)
    if i < n:
        R.tcell_sense_one(i, seed, step, p, uid, state, voxel, lfa1, function, hit, timer, div_timer, mg)


@cuda.jit
def _tumor_fate(nvox, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, offsets, state,
                target, hit, o2):
    v = cuda.grid(1)
    if v < nvox:
        R.tumor_fate_one(v, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, offsets,
                         state, target, hit, o2)


@cuda.jit
def _tumor_propose(nvox, seed, step, p, nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg):
    v = cuda.grid(1)
    if v < nvox:
        R.tumor_propose_one(v, seed, step, p, nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg)


@cuda.jit
def _tumor_claim(nvox, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, vessel, div_dir,
                 n_tumor):
    v = cuda.grid(1)
    if v < nvox:
        R.tumor_claim_one(v, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event, vessel,
                          div_dir, n_tumor)


@cuda.jit
def _respond(n, seed, step, p, nz, ny, nx, offsets, uid, state, voxel, pos, direction, lfa1, function,
             target, timer, kills, div_timer, hit, flags, prop, prio, pos_new, tumor, event, chem):
    i = cuda.grid(1)
    if i < n:
        R.tcell_respond_one(i, seed, step, p, nz, ny, nx, offsets, uid, state, voxel, pos, direction, lfa1,
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
def _recruit(m, seed, step, p, nz, ny, nx, vessel_list, rate_scale, half_nM, offsets, counts, voxel, flags,
             prop, tumor, chem, out_pos, out_flag):
    k = cuda.grid(1)
    if k < m:
        R.recruit_one(k, seed, step, p, nz, ny, nx, vessel_list, rate_scale, half_nM, offsets, counts,
                      voxel, flags, prop, tumor, chem, out_pos, out_flag)


def _launcher(kernel):
    def launch(n, *args):
        if int(n) > 0:
            kernel[_grid(n), _THREADS](n, *args)
    launch.__name__ = kernel.__name__.lstrip("_") if hasattr(kernel, "__name__") else "kernel"
    return launch


voxels = _launcher(_voxels)
sense = _launcher(_sense)
tumor_fate = _launcher(_tumor_fate)
tumor_propose = _launcher(_tumor_propose)
tumor_claim = _launcher(_tumor_claim)
respond = _launcher(_respond)
accept = _launcher(_accept)
recruit = _launcher(_recruit)


def gather_rows(order, src, dst) -> None:
    """dst[i] = src[order[i]] for a 1D or (n, k) device column."""
    _xp(src).take(src, order, axis=0, out=dst)


def sort_order(voxel, uid, nvox):
    """(order, counts, offsets) of the canonical (voxel, uid) order on the device.

    uids are unique, so the (voxel, uid) order is one permutation whatever sort makes it: this
    lexsort gives exactly the permutation of the CPU counting sort.
    """
    xp = _xp(voxel)
    order = xp.lexsort(xp.stack((uid, voxel.astype(xp.uint64))))
    counts = xp.bincount(voxel, minlength=nvox).astype(xp.int32)
    offsets = xp.zeros(nvox + 1, dtype=xp.int64)
    offsets[1:] = xp.cumsum(counts, dtype=xp.int64)
    return order, counts, offsets


def _xp(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy
