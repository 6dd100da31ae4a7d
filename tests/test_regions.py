"""The region-fill primitive (gpusim.parallel.regions): every rank's region, however it overlaps the
others' or cuts the source boxes, comes out equal to slicing the global array. In-process ranks
(tests/threadcomm.py) run the real ``Regions.fill`` for every layout the owned
driver needs; under ``mpiexec`` (marker ``mpi``) the same fills cross real ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gpusim.parallel.decomposition import Box, Decomposition
from gpusim.parallel.regions import Regions, intersect, plan

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "mpi"))
from regions_driver import CASES, global_array, layouts  # noqa: E402
from test_mpi import _launch, needs_mpi  # noqa: E402

sys.path.insert(0, str(HERE))
from threadcomm import run_ranks as _run_ranks  # noqa: E402


def _fill_everywhere(case, tail=()):
    """Every rank's filled region of ``case`` and what slicing the global array gives."""
    src, dst, size = layouts(case)
    g = global_array(case["shape"], tail)

    def work(comm):
        moved = Regions(comm, src, dst)
        mine = src[comm.rank]
        local = None if mine is None else g[mine.slices]
        out = moved.fill(local, out=None if mine is not None or dst[comm.rank] is None
                         else np.full(tuple(dst[comm.rank].shape) + tail, -1, g.dtype), fill_value=-1)
        return out, moved.bytes_sent

    got = _run_ranks(size, work)
    want = [None if b is None else g[b.slices] for b in dst]
    return got, want, src, dst


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_region_is_the_global_array_sliced(name):
    got, want, src, dst = _fill_everywhere(CASES[name])
    for r, ((out, _), w) in enumerate(zip(got, want)):
        if w is None:
            assert out is None, r
        else:
            assert out.dtype == w.dtype and np.array_equal(out, w), (name, r)


def test_trailing_axes_travel_with_their_voxels():
    got, want, *_ = _fill_everywhere(CASES["cell_regions_from_even_boxes"], tail=(3,))
    assert all(np.array_equal(out, w) for (out, _), w in zip(got, want))


def test_bytes_sent_are_the_overlaps_with_other_ranks_regions():
    case = CASES["cell_regions_from_even_boxes"]
    got, _, src, dst = _fill_everywhere(case)
    item = global_array(case["shape"]).itemsize
    for r, (_, sent) in enumerate(got):
        overlap = sum(p.n_voxels for q in range(len(dst)) if q != r and (p := intersect(src[r], dst[q])) is not None)
        assert sent == overlap * item and sent > 0


def test_the_same_layout_on_both_sides_moves_nothing():
    d = Decomposition((9, 8, 7), ranks_zyx=(2, 2, 1))
    got = _run_ranks(4, lambda c: Regions.between(c, d, d).fill(global_array(d.shape)[d.box(c.rank).slices])
                     is not None and Regions.between(c, d, d).plan)
    assert all(not p.sends and not p.recvs for p in got)


def test_voxels_no_source_holds_keep_the_fill_value():
    shape = (6, 5, 4)
    src = [Box((0, 0, 0), (3, 5, 4)), None]  # the upper half of z has no holder
    dst = [Box((0, 0, 0), shape), Box((2, 0, 0), (3, 5, 4))]
    g = global_array(shape)
    def work(c):
        out = None if c.rank == 0 else np.full((3, 5, 4), -7, g.dtype)
        return Regions(c, src, dst).fill(g[src[0].slices] if c.rank == 0 else None, out=out, fill_value=-7)

    got = _run_ranks(2, work)
    assert np.array_equal(got[0][:3], g[:3]) and (got[0][3:] == -7).all()
    assert np.array_equal(got[1][:1], g[2:3]) and (got[1][1:] == -7).all()


def test_overlapping_sources_and_wrong_arrays_are_refused():
    a, b = Box((0, 0, 0), (4, 4, 4)), Box((3, 0, 0), (4, 4, 4))
    for rank in (0, 1):  # both ranks the overlap involves refuse it
        with pytest.raises(ValueError, match="ranks 0 and 1 overlap"):
            plan([a, b, None], [a, b, None], rank)
    with pytest.raises(ValueError, match="one source box and one region per rank"):
        _run_ranks(2, lambda c: Regions(c, [a], [a]))
    with pytest.raises(ValueError, match="not this rank's source box"):
        _run_ranks(1, lambda c: Regions(c, [a], [a]).fill(np.zeros((4, 4, 3))))
    with pytest.raises(ValueError, match="needs `out`"):
        _run_ranks(1, lambda c: Regions(c, [None], [a]).fill(None))


def test_one_process_copies_its_own_part_without_messages():
    from gpusim.parallel.comm import SerialComm

    shape = (5, 4, 3)
    g = global_array(shape)
    region = Box((1, 1, 0), (3, 2, 3))
    out = Regions(SerialComm(), [Box((0, 0, 0), shape)], [region]).fill(g)
    assert np.array_equal(out, g[region.slices])


@pytest.mark.parametrize("n", [3, 4])
@needs_mpi[0]
@needs_mpi[1]
def test_regions_fill_across_real_ranks_is_the_global_array_sliced(tmp_path, n):
    _launch(n, "regions_driver.py", str(tmp_path))
    for r in range(n):
        result = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert result == {name: True for name in CASES if CASES[name]["size"] == n} | {"rank": r}, result
