"""The census (gpusim.census) of a grid split between ranks is bitwise the single-process timeseries
row: a busy run (tumour, T cells, Mg implant, three substrates) is stepped on one process, and after
several steps its lattice, fields and T cells are cut into boxes (uneven, some without T cells, one
cut through the tumour) held by in-process ranks, whose collective census must give the Recorder's
row bit for bit (docs/owned_state.md, step 10)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gpusim
from gpusim import census
from gpusim.parallel.decomposition import Decomposition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_mpi import _BUSY  # noqa: E402
from threadcomm import run_ranks  # noqa: E402

_SPLITS = {
    "four uneven boxes": [[[0, 4], [4, 16]], [[0, 11], [11, 7]], [[0, 16]]],
    "three z-slabs through the tumour": [[[0, 9], [9, 1], [10, 10]], [[0, 18]], [[0, 16]]],
    "one box": [[[0, 20]], [[0, 18]], [[0, 16]]],
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """(simulation state after each of a few steps, the Recorder's row then), stepped on one process."""
    cfg = tmp_path_factory.mktemp("census") / "busy.toml"
    cfg.write_text(_BUSY)
    sim = gpusim.Simulation(str(cfg))
    assert tuple(sim.state.shape) == (20, 18, 16), sim.state.shape
    out = []
    for step in range(1, 26):
        sim.step()
        if step in (1, 12, 25):  # before the implant and the infusion, and after both
            st, s = sim.state, sim.tcells
            snap = {"fields": {n: f.copy() for n, f in st.fields.items()}, "tumor": st.tumor.copy(),
                    "n_tumor": st.n_tumor.copy(), "state": s.state.copy(), "lfa1": s.lfa1.copy(),
                    "function": s.function.copy(), "voxel": s.voxel.copy(), "totals": dict(sim.cells.totals),
                    "units": {n: p.unit for n, p in sim.field_update.plans.items()}}
            row = {k: v[-1] for k, v in sim.recorder.columns.items() if k != "time_min"}
            out.append((snap, row))
    return sim, out


def _split_census(sim, snap, runs):
    """Every rank's census row for the boxes of ``runs`` (T cells with the owner of their voxel)."""
    d = Decomposition.from_runs(sim.state.shape, runs)
    owner = np.empty(sim.state.shape, np.int64)
    for r, b in enumerate(d.boxes()):
        owner[b.slices] = r
    holder = owner.reshape(-1)[snap["voxel"]]
    red = sim.backend.kernels("reduce")
    n_voxels = int(np.prod(sim.state.shape))
    below = sim.config.tcells.exhausted_below

    def work(comm):
        b = d.box(comm.rank)
        mine = holder == comm.rank
        store = SimpleNamespace(**{c: snap[c][mine] for c in ("state", "lfa1", "function")})
        counts = comm.allreduce_sum(census.cell_counts(np, store, snap["tumor"][b.slices], below))
        n_live = int(counts[census.CELL_COUNTS.index("tumor_live")])
        mg = census.mg_tumor(red, np, np.ascontiguousarray(snap["fields"]["mg"][b.slices]),
                             snap["n_tumor"][b.slices], n_voxels, n_live, comm=comm)
        row = census.cell_columns(counts, snap["totals"], mg)
        for name, f in snap["fields"].items():
            stats = census.field_stats(red, np.ascontiguousarray(f[b.slices]), n_voxels, comm=comm)
            for stat, value in stats.items():
                row[f"{name}_{stat}_{snap['units'][name]}"] = value
        return row, int(np.count_nonzero(mine))

    return run_ranks(d.n_ranks, work)


def _bits(row):
    return {k: float(v).hex() if isinstance(v, float) else v for k, v in row.items()}


@pytest.mark.parametrize("split", sorted(_SPLITS))
def test_the_census_of_split_boxes_is_bitwise_the_recorders_row(rows, split):
    sim, snaps = rows
    for snap, want in snaps:
        got = _split_census(sim, snap, _SPLITS[split])
        assert all(_bits(row) == _bits(want) for row, _ in got), (split, got[0][0], want)
        if split != "one box":
            assert min(n for _, n in got) < max(n for _, n in got)  # the T cells are split unevenly
    assert snaps[-1][1]["tumor_live"] > 0 and snaps[-1][1]["tcells"] > 0 and snaps[-1][1]["kills"] >= 0


def test_a_rank_with_a_non_finite_voxel_makes_every_ranks_mean_nan():
    d = Decomposition((6, 4, 4), ranks_zyx=(2, 1, 1))
    g = np.random.default_rng(4).random((6, 4, 4)).astype(np.float32)
    g[5, 3, 3] = np.inf
    red = gpusim.backend.select_backend("cpu").kernels("reduce")
    got = run_ranks(2, lambda c: census.field_stats(red, g[d.box(c.rank).slices], g.size, comm=c))
    assert all(math.isnan(s["mean"]) for s in got)
    finite = g.copy()
    finite[5, 3, 3] = 0.5
    got = run_ranks(2, lambda c: census.field_stats(red, finite[d.box(c.rank).slices], g.size, comm=c))
    one = census.field_stats(red, finite, g.size)
    assert all(s == one for s in got) and one["mean"] == red.exact_sum(finite) / g.size


def test_a_rank_with_an_empty_box_adds_nothing():
    from gpusim.parallel.decomposition import Box

    g = np.random.default_rng(5).random((4, 3, 3)).astype(np.float32)
    boxes = [Box((0, 0, 0), (4, 3, 3)), Box((4, 0, 0), (0, 3, 3))]
    red = gpusim.backend.select_backend("cpu").kernels("reduce")
    got = run_ranks(2, lambda c: census.field_stats(red, g[boxes[c.rank].slices], g.size, comm=c))
    assert got[0] == got[1] == census.field_stats(red, g, g.size)
