"""The T cells' rules A1-A3 (sense, respond, accept), recruitment R and the voxel of each agent, one agent or
vessel per call; the phase table and the exact-arithmetic rules are in ``gpusim.agents.rules``.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from gpusim import rng
from gpusim.agents import params as P
from gpusim.agents.rule_base import (ENGAGED, EV_KILLED, FL_BORN, FL_DIED, FL_DISENGAGED, FL_ENGAGED, FL_KILL,
                                     FL_MOVED, FREE, LIVE, NO_DIV, TDEAD, _ONE, _ZERO, _add_prod, _norm3, capacity,
                                     field_at, global_voxel, jitter, lfa1_relax, lfa1_target, random_direction,
                                     split_voxel, voxel_of_pos)
from gpusim.rng import F32, F64, U64

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
def recruit_one(k, seed, step, p, nz, ny, nx, fr, vessel_list, rate_scale, half_nM, offsets, counts, voxel,
                flags, prop, tumor, chem, out_pos, out_flag):
    """R: vessel voxel ``vessel_list[k]`` (an index of the arrays of frame ``fr``) recruits one T cell
    with probability 1 - exp(-rate_scale * c/(c + half) * dt) (c: local chemokine; rate_scale already
    holds the per-vessel rate and the serum-Mg factor) where its capacity allows; the recruit sits at a
    Philox-drawn point in the middle of the voxel. The draw is keyed by the global voxel and the
    position is global, so a rank holding a region of the grid recruits exactly as one process."""
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
    z, y, x = split_voxel(v, ny, nx)
    r0, r1, r2, r3 = rng.philox_voxel(seed, rng.STREAM_VOXELS, global_voxel(z, y, x, fr), step,
                                      rng.PURPOSE_RECRUIT, 0)
    if not rng.fires(rng.u01(r0), rate, p[P.DT]):
        return
    if occupancy_after_moves(v, nz, ny, nx, offsets, counts, voxel, flags, prop) >= capacity(tumor[v], p):
        return
    dxum = p[P.DX]
    out_pos[k, 0] = jitter(z + fr[0], r1, dxum)
    out_pos[k, 1] = jitter(y + fr[1], r2, dxum)
    out_pos[k, 2] = jitter(x + fr[2], r3, dxum)
    out_flag[k] = 1


@register_jitable
def voxel_one(i, dx, nz, ny, nx, fr, pos, state, dead_bin, voxel):
    """The voxel of agent ``i`` (for the spatial index); a DEAD agent goes to ``dead_bin`` when that
    is >= 0 (one bin past the last voxel, so the sort moves dead agents to the end)."""
    if dead_bin >= 0 and state[i] == TDEAD:
        voxel[i] = dead_bin
    else:
        voxel[i] = voxel_of_pos(pos[i, 0], pos[i, 1], pos[i, 2], dx, nz, ny, nx, fr)
