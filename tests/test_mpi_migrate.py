"""Ranks keeping their own T cells (gpusim.parallel.migrate): migration sends each cell to the owner of
its voxel and loses or duplicates none; the ghost exchange gives each rank exactly the T cells of its
region that ``DistributedCells`` sends it today, bitwise and in the sort's order, with edge and corner
neighbours and boxes thinner than the ghost width. Pure tests of the buffers, the owner rule and the
ghost routing; the transport under ``mpiexec`` (marker ``mpi``) on 2, 3 and 4 ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gpusim.agents.spatial_index import sort_by_voxel_uid, voxel_of
from gpusim.agents.tcell_store import CARRIED_COLUMNS, COLUMNS, STATE_COLUMNS, TCellStore, bytes_per_tcell
from gpusim.backend import select_backend
from gpusim.parallel import migrate as M
from gpusim.parallel.cells import region
from gpusim.parallel.comm import SerialComm
from gpusim.parallel.decomposition import Box, Decomposition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "mpi"))
from migrate_driver import decompositions, make_cells  # noqa: E402
from test_mpi import _launch, needs_mpi  # noqa: E402

_CPU = select_backend("cpu")


def _random_columns(rng, n):
    cols = {}
    for c, (dt, shape, _) in COLUMNS.items():
        nbytes = n * np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
        cols[c] = np.frombuffer(rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes(), dt).reshape((n,) + shape).copy()
    return cols


def _same_rows(a, b, names=COLUMNS) -> bool:
    return all(a[c].shape == b[c].shape and a[c].tobytes() == b[c].tobytes() for c in names)


def _zyx(voxel, shape):
    return np.unravel_index(voxel, shape)


# -- buffers (no MPI) -----------------------------------------------------------------------------
def test_a_row_is_its_columns_bytes_and_every_column_block_is_aligned():
    assert M.row_bytes() == bytes_per_tcell() == 95
    assert M.row_bytes(STATE_COLUMNS) == bytes_per_tcell(STATE_COLUMNS) == 61
    cols = _random_columns(np.random.default_rng(1), 37)
    buf = M.pack(cols)
    assert buf.dtype == np.uint8 and buf.nbytes == 37 * 95
    for c, view in M.unpack(buf, 37, tuple(COLUMNS)).items():
        assert view.ctypes.data % view.dtype.itemsize == 0, c  # aligned views, no padding
        assert np.shares_memory(view, buf)  # unpack is a view, not a copy


@pytest.mark.parametrize("rows", [None, np.array([5, 0, 5, 36, 2]), np.zeros(0, np.int64)])
@pytest.mark.parametrize("names", [tuple(COLUMNS), STATE_COLUMNS, ("uid", "pos_um", "state")])
def test_pack_then_unpack_gives_the_rows_back_bitwise(rows, names):
    cols = {c: a for c, a in _random_columns(np.random.default_rng(2), 37).items() if c in names}
    buf = M.pack(cols, rows)
    n = 37 if rows is None else rows.shape[0]
    back = M.unpack(buf, n, tuple(c for c in COLUMNS if c in names))
    want = cols if rows is None else {c: a[rows] for c, a in cols.items()}
    assert list(back) == [c for c in COLUMNS if c in names] and _same_rows(back, want, names)


def test_unpack_refuses_a_buffer_of_the_wrong_size_and_pack_a_wrong_column():
    cols = _random_columns(np.random.default_rng(3), 4)
    with pytest.raises(ValueError, match="cannot hold 5 rows"):
        M.unpack(M.pack(cols), 5, tuple(COLUMNS))
    with pytest.raises(ValueError, match="'lfa1' is float64"):
        M.pack(dict(cols, lfa1=cols["lfa1"].astype(np.float64)))
    with pytest.raises(ValueError, match="unknown"):
        M.pack(dict(cols, speed=cols["lfa1"]))


# -- owner and ghost routing (no MPI) -------------------------------------------------------------
_UNEVEN = Decomposition.from_runs((9, 7, 10), [[(0, 2), (2, 7)], [(0, 7)], [(0, 1), (1, 2), (3, 7)]])
_CORNERS = Decomposition.from_runs((8, 9, 6), [[(0, 5), (5, 3)], [(0, 3), (3, 6)], [(0, 6)]])
_THIN = Decomposition.from_runs((8, 6, 7), [[(0, 8)], [(0, 6)], [(0, 1), (1, 2), (3, 4)]])


@pytest.mark.parametrize("d", [_UNEVEN, _CORNERS, _THIN, Decomposition((5, 6, 7), ranks_zyx=(2, 3, 1))])
def test_the_vectorised_owner_is_decomposition_owner_on_every_voxel(d):
    z, y, x = (a.reshape(-1) for a in np.indices(d.shape))
    got = M.owners(d, z, y, x)
    assert got.tolist() == [d.owner(*v) for v in zip(z.tolist(), y.tolist(), x.tolist())]


def test_a_cell_one_ulp_below_a_face_goes_where_the_rules_float32_floor_puts_it():
    """The owner follows the kernels' float32 floor(p / dx), not float64 arithmetic: just below a face
    the float32 quotient often rounds up onto the face, and then the cell belongs above it."""
    dx = 13.7
    shape = (64, 1, 1)
    d = Decomposition.from_runs(shape, [[(s, 1) for s in range(64)], [(0, 1)], [(0, 1)]])
    faces = np.arange(1, 64, dtype=np.float32) * np.float32(dx)
    pos = np.zeros((faces.shape[0], 3), np.float32)
    pos[:, 0] = np.nextafter(faces, np.float32(-np.inf))
    z, y, x = M.voxel_coords(pos, dx, shape)
    want = voxel_of(pos, dx, shape)  # the NumPy twin of the rule
    assert np.array_equal(z, want) and np.array_equal(M.owners(d, z, y, x), want)
    by_float64 = np.floor(pos[:, 0].astype(np.float64) / dx).astype(np.int64)
    assert np.any(by_float64 != z)  # the test can tell the two rules apart


def _brute_ghosts(d, s, width):
    """Per other rank r, the voxels of s's box that lie in r's region (as flat voxel indices)."""
    out = {}
    vox = np.arange(int(np.prod(d.shape)))
    z, y, x = _zyx(vox, d.shape)
    for r in range(d.n_ranks):
        reg = region(d, r, width)
        mine = M._inside(z, y, x, d.box(s)) & M._inside(z, y, x, reg)
        if r != s and mine.any():
            out[r] = vox[mine]
    return out


@pytest.mark.parametrize("width", [1, 2, 6])
@pytest.mark.parametrize("d", [_UNEVEN, _CORNERS, _THIN])
def test_ghost_routing_sends_each_voxel_to_every_region_holding_it(d, width):
    for s in range(d.n_ranks):
        box = d.box(s)
        z, y, x = (a.reshape(-1) + o for a, o in zip(np.indices(box.shape), box.offset))
        vox = (z * d.shape[1] + y) * d.shape[2] + x
        got = {r: vox[rows] for r, rows in M.ghost_sends(d, s, width, z, y, x).items() if rows.shape[0]}
        want = _brute_ghosts(d, s, width)
        assert got.keys() == want.keys() and all(np.array_equal(got[r], want[r]) for r in want)


def test_face_neighbours_alone_would_miss_corner_and_two_away_ghosts():
    """What an axis-only exchange without forwarding reaches: the brute force has more."""
    for d, width in ((_CORNERS, 1), (_THIN, 6)):
        faces_only = sum(all(r in {d.neighbour(s, a, e) for a in range(3) for e in (-1, 1)}
                             for r in _brute_ghosts(d, s, width)) for s in range(d.n_ranks))
        assert faces_only < d.n_ranks


def test_one_rank_keeps_its_cells_and_has_no_ghosts():
    cols = _random_columns(np.random.default_rng(4), 50)
    cols["pos_um"] = np.random.default_rng(5).uniform(-10, 200, (50, 3)).astype(np.float32)
    cols["state"] = np.arange(50, dtype=np.uint8) % 3
    d = Decomposition((6, 5, 4), 1)
    t = M.Traffic()
    assert _same_rows(M.migrate(SerialComm(), d, cols, 15.0, traffic=t), cols)
    alive = M.migrate(SerialComm(), d, cols, 15.0, drop_dead=True)
    assert _same_rows(alive, {c: a[cols["state"] != 2] for c, a in cols.items()})
    g = M.ghosts(SerialComm(), d, cols, 6, 15.0, traffic=t)
    assert all(a.shape[0] == 0 for a in g.values()) and (t.messages, t.bytes_sent, t.count_bytes) == (0, 0, 0)


class _SecondOfTwo:
    rank, size = 1, 2  # any communication would fail: the check comes first


def test_ghosts_refuse_cells_outside_the_box_before_communicating():
    cols = _random_columns(np.random.default_rng(6), 3)
    cols["pos_um"] = np.zeros((3, 3), np.float32)  # voxel 0: rank 0's box
    with pytest.raises(ValueError, match="outside its box .* migrate them"):
        M.ghosts(_SecondOfTwo(), Decomposition((4, 4, 4), ranks_zyx=(2, 1, 1)), cols, 1, 15.0)


# -- under mpiexec --------------------------------------------------------------------------------
def _spec(n_ranks, shape, runs, recut, widths=(6, 1)):
    return {"n_ranks": n_ranks, "shape": shape, "runs": runs, "recut": recut, "dx_um": 13.7, "n": 3000,
            "seed": 11 + n_ranks, "widths": list(widths)}


_SLOW = pytest.mark.slow
_SPECS = [
    # 2 ranks on z, uneven
    pytest.param(_spec(2, [9, 7, 6], [[(0, 2), (2, 7)], [(0, 7)], [(0, 6)]], [[(0, 6), (6, 3)], [(0, 7)], [(0, 6)]]),
                 id="2-z-uneven"),
    # 3 ranks on x, 1- and 2-voxel boxes: width 6 reaches two boxes away
    pytest.param(_spec(3, [8, 6, 7], [[(0, 8)], [(0, 6)], [(0, 1), (1, 2), (3, 4)]],
                       [[(0, 8)], [(0, 6)], [(0, 4), (4, 1), (5, 2)]]), id="3-x-thin"),
    # 4 ranks (2, 1, 2), uneven: edge neighbours
    pytest.param(_spec(4, [10, 5, 9], [[(0, 3), (3, 7)], [(0, 5)], [(0, 6), (6, 3)]],
                       [[(0, 7), (7, 3)], [(0, 5)], [(0, 2), (2, 7)]]), id="4-zx-uneven"),
    pytest.param(_spec(4, [8, 9, 6], [[(0, 5), (5, 3)], [(0, 3), (3, 6)], [(0, 6)]],
                       [[(0, 1), (1, 7)], [(0, 8), (8, 1)], [(0, 6)]]), id="4-zy-corners", marks=_SLOW),
    pytest.param(_spec(4, [8, 6, 6], [[(0, 2), (2, 2), (4, 2), (6, 2)], [(0, 6)], [(0, 6)]],
                       [[(0, 1), (1, 1), (2, 5), (7, 1)], [(0, 6)], [(0, 6)]]), id="4-z-thin", marks=_SLOW),
    pytest.param(_spec(4, [5, 7, 6], [[(0, 5)], [(0, 2), (2, 5)], [(0, 1), (1, 5)]],
                       [[(0, 5)], [(0, 6), (6, 1)], [(0, 4), (4, 2)]]), id="4-yx-thin", marks=_SLOW),
    pytest.param(_spec(3, [6, 9, 5], [[(0, 6)], [(0, 3), (3, 3), (6, 3)], [(0, 5)]],
                       [[(0, 6)], [(0, 1), (1, 1), (2, 7)], [(0, 5)]]), id="3-y", marks=_SLOW),
]


def _run(tmp_path, spec):
    _launch(spec["n_ranks"], "migrate_driver.py", json.dumps(spec), str(tmp_path), timeout=120)
    out = []
    for r in range(spec["n_ranks"]):
        z = np.load(tmp_path / f"rank{r}.npz")
        sets = {}
        for key in z.files:
            k, c = key.split("__")
            sets.setdefault(k, {})[c] = z[key]
        sets["traffic"] = json.loads((tmp_path / f"rank{r}.json").read_text())
        out.append(sets)
    return out


def _by_uid(cols):
    order = np.argsort(cols["uid"], kind="stable")
    return {c: a[order] for c, a in cols.items()}


def _check_owned(ranks, key, d, dx, global_cols):
    """Every rank holds only cells of its own voxels, and the ranks together hold ``global_cols``."""
    for r, sets in enumerate(ranks):
        vox = voxel_of(sets[key]["pos_um"], dx, d.shape)
        assert all(d.owner(*v) == r for v in zip(*(a.tolist() for a in _zyx(vox, d.shape)))), (key, r)
    union = {c: np.concatenate([sets[key][c] for sets in ranks]) for c in COLUMNS}
    assert _same_rows(_by_uid(union), _by_uid(global_cols)), key


def _region_rows(cols, d, r, width, dx):
    """What DistributedCells sends rank r: the T cells of region(d, r, width) in global (voxel, uid) order."""
    voxel = voxel_of(cols["pos_um"], dx, d.shape)
    order = np.lexsort((cols["uid"], voxel))
    sel = order[M._inside(*_zyx(voxel[order], d.shape), region(d, r, width))]
    return {c: a[sel] for c, a in cols.items()}, voxel[sel]


def _own_plus_ghosts_sorted(own, ghost, d, r, width, dx):
    """Own + ghosts sorted as CellWorker sorts them (sort_by_voxel_uid in its lattice region's frame):
    every column in that order, and the sort's voxels as global indices."""
    both = {c: np.concatenate([own[c], ghost[c]]) for c in COLUMNS}
    s = TCellStore(_CPU, capacity=max(1, both["uid"].shape[0]))
    s.append(**both)
    lreg = region(d, r, width + 1)
    fr = tuple(np.int64(v) for v in (*lreg.offset, *d.shape))
    sort_by_voxel_uid(s, dx, lreg.shape, fr=fr)
    by_uid = np.argsort(both["uid"])  # the sort carries only CARRIED_COLUMNS: follow it by uid for the rest
    rows = by_uid[np.searchsorted(both["uid"], s.uid, sorter=by_uid)]
    got = {c: a[rows] for c, a in both.items()}
    assert _same_rows({c: getattr(s, c) for c in CARRIED_COLUMNS if c != "voxel"}, got,
                      [c for c in CARRIED_COLUMNS if c != "voxel"])
    lz, ly, lx = _zyx(s.voxel, lreg.shape)
    oz, oy, ox = lreg.offset
    return got, ((lz + oz) * d.shape[1] + (ly + oy)) * d.shape[2] + (lx + ox)


def _ghosts_match(ranks, key, d, width, dx, global_cols) -> list:
    """Per rank, whether own + ghosts sorted is bitwise the region's rows in the sort's order."""
    ok = []
    for r, sets in enumerate(ranks):
        want, want_voxel = _region_rows(global_cols, d, r, width, dx)
        got, got_voxel = _own_plus_ghosts_sorted(sets["m"], sets[key], d, r, width, dx)
        ok.append(_same_rows(got, want) and np.array_equal(got_voxel, want_voxel))
    return ok


def _face_neighbours_suffice(d, width) -> bool:
    return all(all(r in {d.neighbour(s, a, e) for a in range(3) for e in (-1, 1)} for r in _brute_ghosts(d, s, width))
               for s in range(d.n_ranks))


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("spec", _SPECS)
def test_migration_and_ghosts_on_n_ranks_give_each_rank_its_cells_and_region(tmp_path, spec):
    d, recut = decompositions(spec)
    dx = spec["dx_um"]
    cols, _ = make_cells(spec, spec["n_ranks"])
    assert np.unique(cols["uid"]).shape[0] == cols["uid"].shape[0]
    ranks = _run(tmp_path, spec)
    # migration: each cell on its voxel's owner; none lost, none duplicated; dead ones dropped on request
    _check_owned(ranks, "m", d, dx, cols)
    _check_owned(ranks, "l", d, dx, {c: a[cols["state"] != 2] for c, a in cols.items()})
    _check_owned(ranks, "c", recut, dx, cols)  # after a re-cut: moves of more than one box
    for w in spec["widths"]:
        assert all(_ghosts_match(ranks, f"g{w}", d, w, dx, cols)), w
        # the comparison catches an exchange that reaches only the face neighbours wherever that misses cells
        faces = _ghosts_match(ranks, f"f{w}", d, w, dx, cols)
        assert all(faces) == _face_neighbours_suffice(d, w), w
    sent = sum(sets["traffic"]["migrate"]["bytes_sent"] for sets in ranks)
    rows = sum(sets["traffic"]["migrate"]["rows_sent"] for sets in ranks)
    assert sent == rows * M.row_bytes() and rows > 0
