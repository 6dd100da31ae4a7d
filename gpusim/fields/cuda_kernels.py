"""CuPy launchers of ``kernels/fields.cu``: the GPU twins of ``fields.cpu_kernels``, with the same signatures.

``lod_step`` (and its parts ``lod_xy_pass``, ``lod_z_pass``) and ``explicit_step`` take CuPy arrays for
the fields and per-voxel inputs (``(z, y, x)``, C-contiguous: float32 fields and ``src``, uint8
``vessel``/``n_tumor``/``n_tcell``); ``coef`` (float64 ``[NCOEF]``), ``bc_type`` (int32 ``[6]``) and
``bc_value`` (float64 ``[6]``) are best passed as NumPy arrays: they are packed and uploaded once per
distinct value and the device copy is reused. Kernels run on the current CuPy stream; nothing
synchronises. Results equal the CPU twin bitwise (same float64 operations in the same order,
``kernels/field_math.cuh``, compiled without FMA contraction).

The launch shapes live here, as plain functions without CuPy, so the CPU test suite can run the kernels'
source under a host emulation (tests/host_field_math.cpp) with exactly these shapes.
"""

from __future__ import annotations

import numpy as np

from . import layout as L

# Fixed by kernels/fields.cu (LINES, XT, EX_*): the kernels assume these block shapes.
LINES = 32  # threads per sweep block, one line each
XT = 16  # x-sweep tile width
X_STATIC_SHARED_BYTES = 3 * LINES * (XT + 1) * 4  # the x sweep's c, src and packed-count tiles
EX_BLOCK = (32, 8, 1)  # explicit step: threads over (x, y)
EX_ZCH = 8  # explicit step: z-planes per thread
SHARED_RESERVED_PER_BLOCK = 1024  # the driver's per-block shared memory reservation (sm_80, sm_90)
NPAR = L.NCOEF + 6

KERNEL_NAMES = ("lod_sweep_x", "lod_sweep_y", "lod_sweep_z", "explicit_step")
SWEEP_KERNEL = {2: "lod_sweep_x", 1: "lod_sweep_y", 0: "lod_sweep_z"}  # axis of (z, y, x) -> kernel

# Tests set this to exercise the global-memory scratch for g that large grids use.
FORCE_GLOBAL_G = False


def pack_par(coef, bc_value) -> np.ndarray:
    """The kernels' parameter vector: ``coef`` then ``bc_value`` (float64 ``[NPAR]``)."""
    coef = np.asarray(coef, dtype=np.float64).reshape(-1)
    bc_value = np.asarray(bc_value, dtype=np.float64).reshape(-1)
    if coef.size != L.NCOEF or bc_value.size != 6:
        raise ValueError(f"coef must have {L.NCOEF} values and bc_value 6, got {coef.size} and {bc_value.size}")
    return np.concatenate([coef, bc_value])


def dirichlet_mask(bc_type) -> int:
    """Bit f set where face f (z_lo, z_hi, y_lo, y_hi, x_lo, x_hi) is Dirichlet."""
    bc_type = np.asarray(bc_type).reshape(-1)
    if bc_type.size != 6:
        raise ValueError(f"bc_type must have 6 values (faces {L.FACES}), got {bc_type.size}")
    return sum(1 << f for f in range(6) if int(bc_type[f]) == L.BC_DIRICHLET)


def g_shared_bytes(axis: int, shape) -> int:
    """Dynamic shared memory of a sweep along ``axis`` that keeps g on chip: LINES lines x n x 8 B."""
    return LINES * int(shape[axis]) * 8


def use_global_g(axis: int, shape, optin_per_block: int, per_sm: int) -> bool:
    """Whether a sweep keeps g in a global scratch rather than shared memory.

    Shared memory is used while at least two blocks fit on an SM: with one warp per SM neither the
    recurrence's latency nor DRAM latency is hidden, and the global scratch (all lines in flight, +16 B
    per voxel of traffic) is then the faster choice.
    """
    if FORCE_GLOBAL_G:
        return True
    static = X_STATIC_SHARED_BYTES if axis == 2 else 0
    need = g_shared_bytes(axis, shape) + static
    return need > optin_per_block or 2 * (need + SHARED_RESERVED_PER_BLOCK) > per_sm


