"""A GPU rank's partitioned LOD sweeps (kernels/partitioned.cu, launched by
``gpusim.parallel.partitioned_cuda``), checked without a GPU: the kernels run under the host emulation of
CUDA's execution model (tests/host_cuda.py) and CuPy is a stand-in whose arrays are NumPy arrays.

- Each kernel pair (elimination, substitution) equals the CPU rank's numba kernels bit for bit: the
  reduced rows (float64) and the stored values (float32), on every axis, for segments at the start,
  the middle and the end of a cut line (Dirichlet ends or not), 1 to 7 voxels long, over several
  blocks, with and without each per-voxel term, with a fixed sweep's D in shared memory or in the
  global scratch.
- ``PartitionedLOD`` with a CUDA backend on thread ranks (the uncut axes through fields.cu's sweeps,
  the cut ones through partitioned.cu, the reduced rows staged through the host) steps every process
  grid's boxes to the CPU ranks' bits, and so does ``BoxFieldRun`` with a GPU per rank (the box and
  its operands copied up and back once per step).
- Each rank takes the GPU of its node-local rank number; a rank without one stops every rank.

What remains for a GPU (``pytest -m gpu``: the two ``test_on_the_gpu_*`` below): the device's own IEEE
arithmetic and the real CuPy.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from gpusim.backend import Backend, cuda_status, select_backend
from gpusim.fields import layout as L
from gpusim.parallel.decomposition import Decomposition
from gpusim.parallel.partitioned import PartitionedLOD
from gpusim.parallel.partitioned_cpu import Sweeps
from field_cases import random_coef
import host_cuda
from threadcomm import run_ranks


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return host_cuda.build(tmp_path_factory.mktemp("hostlib"))


@pytest.fixture
def gpu(monkeypatch, lib):
    """``(cupy stand-in, a CUDA Backend on it, the launches)``."""
    launches = []
    cp = host_cuda.install_fake_cupy(monkeypatch, lib, launches)
    return cp, Backend("cuda", cp, "host emulation", 0, 0, "test"), launches


BOUNDARIES = ([0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 1])


def case(rng, shape, flags):
    """A field on ``shape``, LOD coefficients, boundaries and the per-voxel operands of ``flags``."""
    coef = random_coef(rng, rng.uniform(0.05, 0.5))
    bc_type = np.array(BOUNDARIES[rng.integers(len(BOUNDARIES))], np.int32)
    bc_value = rng.uniform(0.0, 3.0, 6)
    c = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    ops = [((rng.random(shape) < 0.3) * rng.integers(1, 3, shape)).astype(np.uint8),
           (rng.random(shape) < 0.5).astype(np.uint8), rng.integers(0, 5, shape).astype(np.uint8),
           rng.uniform(-0.1, 1.0, shape).astype(np.float32)]
    for k, bit in enumerate((L.HAS_VESSEL, L.HAS_TUMOR, L.HAS_TCELL, L.HAS_SRC)):
        if not flags & bit:
            ops[k] = np.zeros((1, 1, 1), ops[k].dtype)  # never read
    return c, coef, bc_type, bc_value, ops


def assert_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    u = np.uint64 if got.dtype == np.float64 else np.uint32
    diff = got.view(u) != want.view(u)
    assert not diff.any(), f"{diff.sum()} of {diff.size} values differ, first at {np.argwhere(diff)[0]}"


def rank_rows(decomp, rank, axis, coef, bc_type, bc_value, first):
    """PartitionedLOD's position-only rows of ``rank``'s segment (a communicator stand-in: no messages)."""
    lod = PartitionedLOD(types.SimpleNamespace(rank=rank, size=decomp.n_ranks), decomp)
    return lod._rows(axis, coef, bc_type, bc_value, first)


# Cut lines: a box's axis is one segment of a line of the global length; its rank sits first, in the
# middle or last on the line (the global Dirichlet ends are only in the first and last), 1..9 voxels.
SEGMENTS = ((9, (3, 1, 1), 0), (9, (3, 1, 1), 1), (9, (3, 1, 1), 2), (5, (5, 1, 1), 2), (4, (2, 1, 1), 1),
            (13, (2, 1, 1), 0), (6, (3, 1, 1), 1))


FIXED_KERNELS = {False: {"part_fixed_onchip"}, True: {"part_fixed_eliminate", "part_fixed_substitute"}}


@pytest.mark.parametrize("d_global", [False, True], ids=["d_onchip", "d_global"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_emulated_fixed_sweep_kernels_equal_the_cpu_rank_bitwise(gpu, monkeypatch, axis, d_global):
    """The sweeps without per-voxel terms (y, z, and x without operands): reduced rows D_0, D_{n-1} and
    the substituted values, with D in shared memory (the elimination run twice) or in a global scratch
    (the lines too long for shared memory)."""
    from gpusim.parallel import partitioned_cuda

    cp, backend, launches = gpu
    monkeypatch.setattr(partitioned_cuda, "FORCE_GLOBAL_D", d_global)
    rng = np.random.default_rng(10 + axis)
    dev = backend.kernels("partitioned").Sweeps()
    for n_line, ranks, k in SEGMENTS:
        shape = [5, 13, 11]  # 55 to 143 lines: several blocks of either variant, the last one partial
        shape[axis] = n_line
        ranks_zyx = [1, 1, 1]
        ranks_zyx[axis] = ranks[0]
        decomp = Decomposition(tuple(shape), ranks_zyx=ranks_zyx)
        coords = [0, 0, 0]
        coords[axis] = k
        rank = decomp.rank_of(coords)
        box = decomp.box(rank)
        c, coef, bc_type, bc_value, _ = case(rng, box.shape, 0)
        rows = rank_rows(decomp, rank, axis, coef, bc_type, bc_value, first=(axis == 2))
        n_lines = box.n_voxels // box.shape[axis]
        want_c, got_c = c.copy(), cp.asarray(c)
        want = Sweeps().eliminate_fixed(want_c, axis, rows, n_lines)
        got = dev.eliminate_fixed(got_c, axis, rows, n_lines)
        assert_bits(got, want)
        x_first, x_last = rng.uniform(0, 2, n_lines), rng.uniform(0, 2, n_lines)
        Sweeps().substitute_fixed(want_c, axis, rows, x_first, x_last)
        dev.substitute_fixed(got_c, axis, rows, x_first, x_last)
        assert_bits(got_c.get(), want_c)
        assert not np.array_equal(want_c, c)  # the substitution wrote the box
    assert {name for name, _, _ in launches} == FIXED_KERNELS[d_global]


@pytest.mark.parametrize("flags", [L.HAS_VESSEL, L.HAS_TUMOR | L.HAS_SRC, L.HAS_TCELL, 15])
def test_emulated_reaction_sweep_kernels_equal_the_cpu_rank_bitwise(gpu, flags):
    """The x sweep with the per-voxel reaction: reduced rows A, C, D of both ends and the values."""
    cp, backend, launches = gpu
    rng = np.random.default_rng(20 + flags)
    dev = backend.kernels("partitioned").Sweeps()
    for n_line, ranks, k in SEGMENTS:
        decomp = Decomposition((3, 45, n_line), ranks_zyx=(1, 1, ranks[0]))  # 135 lines: 2 blocks
        rank = decomp.rank_of((0, 0, k))
        box = decomp.box(rank)
        c, coef, bc_type, bc_value, ops = case(rng, box.shape, flags)
        rows = rank_rows(decomp, rank, 2, coef, bc_type, bc_value, first=True)
        n_lines = box.shape[0] * box.shape[1]
        want_c, got_c = c.copy(), cp.asarray(c)
        reaction = (*ops, flags)
        dev_reaction = (*[cp.asarray(o) if o.size > 1 else None for o in ops], flags)
        want = Sweeps().eliminate_reaction(want_c, rows, coef, reaction, n_lines)
        got = dev.eliminate_reaction(got_c, rows, coef, dev_reaction, n_lines)
        assert_bits(got, want)
        x_first, x_last = rng.uniform(0, 2, n_lines), rng.uniform(0, 2, n_lines)
        Sweeps().substitute_reaction(want_c, rows, coef, reaction, x_first, x_last)
        dev.substitute_reaction(got_c, rows, coef, dev_reaction, x_first, x_last)
        assert_bits(got_c.get(), want_c)
    assert {name for name, _, _ in launches} == {"part_reaction_eliminate", "part_reaction_substitute"}


def _steps(comm, decomp, backend, cp, start, coef, bc_type, bc_value, ops, flags, n):
    """``n`` PartitionedLOD steps of this rank's box; returns the box (host) and the bytes sent."""
    box = decomp.box(comm.rank)
    lod = PartitionedLOD(comm, decomp, backend)
    cut = [o[box.slices] if o.size > 1 else o for o in ops]
    c = start[box.slices].copy()  # a copy: a z-slab's slice of start is contiguous, and the steps write c
    if cp is None:
        operands = cut
    else:
        c = cp.asarray(c)
        operands = [cp.asarray(np.ascontiguousarray(o)) for o in cut]
    for _ in range(n):
        lod.step(c, coef, bc_type, bc_value, *operands, flags)
    return np.asarray(c.get() if cp is not None else c), lod.bytes_sent


