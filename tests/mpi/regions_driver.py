"""Run under ``mpiexec -n N`` with an output folder: every case of :data:`CASES` for N ranks fills
each rank's region with ``Regions.fill`` from the ranks' source boxes of a global index array, and
each rank writes whether its region equals the global array sliced (one JSON file per rank). The
cases are the layouts the owned-state driver moves data between (docs/owned_state.md); the in-process
tests in tests/test_regions.py run the same cases on threads."""

from __future__ import annotations

import json
import sys

import numpy as np

from gpusim.parallel.decomposition import Box, Decomposition

#: name -> {"size": ranks, "shape", "src", "dst"}; a layout is {"ranks_zyx"} or {"runs"} (uneven), or
#: {"whole_on": rank}; "grow": w grows every box by w voxels (clipped to the grid); "none": ranks
#: without a box
CASES = {
    "slabs_to_pencils": {"size": 4, "shape": [9, 8, 7], "src": {"ranks_zyx": [4, 1, 1]},
                         "dst": {"ranks_zyx": [1, 2, 2]}},
    "uneven_recut": {"size": 3, "shape": [11, 6, 5], "src": {"runs": [[[0, 2], [2, 4], [6, 5]], [[0, 6]], [[0, 5]]]},
                     "dst": {"runs": [[[0, 5], [5, 5], [10, 1]], [[0, 6]], [[0, 5]]]}},
    "cell_regions_from_even_boxes": {"size": 4, "shape": [10, 9, 8], "src": {"ranks_zyx": [2, 2, 1]},
                                     "dst": {"runs": [[[0, 3], [3, 7]], [[0, 6], [6, 3]], [[0, 8]]], "grow": 3}},
    "wide_regions_of_thin_boxes": {"size": 3, "shape": [10, 4, 3], "src": {"runs": [[[0, 1], [1, 2], [3, 7]],
                                                                                    [[0, 4]], [[0, 3]]]},
                                   "dst": {"runs": [[[0, 1], [1, 2], [3, 7]], [[0, 4]], [[0, 3]]], "grow": 4}},
    "scatter_from_rank_0": {"size": 4, "shape": [6, 5, 4], "src": {"whole_on": 0}, "dst": {"ranks_zyx": [1, 2, 2]}},
    "gather_onto_rank_2": {"size": 3, "shape": [6, 5, 4], "src": {"ranks_zyx": [1, 3, 1]}, "dst": {"whole_on": 2}},
    "some_ranks_want_nothing": {"size": 4, "shape": [8, 6, 5], "src": {"ranks_zyx": [2, 1, 2]},
                                "dst": {"ranks_zyx": [2, 1, 2], "grow": 2, "none": [1, 2]}},
}


def global_array(shape, tail=()) -> np.ndarray:
    """The global grid's values: every voxel (and trailing entry) distinct."""
    n = int(np.prod(tuple(shape) + tuple(tail)))
    return np.arange(n, dtype=np.int64).reshape(tuple(shape) + tuple(tail)) * 7 + 3


def grown(box: Box, width: int, shape) -> Box:
    """``box`` grown by ``width`` voxels on every side, clipped to the grid."""
    lo = tuple(max(0, o - width) for o in box.offset)
    hi = tuple(min(n, s + width) for s, n in zip(box.stop, shape))
    return Box(lo, tuple(h - l for l, h in zip(lo, hi)))


def _boxes(spec, shape, size):
    if "whole_on" in spec:
        boxes = [Box((0, 0, 0), tuple(shape)) if r == spec["whole_on"] else None for r in range(size)]
    else:
        d = (Decomposition.from_runs(shape, spec["runs"]) if "runs" in spec
             else Decomposition(shape, ranks_zyx=spec["ranks_zyx"]))
        assert d.n_ranks == size
        boxes = d.boxes()
    if "grow" in spec:
        boxes = [None if b is None else grown(b, spec["grow"], shape) for b in boxes]
    return [None if r in spec.get("none", ()) else b for r, b in enumerate(boxes)]


def layouts(case):
    """(source boxes, regions, rank count) of a case."""
    shape, size = tuple(case["shape"]), case["size"]
    return _boxes(case["src"], shape, size), _boxes(case["dst"], shape, size), size


if __name__ == "__main__":
    from gpusim.parallel import comm as mpi_comm
    from gpusim.parallel.regions import Regions

    c = mpi_comm.world()
    result = {"rank": c.rank}
    for name, case in CASES.items():
        if case["size"] != c.size:
            continue
        src, dst, _ = layouts(case)
        g = global_array(case["shape"])
        mine, want = src[c.rank], dst[c.rank]
        out = None if mine is not None or want is None else np.full(want.shape, -1, g.dtype)
        got = Regions(c, src, dst).fill(None if mine is None else g[mine.slices], out=out, fill_value=-1)
        result[name] = (got is None) if want is None else bool(np.array_equal(got, g[want.slices]))
    with open(f"{sys.argv[1]}/rank{c.rank}.json", "w") as f:
        json.dump(result, f)
