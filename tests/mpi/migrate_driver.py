"""Run under ``mpiexec -n N`` with a JSON spec and an output folder: every rank makes the same seeded
global set of T cells (:func:`make_cells`: every byte of every column random, positions on box faces,
grid faces, just below faces and beyond the grid among uniform ones), takes the cells dealt to it at
random, and writes what :mod:`gpusim.parallel.migrate` returns:

* ``m__*``: after ``migrate`` (all cells), ``l__*``: after ``migrate(drop_dead=True)``,
  ``c__*``: the migrated cells migrated again to re-cut boxes (``spec["recut"]``);
* ``g{w}__*``: ``ghosts`` of width w (the migrated cells as own); ``f{w}__*``: the same with the ghost
  targets cut to the face neighbours — an axis-only exchange without forwarding, which the test must
  catch (no edge or corner ghosts, nothing from two boxes away).

The checks are in tests/test_mpi_migrate.py, which imports :func:`make_cells` and :func:`decompositions`
to rebuild the global set."""

from __future__ import annotations

import json
import sys

import numpy as np

from gpusim.agents.tcell_store import COLUMNS
from gpusim.parallel.decomposition import Decomposition


def decompositions(spec):
    """(the decomposition, the re-cut one) of a spec: ``runs`` (uneven, per axis) or ``ranks_zyx``."""
    shape = spec["shape"]
    d = (Decomposition.from_runs(shape, spec["runs"]) if "runs" in spec
         else Decomposition(shape, ranks_zyx=spec["ranks_zyx"]))
    recut = Decomposition.from_runs(shape, spec["recut"]) if "recut" in spec else d
    return d, recut


def _coordinate(rng, n_axis, starts, dx, k):
    """``k`` float32 coordinates on one axis: uniform, on a box or grid face, one ulp below a face, or
    beyond the grid (clamped into the face voxel by the rules)."""
    faces = np.array(sorted(set(starts) | {n_axis}), np.float32) * np.float32(dx)
    kind = rng.integers(0, 6, k)
    u = rng.uniform(0.0, n_axis * dx, k).astype(np.float32)
    f = faces[rng.integers(0, faces.shape[0], k)]
    below = np.nextafter(f, np.float32(-np.inf))
    beyond = np.where(rng.integers(0, 2, k) == 0, np.float32(-0.3 * dx), np.float32((n_axis + 0.2) * dx))
    return np.select([kind < 3, kind == 3, kind == 4], [u, f, below], beyond).astype(np.float32)


def make_cells(spec, n_ranks):
    """(columns, the rank each cell starts on): ``spec["n"]`` T cells from ``spec["seed"]``."""
    rng = np.random.default_rng(spec["seed"])
    n, dx = int(spec["n"]), float(spec["dx_um"])
    d, recut = decompositions(spec)
    cols = {}
    for c, (dt, shape, _) in COLUMNS.items():  # random bytes: rows must travel bitwise, NaNs and all
        nbytes = n * np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
        cols[c] = np.frombuffer(rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes(), dt).reshape((n,) + shape).copy()
    starts = [sorted({s for s, _ in d.runs[a]} | {s for s, _ in recut.runs[a]}) for a in range(3)]
    cols["pos_um"] = np.stack([_coordinate(rng, d.shape[a], starts[a], dx, n) for a in range(3)], axis=1)
    cols["uid"] = rng.choice(2**62, n, replace=False).astype(np.uint64) * np.uint64(3)
    cols["state"] = rng.integers(0, 3, n).astype(np.uint8)  # FREE, ENGAGED, TDEAD
    return cols, rng.integers(0, n_ranks, n)


def _faces_only(decomp, rank, width):
    """The ghost targets an axis-only exchange without forwarding reaches: the six face neighbours."""
    faces = {decomp.neighbour(rank, a, s) for a in range(3) for s in (-1, 1)} - {None}
    return [(r, reg) for r, reg in _ALL_TARGETS(decomp, rank, width) if r in faces]


_ALL_TARGETS = None


def main(spec, out):
    global _ALL_TARGETS
    from gpusim.parallel import comm as mpi_comm
    from gpusim.parallel import migrate as M

    c = mpi_comm.world()
    d, recut = decompositions(spec)
    cols, start = make_cells(spec, c.size)
    mine = {k: v[start == c.rank] for k, v in cols.items()}
    dx = float(spec["dx_um"])
    t = M.Traffic()
    res = {"m": M.migrate(c, d, mine, dx, traffic=t)}
    res["l"] = M.migrate(c, d, mine, dx, drop_dead=True)
    res["c"] = M.migrate(c, recut, res["m"], dx)
    g = M.Traffic()
    for w in spec["widths"]:
        res[f"g{w}"] = M.ghosts(c, d, res["m"], w, dx, traffic=g)
    _ALL_TARGETS = M.ghost_targets
    M.ghost_targets = _faces_only
    try:
        for w in spec["widths"]:
            res[f"f{w}"] = M.ghosts(c, d, res["m"], w, dx)
    finally:
        M.ghost_targets = _ALL_TARGETS
    np.savez(f"{out}/rank{c.rank}.npz", **{f"{k}__{col}": a for k, cs in res.items() for col, a in cs.items()})
    with open(f"{out}/rank{c.rank}.json", "w") as f:
        json.dump({"rank": c.rank, "migrate": vars(t), "ghosts": vars(g)}, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), sys.argv[2])
