"""T-cell infusions placed by the ranks that hold the lattice and the T cells (issue 6, item 4:
"therapy events placed by global coordinates"), the one-process placement bit for bit.

One process (``agents.placement.place``) hashes every free slot (voxel, k) of the candidate voxels,
fills the ``count`` slots with the smallest (hash, voxel, k) keys, and the i-th of them in key order
becomes the T cell with uid ``uid_infused(event, i)``. The ranks hold the candidate voxels of their
boxes, so each hashes its own free slots (the same Philox hashes: they depend on the global voxel
and k only) and then, collectively:

1. **Select** (:func:`select_smallest`): the global ``count`` smallest keys are among the union of
   each rank's ``count`` smallest; a bisection over the 64-bit hash (one all-reduce of a count per
   halving, 64 at most) finds the count-th smallest hash ``t``; the keys below ``t`` are taken, and
   of those equal to ``t`` (almost always exactly the one needed; a true 64-bit tie otherwise) the
   first by (voxel, k), every rank seeing the few tied keys.
2. **Number** (:func:`placement_order`): each chosen key's position i in the key order. The chosen
   hashes are spread evenly over ``[0, t]``, so rank q takes the keys in the q-th of P equal ranges
   of it, sorts them, and numbers them from the sum of the lower ranges' counts; the numbers go back
   to the ranks that hold the keys (one exchange each way, 24 and 8 bytes a key).

The shell placement measures from the whole tumour's surface: its centroid and volume come from the
ranks' exact integer sums of the LIVE cells' indices (``agents.placement.live_sums``). Nothing is
gathered on rank 0: an infusion costs each rank its share of the new T cells, not a gather and a
re-scatter of every T cell.
"""

from __future__ import annotations

import numpy as np

from .. import rng
from ..agents.placement import (candidates, extent_from_sums, free_room, live_sums, no_room, positions,
                                slot_keys, smallest_slots, warn_short)

__all__ = ["infuse", "infusion_header", "place_on_ranks", "placement_order", "select_smallest"]

_TAG = 430  # + 0: keys to their range's rank; + 1: their numbers back


def _sum(comm, values) -> np.ndarray:
    return np.asarray(comm.allreduce_sum(np.asarray(values, np.int64).reshape(-1)), np.int64)


def select_smallest(comm, h, voxel, slot, count: int) -> np.ndarray:
    """Collective: indices into this rank's keys (``h`` uint64, ``voxel``, ``slot``) of those among
    the ``count`` smallest (hash, voxel, slot) keys of all ranks, in key order (module docstring)."""
    order = smallest_slots(h, voxel, slot, min(int(count), h.shape[0]))
    total = int(_sum(comm, [h.shape[0]])[0])
    if count >= total:
        return order
    hk = h[order]
    lo, hi = 0, 2**64 - 1  # the smallest t with #(h <= t) >= count over the ranks
    while lo < hi:
        mid = (lo + hi) // 2
        if int(_sum(comm, [np.searchsorted(hk, np.uint64(mid), side="right")])[0]) >= count:
            hi = mid
        else:
            lo = mid + 1
    t = np.uint64(lo)
    below, upto = int(np.searchsorted(hk, t, side="left")), int(np.searchsorted(hk, t, side="right"))
    n_below, n_tied = (int(v) for v in _sum(comm, [below, upto - below]))
    need = count - n_below
    if n_tied == need:
        return order[:upto]
    # a true tie of 64-bit hashes at the threshold: every rank sees the tied (voxel, slot) keys
    mine = [[int(v), int(s)] for v, s in zip(voxel[order[below:upto]], slot[order[below:upto]])]
    tied = sorted(k for r in range(comm.size) for k in comm.bcast_json(mine if comm.rank == r else None, root=r))
    taken = {tuple(k) for k in tied[:need]}
    keep = [i for i, k in zip(order[below:upto], mine) if tuple(k) in taken]
    return np.concatenate((order[:below], np.asarray(keep, np.int64)))


def placement_order(comm, h, voxel, slot) -> np.ndarray:
    """Collective: the position (int64) of each of this rank's keys (in key order) in the key order of
    all ranks' keys together (module docstring, step 2)."""
    n = h.shape[0]
    hmax = int(np.asarray(comm.allreduce_max(np.array([h[-1] if n else 0], np.uint64)), np.uint64).reshape(-1)[0])
    size, rank = comm.size, comm.rank
    bounds = np.array([(hmax + 1) * q // size for q in range(1, size)], np.uint64)
    dest = np.searchsorted(bounds, h, side="right")  # non-decreasing: h is sorted
    counts = np.bincount(dest, minlength=size).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)))
    keys = np.stack((h.view(np.int64), voxel.astype(np.int64), slot.astype(np.int64)), axis=1)
    incoming = np.asarray(comm.alltoall(counts), np.int64)
    sends = {q: np.ascontiguousarray(keys[starts[q]:starts[q + 1]]) for q in range(size) if q != rank and counts[q]}
    recvs = {s: np.empty((int(incoming[s]), 3), np.int64) for s in range(size) if s != rank and incoming[s]}
    comm.exchange(sends, recvs, _TAG)
    parts = [keys[starts[rank]:starts[rank + 1]] if s == rank else recvs.get(s, np.zeros((0, 3), np.int64))
             for s in range(size)]
    held = np.concatenate(parts)
    order = np.lexsort((held[:, 2], held[:, 1], held[:, 0].view(np.uint64)))
    share = np.zeros(size, np.int64)
    share[rank] = held.shape[0]
    first = int(_sum(comm, share)[:rank].sum())
    number = np.empty(held.shape[0], np.int64)
    number[order] = first + np.arange(held.shape[0], dtype=np.int64)
    at = np.concatenate(([0], np.cumsum([p.shape[0] for p in parts])))
    back = {s: np.ascontiguousarray(number[at[s]:at[s + 1]]) for s in recvs}
    got = {q: np.empty(int(counts[q]), np.int64) for q in sends}
    comm.exchange(back, got, _TAG + 1)
    out = np.empty(n, np.int64)
    for q in range(size):
        out[starts[q]:starts[q + 1]] = number[at[q]:at[q + 1]] if q == rank else got.get(q, out[:0])
    return out


