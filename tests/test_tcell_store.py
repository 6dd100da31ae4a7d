"""gpusim.agents: the T-cell structure of arrays (growth, stable compaction, bytes per agent), uid
derivation and its uniqueness check, and the (voxel, uid) spatial index — each against an answer
computed independently here (plain Python loops, the documented Philox counter layout)."""

from __future__ import annotations

import numpy as np
import pytest

from gpusim import rng
from gpusim.agents.spatial_index import sort_by_voxel_uid, voxel_of, write_counts
from gpusim.agents.tcell_store import (
    CARRIED_COLUMNS, COLUMNS, STATE_COLUMNS, STREAM_UIDS, UID_KIND_DAUGHTER, UID_KIND_INFUSED,
    UID_KIND_RECRUITED, TCellState, TCellStore, bytes_per_tcell, check_unique, uid_daughter, uid_infused, uid_recruited)
from gpusim.backend import select_backend

SHAPE = (5, 7, 9)  # nz, ny, nx: unequal, so a swapped axis shows
DX_UM = 15.0


@pytest.fixture(scope="module")
def cpu():
    return select_backend("cpu")


def _random_store(cpu, n, seed=0, capacity=16):
    g = np.random.default_rng(seed)
    store = TCellStore(cpu, capacity=capacity)
    extent = np.array(SHAPE) * DX_UM
    # a margin outside the grid exercises the clamping; many agents per voxel exercise uid ties
    pos = g.uniform(-20.0, extent + 20.0, (n, 3))
    store.append(pos_um=pos.astype(np.float32), uid=uid_infused(0, np.arange(n)),
                 dir=g.normal(size=(n, 3)).astype(np.float32),
                 state=g.integers(0, 3, n).astype(np.uint8), lfa1=g.random(n).astype(np.float32),
                 target=g.integers(-1, 300, n), timer_min=g.random(n).astype(np.float32),
                 kills=g.integers(0, 9, n).astype(np.uint16),
                 function=g.random(n).astype(np.float32))
    return store


def test_capacity_grows_by_doubling_and_keeps_every_row(cpu):
    store = TCellStore(cpu, capacity=4)
    seen = []
    for k in range(10):  # 3 agents per append: 30 agents through capacities 4, 8, 16, 32
        pos = np.full((3, 3), k, np.float32)
        store.append(pos_um=pos, uid=np.arange(3 * k, 3 * k + 3, dtype=np.uint64))
        seen.append(store.capacity)
    assert seen == [4, 8, 16, 16, 16, 32, 32, 32, 32, 32]
    assert store.n == len(store) == 30
    np.testing.assert_array_equal(store.uid, np.arange(30, dtype=np.uint64))
    np.testing.assert_array_equal(store.pos_um[:, 0],
                                  np.repeat(np.arange(10), 3).astype(np.float32))
    # defaults of columns not given
    assert (store.state == TCellState.FREE).all() and (store.target == -1).all()
    assert (store.function == 1.0).all() and (store.kills == 0).all()


def test_one_large_append_jumps_straight_to_a_fitting_power_of_two(cpu):
    store = TCellStore(cpu, capacity=3)
    store.append(pos_um=np.zeros((50, 3), np.float32), uid=np.arange(50, dtype=np.uint64))
    assert store.capacity == 3 * 32 and store.n == 50


def test_append_rejects_unknown_missing_and_misshaped_columns(cpu):
    store = TCellStore(cpu)
    with pytest.raises(ValueError, match="unknown"):
        store.append(pos_um=np.zeros((1, 3)), uid=[1], colour=[2])
    with pytest.raises(ValueError, match="uid"):
        store.append(pos_um=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="pos_um"):
        store.append(pos_um=np.zeros((2, 2)), uid=[1, 2])


