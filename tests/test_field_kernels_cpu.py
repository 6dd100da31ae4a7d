"""The numba CPU field kernels against the NumPy reference (the specification) and physical invariants.

Bitwise: ``cpu_kernels.lod_step``/``explicit_step`` equal ``fields.reference`` for every flag set, every
boundary mixture and odd shapes (dims of 1, partial transpose tiles, several x blocks and z chunks), and
do not depend on the thread count. Physics: zero-flux diffusion conserves the total; strong sinks never
drive a concentration negative.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpusim.fields import cpu_kernels as ck
from gpusim.fields import layout as L
from gpusim.fields import reference as ref

ALL_FLAGS = list(range(16))
DUMMY = {"vessel": np.zeros((1, 1, 1), np.uint8), "n_tumor": np.zeros((1, 1, 1), np.uint8),
         "n_tcell": np.zeros((1, 1, 1), np.uint8), "src": np.zeros((1, 1, 1), np.float32)}
# each axis's two faces differ and the x faces differ from the z faces: a face/axis mix-up cannot pass
BOUNDARIES = {"zero_flux": [0] * 6, "dirichlet": [1] * 6, "mixed_a": [1, 0, 0, 1, 0, 0],
              "mixed_b": [0, 1, 1, 0, 1, 1]}
# dims of 1; tails of the 8x8 transpose tiles; ny > XBLOCK (a partial second x block); nz > NGROUPS;
# many z lines with a tall z (several z chunks, the last one partial)
SHAPES = [(5, 7, 9), (1, 1, 17), (3, 1, 8), (4, 5, 1), (1, 1, 1), (2, 70, 13), (67, 3, 2), (600, 4, 50)]


def coefficients(rng, dt_f=None, r=None):
    """Plausible random coefficients in the layout (positive rates, Km > 0, fitted G0/G1/SG1)."""
    coef = np.zeros(L.NCOEF)
    r = rng.uniform(0.05, 3.0) if r is None else r
    dt = rng.uniform(0.01, 0.5) if dt_f is None else dt_f
    coef[L.R], coef[L.R2], coef[L.DT] = r, r + r, dt
    coef[L.LAM], coef[L.KV] = rng.uniform(0.0, 0.5), rng.uniform(0.0, 3.0)
    coef[L.KV_CS] = coef[L.KV] * rng.uniform(0.1, 2.0)
    coef[L.VT], coef[L.KMT] = rng.uniform(0.0, 5.0), rng.uniform(0.05, 1.0)
    coef[L.VC], coef[L.KMC] = rng.uniform(0.0, 5.0), rng.uniform(0.05, 1.0)
    coef[L.SEC_T], coef[L.RD] = rng.uniform(0.0, 1.0), r / dt
    fill_fitted(coef)
    return coef


def fill_fitted(coef):
    """G0, G1, SG1 and B0[m] from the other coefficients, as ``fields.coefficients`` computes them."""
    coef[L.G0] = math.expm1(coef[L.LAM] * coef[L.DT])
    coef[L.G1] = math.expm1((coef[L.LAM] + coef[L.KV]) * coef[L.DT])
    rate = coef[L.LAM] + coef[L.KV]
    coef[L.SG1] = coef[L.KV_CS] * coef[L.G1] / rate if rate > 0 else 0.0
    coef[L.B0:L.B0 + 5] = 1.0 + np.arange(5) * coef[L.R]


def inputs(rng, shape, flags):
    """Per-voxel inputs for ``flags``: arrays where the bit is set, else None."""
    return {
        "vessel": (rng.random(shape) < 0.2).astype(np.uint8) if flags & L.HAS_VESSEL else None,
        "n_tumor": (rng.random(shape) < 0.5).astype(np.uint8) if flags & L.HAS_TUMOR else None,
        "n_tcell": rng.integers(0, 5, shape).astype(np.uint8) if flags & L.HAS_TCELL else None,
        "src": rng.uniform(-0.1, 1.0, shape).astype(np.float32) if flags & L.HAS_SRC else None,
    }


def kernel_args(ins):
    """The kernels' positional per-voxel operands: the arrays, or the dummies where absent."""
    return [DUMMY[k] if ins[k] is None else ins[k] for k in ("vessel", "n_tumor", "n_tcell", "src")]