def _lod_runs(backend, cp, shape, ranks_zyx, n_steps, seed):
    """PartitionedLOD on thread ranks, CPU and ``backend``, ``n_steps`` with every per-voxel term and
    Dirichlet ends on some cut lines: asserts the same bits and bytes sent, and changed boxes."""
    rng = np.random.default_rng(seed)
    flags = L.HAS_VESSEL | L.HAS_TUMOR | L.HAS_TCELL | L.HAS_SRC
    start, coef, _, bc_value, ops = case(rng, shape, flags)
    bc_type = np.array([1, 0, 0, 1, 1, 0], np.int32)
    decomp = Decomposition(shape, ranks_zyx=ranks_zyx)
    args = (coef, bc_type, bc_value, ops, flags, n_steps)
    want = run_ranks(decomp.n_ranks, lambda comm: _steps(comm, decomp, None, None, start, *args))
    got = run_ranks(decomp.n_ranks, lambda comm: _steps(comm, decomp, backend, cp, start, *args))
    for r, ((w, wb), (g, gb)) in enumerate(zip(want, got)):
        assert_bits(g, w)
        assert gb == wb
        assert not np.array_equal(g, start[decomp.box(r).slices])  # the comparison has content
    assert sum(b for _, b in got) > 0


@pytest.mark.parametrize("d_global", [False, True], ids=["d_onchip", "d_global"])
@pytest.mark.parametrize("ranks_zyx", [(2, 1, 1), (1, 2, 2), (2, 2, 1), (1, 1, 3), (2, 1, 2)],
                         ids=lambda r: "x".join(map(str, r)))
