"""Image frames written by every rank into its own shards (gpusim.parallel.frames): each shard (or
chunk) of a level has exactly one writer, the rank holding its first voxel; the frames written by
in-process ranks (tests/threadcomm.py, one thread per rank writing the same Zarr store) are byte for
byte the single-process writer's (``layout.append_image``), whatever the process grid, however the
cuts fall against the shards, and wherever the data are held (the ranks' boxes or rank 0's mirror).
Under ``mpiexec`` the whole run's store is compared in tests/test_mpi.py."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from gpusim.io.layout import append_image, block_mean2, create_image, image_chunks, image_shards, zstd_codec
from gpusim.parallel.decomposition import Box, Decomposition
from gpusim.parallel.frames import DistributedFrames, FrameWriter, follow_frame, halve, write_boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threadcomm import run_ranks  # noqa: E402

# grids across the shard sizes: one chunk (rank 0 owns everything), chunks but one shard, and two
# shards per axis whose cuts fall inside a shard (288 on 2 ranks: 144) or on its edge (512: 256), and
# level-1 shards of two owners (1040: level 1 has 520 voxels, its third shard under rank 1's box)
GRIDS = [((14, 12, 10), (2, 1, 1)), ((130, 6, 5), (2, 1, 1)), ((288, 6, 6), (2, 1, 1)),
         ((288, 6, 6), (3, 1, 1)), ((512, 4, 4), (2, 1, 1)), ((288, 70, 6), (2, 2, 1)), ((1040, 4, 4), (2, 1, 1))]


def _units(shape):
    shards = image_shards(shape)
    return (shards or image_chunks(shape))[1:]


def _covered(boxes, shape):
    """How many write boxes hold each voxel of a level of ``shape``."""
    hits = np.zeros(shape, np.int32)
    for b in boxes:
        if b is not None:
            hits[b.slices] += 1
    return hits


@pytest.mark.parametrize("shape, ranks", GRIDS)
def test_every_unit_of_every_level_has_one_writer_the_rank_of_its_first_voxel(shape, ranks):
    d = Decomposition(shape, ranks_zyx=ranks)
    for level in (0, 1):
        lshape = tuple(-(-n // 2**level) for n in shape)
        unit = _units(lshape)
        boxes = write_boxes(d, lshape, unit, level)
        assert (_covered(boxes, lshape) == 1).all()  # the write boxes tile the level
        for corner in itertools.product(*(range(0, n, u) for n, u in zip(lshape, unit))):
            owner = d.owner(*(c * 2**level for c in corner))
            assert boxes[owner].contains(*corner)
            stop = tuple(min(c + u, n) for c, u, n in zip(corner, unit, lshape))  # the whole unit
            assert all(o <= c and s <= o + m for c, s, o, m in zip(corner, stop, boxes[owner].offset,
                                                                      boxes[owner].shape))
        if level == 0:  # whole units start at even voxels, and their halves tile level 1
            halves = [halve(b) for b in boxes]
            assert (_covered(halves, tuple(-(-n // 2) for n in shape)) == 1).all()


def test_boxes_that_are_whole_shards_are_the_write_boxes():
    d = Decomposition((512, 4, 4), ranks_zyx=(2, 1, 1))
    assert write_boxes(d, (512, 4, 4), _units((512, 4, 4)), 0) == d.boxes()
    # one chunk: rank 0 writes it all
    d = Decomposition((14, 12, 10), n_ranks=4)
    assert write_boxes(d, (14, 12, 10), _units((14, 12, 10)), 0) == [Box((0, 0, 0), (14, 12, 10))] + [None] * 3


def test_halve_refuses_an_odd_start():
    with pytest.raises(ValueError, match="odd voxel"):
        halve(Box((1, 0, 0), (4, 4, 4)))


def _store(path, shape):
    g = zarr.open_group(str(path), mode="w")
    half = tuple((n + 1) // 2 for n in shape)
    for where, dtype in (("fields/mg", np.float32), ("tumor", np.uint8)):
        create_image(g.require_group(where), {}, dtype, shape, half, ("t", "z", "y", "x"), zstd_codec())
    return g


def _frame_data(shape, k):
    rng = np.random.default_rng(k)
    return rng.random(shape, dtype=np.float32), rng.integers(0, 4, shape).astype(np.uint8)


@pytest.mark.parametrize("source", ["ranks", "mirror"])
@pytest.mark.parametrize("shape, ranks", GRIDS)
def test_frames_written_by_the_ranks_are_the_single_process_frames(tmp_path, shape, ranks, source):
    ref = _store(tmp_path / "one.zarr", shape)
    frames = [_frame_data(shape, k) for k in range(2)]
    for k, (mg, tumor) in enumerate(frames):
        append_image(ref["fields/mg"], mg, block_mean2(mg), float(k))
        append_image(ref["tumor"], tumor, np.ascontiguousarray(tumor[::2, ::2, ::2]), float(k))
    many_path = tmp_path / "many.zarr"
    group = _store(many_path, shape)
    d = Decomposition(shape, ranks_zyx=ranks)
    cell_d = Decomposition(shape, ranks_zyx=ranks[::-1] if shape[1] >= 70 else ranks)  # the cells' own boxes

    def work(comm):
        mine = d.box(comm.rank)
        fields_run = SimpleNamespace(decomp=d, held=("mg",), fields={"mg": None},
                                     holder=lambda name: d, interior=lambda name: data["mg"][mine.slices])
        cells = SimpleNamespace(decomp=cell_d, own=None)
        writer = FrameWriter(comm, fields_run, cells)
        data = {}
        for k, (mg, tumor) in enumerate(frames):
            data["mg"] = mg
            cells.own = {"tumor": np.ascontiguousarray(tumor[cell_d.box(comm.rank).slices])}
            if comm.rank != 0:
                follow_frame(comm, writer, comm.bcast_json(None))
                continue
            sim = SimpleNamespace(state=SimpleNamespace(fields={"mg": mg}, tumor=tumor), perf_extra={})
            fields_op = SimpleNamespace(box=fields_run, to_push=set() if source == "ranks" else {"mg"})
            cells_op = SimpleNamespace(stale={"lattice": source == "ranks"})
            DistributedFrames(comm, writer, fields_op, cells_op)(
                sim, group, many_path, [("fields/mg", "field", "mg"), ("tumor", "tumor", "tumor")], float(k))
        return writer.bytes_moved

    moved = run_ranks(d.n_ranks, work)
    many = zarr.open_group(str(many_path), mode="r")
    for where in ("fields/mg", "tumor"):
        assert many[where].attrs["frames_committed"] == 2
        for arr in ("0", "1", "time_min"):
            a, b = many[f"{where}/{arr}"], ref[f"{where}/{arr}"]
            assert a.shape == b.shape and a[...].tobytes() == b[...].tobytes(), (where, arr)
    if source == "ranks" and shape == (512, 4, 4):  # boxes of whole shards: only level 1 moves (to rank 0)
        half_of_rank1 = 128 * 2 * 2
        assert moved == [2 * half_of_rank1 * (4 + 1), 2 * half_of_rank1 * (4 + 1)]


def test_a_write_error_on_another_rank_raises_on_rank_0_after_every_rank_is_done(tmp_path):
    shape = (512, 4, 4)
    path = tmp_path / "many.zarr"
    group = _store(path, shape)
    d = Decomposition(shape, ranks_zyx=(2, 1, 1))
    mg = np.ones(shape, np.float32)

    def work(comm):
        fields_run = SimpleNamespace(decomp=d, held=("mg",), fields={"mg": None}, holder=lambda name: d,
                                     interior=lambda name: mg[d.box(comm.rank).slices])
        writer = FrameWriter(comm, fields_run)
        if comm.rank == 1:
            msg = comm.bcast_json(None)
            msg["path"] = str(tmp_path / "not-there.zarr")  # rank 1 cannot open the store
            follow_frame(comm, writer, msg)
            return None
        sim = SimpleNamespace(state=SimpleNamespace(fields={"mg": mg}), perf_extra={})
        op = DistributedFrames(comm, writer, SimpleNamespace(box=fields_run, to_push=set()))
        with pytest.raises(OSError, match="fields/mg/0 frame 0 on rank 1"):
            op(sim, group, path, [("fields/mg", "field", "mg")], 0.0)
        return int(group["fields/mg"].attrs["frames_committed"])

    assert run_ranks(2, work)[0] == 0  # the frame is not committed
