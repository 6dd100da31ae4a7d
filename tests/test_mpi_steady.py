"""The steady (multigrid) solve distributed over MPI ranks (gpusim.parallel.steady) is the single-process
solve bit for bit: the same float32 field and the same cycle count on 2, 3 and 4 ranks, process grids
cutting z, y and x, an odd grid shape and boxes of different sizes, with the coarse levels distributed
or handed to rank 0; skipping the ghost exchange between the red and the black half-sweep changes the
bits (the comparison can fail). End to end, ``mpiexec gpusim run`` with a steady O2 substrate re-solved
during the run by all ranks writes the one-process store. Pure checks (no MPI) of the coarse-level
alignment rule and of the one-rank solve run everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gpusim.fields import mg_cpu, steady
from gpusim.parallel.comm import SerialComm
from gpusim.parallel.decomposition import Decomposition
from gpusim.parallel.steady import DistributedSteady

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "mpi"))
from steady_driver import problem  # noqa: E402
from test_mpi import _differing, _gpusim, _launch, needs_mpi  # noqa: E402
from test_steady import ALL, DUMMY_F32  # noqa: E402

_SLOW = pytest.mark.slow
_ONE = {}


def _one_process(shape):
    """steady_solve of the driver's O2 problem on one process: (field, info), cached per shape."""
    shape = tuple(shape)
    if shape not in _ONE:
        c, coef, bc_type, bc_value, *ops = problem(shape)
        start = c.copy()
        info = steady.steady_solve(mg_cpu, c, coef, bc_type, bc_value, *ops, DUMMY_F32, ALL)
        assert info.converged and info.cycles >= 5
        assert np.abs(c - start).max() > 1.0  # the tumour consumes (mmHg): the comparison has content
        _ONE[shape] = c, info
    return _ONE[shape]


def _distributed(tmp_path, n, shape, ranks, runs=None, colour_exchange=True):
    out = str(tmp_path / "steady")
    _launch(n, "steady_driver.py", out, json.dumps(list(shape)), json.dumps(ranks), json.dumps(runs),
            "1" if colour_exchange else "0", timeout=120)
    ranks_info = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(n)]
    return np.load(out + ".npz")["field"], ranks_info


# -- pure -------------------------------------------------------------------------------------------
def test_coarse_levels_are_distributed_while_the_boxes_are_whole_coarse_cells():
    """64^3 on (2, 2, 2): every box halves evenly down to 2-cell runs, so rank 0 takes over only above
    the coarsest level; an odd box offset (a 13-voxel axis cut 7 + 6: the coarse cell 3 holds fine
    cells 6 and 7) hands off at the fine level; one rank keeps every level but the coarsest."""
    def handoff(shape, runs):
        s = DistributedSteady(SerialComm(), Decomposition.from_runs(shape, runs))
        s._levels(np, 1.0, 0)
        return s.handoff_level

    assert handoff((13, 4, 4), [[(0, 13)], [(0, 4)], [(0, 4)]]) == len(steady.level_shapes((13, 4, 4))[0]) - 2
    shapes, _ = steady.level_shapes((64, 64, 64))
    for r in range(8):  # the rank-0 view of each box of (2, 2, 2) gives the same level on every rank
        d = Decomposition((64, 64, 64), ranks_zyx=(2, 2, 2))
        s = DistributedSteady(_RankView(r), d)
        s._levels(np, 1.0, 0)
        assert s.handoff_level == len(shapes) - 2 == 4
    children = steady.transfer_tables(13, 7, 1, 1)[0]
    assert list(children[3]) == [6, 6] and list(children[4]) == [7, 8]
    assert handoff((13, 4, 4), [[(0, 7), (7, 6)], [(0, 4)], [(0, 4)]]) == 1  # cut at 7: cell 3 = {6}: whole
    assert handoff((13, 4, 4), [[(0, 8), (8, 5)], [(0, 4)], [(0, 4)]]) == 0  # cut at 8 splits cell 4


class _RankView(SerialComm):
    """A one-rank stand-in that says it is rank ``r`` of 8 (for building that rank's levels only)."""

    def __init__(self, r):
        self.rank, self.size = r, 8


def test_the_distributed_solve_on_one_rank_is_steady_solve_bitwise():
    want, info = _one_process((13, 11, 9))
    c0, coef, bc_type, bc_value, *ops = problem((13, 11, 9))
    s = DistributedSteady(SerialComm(), Decomposition((13, 11, 9), ranks_zyx=(1, 1, 1)))
    got = s.solve(mg_cpu, c0, coef, bc_type, bc_value, *ops, DUMMY_F32, ALL)
    assert got == info and c0.tobytes() == want.tobytes() and s.bytes_sent == 0


