"""CuPy launchers of ``kernels/partitioned.cu``: a GPU rank's partitioned LOD sweeps, the twins of the
numba kernels of :mod:`gpusim.parallel.partitioned_cpu` (:class:`Sweeps` has the interface of the CPU
``Sweeps`` that ``PartitionedLOD`` drives), equal to them bit for bit.

A sweep of the box is two launches: the elimination (every line's segment reduced, and its reduced
rows) and the substitution (the values from the solved ends). A fixed sweep runs ``part_fixed_onchip``
twice (its ``D`` in shared memory, eliminated again in the substitution) while a block of lines fits on
an SM (``onchip``), else ``part_fixed_eliminate`` and ``part_fixed_substitute`` with ``D`` in a global
scratch kept between them; the reaction sweep keeps its per-line A, C, D in that scratch. In between,
the reduced rows (16 or 48 B a line) are copied to the host, exchanged and solved there
(``parallel.tdma``, as on a CPU rank), and the solved ends (16 B a line) copied back: host staging,
~2 MB per sweep at 256² lines; the scratch never leaves the device. The axes a box holds whole use the
single-process kernels (``fields.cuda_kernels``'s ``lod_step``, ``lod_xy_pass``, ``lod_z_pass``, which
``PartitionedLOD`` calls itself).

The launch shapes and argument tuples are plain functions without CuPy, so the CPU test suite runs the
kernels' source under a host emulation (tests/host_field_math.cpp) with exactly these shapes.
"""

from __future__ import annotations

import numpy as np

from ..fields import cuda_kernels as ck

__all__ = ["KERNEL_NAMES", "PLINES", "PLINES_ONCHIP", "Sweeps", "fixed_rows", "launch", "launch_onchip", "onchip",
           "reaction_rows"]

PLINES = 128  # threads per block, one line each (kernels/partitioned.cu's PLINES)
PLINES_ONCHIP = 32  # part_fixed_onchip: one warp per block, its D in shared memory (PLINES_ONCHIP)
KERNEL_NAMES = ("part_fixed_eliminate", "part_fixed_substitute", "part_fixed_onchip", "part_reaction_eliminate",
                "part_reaction_substitute")

# Tests set this to run the fixed sweeps through the global scratch that lines too long for shared
# memory use.
FORCE_GLOBAL_D = False