def test_compact_removes_exactly_the_dead_and_keeps_survivor_order(cpu):
    store = _random_store(cpu, 500, seed=1)
    before = store.to_host()
    alive = [i for i in range(500) if before["state"][i] != TCellState.DEAD]  # plain-Python answer
    removed = store.compact()
    assert removed == 500 - len(alive) and store.n == len(alive)
    after = store.to_host()
    for name in CARRIED_COLUMNS:  # the scratch columns are not carried (rewritten every step)
        np.testing.assert_array_equal(after[name], before[name][alive], err_msg=name)
    assert not (after["state"] == TCellState.DEAD).any()
    assert store.compact() == 0  # idempotent


def test_bytes_per_tcell_is_the_sum_of_column_sizes():
    # pos 3*4 + dir 3*4 + uid 8 + state 1 + lfa1 4 + target 8 + timer 4 + kills 2 + function 4
    state = 12 + 12 + 8 + 1 + 4 + 8 + 4 + 2 + 4 + 4 + 2
    scratch = 8 + 1 + 1 + 8 + 4 + 12
    assert bytes_per_tcell(STATE_COLUMNS) == state == 61
    assert bytes_per_tcell() == state + scratch == 95


def test_uids_follow_the_documented_philox_counter_layout():
    k0, k1 = rng.key(0, STREAM_UIDS)

    def expect(c0, c1, c2, kind):
        w = rng.philox4x32(c0, c1, c2, kind, k0, k1)
        return int(w[0]) | (int(w[1]) << 32)

    parent = 0x0123456789ABCDEF
    assert uid_daughter(parent, 7) == expect(0x89ABCDEF, 0x01234567, 7, UID_KIND_DAUGHTER)
    assert uid_recruited(1234, 56, 2) == expect(1234, 56, 2, UID_KIND_RECRUITED)
    assert uid_infused(3, 99) == expect(3, 99, 0, UID_KIND_INFUSED)