# -- under mpiexec ----------------------------------------------------------------------------------
# (ranks, shape, process grid, runs): x, y, z cuts; an odd shape; boxes of different sizes; coarse
# levels distributed below the fine one ((16, 16, 12) on (2, 2, 1): hand-off at level 2)
_CASES = [
    (2, (13, 11, 9), [1, 1, 2], None),
    (3, (13, 11, 9), [1, 3, 1], None),
    (4, (16, 16, 12), [2, 2, 1], None),
    (2, (13, 11, 9), None, [[(0, 4), (4, 9)], [(0, 11)], [(0, 9)]]),
    pytest.param(3, (13, 11, 9), [3, 1, 1], None, marks=_SLOW),
    pytest.param(4, (13, 11, 9), [1, 2, 2], None, marks=_SLOW),
    pytest.param(4, (13, 11, 9), [1, 1, 4], None, marks=_SLOW),
    pytest.param(4, (32, 16, 16), [4, 1, 1], None, marks=_SLOW),
    pytest.param(3, (13, 11, 9), None, [[(0, 13)], [(0, 2), (2, 8), (10, 1)], [(0, 9)]], marks=_SLOW),
    pytest.param(4, (24, 20, 16), None, [[(0, 8), (8, 16)], [(0, 20)], [(0, 4), (4, 12)]], marks=_SLOW),
]


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("n, shape, ranks, runs", _CASES)
def test_distributed_steady_solve_is_bitwise_the_single_process_solve(tmp_path, n, shape, ranks, runs):
    want, info = _one_process(shape)
    got, per_rank = _distributed(tmp_path, n, shape, ranks, runs)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    for r in per_rank:  # every rank took the one-process decisions (cycles, convergence, residual)
        assert (r["cycles"], r["converged"], r["max_residual"]) == (info.cycles, True, info.max_residual)
        assert r["bytes_sent"] > 0  # the ranks did exchange
    if shape == (16, 16, 12):
        assert per_rank[0]["handoff_level"] == 2  # two coarse levels were distributed too
    if runs is not None:
        sizes = {tuple(r["box"][1]) for r in per_rank}
        assert len(sizes) == n  # boxes of different sizes


@needs_mpi[0]
@needs_mpi[1]
def test_skipping_the_exchange_between_red_and_black_changes_the_bits(tmp_path):
    """The black half-sweep then reads the neighbours' red voxels of the sweep before across the cut."""
    want, _ = _one_process((13, 11, 9))
    got, _ = _distributed(tmp_path, 2, (13, 11, 9), [1, 1, 2], colour_exchange=False)
    assert got.tobytes() != want.tobytes()


# -- end to end: gpusim run under mpiexec ------------------------------------------------------------
# O2 by its steady solver re-solved every 2 min while a tumour consumes it and T cells move and kill;
# Mg by LOD in the bitwise mode (the default mode is changing: named here)
_RUN = """seed = 5
init = "steady"
[grid]
shape = [14, 12, 10]
dx_um = 15.0
[[substrates]]
name = "mg"
[[substrates]]
name = "o2"
update_every_min = 2.0
[vessels]
kind = "random"
voxel_fraction = 0.03
[tumor]
initial_radius_um = 60.0
cycle_rate_per_min = 0.01
[tcells]
initial_count = 60
placement = "tumor"
k_on_per_min = 0.5
k_hit_per_min = 0.2
speed_um_per_min = 6.0
[output]
fields_every_min = 2.0
tumor_every_min = 2.0
tcells_every_min = 2.0
"""
_RUN_MIN = 8


@pytest.fixture(scope="module")
def steady_run(tmp_path_factory):
    """The config and its single-process store."""
    d = tmp_path_factory.mktemp("steady_run")
    cfg = d / "run.toml"
    cfg.write_text(_RUN)
    one = d / "one.zarr"
    p = _gpusim("run", str(cfg), "--minutes", str(_RUN_MIN), "--out", str(one), "--set", "parallel.lod_mode=bitwise")
    assert p.returncode == 0, p.stderr[-3000:]
    return cfg, one


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("n, ranks", [(2, [1, 1, 2]), pytest.param(3, None, marks=_SLOW),
                                     pytest.param(4, [2, 2, 1], marks=_SLOW)])
def test_mpiexec_run_with_steady_o2_solved_on_all_ranks_writes_the_single_process_store(tmp_path, steady_run, n,
                                                                                       ranks):
    import gpusim

    cfg, one = steady_run
    many = tmp_path / "many.zarr"
    extra = ["--set", f"parallel.ranks_zyx={json.dumps(ranks)}"] if ranks else []
    p = _gpusim("run", str(cfg), "--minutes", str(_RUN_MIN), "--out", str(many), "--set", "parallel.lod_mode=bitwise",
                *extra, n=n)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"parallel: {n} MPI ranks" in p.stdout
    assert _differing(one, many) == []
    r = gpusim.open_run(many)
    ts, perf = r.timeseries, r.perf
    assert ts["o2_min_mmHg"].iloc[-1] < ts["o2_min_mmHg"].iloc[0]  # the re-solves follow the growing tumour
    assert ts["tcells"].iloc[-1] > 0 and ts["tumor_live"].iloc[-1] > 0
    # every rank took part in the solves at steps 0, 2, 4, 6 (O2's update_every_min = 2): rank 0 moved
    # the O2 boxes, the ghost faces and the gathered solution on those steps and not on the others
    assert {f"steady_s_r{k}" for k in range(n)} <= set(perf.columns)
    moved = perf["fields_rank0_bytes"].to_numpy()
    assert np.all(moved[0::2] > moved[1::2]) and len(set(moved[1::2])) == 1