def launch(n_lines: int):
    """``(grid, block)`` of every partitioned kernel on a box with ``n_lines`` lines along the sweep."""
    return ((int(n_lines) + PLINES - 1) // PLINES, 1, 1), (PLINES, 1, 1)


def onchip(n: int, optin_per_block: int, per_sm: int) -> bool:
    """Whether a fixed sweep of ``n``-voxel segments keeps ``D`` in shared memory (``part_fixed_onchip``:
    12 B a voxel, the elimination run twice) rather than a global scratch (~40 B a voxel): while two
    blocks of PLINES_ONCHIP lines fit on an SM, as fields.cu's sweeps decide for their g."""
    if FORCE_GLOBAL_D:
        return False
    need = PLINES_ONCHIP * int(n) * 8
    return need <= optin_per_block and 2 * (need + ck.SHARED_RESERVED_PER_BLOCK) <= per_sm


def launch_onchip(n_lines: int, n: int):
    """``(grid, block, dynamic shared bytes)`` of ``part_fixed_onchip``."""
    grid = ((int(n_lines) + PLINES_ONCHIP - 1) // PLINES_ONCHIP, 1, 1)
    return grid, (PLINES_ONCHIP, 1, 1), PLINES_ONCHIP * int(n) * 8


def fixed_rows(rows) -> np.ndarray:
    """The position-only rows of a fixed sweep as the kernels read them: float64 [a, r, c*r, A, C] x n
    (``rows``: PartitionedLOD's cached dict)."""
    r, cf, fa, fc, _ = rows["factors"]
    return np.concatenate([rows["a"], r, cf, fa.reshape(-1), fc.reshape(-1)]).astype(np.float64)


def reaction_rows(rows) -> np.ndarray:
    """The reaction sweep's position-only coefficients: float64 [a, B0[m], c] x n."""
    return np.concatenate([rows["a"], rows["bm"], rows["c"]]).astype(np.float64)


def fixed_eliminate_args(c, rows_dev, D, ends, axis, rows) -> tuple:
    nz, ny, nx = (np.int32(n) for n in c.shape)
    _, _, _, _, r0 = rows["factors"]
    return (c, rows_dev, D, ends, nz, ny, nx, np.int32(axis), np.float64(r0), np.float64(rows["rhs0"]),
            np.int32(rows["lo"]), np.float64(rows["dlo"]), np.int32(rows["hi"]), np.float64(rows["dhi"]))


def fixed_onchip_args(c, rows_dev, ends, x_first, x_last, axis, rows, phase) -> tuple:
    nz, ny, nx = (np.int32(n) for n in c.shape)
    _, _, _, _, r0 = rows["factors"]
    return (c, rows_dev, ends, x_first, x_last, nz, ny, nx, np.int32(axis), np.float64(r0), np.float64(rows["rhs0"]),
            np.int32(rows["lo"]), np.float64(rows["dlo"]), np.int32(rows["hi"]), np.float64(rows["dhi"]),
            np.int32(phase))


def fixed_substitute_args(c, rows_dev, D, x_first, x_last, axis) -> tuple:
    nz, ny, nx = (np.int32(n) for n in c.shape)
    return (c, rows_dev, D, x_first, x_last, nz, ny, nx, np.int32(axis))


def reaction_eliminate_args(c, ins, par, rows_dev, A, C, D, ends, flags, rows) -> tuple:
    nz, ny, nx = (np.int32(n) for n in c.shape)
    return (c, *ins, par, rows_dev, A, C, D, ends, nz, ny, nx, np.int32(flags), np.int32(rows["lo"]),
            np.float64(rows["dlo"]), np.int32(rows["hi"]), np.float64(rows["dhi"]))


def reaction_substitute_args(c, A, C, D, x_first, x_last) -> tuple:
    nz, ny, nx = (np.int32(n) for n in c.shape)
    return (c, A, C, D, x_first, x_last, nz, ny, nx)


# ---- CuPy side (this module is imported only on the CUDA backend) ---------------------------------

_kernels: dict = {}  # (device id, name) -> cupy.RawKernel


def _kernel(name: str):
    dev = ck._device_id()
    if (dev, name) not in _kernels:
        from .. import kernelsrc

        module = kernelsrc.raw_module("partitioned.cu")
        optin, _ = ck._device_limits()
        for kname in KERNEL_NAMES:
            k = module.get_function(kname)
            if kname == "part_fixed_onchip":  # D above the default 48 KiB, up to what the device offers
                k.max_dynamic_shared_size_bytes = optin - k.shared_size_bytes
            _kernels[(dev, kname)] = k
    return _kernels[(dev, name)]


class Sweeps:
    """A GPU rank's sweep kernels (``c`` and the per-voxel operands CuPy arrays on the current device).
    The elimination's scratch stays on the device from ``eliminate_*`` to the ``substitute_*`` that
    follows it (one sweep at a time)."""

    def __init__(self):
        self._scratch = None  # float64 device buffer, grown on demand
        self._ends = None

    def eliminate_fixed(self, c, axis, rows, n_lines):
        n = c.shape[axis]
        ends = self._ends_buffer(2 * n_lines)
        if onchip(n, *ck._device_limits()):
            grid, block, shared = launch_onchip(n_lines, n)
            none = ck._dummy(np.float64)
            _kernel("part_fixed_onchip")(grid, block, fixed_onchip_args(c, self._rows(rows, "fixed"), ends, none, none,
                                                                        axis, rows, 0), shared_mem=shared)
        else:
            D = self._buffer(n * n_lines)
            _kernel("part_fixed_eliminate")(*launch(n_lines),
                                            fixed_eliminate_args(c, self._rows(rows, "fixed"), D, ends, axis, rows))
        return ends.get().reshape(2, n_lines)

    def substitute_fixed(self, c, axis, rows, x_first, x_last) -> None:
        import cupy

        n, n_lines = c.shape[axis], c.size // c.shape[axis]
        x_first, x_last = cupy.asarray(x_first), cupy.asarray(x_last)
        if onchip(n, *ck._device_limits()):
            grid, block, shared = launch_onchip(n_lines, n)
            _kernel("part_fixed_onchip")(grid, block, fixed_onchip_args(c, self._rows(rows, "fixed"),
                                                                        ck._dummy(np.float64), x_first, x_last, axis,
                                                                        rows, 1), shared_mem=shared)
        else:
            D = self._buffer(n * n_lines)
            _kernel("part_fixed_substitute")(*launch(n_lines), fixed_substitute_args(
                c, self._rows(rows, "fixed"), D, x_first, x_last, axis))

    def eliminate_reaction(self, c, rows, coef, reaction, n_lines):
        vessel, n_tumor, n_tcell, src, flags = reaction
        n = c.size
        scratch = self._buffer(3 * n)
        A, C, D = scratch[:n], scratch[n:2 * n], scratch[2 * n:3 * n]
        ends = self._ends_buffer(6 * n_lines)
        ins = ck._inputs(c.shape, vessel, n_tumor, n_tcell, src, int(flags))
        par = ck._par_on_device(coef, np.zeros(6))  # the x sweep's Dirichlet terms come from ``rows``
        _kernel("part_reaction_eliminate")(*launch(n_lines), reaction_eliminate_args(
            c, ins, par, self._rows(rows, "reaction"), A, C, D, ends, int(flags), rows))
        return ends.get().reshape(6, n_lines)

    def substitute_reaction(self, c, rows, coef, reaction, x_first, x_last) -> None:
        import cupy

        n = c.size
        scratch = self._buffer(3 * n)
        _kernel("part_reaction_substitute")(*launch(c.size // c.shape[2]), reaction_substitute_args(
            c, scratch[:n], scratch[n:2 * n], scratch[2 * n:3 * n], cupy.asarray(x_first), cupy.asarray(x_last)))

    @staticmethod
    def _rows(rows, kind):
        """The device copy of a cached rows dict's coefficients (uploaded once per dict)."""
        import cupy

        key = "device_" + kind
        if key not in rows:
            rows[key] = cupy.asarray(fixed_rows(rows) if kind == "fixed" else reaction_rows(rows))
        return rows[key]

    def _buffer(self, n_values):
        import cupy

        if self._scratch is None or self._scratch.size < n_values:
            self._scratch = cupy.empty(n_values, cupy.float64)
        return self._scratch[:n_values]

    def _ends_buffer(self, n_values):
        import cupy

        if self._ends is None or self._ends.size < n_values:
            self._ends = cupy.empty(n_values, cupy.float64)
        return self._ends[:n_values]
