"""The cell rules, written once (DESIGN.md §1 rules 2-6, §2): plain Python functions compiled on demand
for numba's CPU target (``cpu_loops``) and for numba.cuda (``cuda_loops``), and runnable as Python.

Each ``*_one(i, ...)`` function is the whole work of one agent or one voxel in one phase; the loops
around them are a few lines per target. A phase reads only what no other item of the same phase
writes, so items may run in any order and on any number of threads (gather, never scatter):

======  ==========================================  =====================================================
phase   per                                          does
======  ==========================================  =====================================================
A1      T cell                                       apoptosis; LFA-1 relaxes to A*(Mg); engaged cells draw
                                                     a hit and mark their target
T1      voxel                                        a LIVE cell sums the hits aimed at it (from the T cells
                                                     binned in its 27 voxels), dies at hits_to_kill,
                                                     repairs a hit after hit_recovery_min, turns necrotic
                                                     or apoptotic; DEAD/NECROTIC cells are cleared
T2      voxel                                        a LIVE cell draws a division and picks a free
                                                     neighbour among 26, weight 1/distance
T3      voxel                                        an EMPTY voxel takes the proposal with the smallest
                                                     (hash, source voxel) among its neighbours'
A2      T cell                                       synapse end / kill credit / proliferation; free cells
                                                     engage a LIVE cell among 27 voxels or propose a move
A3      T cell                                       a proposal into voxel w is accepted when its rank by
                                                     (hash, uid) among all proposals into w is below the
                                                     free capacity of w
R       vessel voxel                                 recruitment where the voxel's capacity allows
======  ==========================================  =====================================================

**Exact arithmetic (DESIGN.md §2).** Decisions compare a Philox uniform with a probability built from
IEEE basic operations. numba.cuda contracts ``a*b + c`` into an FMA, the CPU does not, so every product
that feeds an addition here is a product of two float32 values taken in float64 (exact: 48 bits), and
the sum is rounded to float32 afterwards; products that feed only comparisons or conversions are safe
as they are. No libm call is made (``sqrt`` is IEEE-exact on both targets); powers use the project's
own exp/log from ``gpusim.rng``.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numba.extending import register_jitable

from gpusim import rng
from gpusim.agents import params as P
from gpusim.rng import F32, F64, U32, U64

# --- tumour lattice states (the per-voxel ``tumor`` array) ----------------------------------------
EMPTY = 0
LIVE = 1
DEAD = 2  # apoptotic (killed or spontaneous); cleared after apoptotic_clear_min
NECROTIC = 3  # hypoxic death; cleared after necrotic_clear_min



class TumorState(IntEnum):
    """Codes of the tumour lattice (``Simulation.tumor_state()``)."""

    EMPTY = EMPTY
    LIVE = LIVE
    DEAD = DEAD
    NECROTIC = NECROTIC


# --- T-cell states (the ``state`` column; as gpusim.agents.tcell_store.TCellState) -----------------
FREE = 0
ENGAGED = 1
TDEAD = 2

# --- per-voxel event bits of one step (the ``tumor_event`` array) ----------------------------------
EV_KILLED = 1  # died of T-cell hits this step
EV_NECROSIS = 2  # LIVE -> NECROTIC
EV_APOPTOSIS = 4  # LIVE -> DEAD spontaneously
EV_CLEARED = 8  # DEAD/NECROTIC -> EMPTY
EV_BORN = 16  # EMPTY -> LIVE by division
EV_HIT = 32  # received at least one hit
EV_PRUNED = 64  # vessel removed in necrosis

# --- per-agent flag bits of one step (the ``flags`` column) ----------------------------------------
FL_ENGAGED = 1  # engaged a target this step
FL_DISENGAGED = 2  # synapse ended this step
FL_KILL = 4  # credited with a kill this step
FL_MOVED = 8  # moved into another voxel this step
FL_BORN = 16  # divides this step (a daughter is appended after the phase)
FL_DIED = 32  # apoptosis this step

NO_DIV = F32(np.inf)  # div_timer of a T cell with no division pending
_ZERO = F32(0.0)
_ONE = F32(1.0)
_TWO = F32(2.0)
_HALF_RANGE = F32(0.9)  # new agents sit in the middle 90 % of their voxel on each axis
_EDGE = F32(0.05)
_W_FACE = F32(1.0)  # division weights 1/distance to the 6 face, 12 edge and 8 corner neighbours
_W_EDGE = F32(1.0 / np.sqrt(2.0))
_W_CORNER = F32(1.0 / np.sqrt(3.0))
_CENTER = 13  # neighbour code (dz+1)*9 + (dy+1)*3 + (dx+1) of the voxel itself
_DIR_TRIES = 16  # rejection-sampling attempts for a uniform direction (fails with p < 1e-5)


# ==================================================================================================
# small helpers
# ==================================================================================================
# The frame ``fr`` = (oz, oy, ox, gnz, gny, gnx) of the arrays a rule reads: their first voxel is global
# voxel (oz, oy, ox) of a (gnz, gny, gnx) grid. Memory indices and neighbour bounds are the arrays'
# own (nz, ny, nx); random numbers are keyed and T cells reflected by global coordinates, so a rank
# holding part of the grid draws the same numbers as one process (gpusim.parallel.cells). A whole
# grid is the frame (0, 0, 0, nz, ny, nx): ``whole_frame``.


@register_jitable
def global_voxel(z, y, x, fr):
    """Global index of local voxel (z, y, x) of frame ``fr``."""
    return ((z + fr[0]) * fr[4] + (y + fr[1])) * fr[5] + (x + fr[2])


def whole_frame(nz, ny, nx) -> tuple:
    """The frame of arrays holding the whole (nz, ny, nx) grid."""
    return tuple(np.int64(v) for v in (0, 0, 0, nz, ny, nx))


@register_jitable
def split_voxel(v, ny, nx):
    """(z, y, x) of global voxel ``v`` = (z*ny + y)*nx + x."""
    nyx = ny * nx
    z = v // nyx
    r = v - z * nyx
    y = r // nx
    return z, y, r - y * nx


@register_jitable
def axis_cell(p, dx, o, n):
    """Voxel index along one axis of coordinate ``p`` µm in an array whose first voxel is global voxel
    ``o``: floor(p / dx) in float32, minus ``o``, clamped to [0, n-1]."""
    q = p / dx
    k = np.int64(q)  # truncation toward zero; fix to floor below (comparison only, no arithmetic)
    if F32(k) > q:
        k -= 1
    k -= o
    if k < 0:
        return np.int64(0)
    if k > n - 1:
        return n - 1
    return k


@register_jitable
def voxel_of_pos(pz, py, px, dx, nz, ny, nx, fr):
    """Index of the voxel of position (pz, py, px) µm (float32) in the (nz, ny, nx) array of frame
    ``fr`` (see :func:`global_voxel`): the global index, as ``spatial_index.voxel_of``, in a whole grid."""
    return ((axis_cell(pz, dx, fr[0], nz) * ny + axis_cell(py, dx, fr[1], ny)) * nx
            + axis_cell(px, dx, fr[2], nx))


@register_jitable
def _add_prod(a, b, c):
    """float32(a + b*c) for float32 a, b, c, with the exact float64 product (FMA-proof)."""
    return F32(F64(a) + F64(b) * F64(c))


@register_jitable
def _norm3(x, y, z):
    """Euclidean norm of a float32 vector in float64 (exact squares, IEEE sqrt)."""
    return math.sqrt((F64(x) * F64(x) + F64(y) * F64(y)) + F64(z) * F64(z))


@register_jitable
def capacity(tumor_state, p):
    """T cells voxel ``w`` may hold: CAP_T with a LIVE or NECROTIC cell there, else CAP."""
    if tumor_state == LIVE or tumor_state == NECROTIC:
        return np.int64(p[P.CAP_T])
    return np.int64(p[P.CAP])


@register_jitable
def lfa1_target(mg, p):
    """A* = A_floor + (1 - A_floor) * Mg^n / (K^n + Mg^n) at ionised Mg ``mg`` mM (float32).

    For an integer n (the default 2) Mg^n/(K^n + Mg^n) comes from products (K^n precomputed the same
    way); otherwise from 1/(1 + exp(n*(ln K - ln Mg))), the exponent rounded to float32 before the
    exp so no product meets an addition. Without an "mg" substrate A* = 1.
    """
    if p[P.HAS_MG] == _ZERO:
        return _ONE
    floor = p[P.A_FLOOR]
    n_int = p[P.HILL_INT]
    if mg <= _ZERO:
        h = _ZERO
    elif n_int > _ZERO:
        pw = rng.pow_int(mg, n_int)  # integer n: K^n in K_HALF_POW comes from the same function
        h = F32(pw / (F64(p[P.K_HALF_POW]) + pw))
    else:
        t = F32(F64(p[P.HILL]) * (rng._log_f64(F64(p[P.K_HALF])) - rng._log_f64(F64(mg))))
        if t > F32(80.0):
            h = _ZERO
        elif t < F32(-80.0):
            h = _ONE
        else:
            h = F32(F64(1.0) / (F64(1.0) + rng._exp_f64(F64(t))))
    return _add_prod(floor, _ONE - floor, h)


@register_jitable
def lfa1_relax(a, a_star, relax):
    """A <- A* + (A - A*) * exp(-dt/tau), exact for a constant A* over the step."""
    return _add_prod(a_star, a - a_star, relax)


@register_jitable
def random_direction(seed, uid, step):
    """A uniform unit vector (z, y, x) by rejection from the cube [-1, 1)^3 (Philox draws)."""
    for k in range(_DIR_TRIES):
        r0, r1, r2, _r3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid, step, rng.PURPOSE_MOVE_DIR, k)
        dz = rng.u01(r0) * _TWO - _ONE  # exact: a power-of-two scale then an exact subtraction
        dy = rng.u01(r1) * _TWO - _ONE
        dx = rng.u01(r2) * _TWO - _ONE
        n = _norm3(dz, dy, dx)
        if n > F64(1e-3) and n <= F64(1.0):
            return F32(F64(dz) / n), F32(F64(dy) / n), F32(F64(dx) / n)
    return _ONE, _ZERO, _ZERO


@register_jitable
def jitter(cell, word, dx):
    """µm coordinate of a point in the middle 90 % of voxel ``cell`` along one axis, from a Philox
    word: (cell + 0.05 + 0.9*u) * dx, the product with u exact, then one rounding."""
    t = F64(F32(cell) + _EDGE) + F64(rng.u01(word)) * F64(_HALF_RANGE)
    return F32(t * F64(dx))


@register_jitable
def field_at(f, v, has):
    """Value of the flattened field ``f`` at voxel ``v`` (0 when the substrate is absent)."""
    if has == _ZERO:
        return _ZERO
    return f[v]


# ==================================================================================================
# A1: sensing and hits
# ==================================================================================================
@register_jitable
def tcell_sense_one(i, seed, step, p, uid, state, voxel, lfa1, function, target, hit, flags, prop, timer,
                    div_timer, hit_mark, mg):
    """A1: apoptosis (at the start of the step); LFA-1 relaxation toward A*(Mg at the agent's voxel);
    an engaged T cell draws its hit and marks its target voxel in ``hit_mark``.

    The mark is an idempotent write (every writer stores 1), so it needs no atomics and no order; it
    only tells phase T1 which voxels must gather their hits. One Philox draw per agent: word 0 decides
    the hit, word 1 apoptosis.
    """
    hit[i] = 0
    flags[i] = 0
    prop[i] = -1
    if state[i] == TDEAD:
        return
    r0, r1, _r2, _r3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid[i], step, rng.PURPOSE_HIT, 0)
    if p[P.P_APO] > _ZERO and rng.u01(r1) < p[P.P_APO]:
        state[i] = TDEAD
        flags[i] = FL_DIED
        return
    a_star = lfa1_target(field_at(mg, voxel[i], p[P.HAS_MG]), p)
    a = lfa1_relax(lfa1[i], a_star, p[P.RELAX])
    lfa1[i] = a
    if state[i] == ENGAGED:
        rate = (p[P.K_HIT] * a) * function[i]
        if rng.fires(rng.u01(r0), rate, p[P.DT]):
            hit[i] = 1
            hit_mark[target[i]] = 1
        timer[i] = timer[i] - p[P.DT]
    if div_timer[i] != NO_DIV:
        div_timer[i] = div_timer[i] - p[P.DT]


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
def _neighbour(z, y, x, dz, dy, dx, nz, ny, nx):
    """Global index of the neighbour (z+dz, y+dy, x+dx) of a voxel, or -1 for the voxel itself or
    outside the grid."""
    zz, yy, xx = z + dz, y + dy, x + dx
    if (dz == 0 and dy == 0 and dx == 0) or zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
        return np.int64(-1)
    return (zz * ny + yy) * nx + xx


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


# ==================================================================================================
# A2: synapses, kill credit, engagement, motion proposals
# ==================================================================================================
@register_jitable
def _credit_hash(seed, uid, step):
    h0, h1, _h2, _h3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid, step, rng.PURPOSE_PRIORITY, 1)
    return U64(h0) | (U64(h1) << U64(32))


@register_jitable
def _is_credited(i, t, seed, step, nz, ny, nx, offsets, uid, target, hit):
    """True when T cell ``i`` has the smallest (hash(uid, step), uid) among those that hit ``t``."""
    mine = _credit_hash(seed, uid[i], step)
    z, y, x = split_voxel(t, ny, nx)
    for zz in range(max(z - 1, 0), min(z + 2, nz)):
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                w = (zz * ny + yy) * nx + xx
                for j in range(offsets[w], offsets[w + 1]):
                    # hit implies engaged in A1; hitters keep their target through A2
                    if j == i or hit[j] == 0 or target[j] != t:
                        continue
                    h = _credit_hash(seed, uid[j], step)
                    if h < mine or (h == mine and uid[j] < uid[i]):
                        return False
    return True


@register_jitable
def _live_neighbours(v, nz, ny, nx, tumor, k):
    """Count the LIVE cells among the 27 voxels around ``v`` (k < 0), or return the k-th of them."""
    z, y, x = split_voxel(v, ny, nx)
    n = 0
    for zz in range(max(z - 1, 0), min(z + 2, nz)):
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                w = (zz * ny + yy) * nx + xx
                if tumor[w] == LIVE:
                    if n == k:
                        return w
                    n += 1
    return n


@register_jitable
def _gradient(c, v, nz, ny, nx):
    """Central-difference direction of the chemokine gradient at ``v`` (one-sided at faces), float32."""
    z, y, x = split_voxel(v, ny, nx)
    nyx = ny * nx
    gz = c[v + nyx if z + 1 < nz else v] - c[v - nyx if z > 0 else v]
    gy = c[v + nx if y + 1 < ny else v] - c[v - nx if y > 0 else v]
    gx = c[v + 1 if x + 1 < nx else v] - c[v - 1 if x > 0 else v]
    return gz, gy, gx


@register_jitable
def tcell_respond_one(i, seed, step, p, nz, ny, nx, fr, offsets, uid, state, voxel, pos, direction, lfa1,
                      function, target, timer, kills, div_timer, hit, flags, prop, prio, pos_new,
                      tumor, event, chem):
    """A2: end synapses (target dead, or its time up) with kill credit and proliferation; a free T cell
    proposes a division, engages a LIVE neighbour, or proposes a move (persistent walk + chemotaxis)."""
    s = state[i]
    if s == TDEAD:
        return
    v = voxel[i]
    if s == ENGAGED:
        t = target[i]
        if tumor[t] != LIVE:
            state[i] = FREE
            fl = FL_DISENGAGED
            if hit[i] != 0 and (event[t] & EV_KILLED) != 0 and _is_credited(
                    i, t, seed, step, nz, ny, nx, offsets, uid, target, hit):
                fl |= FL_KILL
                if kills[i] < 65535:
                    kills[i] = kills[i] + 1
                if div_timer[i] == NO_DIV and p[P.P_PROLIF] > _ZERO:
                    r0, _r1, _r2, _r3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid[i], step, rng.PURPOSE_PROLIF, 0)
                    if rng.u01(r0) < p[P.P_PROLIF]:
                        div_timer[i] = p[P.DIV_DELAY]
            flags[i] = flags[i] | fl
        elif timer[i] <= _ZERO:
            state[i] = FREE
            flags[i] = flags[i] | FL_DISENGAGED
        return
    # free
    if div_timer[i] <= _ZERO:  # a division is due: it competes for room in this voxel (phase A3)
        prop[i] = v
        h0, _h1, _h2, _h3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid[i], step, rng.PURPOSE_PRIORITY, 0)
        prio[i] = h0
        return
    # one draw for a free T cell: word 0 engages, 1 picks the target, 2 the synapse time, 3 the turn
    r0, r1, r2, r3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid[i], step, rng.PURPOSE_ENGAGE, 0)
    n_live = _live_neighbours(v, nz, ny, nx, tumor, -1)
    if n_live > 0 and p[P.K_ON] > _ZERO:
        rate = (p[P.K_ON] * lfa1[i]) * function[i]
        if rng.fires(rng.u01(r0), rate, p[P.DT]):
            k = np.int64((U64(r1) * U64(n_live)) >> U64(32))  # uniform in [0, n_live), exact
            target[i] = _live_neighbours(v, nz, ny, nx, tumor, k)
            state[i] = ENGAGED
            timer[i] = F32(-p[P.SYNAPSE] * rng.log_f32(rng.u01_open(r2)))
            function[i] = function[i] * p[P.KEEP_FN]
            flags[i] = flags[i] | FL_ENGAGED
            return
    if p[P.SPEED_STEP] <= _ZERO:
        return
    # persistent direction, renewed at rate 1/persistence
    dz, dy, dx = direction[i, 0], direction[i, 1], direction[i, 2]
    if rng.u01(r3) < p[P.P_TURN] or (dz == _ZERO and dy == _ZERO and dx == _ZERO):
        dz, dy, dx = random_direction(seed, uid[i], step)
        direction[i, 0] = dz
        direction[i, 1] = dy
        direction[i, 2] = dx
    mz, my, mx = dz, dy, dx
    b = p[P.BIAS]
    if p[P.HAS_CHEM] != _ZERO and b > _ZERO:
        gz, gy, gx = _gradient(chem, v, nz, ny, nx)
        gn = _norm3(gz, gy, gx)
        if gn > F64(0.0):
            gz = F32(F64(gz) / gn)
            gy = F32(F64(gy) / gn)
            gx = F32(F64(gx) / gn)
            keep = _ONE - b
            mz = F32(F64(b) * F64(gz) + F64(keep) * F64(dz))
            my = F32(F64(b) * F64(gy) + F64(keep) * F64(dy))
            mx = F32(F64(b) * F64(gx) + F64(keep) * F64(dx))
            mn = _norm3(mz, my, mx)
            if mn > F64(0.0):
                mz = F32(F64(mz) / mn)
                my = F32(F64(my) / mn)
                mx = F32(F64(mx) / mn)
            else:
                mz, my, mx = dz, dy, dx
    step_um = p[P.SPEED_STEP]
    qz = _add_prod(pos[i, 0], step_um, mz)
    qy = _add_prod(pos[i, 1], step_um, my)
    qx = _add_prod(pos[i, 2], step_um, mx)
    dxum = p[P.DX]
    # a step out of the block is reflected: that component of the direction flips, no move
    out = False
    if qz < _ZERO or qz >= F32(fr[3]) * dxum:
        direction[i, 0] = -direction[i, 0]
        out = True
    if qy < _ZERO or qy >= F32(fr[4]) * dxum:
        direction[i, 1] = -direction[i, 1]
        out = True
    if qx < _ZERO or qx >= F32(fr[5]) * dxum:
        direction[i, 2] = -direction[i, 2]
        out = True
    if out:
        return
    nv = voxel_of_pos(qz, qy, qx, dxum, nz, ny, nx, fr)
    if nv == v:
        pos[i, 0] = qz
        pos[i, 1] = qy
        pos[i, 2] = qx
        return
    prop[i] = nv
    h0, _h1, _h2, _h3 = rng.philox_agent(seed, rng.STREAM_AGENTS, uid[i], step, rng.PURPOSE_PRIORITY, 0)
    prio[i] = h0
    pos_new[i, 0] = qz
    pos_new[i, 1] = qy
    pos_new[i, 2] = qx


# ==================================================================================================
# A3: accepting proposals under capacity; apoptosis
# ==================================================================================================
@register_jitable
def tcell_accept_one(i, seed, step, p, nz, ny, nx, offsets, counts, uid, state, voxel, pos, div_timer,
                     flags, prop, prio, pos_new, tumor):
    """A3: a proposal into voxel w (a move, or a division in the agent's own voxel) is accepted when
    fewer than (capacity(w) - T cells in w) proposals into w rank before it by (hash, uid). Occupants
    leaving w do not free room this step (conservative, so never over capacity)."""
    if state[i] == TDEAD:
        return
    w = prop[i]
    if w >= 0:
        slots = capacity(tumor[w], p) - np.int64(counts[w])
        if slots > 0:
            rank = 0
            mine = prio[i]
            z, y, x = split_voxel(w, ny, nx)
            for zz in range(max(z - 1, 0), min(z + 2, nz)):
                for yy in range(max(y - 1, 0), min(y + 2, ny)):
                    for xx in range(max(x - 1, 0), min(x + 2, nx)):
                        u = (zz * ny + yy) * nx + xx
                        for j in range(offsets[u], offsets[u + 1]):
                            if j != i and prop[j] == w and (prio[j] < mine or (prio[j] == mine and uid[j] < uid[i])):
                                rank += 1
            if rank < slots:
                if w == voxel[i]:
                    flags[i] = flags[i] | FL_BORN
                    div_timer[i] = NO_DIV
                else:
                    pos[i, 0] = pos_new[i, 0]
                    pos[i, 1] = pos_new[i, 1]
                    pos[i, 2] = pos_new[i, 2]
                    flags[i] = flags[i] | FL_MOVED


# ==================================================================================================
# R: recruitment at vessel voxels
# ==================================================================================================
@register_jitable
def occupancy_after_moves(v, nz, ny, nx, offsets, counts, voxel, flags, prop):
    """T cells in ``v`` after phase A3: those there, minus those that moved out, plus accepted moves
    and divisions into it."""
    n = np.int64(counts[v])
    z, y, x = split_voxel(v, ny, nx)
    for zz in range(max(z - 1, 0), min(z + 2, nz)):
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                u = (zz * ny + yy) * nx + xx
                for j in range(offsets[u], offsets[u + 1]):
                    f = flags[j]
                    if (f & FL_MOVED) != 0:
                        if prop[j] == v:
                            n += 1
                        elif voxel[j] == v:
                            n -= 1
                    elif (f & FL_BORN) != 0 and prop[j] == v:
                        n += 1
    return n


@register_jitable
def recruit_one(k, seed, step, p, nz, ny, nx, vessel_list, rate_scale, half_nM, offsets, counts, voxel,
                flags, prop, tumor, chem, out_pos, out_flag):
    """R: vessel voxel ``vessel_list[k]`` recruits one T cell with probability
    1 - exp(-rate_scale * c/(c + half) * dt) (c: local chemokine; rate_scale already holds the per-vessel
    rate and the serum-Mg factor) where its capacity allows; the recruit sits at a Philox-drawn point
    in the middle of the voxel."""
    out_flag[k] = 0
    v = vessel_list[k]
    rate = rate_scale
    if p[P.HAS_CHEM] != _ZERO:
        c = chem[v]
        if c < _ZERO:
            c = _ZERO
        rate = rate * (c / (c + half_nM))
    if rate <= _ZERO:
        return
    r0, r1, r2, r3 = rng.philox_voxel(seed, rng.STREAM_VOXELS, v, step, rng.PURPOSE_RECRUIT, 0)
    if not rng.fires(rng.u01(r0), rate, p[P.DT]):
        return
    if occupancy_after_moves(v, nz, ny, nx, offsets, counts, voxel, flags, prop) >= capacity(tumor[v], p):
        return
    z, y, x = split_voxel(v, ny, nx)
    dxum = p[P.DX]
    out_pos[k, 0] = jitter(z, r1, dxum)
    out_pos[k, 1] = jitter(y, r2, dxum)
    out_pos[k, 2] = jitter(x, r3, dxum)
    out_flag[k] = 1


@register_jitable
def voxel_one(i, dx, nz, ny, nx, fr, pos, state, dead_bin, voxel):
    """The voxel of agent ``i`` (for the spatial index); a DEAD agent goes to ``dead_bin`` when that
    is >= 0 (one bin past the last voxel, so the sort moves dead agents to the end)."""
    if dead_bin >= 0 and state[i] == TDEAD:
        voxel[i] = dead_bin
    else:
        voxel[i] = voxel_of_pos(pos[i, 0], pos[i, 1], pos[i, 2], dx, nz, ny, nx, fr)
