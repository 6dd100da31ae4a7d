"""Steady state of diffusion + reaction by geometric multigrid with Newton linearisation (DESIGN rule 1).

Per voxel i (float64 arithmetic, the field stored float32)::

    RD * sum_dirs(c_i - c_nb) + k_i(c) c_i = s_i

with ``RD = D/dx^2``, the neighbour of a boundary voxel given by the ghost rules of ``layout.py`` (zero
flux: no term; Dirichlet: ``2*RD*(c_i - bc)``) and ``k``, ``s`` the layout's per-voxel formula. Used for
substrates that equilibrate within seconds (O2: L^2/D ~ 0.1 min), refreshed every ``update_every_min``
and warm-started from the previous solution, and for ``init = "steady"`` of every substrate.

Why multigrid and not preconditioned CG: V-cycles need no global dot products. The only reductions are
maxima (of the change and of the iterate), which are exact and hence order-free, so the CPU and the GPU
take the same number of cycles and produce the same bits at any thread count (DESIGN.md section 2);
CG's float sums depend on the reduction order. The cycle count does not grow with the grid: O2 of
PARAMETERS.md section 1 (vessels, tumour and T-cell Michaelis-Menten uptake, Dirichlet faces, from 38
mmHg, tol 1e-6) takes 8 cycles at 40^3, 48^3 and 64^3 and 9 at 128^3.

Scheme. Cell-centred levels, each axis longer than 1 halved (rounding up) down to at most 2 cells per
axis; coarse levels are rediscretised (no Galerkin products): uniform cells spanning the whole domain
(``level_shapes``), the rate k the mean of the children's (each capped, ``mg_cpu.KCAP``), the right
side the children's residuals summed times the volume ratio, Dirichlet faces homogeneous Dirichlet,
zero-flux faces zero flux. Red-black Gauss-Seidel V(2,2) cycles, linear prolongation
(``transfer_tables``), Gaussian elimination on the coarsest level (at most 8 cells).

Linearisation. Before every V-cycle the uptake V c/(Km + c) is linearised at the current iterate c*
(``mg_cpu.newton_rates``): its derivative V Km/(Km + c*)^2 on the diagonal, the rest on the right side;
after the cycle the iterate is projected onto c >= 0. Michaelis-Menten uptake is concave, so the
tangent overestimates it and the projected Newton iterates approach the solution from below. Picard
(``k = V/(Km + c*)`` on the diagonal, layout.py's form) was measured first: it converges only linearly,
at ~0.6 per cycle where uptake is zero order (c >> Km) over regions wider than the diffusion length of
the slowest mode: 14 cycles instead of 8 (O2, 64^3), 39 instead of 12 without vessels (tol 1e-9).
Converged when the max-norm change of one cycle is at most ``tol * max(c)``; the residual reported is
that of the nonlinear equation in layout.py's form at the stored float32 field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import layout as L

PRE_SWEEPS = 2  # red-black sweeps before the coarse correction
POST_SWEEPS = 2  # and after it


class SteadyStateUndefined(ValueError):
    """The steady state is not unique: nothing removes the substrate and nothing fixes its level."""


@dataclass
class SteadyInfo:
    """Outcome of :func:`steady_solve`.

    ``cycles``: V-cycles run; ``picard_iterations``: re-linearisations of the uptake (one per cycle,
    Newton's; the name is the API's);
    ``max_residual``: max|b - A(c) c| / max|b| of the nonlinear equation at the stored float32 field
    (``b`` = sources + Dirichlet face terms; absolute when ``b`` is 0); ``converged``: the change
    criterion was met within ``max_cycles``.
    """

    cycles: int
    picard_iterations: int
    max_residual: float
    converged: bool


def is_singular(coef, bc_type, flags) -> bool:
    """True when no term can remove substrate or fix its level: no decay, no Dirichlet face, and no
    vessel supply, tumour uptake or T-cell uptake enabled by ``flags`` (pure zero-flux diffusion has a
    steady state only up to a constant, and none at all with a source)."""
    if coef[L.LAM] > 0.0:
        return False
    if any(int(t) == L.BC_DIRICHLET for t in bc_type):
        return False
    if (flags & L.HAS_VESSEL) and coef[L.KV] > 0.0:
        return False
    if (flags & L.HAS_TUMOR) and coef[L.VT] > 0.0:
        return False
    if (flags & L.HAS_TCELL) and coef[L.VC] > 0.0:
        return False
    return True


def level_shapes(shape):
    """Shapes and per-axis coupling factors (multiples of RD) of the multigrid levels, finest first.

    Each coarsening halves every axis longer than 1, rounding up; the coarse cells of an axis are
    uniform and span the fine axis' whole length ``n0*dx`` (spacing ``n0*dx/nc``), so the Dirichlet
    faces stay where they are and the coupling factor is ``(nc/n0)^2`` (1/4 per level for powers of
    two). A first version kept exactly 2h, which moves an odd axis' high face outward by up to h per
    level, and averaged the children's residuals. Measured on the O2 problem with one Dirichlet face
    (tol 1e-8), that took 82 cycles at (5, 7, 9), 151 at (17, 1, 33) and 38 at (65, 50, 33); this
    scheme takes 9, 24 and 15 (64^3: 12).
    """
    fine = tuple(int(n) for n in shape)
    shapes = [fine]
    while any(n > 2 for n in shapes[-1]):
        shapes.append(tuple((n + 1) // 2 for n in shapes[-1]))
    factors = [tuple((nc / n0) ** 2 for nc, n0 in zip(s, fine)) for s in shapes]
    return shapes, factors


def transfer_tables(nf, nc, lo_dirichlet, hi_dirichlet):
    """Grid-transfer tables along one axis from ``nf`` fine to ``nc`` coarse uniform cells.

    ``children[j] = (first, last)``: the fine cells whose centres lie in coarse cell j (1 or 2; the
    restriction sums their residuals times the volume ratio and averages their rates). ``pidx[i], pw[i]``: fine cell i takes ``pw[i,0]*C[pidx[i,0]] + pw[i,1]*C[pidx[i,1]]``,
    linear between the two coarse centres around it; beyond the first/last centre the partner is the
    ghost cell, +C at a zero-flux face and -C at a (homogeneous) Dirichlet face, whose value is zero on
    the face. Positions are exact rationals (in units of the fine spacing, coarse spacing nf/nc), so the
    tables are the same on every backend; for nf = 2*nc they are the usual 3/4, 1/4 weights.
    """
    children = np.empty((nc, 2), np.int32)
    pidx = np.empty((nf, 2), np.int32)
    pw = np.empty((nf, 2), np.float64)
    if nf == nc:  # an axis of size 1 is not coarsened
        for i in range(nf):
            children[i] = (i, i)
            pidx[i] = (i, i)
            pw[i] = (1.0, 0.0)
        return children, pidx, pw
    children[:, 0] = nf
    children[:, 1] = -1
    for i in range(nf):
        j = ((2 * i + 1) * nc) // (2 * nf)  # coarse cell holding fine centre i + 1/2
        children[j, 0] = min(children[j, 0], i)
        children[j, 1] = max(children[j, 1], i)
        # position of fine centre i in coarse-centre units: s = ((2i + 1) nc - nf) / (2 nf)
        num = (2 * i + 1) * nc - nf
        i0 = num // (2 * nf)
        t = (num - i0 * 2 * nf) / (2 * nf)
        if i0 < 0:
            pidx[i] = (0, 0)
            pw[i] = (t, -(1.0 - t) if lo_dirichlet else 1.0 - t)
        elif i0 + 1 >= nc:
            pidx[i] = (nc - 1, nc - 1)
            pw[i] = (1.0 - t, -t if hi_dirichlet else t)
        else:
            pidx[i] = (i0, i0 + 1)
            pw[i] = (1.0 - t, t)
    return children, pidx, pw


class _Level:
    def __init__(self, xp, shape, r3):
        self.shape = shape
        self.rz, self.ry, self.rx = r3
        self.u = xp.zeros(shape, xp.float64)
        self.b = xp.zeros(shape, xp.float64)
        self.k = xp.zeros(shape, xp.float64)
        self.children = ()  # (cz, cy, cx, vol) from the finer level, set on coarse levels
        self.prolong = ()  # (pz, wz, py, wy, px, wx) to the finer level
        # a box of a distributed level (gpusim.parallel.steady): the red-black parity of the array's
        # first element, the ghost exchange (None on one process) and what replaces the restriction,
        # coarser cycle and prolongation below this level (None: those three here)
        self.parity = 0
        self.exchange = None
        self.handoff = None


def volume_ratio(fine_shape, coarse_shape) -> float:
    """Fine/coarse cell volume, the restriction's weight of the children's residuals. With odd sizes
    a coarse cell holds 1 or 2 children per axis, so averaging their residuals (instead of summing the
    density) let V-cycles on 2^k + 1 grids contract only 0.96x per cycle (1D model; 0.1x with it)."""
    vol = 1.0
    for axis in range(3):
        vol *= coarse_shape[axis] / fine_shape[axis]
    return vol


def _build_levels(xp, shape, rd, dmask):
    shapes, factors = level_shapes(shape)
    levels = [_Level(xp, s, tuple(rd * fa for fa in f)) for s, f in zip(shapes, factors)]
    for fine, coarse in zip(levels[:-1], levels[1:]):
        ch, pr = [], []
        for axis in range(3):
            lo, hi = (dmask >> (2 * axis)) & 1, (dmask >> (2 * axis + 1)) & 1
            c, p, w = transfer_tables(fine.shape[axis], coarse.shape[axis], lo, hi)
            ch.append(xp.asarray(c))
            pr += [xp.asarray(p), xp.asarray(w)]
        coarse.children = (*ch, volume_ratio(fine.shape, coarse.shape))
        coarse.prolong = tuple(pr)
    return levels


def _undefined_message(coef, flags):
    src = " and a source with no sink has none at all" if flags & L.HAS_SRC else ""
    return (
        "the steady state is undefined: the substrate has no decay (decay_per_min = 0), no Dirichlet "
        "boundary face, no vessel supply and no uptake by cells present in the grid, so zero-flux "
        f"diffusion leaves its level arbitrary{src}. Give it a decay, a Dirichlet boundary or vessels, "
        "or start it from init = \"given\""
    )


def _has_sink(xp, coef, bc_type, vessel, n_tumor, n_tcell, flags) -> bool:
    """Whether any voxel actually removes or fixes substrate (flags may enable arrays of zeros)."""
    if coef[L.LAM] > 0.0 or any(int(t) == L.BC_DIRICHLET for t in bc_type):
        return True
    if (flags & L.HAS_VESSEL) and coef[L.KV] > 0.0 and bool(xp.any(vessel)):
        return True
    if (flags & L.HAS_TUMOR) and coef[L.VT] > 0.0 and bool(xp.any(n_tumor)):
        return True
    return bool((flags & L.HAS_TCELL) and coef[L.VC] > 0.0 and bool(xp.any(n_tcell)))


def _has_source(xp, coef, bc_type, bc_value, vessel, n_tumor, src, flags) -> bool:
    """Whether anything supplies substrate; without, the steady state is exactly zero (and a relative
    change criterion would never be met while the iterate decays towards it)."""
    if any(int(t) == L.BC_DIRICHLET and float(v) != 0.0 for t, v in zip(bc_type, bc_value)):
        return True
    if (flags & L.HAS_VESSEL) and coef[L.KV_CS] != 0.0 and bool(xp.any(vessel)):
        return True
    if (flags & L.HAS_TUMOR) and coef[L.SEC_T] != 0.0 and bool(xp.any(n_tumor)):
        return True
    return bool((flags & L.HAS_SRC) and bool(xp.any(src)))


def _faces(coef, bc_type, bc_value):
    """(dmask, bct): the Dirichlet faces as bits 0..5 and their right-side terms (RD+RD)*bc."""
    rd = float(coef[L.RD])
    dmask = 0
    bct = np.zeros(6, np.float64)
    for f in range(6):
        if int(bc_type[f]) == L.BC_DIRICHLET:
            dmask |= 1 << f
            bct[f] = (rd + rd) * float(bc_value[f])
    return dmask, bct


def vcycle(xp_kernels, levels, i, dmask):
    """One V(PRE_SWEEPS, POST_SWEEPS) cycle from level ``i`` down: the correction is added to
    ``levels[i].u``. A level with ``handoff`` (a distributed level above the gathered ones) hands
    the restriction, the coarser cycle and the prolongation to it."""
    lv = levels[i]
    if lv.handoff is None and i == len(levels) - 1:
        xp_kernels.coarse_solve(lv.u, lv.b, lv.k, lv.rz, lv.ry, lv.rx, dmask)
        return
    xp_kernels.smooth(lv.u, lv.b, lv.k, lv.rz, lv.ry, lv.rx, dmask, PRE_SWEEPS, lv.parity, lv.exchange)
    if lv.handoff is not None:
        lv.handoff(i)
    else:
        nxt = levels[i + 1]
        if lv.exchange is not None:  # the residuals read the neighbours' last half-sweep
            lv.exchange(lv.u)
        xp_kernels.restrict(
            lv.u, lv.b, lv.k, lv.rz, lv.ry, lv.rx, dmask, nxt.b, nxt.k, *nxt.children
        )
        nxt.u.fill(0.0)
        vcycle(xp_kernels, levels, i + 1, dmask)
        if nxt.exchange is not None:  # the prolongation reads coarse cells across the cut
            nxt.exchange(nxt.u)
        xp_kernels.prolong_add(nxt.u, lv.u, *nxt.prolong)
    xp_kernels.smooth(lv.u, lv.b, lv.k, lv.rz, lv.ry, lv.rx, dmask, POST_SWEEPS, lv.parity, lv.exchange)


class OneProcess:
    """The whole grid in one array: what :func:`solve` asks of a grid, done locally (the distributed
    twin is ``gpusim.parallel.steady``)."""

    inner = None  # the array's own voxels (all of them)

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def max(self, values):
        return tuple(float(v) for v in values)

    def levels(self, xp, shape, rd, dmask):
        return _build_levels(xp, shape, rd, dmask)


def steady_solve(
    xp_kernels, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags, *, tol=1e-6,
    max_cycles=200,
) -> SteadyInfo:
    """Replace the float32 field ``c`` (also the initial guess) by the steady state, in place.

    ``xp_kernels``: :mod:`gpusim.fields.mg_cpu` or :mod:`gpusim.fields.mg_cuda` (arrays of its ``xp``);
    ``coef`` float64[NCOEF] (uses LAM, KV, KV_CS, VT, KMT, VC, KMC, SEC_T, RD), ``bc_type`` int32[6],
    ``bc_value`` float64[6], per-voxel arrays as in ``layout.py`` (dummies where ``flags`` says absent).
    ``tol``: relative max-norm change of one cycle, as a fraction of max|c|. Raises
    :class:`SteadyStateUndefined` for a singular problem; returns ``converged=False`` (``c`` holding the
    last iterate) when ``max_cycles`` do not suffice, and leaves ``c`` untouched if the iterate stops
    being finite.
    """
    return solve(xp_kernels, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags,
                 tol=tol, max_cycles=max_cycles, grid=OneProcess())


def solve(
    xp_kernels, c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags, *, tol, max_cycles,
    grid,
) -> SteadyInfo:
    """:func:`steady_solve` on the part of the grid ``grid`` says ``c`` and the per-voxel arrays are
    (:class:`OneProcess`: all of it). ``grid.levels`` builds the levels, ``grid.inner`` names the
    array's own voxels, ``grid.any`` and ``grid.max`` combine the parts' decisions and maxima (exact:
    the same on every part, the same as one process)."""
    xp = xp_kernels.xp
    coef = np.asarray(coef, np.float64)
    bc_type = np.asarray(bc_type)
    flags = int(flags)
    if not grid.any(_has_sink(xp, coef, bc_type, vessel, n_tumor, n_tcell, flags)):
        raise SteadyStateUndefined(_undefined_message(coef, flags))
    if c.ndim != 3:
        raise ValueError(f"steady_solve needs a (z, y, x) field, got shape {c.shape}")
    if not grid.any(_has_source(xp, coef, bc_type, bc_value, vessel, n_tumor, src, flags)):
        c.fill(0.0)
        return SteadyInfo(0, 0, 0.0, True)

    dmask, bct = _faces(coef, bc_type, bc_value)
    levels = grid.levels(xp, c.shape, float(coef[L.RD]), dmask)
    coef_k = xp.asarray(coef)
    bct_k = xp.asarray(bct)
    fine = levels[0]
    xp_kernels.load(c, fine.u)
    u_prev = xp.array(fine.u)

    converged = False
    cycles = 0
    while cycles < max_cycles:
        xp_kernels.rates(
            fine.u, coef_k, bct_k, vessel, n_tumor, n_tcell, src, flags, True, fine.k, fine.b
        )
        vcycle(xp_kernels, levels, 0, dmask)
        cycles += 1
        change, scale = grid.max(xp_kernels.clamp_change(fine.u, u_prev, grid.inner))
        if not (math.isfinite(change) and math.isfinite(scale)):
            return SteadyInfo(cycles, cycles, math.nan, False)
        if change <= tol * scale:
            converged = True
            break

    xp_kernels.store(fine.u, c)
    # the residual of the nonlinear equation in layout.py's form at what the caller gets
    xp_kernels.load(c, fine.u)
    xp_kernels.rates(
        fine.u, coef_k, bct_k, vessel, n_tumor, n_tcell, src, flags, False, fine.k, fine.b
    )
    if fine.exchange is not None:
        fine.exchange(fine.u)
    rmax, bmax = grid.max(xp_kernels.residual_max(
        fine.u, fine.b, fine.k, fine.rz, fine.ry, fine.rx, dmask, grid.inner
    ))
    return SteadyInfo(cycles, cycles, rmax / bmax if bmax > 0.0 else rmax, converged)