def assert_bitwise(got, want):
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    diff = got.view(np.uint32) != want.view(np.uint32)
    assert not diff.any(), f"{diff.sum()} of {diff.size} voxels differ, first at {np.argwhere(diff)[0]}"


@pytest.mark.parametrize("bname", list(BOUNDARIES))
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_lod_step_equals_reference_bitwise(flags, bname):
    rng = np.random.default_rng(100 * flags + list(BOUNDARIES).index(bname))
    for shape in SHAPES:
        coef, ins = coefficients(rng), inputs(rng, shape, flags)
        bc_type, bc_value = np.array(BOUNDARIES[bname], np.int32), rng.uniform(0.0, 3.0, 6)
        c = rng.uniform(0.0, 2.0, shape).astype(np.float32)
        want = ref.lod_step(c, coef, bc_type, bc_value, *ins.values())
        got = c.copy()
        ck.lod_step(got, coef, bc_type, bc_value, *kernel_args(ins), flags)
        assert_bitwise(got, want)


@pytest.mark.parametrize("bname", list(BOUNDARIES))
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_explicit_step_equals_reference_bitwise(flags, bname):
    rng = np.random.default_rng(7000 + 100 * flags + list(BOUNDARIES).index(bname))
    for shape in SHAPES:
        coef, ins = coefficients(rng, dt_f=rng.uniform(0.001, 0.05)), inputs(rng, shape, flags)
        bc_type, bc_value = np.array(BOUNDARIES[bname], np.int32), rng.uniform(0.0, 3.0, 6)
        c = rng.uniform(0.0, 2.0, shape).astype(np.float32)
        want = ref.explicit_step(c, coef, bc_type, bc_value, *ins.values())
        got = np.full_like(c, np.nan)
        ck.explicit_step(c, got, coef, bc_type, bc_value, *kernel_args(ins), flags)
        assert_bitwise(got, want)


def test_absent_inputs_are_never_read():
    """With a flag off, the operand may be any array of its dtype, e.g. a full one of garbage."""
    rng = np.random.default_rng(5)
    shape = (6, 5, 7)
    coef, c = coefficients(rng), rng.uniform(0.0, 2.0, shape).astype(np.float32)
    bc_type, bc_value = np.array(BOUNDARIES["mixed_a"], np.int32), rng.uniform(0.0, 3.0, 6)
    garbage = [np.full(shape, 255, np.uint8)] * 3 + [np.full(shape, np.nan, np.float32)]
    want, got = c.copy(), c.copy()
    ck.lod_step(want, coef, bc_type, bc_value, *DUMMY.values(), 0)
    ck.lod_step(got, coef, bc_type, bc_value, *garbage, 0)
    assert_bitwise(got, want)
    ck.explicit_step(c, want, coef, bc_type, bc_value, *DUMMY.values(), 0)
    ck.explicit_step(c, got, coef, bc_type, bc_value, *garbage, 0)
    assert_bitwise(got, want)


def test_mismatched_operands_are_refused():
    """A present per-voxel array of another shape, or an explicit step writing into its own input."""
    c = np.ones((4, 5, 6), np.float32)
    coef, bc_type, bc_value = coefficients(np.random.default_rng(0)), np.zeros(6, np.int32), np.zeros(6)
    with pytest.raises(ValueError):
        ck.lod_step(c, coef, bc_type, bc_value, np.zeros((4, 5, 5), np.uint8), *list(DUMMY.values())[1:],
                    L.HAS_VESSEL)
    with pytest.raises(ValueError):
        ck.explicit_step(c, c, coef, bc_type, bc_value, *DUMMY.values(), 0)


SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_field_kernels_cpu as t
from gpusim.fields import cpu_kernels as ck
c, out, coef, bct, bcv, ins = t.thread_case()
for _ in range(3):
    ck.lod_step(c, coef, bct, bcv, *t.kernel_args(ins), 15)
