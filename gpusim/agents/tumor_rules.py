"""The tumour lattice's rules T1-T3 (fate, division proposal, claim), one voxel per call; the phase table and
the exact-arithmetic rules are in ``gpusim.agents.rules``.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from gpusim import rng
from gpusim.agents import params as P
from gpusim.agents.rule_base import (DEAD, EMPTY, ENGAGED, EV_APOPTOSIS, EV_BORN, EV_CLEARED, EV_HIT, EV_KILLED,
                                     EV_NECROSIS, EV_PRUNED, LIVE, NECROTIC, _ONE, _W_CORNER, _W_EDGE, _W_FACE, _ZERO,
                                     _neighbour)
from gpusim.rng import F32, U64

# ==================================================================================================
# T1-T3: the tumour lattice
# ==================================================================================================
@register_jitable
def _hits_on(v, z, y, x, nz, ny, nx, offsets, state, target, hit):
    """Hits aimed at voxel ``v`` = (z, y, x) this step, gathered from the T cells binned in its 27 voxels."""
    n = 0
    for zz in range(max(z - 1, 0), min(z + 2, nz)):
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                w = (zz * ny + yy) * nx + xx
                for j in range(offsets[w], offsets[w + 1]):
                    if hit[j] != 0 and state[j] == ENGAGED and target[j] == v:
                        n += 1
    return n


@register_jitable
def _o2_fraction(o2, lo, hi):
    """(o2 - lo)/(hi - lo) clamped to [0, 1] (float32)."""
    if o2 <= lo:
        return _ZERO
    if o2 >= hi:
        return _ONE
    return (o2 - lo) / (hi - lo)


@register_jitable
def tumor_fate_one(v, gv, z, y, x, seed, step, p, nz, ny, nx, tumor, damage, last_hit, since, event,
                   offsets, state, target, hit, hit_mark, o2):
    """T1: hits and death, hit recovery, necrosis, apoptosis, clearance of voxel ``v`` = (z, y, x)
    (global index ``gv``, which keys its draws). Hits are gathered only where A1 marked the voxel as a
    target; the mark is cleared here."""
    s = tumor[v]
    ev = 0
    if s == LIVE:
        n_hits = 0
        if hit_mark[v] != 0:
            n_hits = _hits_on(v, z, y, x, nz, ny, nx, offsets, state, target, hit)
            hit_mark[v] = 0
        d = np.int64(damage[v])
        if n_hits > 0:
            ev |= EV_HIT
            d += n_hits
            last_hit[v] = step
            if d >= np.int64(p[P.HITS_TO_KILL]):
                tumor[v] = DEAD
                since[v] = step
                damage[v] = min(d, 255)
                event[v] = ev | EV_KILLED
                return
            damage[v] = d
        elif d > 0 and p[P.RECOVERY_STEPS] > _ZERO and F32(step - last_hit[v]) >= p[P.RECOVERY_STEPS]:
            damage[v] = d - 1
            last_hit[v] = step  # the repair clock restarts
        if p[P.HAS_O2] != _ZERO and p[P.NEC_MAX] > _ZERO:
            frac = _ONE - _o2_fraction(o2[v], p[P.NEC_MAX_O2], p[P.NEC_THR])
            if frac > _ZERO:
                r0, _r1, _r2, _r3 = rng.philox_voxel(seed, rng.STREAM_VOXELS, gv, step, rng.PURPOSE_NECROSIS, 0)
                if rng.fires(rng.u01(r0), p[P.NEC_MAX] * frac, p[P.DT]):
                    tumor[v] = NECROTIC
                    since[v] = step
                    event[v] = ev | EV_NECROSIS
                    return
        if p[P.P_TAPO] > _ZERO:
            r0, _r1, _r2, _r3 = rng.philox_voxel(seed, rng.STREAM_VOXELS, gv, step, rng.PURPOSE_APOPTOSIS, 0)
            if rng.u01(r0) < p[P.P_TAPO]:
                tumor[v] = DEAD
                since[v] = step
                ev |= EV_APOPTOSIS
    elif s == DEAD or s == NECROTIC:
        keep = p[P.APO_CLEAR_STEPS] if s == DEAD else p[P.NEC_CLEAR_STEPS]
        if F32(step - since[v]) >= keep:
            tumor[v] = EMPTY
            damage[v] = 0
            since[v] = step
            ev |= EV_CLEARED
    event[v] = ev


@register_jitable
def _free_for_daughter(w, tumor, vessel, counts, cap_t):
    """A division may land in ``w``: EMPTY, not a vessel, and no more T cells than a tumour voxel holds."""
    return tumor[w] == EMPTY and vessel[w] == 0 and np.int64(counts[w]) <= cap_t


@register_jitable
def _weight(dz, dy, dx):
    m = abs(dz) + abs(dy) + abs(dx)
    if m == 1:
        return _W_FACE
    if m == 2:
        return _W_EDGE
    return _W_CORNER


@register_jitable
def tumor_propose_one(v, gv, z, y, x, seed, step, p, nz, ny, nx, tumor, vessel, counts, div_dir, o2, mg):
    """T2: a LIVE cell draws a division (rate modulated by O2 and optionally Mg) and proposes a free
    neighbour among 26, chosen with weight 1/distance; ``div_dir[v]`` = neighbour code or -1 (draws
    keyed by the global index ``gv``)."""
    div_dir[v] = -1
    if tumor[v] != LIVE:
        return
    rate = p[P.CYCLE]
    if p[P.HAS_O2] != _ZERO:
        rate = rate * _o2_fraction(o2[v], p[P.O2_THR], p[P.O2_SAT])
    if p[P.MG_KM] > _ZERO and p[P.HAS_MG] != _ZERO:
        m = mg[v]
        if m < _ZERO:
            m = _ZERO
        rate = rate * (m / (p[P.MG_KM] + m))
    if rate <= _ZERO:
        return
    r0, r1, _r2, _r3 = rng.philox_voxel(seed, rng.STREAM_VOXELS, gv, step, rng.PURPOSE_DIVIDE, 0)
    if not rng.fires(rng.u01(r0), rate, p[P.DT]):
        return
    cap_t = np.int64(p[P.CAP_T])
    total, _code = _free_neighbours(z, y, x, nz, ny, nx, tumor, vessel, counts, cap_t, F32(-1.0))
    if total == _ZERO:
        return  # contact-inhibited
    _acc, code = _free_neighbours(z, y, x, nz, ny, nx, tumor, vessel, counts, cap_t,
                                  rng.u01(r1) * total)  # compared only: no FMA concern
    div_dir[v] = code


@register_jitable
def _free_neighbours(z, y, x, nz, ny, nx, tumor, vessel, counts, cap_t, pick):
    """Walk the 26 neighbours in code order summing the 1/distance weights of the free ones; return
    (sum, code of the first free neighbour where the running sum exceeds ``pick``) — with pick < 0,
    (total, -1); when round-off leaves pick == total, the last free neighbour's code."""
    acc = _ZERO
    last = -1
    for dz in range(-1, 2):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                w = _neighbour(z, y, x, dz, dy, dx, nz, ny, nx)
                if w >= 0 and _free_for_daughter(w, tumor, vessel, counts, cap_t):
                    acc += _weight(dz, dy, dx)
                    last = (dz + 1) * 9 + (dy + 1) * 3 + (dx + 1)
                    if pick >= _ZERO and pick < acc:
                        return acc, last
    return acc, (last if pick >= _ZERO else -1)