def place_on_ranks(comm, count: int, placement: str, shell_um, tumor_state, vessel, occupancy, offset, shape,
                   cap: int, cap_tumor: int, dx_um: float, seed: int, stream: int, salt: int, purpose: int,
                   what: str):
    """Collective: this rank's part of ``agents.placement.place`` over the whole grid, from its box
    (``tumor_state``, ``vessel`` and ``occupancy`` over the box at voxel ``offset`` of a grid of
    ``shape``). Returns the new T cells' positions (float32 (m, 3)), their positions in the
    one-process placement order (int64 (m,): the i of their uids) and the number placed on all
    ranks. No free room anywhere raises the one-process PlacementError on every rank."""
    extent = None
    if placement == "shell":
        sums = _sum(comm, live_sums(tumor_state, offset))
        extent = extent_from_sums(int(sums[0]), sums[1:], dx_um)
    local = candidates(placement, shell_um, tumor_state, vessel, dx_um, offset=offset, extent=extent)
    free = free_room(local, tumor_state, occupancy, cap, cap_tumor)
    n_candidates, total = (int(v) for v in _sum(comm, [local.shape[0], free.sum()]))
    if total == 0:
        raise no_room(what, placement, n_candidates)
    bz, by, bx = tumor_state.shape
    z, y, x = local // (by * bx) + offset[0], (local // bx) % by + offset[1], local % bx + offset[2]
    voxels = (z * shape[1] + y) * shape[2] + x  # global indices, ascending as the local ones
    sv, ss, sh = slot_keys(voxels, free, seed, stream, salt, purpose)
    chosen = select_smallest(comm, sh, sv, ss, int(count))
    index = placement_order(comm, sh[chosen], sv[chosen], ss[chosen])
    placed = min(int(count), total)
    if comm.rank == 0:
        warn_short(what, placed, count, placement)
    return positions(sv[chosen], ss[chosen], shape, dx_um, seed, stream, salt, purpose), index, placed


def infusion_header(sim, salt: int, ev) -> dict:
    """Rank 0: what the ranks need to place infusion ``ev`` (one occurrence, ``salt``: CellStep.infusions_due)."""
    return {"count": int(ev.count), "placement": ev.placement,
            "shell_um": None if ev.shell_um is None else [float(v) for v in ev.shell_um], "salt": int(salt),
            "what": f"events.{ev.name}", "lfa1": float(sim.cells.serum_lfa1(sim))}  # a float32: exact in JSON


def infuse(worker, infusion: dict, own: dict):
    """Collective: infusion ``infusion`` (:func:`infusion_header`) placed by the ranks into their boxes
    (``worker``: this rank's CellWorker, holding its box of the lattice; ``own``: the state columns of
    its T cells, all in its box, after the step's migration), as ``CellStep._infuse`` does on one
    process. Returns ``own`` with the new T cells appended and the number placed on all ranks."""
    from ..agents import params as P
    from ..agents.cells import check_new
    from ..agents.tcell_store import STATE_COLUMNS, TCellStore, uid_infused
    from .migrate import voxel_coords

    box, shape = worker.box, worker.shape
    z, y, x = voxel_coords(own["pos_um"], worker.dx_um, shape)
    local = ((z - box.offset[0]) * box.shape[1] + (y - box.offset[1])) * box.shape[2] + (x - box.offset[2])
    occupancy = np.bincount(local, minlength=int(np.prod(box.shape))).reshape(box.shape)
    salt = int(infusion["salt"])
    pos, index, placed = place_on_ranks(
        worker.comm, int(infusion["count"]), infusion["placement"], infusion["shell_um"], worker.own["tumor"],
        worker.own.get("vessel"), occupancy, box.offset, shape, int(worker.p[P.CAP]), int(worker.p[P.CAP_T]),
        worker.dx_um, int(worker.seed), rng.STREAM_EVENTS, salt, rng.PURPOSE_INFUSION, infusion["what"])
    m = pos.shape[0]
    if m == 0:
        return own, placed
    uids = np.atleast_1d(uid_infused(np.full(m, salt - 1, np.int64), index))
    check_new(uids)
    new = TCellStore(worker.backend, capacity=m)  # the store's defaults for every other column
    new.append(pos_um=pos, uid=uids, lfa1=np.full(m, np.float32(infusion["lfa1"]), np.float32))
    return {c: np.concatenate([own[c], getattr(new, c)[:m]]) for c in STATE_COLUMNS}, placed
