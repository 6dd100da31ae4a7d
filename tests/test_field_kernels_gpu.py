"""On a GPU, the CUDA field kernels equal the numba CPU twins bitwise (DESIGN.md section 2).

Random 64^3 fields, every combination of per-voxel inputs (flags), zero-flux, Dirichlet and mixed
boundaries, for both LOD steps (g in shared memory and in the global scratch) and explicit sub-steps.
An LOD step carries the reaction and the sources in its x sweep only (gpusim.fields.layout); the tests
also compare a step with the NumPy reference. Skipped only where CuPy sees no CUDA device.
"""

from __future__ import annotations


import numpy as np
import pytest

from gpusim.fields import layout as L
from field_cases import random_coef


def _cuda_devices() -> int:
    """Number of CUDA devices CuPy can use; 0 without cupy, a driver or a device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # ImportError, CUDARuntimeError (no driver / no device), missing libraries
        return 0


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_cuda_devices() == 0, reason="CuPy sees no CUDA device"),
]

SHAPE = (64, 64, 64)
BOUNDARIES = {
    "zero_flux": [0, 0, 0, 0, 0, 0],
    "dirichlet": [1, 1, 1, 1, 1, 1],
    "mixed_a": [1, 0, 0, 1, 0, 0],
    "mixed_b": [0, 1, 1, 0, 1, 1],
}
ALL_FLAGS = list(range(16))


def random_case(rng, shape, flags, bname, explicit=False):
    """Plausible coefficients (DT an explicit sub-step or an LOD field step, with the fitted G0, G1, SG1
    of fields.coefficients) and inputs; inputs whose flag is off are 1x1x1 stand-ins (never read)."""
    coef = random_coef(rng, rng.uniform(0.001, 0.03) if explicit else rng.uniform(0.01, 0.5))
    c = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    one = (1, 1, 1)
    ins = (
        (rng.random(shape) < 0.2).astype(np.uint8) if flags & L.HAS_VESSEL else np.zeros(one, np.uint8),
        (rng.random(shape) < 0.5).astype(np.uint8) if flags & L.HAS_TUMOR else np.zeros(one, np.uint8),
        rng.integers(0, 5, shape).astype(np.uint8) if flags & L.HAS_TCELL else np.zeros(one, np.uint8),
        rng.uniform(-0.1, 1.0, shape).astype(np.float32) if flags & L.HAS_SRC else np.zeros(one, np.float32),
    )
    bc_type = np.array(BOUNDARIES[bname], np.int32)
    bc_value = rng.uniform(0.0, 3.0, 6)
    return c, coef, bc_type, bc_value, ins


def assert_bitwise(got, want):
    diff = got.view(np.uint32) != want.view(np.uint32)
    assert not diff.any(), f"{diff.sum()} of {diff.size} voxels differ, first at {np.argwhere(diff)[0]}"


def run_lod(shape, flags, bname, seed, steps=1):
    import cupy

    from gpusim.fields import cpu_kernels, cuda_kernels

    rng = np.random.default_rng(seed)
    c, coef, bc_type, bc_value, ins = random_case(rng, shape, flags, bname)
    c_gpu = cupy.asarray(c)
    ins_gpu = [cupy.asarray(a) for a in ins]
    for _ in range(steps):
        cpu_kernels.lod_step(c, coef, bc_type, bc_value, *ins, flags)
        cuda_kernels.lod_step(c_gpu, coef, bc_type, bc_value, *ins_gpu, flags)
    assert_bitwise(cupy.asnumpy(c_gpu), c)


@pytest.mark.parametrize("flags", [0, L.HAS_VESSEL | L.HAS_SRC, L.HAS_TUMOR | L.HAS_TCELL, 15])
def test_cuda_lod_step_equals_reference_bitwise(flags):
    """Against the executable spec itself, independently of the CPU twin (small: the reference is slow)."""
    import cupy

    from gpusim.fields import cuda_kernels, reference

    rng = np.random.default_rng(9000 + flags)
    for shape, bname in (((9, 20, 37), "mixed_a"), ((33, 5, 16), "dirichlet")):
        c, coef, bc_type, bc_value, ins = random_case(rng, shape, flags, bname)
        bits = (L.HAS_VESSEL, L.HAS_TUMOR, L.HAS_TCELL, L.HAS_SRC)
        full = [a if flags & bit else None for a, bit in zip(ins, bits)]
        want = reference.lod_step(c, coef, bc_type, bc_value, *full)
        c_gpu = cupy.asarray(c)
        cuda_kernels.lod_step(c_gpu, coef, bc_type, bc_value, *[cupy.asarray(a) for a in ins], flags)
        assert_bitwise(cupy.asnumpy(c_gpu), want)


@pytest.mark.parametrize("bname", list(BOUNDARIES))
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_cuda_lod_step_equals_cpu_twin_bitwise(flags, bname):
    run_lod(SHAPE, flags, bname, seed=100 * flags + list(BOUNDARIES).index(bname))


@pytest.mark.parametrize("flags", [0, L.HAS_VESSEL | L.HAS_SRC, 15])
def test_cuda_lod_step_with_g_in_global_scratch_equals_cpu_twin(monkeypatch, flags):
    from gpusim.fields import cuda_kernels

    monkeypatch.setattr(cuda_kernels, "FORCE_GLOBAL_G", True)
    run_lod(SHAPE, flags, "mixed_a", seed=5000 + flags)


@pytest.mark.parametrize("shape", [(37, 45, 50), (1, 3, 70), (65, 1, 1), (3, 200, 33)])
def test_cuda_lod_step_on_uneven_shapes_over_steps_equals_cpu_twin(shape):
    run_lod(shape, 15, "mixed_b", seed=sum(shape), steps=3)


@pytest.mark.parametrize("bname", list(BOUNDARIES))
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_cuda_explicit_step_equals_cpu_twin_bitwise(flags, bname):
    import cupy

    from gpusim.fields import cpu_kernels, cuda_kernels

    rng = np.random.default_rng(7000 + 100 * flags + list(BOUNDARIES).index(bname))
    for shape in (SHAPE, (37, 45, 50)):
        c, coef, bc_type, bc_value, ins = random_case(rng, shape, flags, bname, explicit=True)
        want = np.empty_like(c)
        cpu_kernels.explicit_step(c, want, coef, bc_type, bc_value, *ins, flags)
        got = cupy.full(shape, cupy.nan, cupy.float32)
        cuda_kernels.explicit_step(cupy.asarray(c), got, coef, bc_type, bc_value, *[cupy.asarray(a) for a in ins],
                                   flags)
        assert_bitwise(cupy.asnumpy(got), want)