def test_partitioned_lod_on_gpu_ranks_steps_the_boxes_to_the_cpu_ranks_bits(gpu, monkeypatch, ranks_zyx, d_global):
    """Thread ranks: PartitionedLOD with the CUDA backend (stand-in CuPy, emulated kernels) against the
    CPU backend, 3 steps; the messages are the same bytes."""
    from gpusim.parallel import partitioned_cuda

    cp, backend, launches = gpu
    monkeypatch.setattr(partitioned_cuda, "FORCE_GLOBAL_D", d_global)
    _lod_runs(backend, cp, (6, 7, 9), ranks_zyx, 3, sum(ranks_zyx))
    names = {n for n, _, _ in launches}
    assert FIXED_KERNELS[d_global] <= names  # a cut axis went through partitioned.cu
    if ranks_zyx[1] == ranks_zyx[2] == 1:
        assert "lod_sweep_x" in names and "part_reaction_eliminate" not in names  # z-slabs: fields.cu's x, y
    else:
        assert "part_reaction_eliminate" in names


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_status()[0], reason="no usable CUDA device")
def test_on_the_gpu_partitioned_lod_steps_the_boxes_to_the_cpu_ranks_bits():
    """The real device (``pytest -m gpu``): PartitionedLOD on CuPy arrays against the CPU ranks."""
    import cupy as cp

    backend = select_backend("cuda")
    for ranks_zyx in ((2, 1, 1), (2, 2, 2), (1, 3, 2)):
        _lod_runs(backend, cp, (32, 40, 48), ranks_zyx, 5, 5)


def _box_field_runs(backend, ranks_zyx, shape=(8, 9, 10)):
    """partitioned_driver's fields (a vessel-fed Mg block and the chemokine, Dirichlet faces) after one
    minute (Mg's 25 LOD steps) on thread ranks, with no device and with ``backend`` as every rank's GPU:
    asserts the same bits, a changed field and the box copies."""
    import sys
    from pathlib import Path

    from gpusim.parallel.fields import BoxFieldRun

    sys.path.insert(0, str(Path(__file__).resolve().parent / "mpi"))
    from partitioned_driver import config

    cfg = config("partitioned", shape)
    n = int(np.prod(ranks_zyx))

    def work(comm, device):
        run = BoxFieldRun(cfg, comm, ranks_zyx=ranks_zyx, device=device)
        start = {name: run.interior(name).copy() for name in run.plans}
        run.advance(1)
        return start, {name: run.interior(name).copy() for name in run.plans}, run.device_bytes

    want = run_ranks(n, lambda comm: work(comm, None))
    got = run_ranks(n, lambda comm: work(comm, backend))
    for (start, w, wb), (_, g, gb) in zip(want, got):
        assert set(w) == {"mg", "chemokine"}
        for name in w:
            assert_bits(g[name], w[name])
            assert not np.array_equal(w[name], start[name])
        assert wb == 0 and gb >= 2 * 4 * sum(a.size for a in w.values())  # each box up and back