ck.explicit_step(c, out, coef, bct, bcv, *t.kernel_args(ins), 15)
print(hashlib.sha256(c.tobytes() + out.tobytes()).hexdigest())
"""


def thread_case():
    """A field with every per-voxel input, large enough for each thread to own several planes/chunks."""
    rng = np.random.default_rng(11)
    shape = (40, 70, 36)
    coef, ins = coefficients(rng, dt_f=0.02), inputs(rng, shape, 15)
    c = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    return c, np.empty_like(c), coef, np.array(BOUNDARIES["mixed_b"], np.int32), rng.uniform(0.0, 3.0, 6), ins


def test_results_do_not_depend_on_the_thread_count():
    """Same bits with 1 and 2 numba threads (separate processes: the count is fixed at start-up)."""
    root = Path(__file__).resolve().parent.parent
    script = SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    digests = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        digests.append(run.stdout.split()[-1])
    c, out, coef, bct, bcv, ins = thread_case()
    for _ in range(3):
        ck.lod_step(c, coef, bct, bcv, *kernel_args(ins), 15)
    ck.explicit_step(c, out, coef, bct, bcv, *kernel_args(ins), 15)
    here = hashlib.sha256(c.tobytes() + out.tobytes()).hexdigest()
    assert digests == [here, here]


def test_zero_flux_diffusion_conserves_the_total():
    """1000 LOD steps of pure diffusion behind zero-flux faces keep the float64 total to 1e-6 relative
    (float64 Thomas factors: only the unbiased float32 store rounding remains, ~1e-9 expected)."""
    rng = np.random.default_rng(3)
    coef = np.zeros(L.NCOEF)
    coef[L.R], coef[L.R2], coef[L.DT] = 0.8, 1.6, 1.0
    fill_fitted(coef)
    c = rng.uniform(0.0, 2.0, (24, 24, 24)).astype(np.float32)
    total0 = c.sum(dtype=np.float64)
    bc_type, bc_value = np.zeros(6, np.int32), np.zeros(6)
    for _ in range(1000):
        ck.lod_step(c, coef, bc_type, bc_value, *DUMMY.values(), 0)
    assert abs(c.sum(dtype=np.float64) / total0 - 1.0) < 1e-6
    assert c.std() < 1e-3 * c.mean()  # and it did diffuse: the field is flat after 1000 steps


@pytest.mark.parametrize("flags", [L.HAS_TUMOR, L.HAS_TCELL, L.HAS_TUMOR | L.HAS_TCELL | L.HAS_VESSEL, 15])
def test_strong_sinks_never_drive_concentrations_negative(flags):
    """Uptake far faster than diffusion, near-zero fields, Km tiny: every value stays >= 0."""
    rng = np.random.default_rng(20 + flags)
    shape = (9, 11, 13)
    coef = coefficients(rng, dt_f=1.0, r=2.0)
    coef[L.VT], coef[L.VC], coef[L.KMT], coef[L.KMC] = 500.0, 500.0, 1e-6, 1e-6
    coef[L.SEC_T] = 0.0
    fill_fitted(coef)
    ins = inputs(rng, shape, flags)
    if ins["src"] is not None:
        ins["src"] = np.abs(ins["src"])  # sources add; only the sinks are under test
    ins["n_tumor"] = None if ins["n_tumor"] is None else np.full(shape, 3, np.uint8)
    c = (rng.random(shape) ** 8).astype(np.float32)
    bc_type, bc_value = np.array(BOUNDARIES["mixed_a"], np.int32), np.zeros(6)
    lod = c.copy()
    for _ in range(50):
        ck.lod_step(lod, coef, bc_type, bc_value, *kernel_args(ins), flags)
        assert lod.min() >= 0.0
    # the explicit step at its positivity limit DT*m*RD = 1, m the largest diagonal weight: 2 per axis,
    # +1 where a Dirichlet face's ghost (2*bc - c) sits (6 would let a face voxel go negative)
    m = sum(2 + (bc_type[2 * a] or bc_type[2 * a + 1]) for a in range(3))
    coef[L.DT] = 1.0 / (m * coef[L.RD])
    a, b = c.copy(), np.empty_like(c)
    for _ in range(50):
        ck.explicit_step(a, b, coef, bc_type, bc_value, *kernel_args(ins), flags)
        a, b = b, a
        assert a.min() >= 0.0
