"""The CUDA kernels without a GPU, for the CPU suite: ``build`` compiles tests/host_field_math.cpp (the
host twin of kernels/field_math.cuh and kernels/*.cu under a host emulation of CUDA's execution model)
into a ctypes library, and ``install_fake_cupy`` puts a stand-in for CuPy in ``sys.modules`` whose
arrays are NumPy arrays and whose kernels are the emulated ones, so the CuPy launchers
(``gpusim.fields.cuda_kernels``, ``gpusim.parallel.partitioned_cuda``) run end to end."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
VP, I, LL, D = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_double


def build(folder: Path):
    """tests/host_field_math.cpp as a shared library in ``folder`` (g++ -O2 -ffp-contract=off -fno-fast-math)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.fail("g++ is needed to build the host twin of kernels/field_math.cuh (apt-get install g++)")
    out = Path(folder) / "host_field_math.so"
    cmd = [gxx, "-O2", "-std=c++20", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Wno-unknown-pragmas",
           "-shared", "-fPIC", "-pthread", f"-I{REPO / 'kernels'}", str(REPO / "tests" / "host_field_math.cpp"),
           "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    so = ctypes.CDLL(str(out))
    so.host_lod_step.argtypes = [VP, I, I, I, VP, I, VP, VP, VP, VP, I]
    so.host_explicit_step.argtypes = [VP, VP, I, I, I, VP, I, VP, VP, VP, VP, I]
    so.host_constants.argtypes = [VP]
    so.host_voxel_rates.argtypes = [VP, LL, VP, VP, VP, VP, VP, I, VP, VP]
    so.host_lod_reaction_terms.argtypes = [VP, LL, VP, VP, VP, VP, VP, I, VP, VP]
    so.emu_sweep_x.argtypes = [VP, VP, LL, VP, VP, VP, VP, VP, VP, VP, I, I, I, I, I, I]
    so.emu_sweep_diffusion.argtypes = [I, VP, VP, LL, VP, VP, VP, I, I, I, I, I]
    so.emu_explicit.argtypes = [VP, VP, VP, VP, VP, VP, VP, VP, VP, I, I, I, I, I]
    # kernels/partitioned.cu: (grid, block, then the kernel's own arguments)
    so.emu_part_fixed_eliminate.argtypes = [VP, VP, VP, VP, VP, VP, I, I, I, I, D, D, I, D, I, D]
    so.emu_part_fixed_substitute.argtypes = [VP, VP, VP, VP, VP, VP, VP, I, I, I, I]
    so.emu_part_fixed_onchip.argtypes = [VP, VP, LL, VP, VP, VP, VP, VP, I, I, I, I, D, D, I, D, I, D, I]
    so.emu_part_reaction_eliminate.argtypes = [VP, VP, VP, VP, VP, VP, VP, VP, VP, VP, VP, VP, VP, I, I, I, I, I, D, I,
                                               D]
    so.emu_part_reaction_substitute.argtypes = [VP, VP, VP, VP, VP, VP, VP, VP, I, I, I]
    for name in ("emu_sweep_x", "emu_sweep_diffusion", "emu_explicit", "emu_part_fixed_eliminate",
                 "emu_part_fixed_substitute", "emu_part_fixed_onchip", "emu_part_reaction_eliminate",
                 "emu_part_reaction_substitute"):
        getattr(so, name).restype = I
    return so


def u32x3(t):
    return np.array(t, np.uint32)


def _arg(x):
    """A kernel argument as ctypes takes it: an array's address, or the scalar's Python value."""
    if isinstance(x, np.ndarray):
        return x.ctypes.data
    return None if x is None else x.item() if isinstance(x, np.generic) else x


def emu_sweep(lib, axis, grid, block, shared, args):
    """Run fields.cu's sweep kernel along ``axis`` under the host emulation with ``args`` as
    ``cuda_kernels.sweep_args`` builds them (arrays as NumPy arrays or None)."""
    g, b = u32x3(grid), u32x3(block)
    a = [_arg(x) for x in args]
    if axis == 2:
        return lib.emu_sweep_x(g.ctypes.data, b.ctypes.data, shared, *a)
    return lib.emu_sweep_diffusion(axis, g.ctypes.data, b.ctypes.data, shared, *a)


def emu_kernel(lib, name, grid, block, args, shared=0):
    """Run one kernel of kernels/partitioned.cu (``name``) under the host emulation (``shared``: the
    dynamic shared bytes of the kernel that takes them)."""
    g, b = u32x3(grid), u32x3(block)
    extra = (shared,) if name == "part_fixed_onchip" else ()
    return getattr(lib, "emu_" + name)(g.ctypes.data, b.ctypes.data, *extra, *[_arg(x) for x in args])


class HostArray(np.ndarray):
    """A NumPy array that passes for a CuPy one (``.data.ptr``, ``.get()``)."""

    @property
    def data(self):
        return type("Ptr", (), {"ptr": self.ctypes.data})()

    def get(self):
        return np.array(self)


# The emulation keeps its block and thread state in globals: one launch at a time (thread ranks launch
# from several Python threads).
_LAUNCH = threading.Lock()


def fake_cupy(lib, launches):
    """``(cupy stand-in, RawModule stand-in)``; every launch is appended to ``launches`` as
    ``(kernel name, dynamic shared bytes, argument count)``."""
    from gpusim.fields import cuda_kernels as ck

    def arr(x, dtype=None):
        return np.array(x, dtype=dtype).view(HostArray)

    class Device:
        def __init__(self, dev=0):
            self.id = 0
            self.attributes = {"MaxSharedMemoryPerBlockOptin": 227 * 1024,
                               "MaxSharedMemoryPerMultiprocessor": 228 * 1024}

    class Kernel:
        def __init__(self, name):
            self.name = name
            self.shared_size_bytes = ck.X_STATIC_SHARED_BYTES if name == "lod_sweep_x" else 0
            self.max_dynamic_shared_size_bytes = 48 * 1024

        def __call__(self, grid, block, args, shared_mem=0):
            assert shared_mem <= self.max_dynamic_shared_size_bytes  # the launcher raised the limit
            with _LAUNCH:
                launches.append((self.name, shared_mem, len(args)))
                if self.name == "explicit_step":
                    g, b = u32x3(grid), u32x3(block)
                    assert lib.emu_explicit(g.ctypes.data, b.ctypes.data, *[_arg(x) for x in args]) == 0
                elif self.name.startswith("part_"):
                    assert emu_kernel(lib, self.name, grid, block, args, shared_mem) == 0
                else:
                    axis = {v: k for k, v in ck.SWEEP_KERNEL.items()}[self.name]
                    assert emu_sweep(lib, axis, grid, block, shared_mem, args) == 0

    cp = types.ModuleType("cupy")
    cp.ndarray, cp.asarray, cp.float64 = HostArray, arr, np.float64
    cp.zeros = lambda shape, dtype=float: np.zeros(shape, dtype).view(HostArray)
    cp.empty = lambda shape, dtype=float: np.full(shape, np.nan, dtype).view(HostArray)
    cp.concatenate = lambda xs: np.concatenate(xs).view(HostArray)
    cp.ascontiguousarray = lambda x, dtype=None: np.ascontiguousarray(x, dtype).view(HostArray)
    cp.cuda = types.SimpleNamespace(Device=Device)
    return cp, types.SimpleNamespace(get_function=Kernel)


def install_fake_cupy(monkeypatch, lib, launches):
    """The stand-in CuPy in ``sys.modules``, its kernels behind ``kernelsrc.raw_module``, and the
    launchers' device caches emptied; returns the stand-in."""
    from gpusim import kernelsrc
    from gpusim.fields import cuda_kernels as ck
    from gpusim.parallel import partitioned_cuda as pc

    cp, module = fake_cupy(lib, launches)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(kernelsrc, "raw_module", lambda name: module)
    for cache in ("_kernels", "_limits", "_par_cache", "_dummies", "_scratch"):
        monkeypatch.setattr(ck, cache, {})
    monkeypatch.setattr(pc, "_kernels", {})
    monkeypatch.setattr(pc, "FORCE_GLOBAL_D", False)
    return cp
