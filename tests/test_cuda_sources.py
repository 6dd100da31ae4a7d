"""The CUDA C field kernels, checked without a GPU.

- Every ``kernels/*.cu`` compiles for sm_80 and sm_90 through NVRTC with the run-time options, and a
  broken source is rejected (so the check can fail).
- ``kernels/field_math.cuh`` built for the host with g++ (no FMA contraction) equals the NumPy reference
  bitwise: the kernels' arithmetic is the contract's (tests/host_field_math.cpp, part 1), down to the
  float64 per-voxel terms (the explicit step's rates, the first LOD sweep's reaction terms).
- ``kernels/fields.cu`` itself, run under a host emulation of CUDA's execution model with the launch
  shapes of ``gpusim.fields.cuda_kernels``, equals the reference bitwise: the kernels' indexing, tiles,
  prefetch and barriers are right (part 2). What remains for a GPU is the device's own IEEE arithmetic.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpusim import kernelsrc
from gpusim.fields import cuda_kernels as ck
from gpusim.fields import layout as L
from gpusim.fields import reference as ref
from field_cases import random_coef
import host_cuda
from host_cuda import emu_sweep, u32x3

REPO = Path(__file__).resolve().parent.parent
KERNEL_FILES = sorted(p.name for p in (REPO / "kernels").glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
ALL_FLAGS = list(range(16))


# ---- compilation ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def compiled(name, arch):
    """(success, log) of compiling kernels/<name> for arch as the runtime does (cached: ~5 s each)."""
    return kernelsrc.nvrtc_compile(kernelsrc.expanded_source(name), name, arch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", KERNEL_FILES)
def test_kernel_source_compiles_with_nvrtc(name, arch):
    ok, log = compiled(name, arch)
    assert ok, f"{name} does not compile for {arch}:\n{log}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", KERNEL_FILES)
def test_kernels_compile_without_warnings(name, arch):
    ok, log = compiled(name, arch)
    assert ok and log == "", log


def test_nvrtc_rejects_a_broken_source():
    ok, log = kernelsrc.nvrtc_compile('extern "C" __global__ void k(float* a) { a[0] = undefined_name; }',
                                      "broken.cu", "sm_90")
    assert not ok
    assert "undefined_name" in log


def test_nvrtc_check_cli_passes_good_and_fails_broken_sources(tmp_path):
    (tmp_path / "half.cuh").write_text("__device__ inline float half(float v) { return 0.5f * v; }\n")
    good = tmp_path / "good.cu"
    good.write_text('#include "half.cuh"\nextern "C" __global__ void k(float* a) { a[0] = half(a[0]); }\n')
    bad = tmp_path / "broken.cu"
    bad.write_text('extern "C" __global__ void k(float* a) { a[0] = ; }\n')
    tool = [sys.executable, str(REPO / "tools" / "nvrtc_check.py")]
    ok = subprocess.run(tool + ["sm_80", "sm_90", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("OK ") == 2
    failed = subprocess.run(tool + ["sm_90", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "FAIL sm_90" in failed.stdout and "error" in failed.stdout


def test_kernel_dir_holds_the_field_kernels_and_their_header():
    kdir = kernelsrc.kernel_dir()
    assert (kdir / "fields.cu").is_file() and (kdir / "field_math.cuh").is_file()
    text = kernelsrc.expanded_source("fields.cu")
    assert '#include "field_math.cuh"' not in text  # inlined, so CuPy's cache key covers the header
    assert "GPUSIM_HD Rates voxel_rates" in text


def test_a_header_two_headers_include_is_inlined_once(tmp_path):
    """partitioned.cu includes tdma.cuh and field_math.cuh, and tdma.cuh includes field_math.cuh: the
    expanded text (one string, where #pragma once cannot act) must hold each header once."""
    (tmp_path / "base.cuh").write_text("struct Base {};\n")
    (tmp_path / "a.cuh").write_text('#include "base.cuh"\nstruct A {};\n')
    (tmp_path / "b.cuh").write_text('#include "base.cuh"\nstruct B {};\n')
    text = kernelsrc.expand_includes('#include "a.cuh"\n#include "b.cuh"\n#include "base.cuh"\n', tmp_path)
    assert text.count("struct Base {};") == 1 and "struct A {};" in text and "struct B {};" in text
    full = kernelsrc.expanded_source("partitioned.cu")
    assert full.count("struct FieldCoef {") == 1 and full.count("GPUSIM_HD double tdma_pivot(") == 1


# ---- host builds ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """tests/host_field_math.cpp as a shared library (g++ -O2 -ffp-contract=off -fno-fast-math)."""
    return host_cuda.build(tmp_path_factory.mktemp("hostlib"))


def test_cuh_index_constants_equal_layout(lib):
    want = [L.R, L.R2, L.DT, L.LAM, L.KV, L.KV_CS, L.VT, L.KMT, L.VC, L.KMC, L.SEC_T, L.RD, L.G0, L.G1, L.SG1,
            L.B0, L.NCOEF, L.NCOEF, ck.NPAR, L.BC_ZERO_FLUX, L.BC_DIRICHLET, L.HAS_VESSEL, L.HAS_TUMOR,
            L.HAS_TCELL, L.HAS_SRC]
    got = np.zeros(len(want), np.int32)
    lib.host_constants(got.ctypes.data)
    assert got.tolist() == want
    # every coefficient slot of layout.py is named in the .cuh: a slot added there but not here fails
    slots = {v for k, v in vars(L).items() if k.isupper() and isinstance(v, int) and k not in (
        "NCOEF", "BC_ZERO_FLUX", "BC_DIRICHLET", "HAS_VESSEL", "HAS_TUMOR", "HAS_TCELL", "HAS_SRC")}
    assert slots | set(range(L.B0, L.B0 + 5)) == set(range(L.NCOEF))
    assert slots <= set(want[:16])


def test_host_voxel_rates_equal_reference_in_float64(lib):
    """The explicit step's per-voxel reaction at float64 level, where an operation-order change would
    show (the float32 results below almost never reveal a one-ulp float64 difference)."""
    rng = np.random.default_rng(7)
    for flags in ALL_FLAGS:
        c, coef, ins = random_case(rng, (4, 6, 8), flags, explicit=True)
        k, s = np.empty(c.shape), np.empty(c.shape)
        lib.host_voxel_rates(c.ctypes.data, c.size, ck.pack_par(coef, np.zeros(6)).ctypes.data, ptr(ins["vessel"]),
                             ptr(ins["n_tumor"]), ptr(ins["n_tcell"]), ptr(ins["src"]), flags, k.ctypes.data,
                             s.ctypes.data)
        k_ref, s_ref = ref.voxel_rates(c, coef, ins["vessel"], ins["n_tumor"], ins["n_tcell"], ins["src"])
        assert np.array_equal(k.view(np.uint64), k_ref.view(np.uint64)), flags
        assert np.array_equal(s.view(np.uint64), s_ref.view(np.uint64)), flags


def test_host_lod_reaction_terms_equal_reference_in_float64(lib):
    """The first LOD sweep's per-voxel terms (diag, rhs) at float64 level, against
    ``reference.lod_reaction_terms``. Vessel counts above 1 check that the vessel terms are selects."""
    rng = np.random.default_rng(8)
    for flags in ALL_FLAGS:
        c, coef, ins = random_case(rng, (4, 6, 8), flags)
        if ins["vessel"] is not None:
            ins["vessel"] = rng.choice(np.array([0, 0, 0, 1, 2, 255], np.uint8), c.shape)
        diag, rhs = np.empty(c.shape), np.empty(c.shape)
        lib.host_lod_reaction_terms(c.ctypes.data, c.size, ck.pack_par(coef, np.zeros(6)).ctypes.data,
                                    ptr(ins["vessel"]), ptr(ins["n_tumor"]), ptr(ins["n_tcell"]), ptr(ins["src"]),
                                    flags, diag.ctypes.data, rhs.ctypes.data)
        d_ref, r_ref = ref.lod_reaction_terms(c, coef, ins["vessel"], ins["n_tumor"], ins["n_tcell"], ins["src"])
        assert np.array_equal(diag.view(np.uint64), d_ref.view(np.uint64)), flags
        assert np.array_equal(rhs.view(np.uint64), r_ref.view(np.uint64)), flags


def random_case(rng, shape, flags, explicit=False):
    """Random coefficients (DT an explicit sub-step or an LOD field step) and per-voxel inputs; absent
    ones None."""
    coef = random_coef(rng, rng.uniform(0.001, 0.03) if explicit else rng.uniform(0.01, 0.5))
    c = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    # vessel 0 (80 %), 1 or 2: the LOD terms select on vessel != 0, the explicit rates multiply by it
    vessel = ((rng.random(shape) < 0.2) * rng.integers(1, 3, shape)).astype(np.uint8)
    ins = {
        "vessel": vessel if flags & L.HAS_VESSEL else None,
        "n_tumor": (rng.random(shape) < 0.5).astype(np.uint8) if flags & L.HAS_TUMOR else None,
        "n_tcell": rng.integers(0, 5, shape).astype(np.uint8) if flags & L.HAS_TCELL else None,
        "src": rng.uniform(-0.1, 1.0, shape).astype(np.float32) if flags & L.HAS_SRC else None,
    }
    return c, coef, ins


# Boundary sets: all zero-flux, all Dirichlet, and mixed ones where each axis's two faces differ and the
# x faces differ from the z faces (a face/axis mix-up cannot pass).
BOUNDARIES = {
    "zero_flux": [0, 0, 0, 0, 0, 0],
    "dirichlet": [1, 1, 1, 1, 1, 1],
    "mixed_a": [1, 0, 0, 1, 0, 0],
    "mixed_b": [0, 1, 1, 0, 1, 1],
}


def bcs(rng, name):
    return np.array(BOUNDARIES[name], np.int32), rng.uniform(0.0, 3.0, 6)


def ptr(a):
    return None if a is None else a.ctypes.data


def reference_lod(c, coef, bc_type, bc_value, ins):
    return ref.lod_step(c, coef, bc_type, bc_value, ins["vessel"], ins["n_tumor"], ins["n_tcell"], ins["src"])


def reference_explicit(c, coef, bc_type, bc_value, ins):
    return ref.explicit_step(c, coef, bc_type, bc_value, ins["vessel"], ins["n_tumor"], ins["n_tcell"], ins["src"])


def assert_bitwise(got, want):
    assert got.dtype == want.dtype == np.float32
    diff = got.view(np.uint32) != want.view(np.uint32)
    assert not diff.any(), f"{diff.sum()} of {diff.size} voxels differ, first at {np.argwhere(diff)[0]}"


@pytest.mark.parametrize("bname", list(BOUNDARIES))
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_host_twin_lod_step_equals_reference_bitwise(lib, flags, bname):
    rng = np.random.default_rng(1000 + 16 * list(BOUNDARIES).index(bname) + flags)
    for shape in ((6, 5, 7), (1, 4, 9), (3, 1, 1)):
        c, coef, ins = random_case(rng, shape, flags)
        bc_type, bc_value = bcs(rng, bname)
        want = reference_lod(c, coef, bc_type, bc_value, ins)
        got = c.copy()
        lib.host_lod_step(got.ctypes.data, *shape, ck.pack_par(coef, bc_value).ctypes.data,
                          ck.dirichlet_mask(bc_type), ptr(ins["vessel"]), ptr(ins["n_tumor"]),
                          ptr(ins["n_tcell"]), ptr(ins["src"]), flags)
        assert_bitwise(got, want)


@pytest.mark.parametrize("bname", list(BOUNDARIES))
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_host_twin_explicit_step_equals_reference_bitwise(lib, flags, bname):
    rng = np.random.default_rng(2000 + 16 * list(BOUNDARIES).index(bname) + flags)
    for shape in ((6, 5, 7), (1, 4, 9), (3, 1, 1)):
        c, coef, ins = random_case(rng, shape, flags, explicit=True)
        bc_type, bc_value = bcs(rng, bname)
        want = reference_explicit(c, coef, bc_type, bc_value, ins)
        got = np.full(shape, np.nan, np.float32)
        lib.host_explicit_step(c.ctypes.data, got.ctypes.data, *shape, ck.pack_par(coef, bc_value).ctypes.data,
                               ck.dirichlet_mask(bc_type), ptr(ins["vessel"]), ptr(ins["n_tumor"]),
                               ptr(ins["n_tcell"]), ptr(ins["src"]), flags)
        assert_bitwise(got, want)


# ---- the kernels under host emulation -------------------------------------------------------------------

GUARD = 64  # sentinel values either side of every buffer a kernel writes


def guarded(values):
    """``(buffer, view)``: ``view`` is a copy of ``values`` inside a buffer padded with NaN sentinels."""
    flat = np.ascontiguousarray(values).reshape(-1)
    buf = np.full(flat.size + 2 * GUARD, np.nan, flat.dtype)
    buf[GUARD:GUARD + flat.size] = flat
    return buf, buf[GUARD:GUARD + flat.size].reshape(np.shape(values))


def assert_guards_intact(buf):
    assert np.isnan(buf[:GUARD]).all() and np.isnan(buf[-GUARD:]).all(), "a kernel wrote outside its array"


def emu_lod_step(lib, c, coef, bc_type, bc_value, ins, flags, g_global):
    """One LOD step as cuda_kernels.lod_step launches it, with fields.cu run by the host emulation."""
    cbuf, cv = guarded(c)
    gbuf, gv = guarded(np.full(c.size, np.nan)) if g_global else (None, None)
    par = ck.pack_par(coef, bc_value)
    inputs = [ins["vessel"], ins["n_tumor"], ins["n_tcell"], ins["src"]]
    for axis in (2, 1, 0):
        grid, block, shared = ck.sweep_launch(axis, c.shape, g_global)
        assert shared == (0 if g_global else ck.LINES * c.shape[axis] * 8)
        args = ck.sweep_args(axis, cv, inputs, par, gv, c.shape, flags, ck.dirichlet_mask(bc_type), g_global)
        rc = emu_sweep(lib, axis, grid, block, shared, args)
        assert rc == 0, "a block wrote past its dynamic shared memory"
    assert_guards_intact(cbuf)
    if g_global:
        assert_guards_intact(gbuf)
    return cv.copy()


# Shapes with axes shorter than, equal to and longer than a tile, a block or the prefetch depth, both
# multiples of them and not, and of length 1 (a one-voxel line is a single row with both ends on it).
EMU_SHAPES = ((5, 7, 37), (3, 33, 16), (34, 2, 3), (1, 1, 5), (2, 3, 1), (8, 16, 32))


@pytest.mark.parametrize("g_global", [False, True], ids=["g_shared", "g_global"])
@pytest.mark.parametrize("flags", [0, L.HAS_VESSEL | L.HAS_SRC, L.HAS_TUMOR | L.HAS_TCELL, 15])
def test_emulated_lod_kernels_equal_reference_bitwise(lib, flags, g_global):
    rng = np.random.default_rng(3000 + flags + 100 * g_global)
    for i, shape in enumerate(EMU_SHAPES):
        bname = list(BOUNDARIES)[i % len(BOUNDARIES)]
        c, coef, ins = random_case(rng, shape, flags)
        bc_type, bc_value = bcs(rng, bname)
        want = reference_lod(c, coef, bc_type, bc_value, ins)
        got = emu_lod_step(lib, c, coef, bc_type, bc_value, ins, flags, g_global)
        assert_bitwise(got, want)


@pytest.mark.parametrize("flags", [0, L.HAS_VESSEL | L.HAS_SRC, L.HAS_TUMOR | L.HAS_TCELL, 15])
def test_emulated_explicit_kernel_equals_reference_bitwise(lib, flags):
    rng = np.random.default_rng(4000 + flags)
    for i, shape in enumerate(EMU_SHAPES + ((11, 9, 33),)):
        bname = list(BOUNDARIES)[i % len(BOUNDARIES)]
        c, coef, ins = random_case(rng, shape, flags, explicit=True)
        bc_type, bc_value = bcs(rng, bname)
        want = reference_explicit(c, coef, bc_type, bc_value, ins)
        obuf, out = guarded(np.full(shape, np.nan, np.float32))
        grid, block = (u32x3(t) for t in ck.explicit_launch(shape))
        rc = lib.emu_explicit(grid.ctypes.data, block.ctypes.data, c.ctypes.data, out.ctypes.data, ptr(ins["vessel"]),
                              ptr(ins["n_tumor"]), ptr(ins["n_tcell"]), ptr(ins["src"]),
                              ck.pack_par(coef, bc_value).ctypes.data, *shape, flags, ck.dirichlet_mask(bc_type))
        assert rc == 0
        assert_guards_intact(obuf)
        assert_bitwise(out, want)


def test_launcher_keeps_g_on_chip_at_256_and_spills_to_global_for_long_lines():
    h100 = (227 * 1024, 228 * 1024)  # opt-in shared per block, shared per SM
    for axis in (0, 1, 2):
        assert not ck.use_global_g(axis, (256, 256, 256), *h100)  # 64 KiB per block, 3 blocks per SM
        assert ck.use_global_g(axis, (1024, 1024, 1024), *h100)  # 256 KiB: does not fit
    assert ck.sweep_launch(2, (4, 5, 6), False) == ((1, 1, 1), (32, 1, 1), 32 * 6 * 8)
    assert ck.sweep_launch(0, (4, 50, 60), True) == ((94, 1, 1), (32, 1, 1), 0)


# ---- the CuPy launchers, end to end, with a stand-in for CuPy whose kernels are the emulated ones ------


@pytest.mark.parametrize("force_global", [False, True], ids=["g_shared", "g_global"])
def test_cupy_launchers_run_the_kernels_to_the_reference_result(lib, monkeypatch, force_global):
    launches = []
    cp = host_cuda.install_fake_cupy(monkeypatch, lib, launches)
    monkeypatch.setattr(ck, "FORCE_GLOBAL_G", force_global)
    rng = np.random.default_rng(11)
    for flags, bname in ((15, "mixed_a"), (L.HAS_TUMOR, "mixed_b"), (0, "dirichlet")):
        c, coef, ins = random_case(rng, (6, 35, 20), flags)
        bc_type, bc_value = bcs(rng, bname)
        dev = {k: (cp.asarray(v) if v is not None else cp.zeros((1, 1, 1), np.uint8)) for k, v in ins.items()}
        c_dev = cp.asarray(c)
        ck.lod_step(c_dev, coef, bc_type, bc_value, dev["vessel"], dev["n_tumor"], dev["n_tcell"], dev["src"], flags)
        assert_bitwise(c_dev.get(), reference_lod(c, coef, bc_type, bc_value, ins))
        out = cp.zeros(c.shape, np.float32)
        ck.explicit_step(cp.asarray(c), out, coef, bc_type, bc_value, dev["vessel"], dev["n_tumor"], dev["n_tcell"],
                         dev["src"], flags)
        assert_bitwise(out.get(), reference_explicit(c, coef, bc_type, bc_value, ins))
    assert [n for n, _, _ in launches[:4]] == ["lod_sweep_x", "lod_sweep_y", "lod_sweep_z", "explicit_step"]
    # the x sweep takes the per-voxel inputs and flags; the y and z sweeps (pure diffusion) do not
    assert [k for _, _, k in launches[:3]] == [13, 8, 8]
    assert all(s == 0 for n, s, _ in launches if n != "explicit_step") == force_global
    assert len(ck._par_cache) == 3  # one upload per distinct coefficient set