@pytest.mark.parametrize("ranks_zyx", [(2, 1, 1), (1, 2, 2)], ids=lambda r: "x".join(map(str, r)))
def test_a_gpu_rank_steps_its_partitioned_lod_fields_to_the_cpu_ranks_bits(gpu, ranks_zyx):
    """BoxFieldRun on thread ranks with a GPU per rank (stand-in CuPy, emulated kernels)."""
    cp, backend, launches = gpu
    _box_field_runs(backend, ranks_zyx)
    names = {name for name, _, _ in launches}
    # the cut z lines through partitioned.cu; the x sweep (Mg's reaction) through it where x or y is cut
    assert "part_fixed_onchip" in names
    assert ("part_reaction_eliminate" in names) == (ranks_zyx[1:] != (1, 1))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_status()[0], reason="no usable CUDA device")
def test_on_the_gpu_a_gpu_rank_steps_its_partitioned_lod_fields_to_the_cpu_ranks_bits():
    backend = select_backend("cuda")
    for ranks_zyx in ((2, 1, 1), (1, 2, 2), (2, 2, 2)):
        _box_field_runs(backend, ranks_zyx, shape=(24, 20, 28))


class _Devices:
    """A CuPy stand-in with ``count`` devices that records which one each rank made current."""

    def __init__(self, count):
        self.count, self.used = count, []
        outer = self

        class Device:
            def __init__(self, i=None):
                self.id = outer.used[-1] if i is None and outer.used else (i or 0)
                self.mem_info = (1 << 30, 2 << 30)

            def use(self):
                outer.used.append(self.id)

        self.cuda = types.SimpleNamespace(Device=Device, runtime=types.SimpleNamespace(
            getDeviceCount=lambda: self.count,
            getDeviceProperties=lambda i: {"name": b"stand-in", "major": 9, "minor": 0}))


def test_each_rank_takes_the_gpu_of_its_node_local_number(monkeypatch, caplog):
    import logging
    import sys

    from gpusim.backend import BackendError
    from gpusim.config import Config
    from gpusim.parallel.ranks import rank_device

    fake = _Devices(2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cfg = Config.model_validate({"grid": {"shape": [8, 8, 8]}, "backend": "cuda"})

    def comm(rank, size, local_rank, missing=0, local_size=2):  # ``missing``: ranks elsewhere without a GPU
        return types.SimpleNamespace(rank=rank, size=size, local_rank=local_rank, local_size=local_size,
                                     allreduce_sum=lambda v: v + missing)

    with caplog.at_level(logging.WARNING, logger="gpusim"):
        for local in range(5):
            dev = rank_device(cfg, comm(local + 3, 8, local, local_size=5))
            assert dev.is_gpu and fake.used[-1] == local % 2
    assert fake.used == [0, 1, 0, 1, 0]
    # the node's first rank says that 5 ranks share 2 GPUs, once
    assert [r.getMessage() for r in caplog.records].count(
        "gpusim: 5 MPI ranks on this node share its 2 GPU(s) (rank k takes GPU k mod 2); for one GPU per rank "
        "start 2 ranks per node") == 1
    caplog.clear()
    rank_device(cfg, comm(0, 8, 0, local_size=2))
    assert not caplog.records  # one GPU per rank: nothing to say
    assert rank_device(cfg, comm(0, 1, 0)) is None  # one process: the single-process code
    assert rank_device(cfg.with_overrides({"backend": "auto"}), comm(0, 2, 0)) is None  # CPU ranks unless asked
    with pytest.raises(BackendError, match="1 of the 4 MPI ranks have no usable CUDA device"):
        rank_device(cfg, comm(0, 4, 0, missing=1))  # a rank with a GPU does not wait for one without
    fake.count = 0
    with pytest.raises(BackendError, match="backend 'cuda' was requested but CuPy sees no CUDA device"):
        rank_device(cfg, comm(1, 2, 1))


def test_gpu_ranks_refuse_the_bitwise_lod_with_what_to_set():
    from gpusim.config import Config
    from gpusim.parallel.ranks import unsupported

    cfg = Config.model_validate({"grid": {"shape": [8, 8, 8]}, "substrates": [{"name": "mg"}], "backend": "cuda",
                                 "parallel": {"lod_mode": "bitwise"}})
    assert any("parallel.lod_mode = \"partitioned\"" in p for p in unsupported(cfg))
    assert unsupported(cfg.with_overrides({"parallel": {"lod_mode": "partitioned"}})) == []
    assert unsupported(cfg.with_overrides({"backend": "cpu"})) == []