def sweep_launch(axis: int, shape, g_global: bool):
    """``(grid, block, dynamic shared bytes)`` of the sweep along ``axis`` (0 = z, 1 = y, 2 = x)."""
    nz, ny, nx = (int(n) for n in shape)
    nlines = {2: nz * ny, 1: nz * nx, 0: ny * nx}[axis]
    grid = ((nlines + LINES - 1) // LINES, 1, 1)
    return grid, (LINES, 1, 1), 0 if g_global else g_shared_bytes(axis, shape)


def sweep_args(axis: int, c, ins, par, gscratch, shape, flags: int, mask: int, g_global: bool) -> tuple:
    """The argument tuple of the sweep kernel along ``axis``. Only the x sweep (axis 2) carries the
    reaction, so only it takes the per-voxel inputs ``ins`` (vessel, n_tumor, n_tcell, src) and ``flags``;
    the y and z sweeps are pure diffusion: ``(c, par, gscratch, nz, ny, nx, dirichlet_mask, g_global)``."""
    nz, ny, nx = (np.int32(n) for n in shape)
    if axis == 2:
        return (c, *ins, par, gscratch, nz, ny, nx, np.int32(flags), np.int32(mask), np.int32(g_global))
    return (c, par, gscratch, nz, ny, nx, np.int32(mask), np.int32(g_global))


def explicit_launch(shape):
    """``(grid, block)`` of the explicit step."""
    nz, ny, nx = (int(n) for n in shape)
    bx, by, _ = EX_BLOCK
    return ((nx + bx - 1) // bx, (ny + by - 1) // by, (nz + EX_ZCH - 1) // EX_ZCH), EX_BLOCK


# ---- CuPy side (this module is imported only on the CUDA backend) ---------------------------------

_kernels: dict = {}  # (device id, name) -> cupy.RawKernel
_limits: dict = {}  # device id -> (opt-in shared per block, shared per SM)
_par_cache: dict = {}  # (device id, packed bytes) -> device array
_dummies: dict = {}  # (device id, dtype) -> 1-element device array
_scratch: dict = {}  # device id -> float64 device array for g (grown on demand)
_PAR_CACHE_MAX = 256


def _device_id() -> int:
    import cupy

    return cupy.cuda.Device().id


def _kernel(name: str):
    """The compiled kernel ``name`` on the current device (fields.cu is compiled once per process)."""
    dev = _device_id()
    key = (dev, name)
    if key not in _kernels:
        from .. import kernelsrc

        module = kernelsrc.raw_module("fields.cu")
        optin, _ = _device_limits()
        for kname in KERNEL_NAMES:
            k = module.get_function(kname)
            if kname.startswith("lod_sweep"):
                # allow the dynamic g buffer above the default 48 KiB, up to what the device offers
                k.max_dynamic_shared_size_bytes = optin - k.shared_size_bytes
            _kernels[(dev, kname)] = k
    return _kernels[key]


def _device_limits():
    dev = _device_id()
    if dev not in _limits:
        import cupy

        attrs = cupy.cuda.Device(dev).attributes
        _limits[dev] = (int(attrs["MaxSharedMemoryPerBlockOptin"]), int(attrs["MaxSharedMemoryPerMultiprocessor"]))
    return _limits[dev]


def _par_on_device(coef, bc_value):
    """The packed parameters on the device; NumPy inputs are uploaded once per distinct value."""
    import cupy

    if isinstance(coef, cupy.ndarray) or isinstance(bc_value, cupy.ndarray):
        par = cupy.concatenate([cupy.asarray(coef, dtype=cupy.float64).ravel(),
                                cupy.asarray(bc_value, dtype=cupy.float64).ravel()])
        if par.size != NPAR:
            raise ValueError(f"coef and bc_value must have {L.NCOEF} and 6 values")
        return par
    host = pack_par(coef, bc_value)
    key = (_device_id(), host.tobytes())
    par = _par_cache.get(key)
    if par is None:
        if len(_par_cache) >= _PAR_CACHE_MAX:
            _par_cache.clear()
        par = _par_cache[key] = cupy.asarray(host)
    return par


def _dummy(dtype):
    """A 1-element device array standing in for an input whose flag is off (never read)."""
    import cupy

    key = (_device_id(), np.dtype(dtype).str)
    if key not in _dummies:
        _dummies[key] = cupy.zeros(1, dtype)
    return _dummies[key]


def _g_scratch(n_values: int):
    import cupy

    dev = _device_id()
    buf = _scratch.get(dev)
    if buf is None or buf.size < n_values:
        buf = _scratch[dev] = cupy.empty(n_values, cupy.float64)
    return buf


def _inputs(shape, vessel, n_tumor, n_tcell, src, flags):
    """Device pointers of the per-voxel inputs, checked where their flag is set."""
    import cupy

    out = []
    specs = ((vessel, L.HAS_VESSEL, np.uint8, "vessel"), (n_tumor, L.HAS_TUMOR, np.uint8, "n_tumor"),
             (n_tcell, L.HAS_TCELL, np.uint8, "n_tcell"), (src, L.HAS_SRC, np.float32, "src"))
    for arr, bit, dtype, name in specs:
        if flags & bit:
            _check(arr, shape, dtype, name, cupy)
            out.append(arr)
        else:
            out.append(_dummy(dtype))
    return out


def _check(a, shape, dtype, name, cupy):
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"{name} must be a CuPy array on the device, got {type(a).__name__}")
    if a.shape != tuple(shape) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(
            f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape {tuple(shape)}, "
            f"got {a.dtype} {a.shape}{'' if a.flags.c_contiguous else ' (not C-contiguous)'}"
        )


def lod_step(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags):
    """One LOD field step of length dt_f, in place on ``c`` (float32 ``(nz, ny, nx)`` CuPy array, unit).

    Implicit sweeps along x (with the reaction and the sources of the step's input values, the full
    dt_f), then y and z (pure diffusion: those kernels take no per-voxel inputs).
    """
    _sweeps(c, coef, bc_type, bc_value, (vessel, n_tumor, n_tcell, src), flags, (2, 1, 0))


def lod_xy_pass(c, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags):
    """The x sweep (with the reaction and sources) and the y sweep of one LOD step, in place on ``c``
    (the CPU twin's signature: a distributed run calls it on boxes of whole z-planes, gpusim.parallel)."""
    _sweeps(c, coef, bc_type, bc_value, (vessel, n_tumor, n_tcell, src), flags, (2, 1))


def lod_z_pass(c, coef, bc_type, bc_value):
    """The z sweep of one LOD step, in place on ``c`` (boxes of whole z lines, gpusim.parallel)."""
    _sweeps(c, coef, bc_type, bc_value, None, 0, (0,))


def _sweeps(c, coef, bc_type, bc_value, inputs, flags, axes):
    """The sweeps ``axes`` of one LOD step in place on ``c``; ``inputs`` (vessel, n_tumor, n_tcell, src)
    are read by the x sweep (axis 2) only."""
    import cupy

    if not isinstance(c, cupy.ndarray) or c.ndim != 3:
        raise TypeError("c must be a 3D CuPy array (z, y, x)")
    _check(c, c.shape, np.float32, "c", cupy)
    if c.size == 0:
        return
    flags = int(flags)
    ins = _inputs(c.shape, *inputs, flags) if 2 in axes else None
    par = _par_on_device(coef, bc_value)
    mask = dirichlet_mask(bc_type.get() if isinstance(bc_type, cupy.ndarray) else bc_type)
    optin, per_sm = _device_limits()
    for axis in axes:
        g_global = use_global_g(axis, c.shape, optin, per_sm)
        grid, block, shared = sweep_launch(axis, c.shape, g_global)
        gscr = _g_scratch(c.size) if g_global else _dummy(np.float64)
        _kernel(SWEEP_KERNEL[axis])(grid, block, sweep_args(axis, c, ins, par, gscr, c.shape, flags, mask, g_global),
                                    shared_mem=shared)


def explicit_step(c_in, c_out, coef, bc_type, bc_value, vessel, n_tumor, n_tcell, src, flags):
    """One explicit sub-step of length DT: ``c_out`` from ``c_in`` (distinct float32 CuPy arrays)."""
    import cupy

    if not isinstance(c_in, cupy.ndarray) or c_in.ndim != 3:
        raise TypeError("c_in must be a 3D CuPy array (z, y, x)")
    _check(c_in, c_in.shape, np.float32, "c_in", cupy)
    _check(c_out, c_in.shape, np.float32, "c_out", cupy)
    if c_in.size == 0:
        return
    if c_out.data.ptr == c_in.data.ptr:
        raise ValueError("explicit_step needs distinct c_in and c_out buffers (neighbours are read from c_in)")
    flags = int(flags)
    ins = _inputs(c_in.shape, vessel, n_tumor, n_tcell, src, flags)
    par = _par_on_device(coef, bc_value)
    mask = dirichlet_mask(bc_type.get() if isinstance(bc_type, cupy.ndarray) else bc_type)
    nz, ny, nx = c_in.shape
    grid, block = explicit_launch(c_in.shape)
    _kernel("explicit_step")(
        grid, block,
        (c_in, c_out, *ins, par, np.int32(nz), np.int32(ny), np.int32(nx), np.int32(flags), np.int32(mask)),
    )
