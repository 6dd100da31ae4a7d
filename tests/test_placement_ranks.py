"""T-cell infusions placed by the ranks (gpusim.parallel.placement): in-process ranks
(tests/threadcomm.py), each holding one box of the lattice, the vessels and the T cells per voxel,
place exactly the T cells one process places (``agents.placement.place``) — the same positions with
the same uid numbers — for every placement, every count against the free room and any process grid,
and the selection is exact on 64-bit hash ties. Under ``mpiexec`` the busy run's infusion (shell) is
compared with one process's store in tests/test_mpi.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gpusim.agents import rules as R
from gpusim.agents.placement import PlacementError, place
from gpusim.parallel.decomposition import Decomposition
from gpusim.parallel.placement import place_on_ranks, placement_order, select_smallest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threadcomm import run_ranks  # noqa: E402

CAP, CAP_T, DX = 3, 2, 15.0


def _grid(seed, shape):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    c = [n / 2 - 0.5 + rng.uniform(-2, 2) for n in shape]
    r2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
    tumor = np.where(r2 < (min(shape) / 3) ** 2, R.LIVE, 0).astype(np.uint8)
    tumor[(tumor == R.LIVE) & (rng.random(shape) < 0.2)] = R.NECROTIC
    vessel = (rng.random(shape) < 0.05).astype(np.uint8)
    occupancy = rng.integers(0, CAP + 1, shape).astype(np.int64)
    return tumor, vessel, occupancy


def _on_ranks(size, ranks_zyx, count, placement, tumor, vessel, occupancy, salt=3):
    decomp = Decomposition(tumor.shape, n_ranks=size, ranks_zyx=ranks_zyx)

    def work(comm):
        box = decomp.box(comm.rank)
        sl = box.slices
        return place_on_ranks(comm, count, placement, [0.0, 30.0], np.ascontiguousarray(tumor[sl]),
                              np.ascontiguousarray(vessel[sl]), np.ascontiguousarray(occupancy[sl]), box.offset,
                              tumor.shape, CAP, CAP_T, DX, seed=11, stream=5, salt=salt, purpose=7, what="test")

    return run_ranks(size, work)


@pytest.mark.parametrize("placement", ["tumor", "shell", "uniform", "vessels"])
@pytest.mark.parametrize("size,ranks_zyx", [(1, None), (2, (1, 2, 1)), (3, (3, 1, 1)), (4, (2, 1, 2))])
def test_the_ranks_place_the_single_process_t_cells_with_their_uid_numbers(placement, size, ranks_zyx):
    shape = (9, 10, 11)
    for seed in range(3):
        tumor, vessel, occupancy = _grid(seed, shape)
        free_total = None
        for count in (1, 17, 400, 10**6):  # down to one, up to more than the free room
            one = place(count, placement, [0.0, 30.0], tumor, vessel, occupancy.reshape(-1), CAP, CAP_T, DX,
                        11, 5, 3, 7, "test")
            parts = _on_ranks(size, ranks_zyx, count, placement, tumor, vessel, occupancy)
            index = np.concatenate([p[1] for p in parts])
            pos = np.concatenate([p[0] for p in parts])
            assert all(p[2] == one.shape[0] for p in parts)  # every rank knows how many were placed
            assert np.array_equal(np.sort(index), np.arange(one.shape[0]))  # each number once
            got = np.empty_like(one)
            got[index] = pos
            assert np.array_equal(got, one), (seed, count)  # same cells, same uid numbers, same bits
            for (p, _, _), r in zip(parts, range(size)):  # each rank placed the cells of its own box
                box = Decomposition(shape, n_ranks=size, ranks_zyx=ranks_zyx).box(r)
                v = np.floor(p / DX).astype(int)
                assert ((v >= box.offset) & (v < box.stop)).all()
            free_total = one.shape[0] if count == 10**6 else free_total
        assert free_total is not None and free_total < 10**6


def test_no_free_room_raises_the_single_process_error_on_every_rank():
    shape = (6, 6, 6)
    tumor, vessel, _ = _grid(0, shape)
    full = np.full(shape, CAP, np.int64)
    with pytest.raises(PlacementError) as one:
        place(5, "uniform", None, tumor, vessel, full.reshape(-1), CAP, CAP, DX, 1, 1, 1, 1, "events.x")
    errors = []

    def work(comm):
        box = Decomposition(shape, n_ranks=2).box(comm.rank)
        try:
            place_on_ranks(comm, 5, "uniform", None, tumor[box.slices], vessel[box.slices], full[box.slices],
                           box.offset, shape, CAP, CAP, DX, 1, 1, 1, 1, "events.x")
        except PlacementError as e:
            errors.append(str(e))

    run_ranks(2, work)
    assert errors == [str(one.value)] * 2 and "216 candidate voxels" in errors[0]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_the_selection_and_numbering_are_exact_on_hash_ties(size):
    """Keys with many equal 64-bit hashes (Philox almost never makes them): the ranks choose and
    number exactly the first ``count`` of one lexsort of all keys, at every cut through a tie."""
    rng = np.random.default_rng(size)
    n = 300
    h = rng.integers(0, 12, n).astype(np.uint64) * np.uint64(2**60)  # 12 values: ties everywhere
    h[:5] = np.uint64(2**64 - 1)
    voxel = rng.permutation(n).astype(np.int64)  # distinct: a slot lives on one rank
    slot = rng.integers(0, 3, n).astype(np.int64)
    owner = rng.integers(0, size, n)
    want = np.lexsort((slot, voxel, h))
    for count in (1, 7, 25, 26, 150, n - 1, n, n + 5):
        def work(comm, count=count):
            mine = np.flatnonzero(owner == comm.rank)
            chosen = select_smallest(comm, h[mine], voxel[mine], slot[mine], count)
            number = placement_order(comm, h[mine][chosen], voxel[mine][chosen], slot[mine][chosen])
            return mine[chosen], number

        parts = run_ranks(size, work)
        got = np.full(min(count, n), -1)
        for rows, number in parts:
            got[number] = rows
        assert np.array_equal(got, want[:count]), count