def test_uids_are_deterministic_and_vectorised_equals_scalar():
    g = np.random.default_rng(2)
    parents = g.integers(0, 2**63, 20, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    births = g.integers(0, 5, 20)
    vec = uid_daughter(parents, births)
    assert vec.dtype == np.uint64
    np.testing.assert_array_equal(vec, uid_daughter(parents, births))
    assert [int(v) for v in vec] == [uid_daughter(int(p), int(b)) for p, b in zip(parents, births)]
    vox, step, k = g.integers(0, 2**32, 20), g.integers(0, 10**6, 20), g.integers(0, 4, 20)
    assert [int(v) for v in uid_recruited(vox, step, k)] == [
        uid_recruited(int(a), int(b), int(c)) for a, b, c in zip(vox, step, k)]
    assert [int(v) for v in uid_infused(4, np.arange(20))] == [uid_infused(4, i) for i in range(20)]


def test_uids_are_distinct_across_kinds_and_inputs():
    n = 100_000
    i = np.arange(n)
    # 6e5 distinct origins; the same small numbers feed every kind, so only the kind tag separates
    # e.g. daughter (0, 0), recruited (0, 0, 0) and infused (0, 0)
    uids = np.concatenate([
        uid_daughter(i // 10, i % 10), uid_recruited(i // 100, i % 100, 0),
        uid_recruited(0, 10**6, i), uid_infused(i // 1000, i % 1000), uid_infused(10**4, i),
        uid_daughter(uid_infused(0, i), 0)])
    check_unique(uids)
    assert uid_daughter(0, 0) != uid_recruited(0, 0, 0) != uid_infused(0, 0) != uid_daughter(0, 0)


def test_check_unique_names_an_injected_duplicate():
    uids = uid_infused(1, np.arange(1000))
    check_unique(uids)
    dup = int(uids[123])
    uids[777] = uids[123]
    with pytest.raises(ValueError, match=f"uid {dup} "):
        check_unique(uids)


def test_uid_inputs_outside_32_bits_are_rejected():
    with pytest.raises(ValueError, match="voxel"):
        uid_recruited(2**32, 0, 0)
    with pytest.raises(ValueError, match="birth_count"):
        uid_daughter(5, -1)


def test_voxel_of_matches_a_python_loop_and_clamps_into_the_grid(cpu):
    g = np.random.default_rng(3)
    extent = np.array(SHAPE) * DX_UM
    pos = g.uniform(-30.0, extent + 30.0, (400, 3)).astype(np.float32)
    pos[0] = (0.0, 15.0, 134.99)  # on faces: voxel (0, 1, 8)
    got = voxel_of(pos, DX_UM, SHAPE)
    nz, ny, nx = SHAPE
    for p, v in zip(pos, got):
        z, y, x = (min(max(int(np.floor(np.float32(c) / np.float32(DX_UM))), 0), n - 1)
                   for c, n in zip(p, SHAPE))
        assert v == (z * ny + y) * nx + x
    assert got[0] == (0 * ny + 1) * nx + 8


def test_sort_gives_voxel_uid_order_with_counts_and_offsets(cpu):
    store = _random_store(cpu, 3000, seed=4)
    before = store.to_host()
    counts, offsets = sort_by_voxel_uid(store, DX_UM, SHAPE)
    after = store.to_host()
    vox = voxel_of(after["pos_um"], DX_UM, SHAPE)
    keys = list(zip(vox.tolist(), after["uid"].tolist()))
    assert keys == sorted(keys)  # lexicographic (voxel, uid), strictly increasing
    assert len(set(keys)) == len(keys)
    # same agents: rows are a permutation of the rows before
    order = np.argsort(before["uid"])
    back = np.argsort(after["uid"])
    for name in STATE_COLUMNS:
        np.testing.assert_array_equal(after[name][back], before[name][order], err_msg=name)
    # the sort's voxel column comes from the rules' voxel_of_pos: equal to the host voxel_of
    np.testing.assert_array_equal(after["voxel"], vox)
    nvox = SHAPE[0] * SHAPE[1] * SHAPE[2]
    expect = [0] * nvox
    for v in voxel_of(before["pos_um"], DX_UM, SHAPE).tolist():
        expect[v] += 1
    assert counts.dtype == np.int32 and offsets.dtype == np.int64
    assert counts.tolist() == expect and int(counts.sum()) == store.n
    assert offsets.shape == (nvox + 1,) and offsets[0] == 0 and offsets[-1] == store.n
    for v in range(nvox):  # voxel v owns rows offsets[v]:offsets[v+1]
        assert offsets[v + 1] - offsets[v] == expect[v]
        assert (vox[offsets[v]:offsets[v + 1]] == v).all()


def test_sort_result_is_independent_of_initial_agent_order(cpu):
    a = _random_store(cpu, 2000, seed=5)
    b = _random_store(cpu, 2000, seed=5)
    b.permute(np.random.default_rng(6).permutation(b.n))
    assert not np.array_equal(a.uid, b.uid)
    ca, oa = sort_by_voxel_uid(a, DX_UM, SHAPE)
    cb, ob = sort_by_voxel_uid(b, DX_UM, SHAPE)
    ha, hb = a.to_host(), b.to_host()
    for name in CARRIED_COLUMNS:  # bitwise, float columns viewed as raw bytes
        assert ha[name].tobytes() == hb[name].tobytes(), name
    assert ca.tobytes() == cb.tobytes() and oa.tobytes() == ob.tobytes()


def test_sort_of_an_empty_store_gives_zero_counts(cpu):
    store = TCellStore(cpu)
    counts, offsets = sort_by_voxel_uid(store, DX_UM, SHAPE)
    assert counts.sum() == 0 and (offsets == 0).all()


def test_write_counts_clamps_at_255(cpu):
    counts = np.array([0, 1, 254, 255, 256, 1000, 7, 3], dtype=np.int32)
    out = np.full((2, 2, 2), 9, dtype=np.uint8)
    write_counts(counts, out)
    assert out.dtype == np.uint8
    assert out.reshape(-1).tolist() == [0, 1, 254, 255, 255, 255, 7, 3]
