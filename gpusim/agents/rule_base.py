"""The shared part of the cell rules (``gpusim.agents.rules``): the state codes, event and flag bits,
the frame of a rank's arrays and the small numba helpers every phase calls (voxel of a position,
capacity, LFA-1 target, random direction, field reads, neighbour voxels). Exact-arithmetic rules as in
``rules``.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numba.extending import register_jitable

from gpusim import rng
from gpusim.agents import params as P
from gpusim.rng import F32, F64

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


@register_jitable
def _neighbour(z, y, x, dz, dy, dx, nz, ny, nx):
    """Global index of the neighbour (z+dz, y+dy, x+dx) of a voxel, or -1 for the voxel itself or
    outside the grid."""
    zz, yy, xx = z + dz, y + dy, x + dx
    if (dz == 0 and dy == 0 and dx == 0) or zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
        return np.int64(-1)
    return (zz * ny + yy) * nx + xx