@register_jitable
def tumor_claim_one(v, gv, z, y, x, seed, step, p, nz, ny, nx, gny, gnx, tumor, damage, last_hit, since,
                    event, vessel, div_dir, n_tumor):
    """T3: an EMPTY voxel takes, among its neighbours' proposals aimed at it, the one with the smallest
    (hash, source voxel), both by global index (``gv``; the grid's ``gny``, ``gnx``); prunes a vessel
    voxel with >= 13 NECROTIC neighbours; writes n_tumor."""
    if tumor[v] == EMPTY and vessel[v] == 0:
        best_h = U64(0)
        best_w = np.int64(-1)
        for dz in range(-1, 2):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    w = _neighbour(z, y, x, dz, dy, dx, nz, ny, nx)
                    if w < 0:
                        continue
                    # w's proposal points at v when its code is the opposite offset (-dz, -dy, -dx)
                    if div_dir[w] != 26 - ((dz + 1) * 9 + (dy + 1) * 3 + (dx + 1)):
                        continue
                    gw = gv + (dz * gny + dy) * gnx + dx
                    h0, _h1, _h2, _h3 = rng.philox_voxel(seed, rng.STREAM_VOXELS, gw, step, rng.PURPOSE_PRIORITY, 0)
                    h = U64(h0)
                    if best_w < 0 or h < best_h or (h == best_h and gw < best_w):
                        best_h = h
                        best_w = gw
        if best_w >= 0:
            tumor[v] = LIVE
            damage[v] = 0
            last_hit[v] = step
            since[v] = step
            event[v] = event[v] | EV_BORN
    elif vessel[v] != 0 and p[P.PRUNE] != _ZERO:
        n_nec = 0
        for zz in range(max(z - 1, 0), min(z + 2, nz)):
            for yy in range(max(y - 1, 0), min(y + 2, ny)):
                for xx in range(max(x - 1, 0), min(x + 2, nx)):
                    if tumor[(zz * ny + yy) * nx + xx] == NECROTIC:
                        n_nec += 1
        if n_nec >= 13:
            vessel[v] = 0
            event[v] = event[v] | EV_PRUNED
    n_tumor[v] = 1 if tumor[v] == LIVE else 0
