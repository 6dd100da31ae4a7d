"""The census of a step: the timeseries values of the fields and the cells, as reductions that give
the same bits whether one process holds the whole grid or MPI ranks each hold a part (DESIGN.md §2).

One process is one partial: every function takes this process's part (the whole grid on one process)
and ``comm`` (None on one process, else the run's communicator, whose ``allreduce_sum`` and
``allreduce_max`` combine the parts). Only exact combinations are used:

- counts and the LFA-1 fixed-point sum are int64 sums;
- a field's mean is its fixed-point sum (gpusim.reduce) with the *global* scale ``k``, chosen from
  the global max |value| (an exact ``max``) and the global voxel count, then an int64 sum: exactly
  ``reduce.exact_sum`` of the whole field;
- minima and maxima are exact ``max`` reductions (of −x for a minimum).

The single-process :class:`~gpusim.simulation.Recorder` and ``CellStep.columns`` call these functions
with ``comm=None``; the MPI driver calls them on every rank with its boxes (docs/owned_state.md,
step 10), so the two cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np

from .agents import rules as R

__all__ = ["CELL_COUNTS", "LATTICE_CODES", "cell_columns", "cell_counts", "field_stats", "lattice_counts", "mg_tumor"]

#: the integer partials of :func:`cell_counts`, in their order
CELL_COUNTS = ("tcells", "tumor_live", "tumor_dead", "tumor_necrotic", "tcells_engaged", "tcells_exhausted",
               "lfa1_fixed")

#: the lattice codes :func:`lattice_counts` counts (the ``tumor_live``, ``tumor_dead`` and
#: ``tumor_necrotic`` partials of :data:`CELL_COUNTS`)
LATTICE_CODES = (R.LIVE, R.DEAD, R.NECROTIC)

#: LFA-1 is summed in this fixed point (2**-24: below float32's resolution of values in [0, 1])
LFA1_BITS = 24


def _sum(comm, value):
    return value if comm is None else comm.allreduce_sum(value)


def _max(comm, value: float) -> float:
    return value if comm is None else float(comm.allreduce_max(np.float64(value)))


def _bounds(a) -> tuple:
    """(min, max) of ``a`` as floats; (+inf, -inf) for an empty part."""
    if a.size == 0:
        return math.inf, -math.inf
    return float(a.min()), float(a.max())


def _fixed_total(comm, reduce, a, lo: float, hi: float, n_values: int) -> float:
    """The exact total of the parts ``a`` whose local bounds are ``lo``, ``hi`` (:func:`_bounds`; NaN
    if any part is not finite): gpusim.reduce's fixed point with the global scale."""
    top = max(abs(lo), abs(hi)) if a.size else 0.0
    bad = _max(comm, 0.0 if math.isfinite(top) else 1.0)
    if bad:
        return math.nan
    from .reduce import scale_exponent

    k = scale_exponent(_max(comm, top), n_values)
    fixed = reduce.fixed_sum(a, k) if a.size else 0
    total = int(_sum(comm, np.int64(fixed)))
    return math.ldexp(float(total), -int(k))


def field_stats(reduce, local, n_voxels: int, comm=None) -> dict:
    """Mean, min and max of a field from this process's part ``local`` (its interior, no ghosts) and
    the grid's voxel count. ``reduce``: the backend's reduce kernels (``fixed_sum`` on its arrays)."""
    lo, hi = _bounds(local)
    mean = _fixed_total(comm, reduce, local, lo, hi, n_voxels) / n_voxels
    return {"mean": mean, "min": -_max(comm, -lo), "max": _max(comm, hi)}


def lattice_counts(xp, tumor) -> np.ndarray:
    """This process's voxels of each of :data:`LATTICE_CODES` in its own lattice voxels ``tumor`` (or
    None: zeros), int64."""
    if tumor is None:
        return np.zeros(len(LATTICE_CODES), np.int64)
    return np.array([int(xp.count_nonzero(tumor == code)) for code in LATTICE_CODES], np.int64)


def cell_counts(xp, store, tumor, exhausted_below) -> np.ndarray:
    """This process's integer partials (:data:`CELL_COUNTS`) from its own T-cell rows (``store``) and
    its own lattice voxels (``tumor``, or None: zeros). ``exhausted_below``: the T-cell function below
    which a cell counts as exhausted (None: no T cells configured)."""
    s = store
    alive = s.state != np.uint8(R.TDEAD)
    # LFA-1 in 2**-24 fixed point: an integer sum, the same in any order, on any device and rank count
    fixed = xp.where(alive, xp.floor(s.lfa1.astype(xp.float64) * 2.0**LFA1_BITS + 0.5), 0.0).astype(xp.int64)
    exhausted = (int(xp.count_nonzero(alive & (s.function < np.float32(exhausted_below))))
                 if exhausted_below is not None else 0)
    lattice = lattice_counts(xp, tumor)
    return np.array([int(xp.count_nonzero(alive)), *lattice, int(xp.count_nonzero(s.state == np.uint8(R.ENGAGED))),
                     exhausted, int(fixed.sum())], np.int64)


def mg_tumor(reduce, xp, mg, n_tumor, n_voxels: int, n_live: int, comm=None) -> tuple:
    """(mean, min) of Mg over the live tumour voxels, from this process's part of the Mg field and of
    ``n_tumor`` (1 on a live tumour voxel, 0 elsewhere; the lattice update writes it with the state)
    in the same layout. NaN for both when no voxel is live."""
    if n_live == 0:
        return math.nan, math.nan
    masked = mg * n_tumor.astype(xp.float32)  # exact: a product with 0 or 1
    mean = _fixed_total(comm, reduce, masked, *_bounds(masked), n_voxels) / n_live
    live = mg[n_tumor != 0]
    own_min = float(live.min()) if live.size else math.inf
    return mean, -_max(comm, -own_min)


def cell_columns(counts, totals: dict, mg=None) -> dict:
    """The cell columns of the timeseries row from the global :func:`cell_counts` (summed over the
    parts), the run's cumulative ``totals`` and :func:`mg_tumor` (None without an Mg field)."""
    c = dict(zip(CELL_COUNTS, (int(v) for v in counts)))
    n_alive = c["tcells"]
    out = {
        "tumor_live": c["tumor_live"],
        "tumor_dead": c["tumor_dead"],
        "tumor_necrotic": c["tumor_necrotic"],
        "tumor_births": totals["tumor_births"],
        "tumor_deaths": totals["tumor_deaths"],
        "tcells": n_alive,
        "tcells_engaged": c["tcells_engaged"],
        "tcells_exhausted": c["tcells_exhausted"],
        "engagements": totals["engagements"],
        "kills": totals["kills"],
        "lfa1_mean": float(c["lfa1_fixed"] / 2.0**LFA1_BITS / n_alive) if n_alive else float("nan"),
    }
    if mg is not None:
        out["mg_tumor_mean_mM"], out["mg_tumor_min_mM"] = mg
    return out
