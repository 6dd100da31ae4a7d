"""gpusim.rng: Philox4x32-10 against Random123 and an independent integer model, the DESIGN.md counter
layout, uniformity, exp/log accuracy against numpy, and bitwise agreement of plain Python, njit, FMA
contraction, the CUDA simulator and a PTX build for a real GPU.

The njit wrappers here use ``cache=False`` on purpose: numba's on-disk cache is keyed on the *caller's*
file, so a cached wrapper would keep testing an old rng.py after rng.py changes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.extending import register_jitable

from gpusim import rng

# the tree this rng came from: subprocesses must import the same code
REPO_ROOT = Path(rng.__file__).parent.parent
TESTS_DIR = Path(__file__).parent

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, expected output)
RANDOM123_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
SEED = 0x0123456789ABCDEF
WORD = st.integers(0, 2**32 - 1)


def philox_reference(ctr, key, rounds=10):
    """Philox4x32 on Python ints, written from the Salmon et al. (SC'11) definition."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c3 ^ k1, p0 & 0xFFFFFFFF
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0, c1, c2, c3


def ints(words):
    return tuple(int(w) for w in words)


# ---------------------------------------------------------------------------------------------
# njit wrappers (cache=False, see the module docstring) and the per-thread body shared with the
# CUDA-simulator and PTX subprocesses
# ---------------------------------------------------------------------------------------------
@numba.njit(cache=False)
def philox_njit(ctr, key):
    out = np.empty((ctr.shape[0], 4), np.uint32)
    for i in range(ctr.shape[0]):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = rng.philox4x32(
            ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3], key[i, 0], key[i, 1])
    return out


def _unary(fn):
    def loop(x):
        out = np.empty(x.shape[0], np.float32)
        for i in range(x.shape[0]):
            out[i] = fn(x[i])
        return out
    return loop


exp_njit = numba.njit(cache=False)(_unary(rng.exp_f32))
log_njit = numba.njit(cache=False)(_unary(rng.log_f32))
expm1_njit = numba.njit(cache=False)(_unary(rng.expm1_f32))
# 'contract' lets LLVM fuse a*b+c into an FMA on the CPU, as NVVM always does for numba.cuda
exp_fused = numba.njit(cache=False, fastmath={"contract"})(_unary(rng.exp_f32))
log_fused = numba.njit(cache=False, fastmath={"contract"})(_unary(rng.log_f32))
expm1_fused = numba.njit(cache=False, fastmath={"contract"})(_unary(rng.expm1_f32))


def _unary64(fn):
    def loop(x):
        out = np.empty(x.shape[0], np.float64)
        for i in range(x.shape[0]):
            out[i] = fn(np.float64(x[i]))
        return out
    return loop


# the float64 internals: a fused product that was not exact would show here long before it flips a
# float32 rounding (which happens for ~1 in 2**29 inputs)
exp64_njit = numba.njit(cache=False)(_unary64(rng._exp_f64))
exp64_fused = numba.njit(cache=False, fastmath={"contract"})(_unary64(rng._exp_f64))
expm1_64_njit = numba.njit(cache=False)(_unary64(rng._expm1_f64))
expm1_64_fused = numba.njit(cache=False, fastmath={"contract"})(_unary64(rng._expm1_f64))
log64_njit = numba.njit(cache=False)(_unary64(rng._log_f64))
log64_fused = numba.njit(cache=False, fastmath={"contract"})(_unary64(rng._log_f64))


@numba.njit(cache=False)
def prob_njit(rate, dt):
    out = np.empty(rate.shape[0], np.float32)
    for i in range(rate.shape[0]):
        out[i] = rng.prob_from_rate(rate[i], dt)
    return out


@numba.njit(cache=False, fastmath={"contract"})
def prob_fused(rate, dt):
    out = np.empty(rate.shape[0], np.float32)
    for i in range(rate.shape[0]):
        out[i] = rng.prob_from_rate(rate[i], dt)
    return out


@register_jitable
def thread_body(i, x, y, rate, words, floats):
    """What one GPU thread computes: Philox words of an agent draw, uniforms, exp/expm1/log, a probability."""
    w0, w1, w2, w3 = rng.philox_agent(SEED, rng.STREAM_AGENTS, i * 0x100000001 + 7, 12345, rng.PURPOSE_HIT, i)
    words[i, 0], words[i, 1], words[i, 2], words[i, 3] = w0, w1, w2, w3
    floats[i, 0] = rng.u01(w0)
    floats[i, 1] = rng.u01_open(w1)
    floats[i, 2] = rng.exp_f32(x[i])
    floats[i, 3] = rng.expm1_f32(x[i])
    floats[i, 4] = rng.log_f32(y[i])
    floats[i, 5] = rng.prob_from_rate(rate[i], np.float32(0.75))


def kernel_inputs(n=64):
    """float32 arguments for ``thread_body``, including the special values."""
    x = np.concatenate([np.linspace(-110.0, 95.0, n - 6), [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30]])
    y = np.concatenate([np.geomspace(1e-45, 3e38, n - 6), [np.nan, np.inf, -1.0, 0.0, -0.0, 1.0]])
    rate = np.concatenate([np.geomspace(1e-9, 200.0, n - 4), [0.0, -1.0, np.inf, np.nan]])
    return x.astype(np.float32), y.astype(np.float32), rate.astype(np.float32)


@numba.njit(cache=False)
def run_njit(x, y, rate):
    n = x.shape[0]
    words = np.zeros((n, 4), np.uint32)
    floats = np.zeros((n, 6), np.float32)
    for i in range(n):
        thread_body(i, x, y, rate, words, floats)
    return words, floats


def ulp_distance(a, b):
    """|a - b| in float32 ulps (steps between adjacent floats; +0 and -0 are 0 apart)."""
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


def float32_range(lo, hi, stride):
    """Every ``stride``-th float32 between non-negative lo and hi, in bit order (dense in every binade)."""
    a, b = np.float32(lo).view(np.int32), np.float32(hi).view(np.int32)
    return np.arange(a, b + 1, stride, dtype=np.int32).view(np.float32)


def run_python(args, env_extra):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **env_extra)
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/numba_cache")
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Philox
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ctr,key,expected", RANDOM123_KAT)
def test_philox_matches_random123_known_answers_in_plain_python(ctr, key, expected):
    assert ints(rng.philox4x32(*ctr, *key)) == expected
    assert philox_reference(ctr, key) == expected  # the independent model agrees with Random123 too


def test_philox_matches_random123_known_answers_under_njit():
    ctr = np.array([c for c, _, _ in RANDOM123_KAT], np.uint32)
    key = np.array([k for _, k, _ in RANDOM123_KAT], np.uint32)
    out = philox_njit(ctr, key)
    assert out.dtype == np.uint32
    assert [tuple(int(v) for v in row) for row in out] == [e for _, _, e in RANDOM123_KAT]


@settings(max_examples=200, deadline=None)
@given(st.tuples(WORD, WORD, WORD, WORD), st.tuples(WORD, WORD))
def test_philox_equals_an_independent_integer_model_for_any_counter_and_key(ctr, key):
    assert ints(rng.philox4x32(*ctr, *key)) == philox_reference(ctr, key)


def test_philox_njit_equals_the_integer_model_on_random_blocks():
    gen = np.random.default_rng(7)
    ctr = gen.integers(0, 2**32, (500, 4), dtype=np.uint64).astype(np.uint32)
    key = gen.integers(0, 2**32, (500, 2), dtype=np.uint64).astype(np.uint32)
    out = philox_njit(ctr, key)
    for i in range(500):
        assert ints(out[i]) == philox_reference(ints(ctr[i]), ints(key[i]))


def test_counter_and_key_layout_follows_design_section_2():
    uid = 0x123456789ABCDEF0
    assert ints(rng.agent_counter(uid, 77, rng.PURPOSE_HIT, 3)) == (
        0x9ABCDEF0, 0x12345678, 77, rng.PURPOSE_HIT << 16 | 3)
    assert ints(rng.voxel_counter(4_000_000_000, 5, rng.PURPOSE_DIVIDE, 2)) == (
        4_000_000_000, 0, 5, rng.PURPOSE_DIVIDE << 16 | 2)
    assert ints(rng.key(0xFEDCBA9876543210, rng.STREAM_VOXELS)) == (0x76543210 ^ 2, 0xFEDCBA98)
    expected = philox_reference((0x9ABCDEF0, 0x12345678, 77, rng.PURPOSE_HIT << 16 | 3),
                                (0x76543210 ^ rng.STREAM_AGENTS, 0xFEDCBA98))
    assert ints(rng.philox_agent(0xFEDCBA9876543210, rng.STREAM_AGENTS, uid, 77, rng.PURPOSE_HIT, 3)) == expected


def test_purposes_and_streams_are_distinct_16_bit_ids():
    purposes = list(rng.PURPOSES.values())
    assert len(purposes) >= 16 and len(set(purposes)) == len(purposes)
    assert all(0 < p < 2**16 for p in purposes)
    assert rng.PURPOSES["hit"] == rng.PURPOSE_HIT and rng.PURPOSES["infusion"] == rng.PURPOSE_INFUSION
    streams = [rng.STREAM_AGENTS, rng.STREAM_VOXELS, rng.STREAM_EVENTS, rng.STREAM_SETUP]
    assert streams == [1, 2, 3, 4]


def test_every_counter_and_key_field_changes_the_words():
    base = dict(seed=SEED, stream=rng.STREAM_AGENTS, uid=42, step=10, purpose=rng.PURPOSE_MOVE_DIR, draw=0)
    variants = [base] + [dict(base, **{k: v}) for k, v in [
        ("seed", SEED + 1), ("seed", SEED + (1 << 32)), ("stream", rng.STREAM_EVENTS), ("uid", 43),
        ("uid", 42 + (1 << 32)), ("step", 11), ("purpose", rng.PURPOSE_TURN), ("draw", 1)]]
    blocks = [ints(rng.philox_agent(*v.values())) for v in variants]
    words = [w for b in blocks for w in b]
    assert len(set(blocks)) == len(blocks)
    assert len(set(words)) == len(words)  # 36 words, no repeats (chance of a clash ~1e-7)
    vox = {ints(rng.philox_voxel(SEED, rng.STREAM_VOXELS, v, 10, rng.PURPOSE_DIVIDE, 0)) for v in range(100)}
    assert len(vox) == 100


def test_philox_uniform_voxels_is_u01_of_word0_per_voxel():
    seed, step, purpose = 0xABCDEF, 3, rng.PURPOSE_VESSEL
    u = rng.philox_uniform_voxels(seed, rng.STREAM_SETUP, step, purpose, 1000)
    assert u.dtype == np.float32 and u.shape == (1000,)
    for v in (0, 1, 17, 999):
        w0 = rng.philox_voxel(seed, rng.STREAM_SETUP, v, step, purpose, 0)[0]
        assert u[v] == rng.u01(w0)
    u2 = rng.philox_uniform_voxels(seed, rng.STREAM_SETUP, step, purpose, 1000, 1)
    assert u2[5] == rng.u01(rng.philox_voxel(seed, rng.STREAM_SETUP, 5, step, purpose, 1)[0])
    assert not np.array_equal(u, u2)


def test_u01_maps_the_top_24_bits_onto_exact_float32_grids():
    assert rng.u01(np.uint32(0)) == 0.0
    assert rng.u01(np.uint32(0xFFFFFFFF)) == np.float32(1.0 - 2.0**-24)
    assert rng.u01(np.uint32(0xFF)) == 0.0  # the low 8 bits are discarded
    assert rng.u01_open(np.uint32(0)) == np.float32(2.0**-24)
    assert rng.u01_open(np.uint32(0xFFFFFFFF)) == 1.0
    for x in (1, 0x100, 0x12345678, 0x80000000, 0xFFFFFEFF):
        u, uo = rng.u01(np.uint32(x)), rng.u01_open(np.uint32(x))
        assert isinstance(u, np.float32) and isinstance(uo, np.float32)
        assert float(u) * 2**24 == x >> 8 and float(uo) * 2**24 == (x >> 8) + 1


def test_a_million_voxel_uniforms_pass_chi_square_and_moment_checks():
    n, bins = 1_000_000, 1000
    u = rng.philox_uniform_voxels(SEED, rng.STREAM_VOXELS, 99, rng.PURPOSE_PROLIF, n).astype(np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.bincount((u * bins).astype(np.int64), minlength=bins)
    chi2 = float(((counts - n / bins) ** 2).sum() / (n / bins))
    # Wilson-Hilferty: (chi2/df)^(1/3) is normal with mean 1 - 2/(9 df) and variance 2/(9 df)
    df = bins - 1
    zscore = ((chi2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    p_two_sided = math.erfc(abs(zscore) / math.sqrt(2))
    assert p_two_sided > 1e-4, (chi2, zscore)
    # mean of the 24-bit grid is 1/2 - 2**-25; its standard error is 1/sqrt(12 n)
    assert abs(u.mean() - (0.5 - 2.0**-25)) < 5 / math.sqrt(12 * n)
    # neighbouring voxels are uncorrelated (standard error of the lag-1 correlation is 1/sqrt(n))
    rho = np.corrcoef(u[:-1], u[1:])[0, 1]
    assert abs(rho) < 5 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# exp / log / expm1 / prob_from_rate
# ---------------------------------------------------------------------------------------------
def exp_points():
    """~3.3 M float32 in [-104, 88.8]: strided over all binades plus every float32 near overflow."""
    pos = float32_range(0.0, 88.8, 1001)
    neg = -float32_range(0.0, 104.0, 1001)
    near_overflow = float32_range(88.0, 88.8, 1)  # ~100 k values: all of them
    subnormal_results = -float32_range(87.0, 104.0, 37)
    return np.concatenate([pos, neg, near_overflow, subnormal_results])


def test_exp_f32_is_within_one_ulp_of_numpy_float64_rounded():
    x = exp_points()
    with np.errstate(over="ignore"):  # the float32 cast of exp(x > 88.7228) is inf, as intended
        ref = np.exp(x.astype(np.float64)).astype(np.float32)
        ref_m1 = np.expm1(x.astype(np.float64)).astype(np.float32)
    ulps = ulp_distance(exp_njit(x), ref)
    # measured: 0 differences on these 3.3 M points (and on 23 M strided points); bound is 1 ulp
    assert ulps.max() <= 1
    assert np.count_nonzero(ulps) <= x.size * 1e-5
    ulps_m1 = ulp_distance(expm1_njit(x), ref_m1)
    assert ulps_m1.max() <= 1 and np.count_nonzero(ulps_m1) <= x.size * 1e-5


def test_log_f32_is_within_one_ulp_of_numpy_float64_rounded_incl_subnormal_inputs():
    x = np.concatenate([float32_range(1e-45, 3.4028235e38, 701), float32_range(0.5, 2.0, 11)])
    ref = np.log(x.astype(np.float64)).astype(np.float32)
    ulps = ulp_distance(log_njit(x), ref)
    # measured: 0 differences on these 3.1 M points (and on 35 M strided points); bound is 1 ulp
    assert ulps.max() <= 1
    assert np.count_nonzero(ulps) <= x.size * 1e-5


def test_exp_log_special_values():
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    assert rng.exp_f32(np.float32(0.0)) == 1.0 and rng.log_f32(np.float32(1.0)) == 0.0
    assert rng.exp_f32(inf) == inf and rng.exp_f32(-inf) == 0.0 and np.isnan(rng.exp_f32(nan))
    assert rng.exp_f32(np.float32(88.72283)) == np.float32(np.exp(np.float64(np.float32(88.72283))))
    assert rng.exp_f32(np.float32(88.72284)) == inf  # first float32 whose exp overflows
    tiny = rng.exp_f32(np.float32(-103.0))  # a subnormal result, rounded once
    assert 0 < tiny < 2.0**-126 and tiny == np.float32(np.exp(-103.0))
    assert rng.exp_f32(np.float32(-103.9)) == np.float32(2.0**-149)  # smallest subnormal
    assert rng.exp_f32(np.float32(-104.0)) == 0.0
    assert rng.expm1_f32(-inf) == -1.0 and rng.expm1_f32(np.float32(1e-30)) == np.float32(1e-30)
    assert rng.log_f32(np.float32(0.0)) == -inf and rng.log_f32(np.float32(-0.0)) == -inf
    assert np.isnan(rng.log_f32(np.float32(-1.0))) and np.isnan(rng.log_f32(-inf))
    assert np.isnan(rng.log_f32(nan)) and rng.log_f32(inf) == inf
    assert rng.log_f32(np.float32(2.0**-149)) == np.float32(-149 * math.log(2))
    for f in (rng.exp_f32, rng.expm1_f32, rng.log_f32):
        assert isinstance(f(np.float32(0.5)), np.float32)


def test_prob_from_rate_equals_one_minus_exp_with_full_relative_precision():
    rate = np.concatenate([np.geomspace(1e-12, 1e3, 20000), np.linspace(0.01, 20.0, 5000)]).astype(np.float32)
    for dt in (np.float32(1.0), np.float32(0.1), np.float32(1.0 / 3.0)):
        x64 = rate.astype(np.float64) * np.float64(dt)  # exact: what prob_from_rate multiplies
        ref = (-np.expm1(-x64)).astype(np.float32)
        p = prob_njit(rate, dt)
        assert ulp_distance(p, ref).max() <= 1
        assert np.all((p >= 0) & (p <= 1))
    # at 1e-9 per step, 1 - exp_f32(-x) in float32 would be 0; the probability keeps its digits
    assert abs(rng.prob_from_rate(np.float32(1e-9), np.float32(1.0)) / np.float32(1e-9) - 1) < 1e-6
    assert rng.prob_from_rate(0.0, 1.0) == 0.0 and rng.prob_from_rate(-2.0, 1.0) == 0.0
    assert rng.prob_from_rate(np.inf, 1.0) == 1.0 and np.isnan(rng.prob_from_rate(np.nan, 1.0))


def bits_differ(a, b):
    """How many elements of two float arrays differ in their bit patterns."""
    return int(np.count_nonzero(a.view(f"u{a.itemsize}") != b.view(f"u{b.itemsize}")))


def test_fma_contraction_does_not_change_a_single_bit():
    """NVVM fuses a*b+c into FMAs in every numba.cuda kernel; every fusable product in rng is exact."""
    x = exp_points()[::3]
    y = float32_range(1e-45, 3.4028235e38, 2003)
    rate = np.geomspace(1e-12, 1e3, 50000).astype(np.float32)
    assert bits_differ(exp_fused(x), exp_njit(x)) == 0
    assert bits_differ(expm1_fused(x), expm1_njit(x)) == 0
    assert bits_differ(log_fused(y), log_njit(y)) == 0
    dt = np.float32(0.7)
    assert bits_differ(prob_fused(rate, dt), prob_njit(rate, dt)) == 0
    x_in = x[(x > -104) & (x < 88.8)]
    assert bits_differ(exp64_fused(x_in), exp64_njit(x_in)) == 0
    assert bits_differ(expm1_64_fused(x_in), expm1_64_njit(x_in)) == 0
    assert bits_differ(log64_fused(y), log64_njit(y)) == 0
    if "+fma" in llvm.get_host_cpu_features().flatten().split(","):
        # the comparison above is only meaningful if LLVM really emitted fused instructions
        assert "vfmadd" in exp_fused.inspect_asm(exp_fused.signatures[0])
        assert "vfmadd" in log_fused.inspect_asm(log_fused.signatures[0])
        assert "vfmadd" in exp64_fused.inspect_asm(exp64_fused.signatures[0])
        assert "vfmadd" not in exp_njit.inspect_asm(exp_njit.signatures[0])


def test_plain_python_equals_njit_bit_for_bit():
    x, y, rate = kernel_inputs(256)
    words, floats = run_njit(x, y, rate)
    py_words = np.zeros_like(words)
    py_floats = np.zeros_like(floats)
    for i in range(x.shape[0]):
        thread_body(i, x, y, rate, py_words, py_floats)
    assert np.array_equal(py_words, words)
    assert np.array_equal(py_floats.view(np.uint32), floats.view(np.uint32))


# ---------------------------------------------------------------------------------------------
# CUDA: simulator and PTX (subprocesses: NUMBA_ENABLE_CUDASIM and the device stub are process-wide)
# ---------------------------------------------------------------------------------------------
_CUDASIM_SCRIPT = f"""
import json, sys
import numpy as np, numba
from numba import cuda
sys.path.insert(0, {str(TESTS_DIR)!r})
import test_rng as T
assert numba.config.ENABLE_CUDASIM == 1

@cuda.jit
def kern(x, y, rate, words, floats):
    i = cuda.grid(1)
    if i < x.shape[0]:
        T.thread_body(i, x, y, rate, words, floats)

x, y, rate = T.kernel_inputs(64)
words = np.zeros((64, 4), np.uint32)
floats = np.zeros((64, 6), np.float32)
kern[2, 32](x, y, rate, words, floats)
w_cpu, f_cpu = T.run_njit(x, y, rate)
print(json.dumps({{"words": words.tolist(), "float_bits": floats.view(np.uint32).tolist(),
                  "njit_equal": bool(np.array_equal(words, w_cpu)
                                     and np.array_equal(floats.view(np.uint32), f_cpu.view(np.uint32)))}}))
"""


def test_cuda_simulator_kernel_is_bitwise_equal_to_njit():
    out = run_python(_CUDASIM_SCRIPT, {"NUMBA_ENABLE_CUDASIM": "1"})
    assert out["njit_equal"]
    x, y, rate = kernel_inputs(64)
    words, floats = run_njit(x, y, rate)  # computed here, outside the simulator process
    assert np.array_equal(np.array(out["words"], np.uint32), words)
    assert np.array_equal(np.array(out["float_bits"], np.uint32), floats.view(np.uint32))


_PTX_SCRIPT = f"""
import json, sys, types
import numba.cuda.dispatcher
from numba import cuda
# no driver here: nested device calls ask the current device for its compute capability
numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
sys.path.insert(0, {str(TESTS_DIR)!r})
import test_rng as T

def kern(x, y, rate, words, floats):
    i = cuda.grid(1)
    if i < x.shape[0]:
        T.thread_body(i, x, y, rate, words, floats)

ptx, _ = cuda.compile_ptx(kern, "void(float32[:], float32[:], float32[:], uint32[:, :], float32[:, :])",
                          cc=(9, 0))
print(json.dumps({{"target": [l for l in ptx.splitlines() if l.startswith(".target")],
                  "libdevice_calls": ptx.count("__nv_"), "div_rn_f64": ptx.count("div.rn.f64"),
                  "fma_f64": ptx.count("fma.rn.f64"), "approx": ptx.count(".approx"),
                  "ftz": ptx.count(".ftz"), "mul_wide_or_lo": ptx.count("mul.")}}))
"""


def test_kernel_using_rng_compiles_to_ptx_for_sm90_without_libm():
    info = run_python(_PTX_SCRIPT, {})
    assert info["target"] == [".target sm_90"]
    assert info["libdevice_calls"] == 0  # no libdevice exp/log: decisions use the project's own
    assert info["approx"] == 0 and info["ftz"] == 0  # IEEE division, subnormals kept
    assert info["div_rn_f64"] >= 1
    assert info["mul_wide_or_lo"] > 0
    # NVVM contracts into FMAs (why rng keeps every fusable product exact); not asserted, just reported
    print("fma.rn.f64 in PTX:", info["fma_f64"])


@numba.njit(cache=True)
def _fires_vs_full(u, rate, dt):
    bad = 0
    for i in range(u.shape[0]):
        if rng.fires(u[i], rate[i], dt[i]) != (u[i] < rng.prob_from_rate(rate[i], dt[i])):
            bad += 1
    return bad


def test_fires_takes_exactly_the_decision_of_the_full_probability():
    g = np.random.default_rng(11)
    n = 400_000
    rate = (10.0 ** g.uniform(-12, 3, n)).astype(np.float32)
    dt = g.choice(np.array([1.0, 0.5, 0.04, 1e-3], np.float32), n)
    u = g.random(n, dtype=np.float32)
    # the hardest draws: right at the probability, one float32 below it, and at the shortcut's bound
    p = np.array([rng.prob_from_rate(r, d) for r, d in zip(rate[:2000], dt[:2000])], np.float32)
    edge_rate = np.concatenate([rate[:2000]] * 4)
    edge_dt = np.concatenate([dt[:2000]] * 4)
    x = rate[:2000].astype(np.float64) * dt[:2000].astype(np.float64)
    edge_u = np.concatenate([p, np.nextafter(p, np.float32(0)), np.nextafter(p, np.float32(1)),
                             (x * (1 + 2.0**-22)).astype(np.float32)]).astype(np.float32)
    all_u = np.concatenate([u, edge_u]).astype(np.float32)
    assert _fires_vs_full(all_u, np.concatenate([rate, edge_rate]), np.concatenate([dt, edge_dt])) == 0
    assert _fires_vs_full(np.array([0.0, 0.5], np.float32), np.array([0.0, -1.0], np.float32),
                          np.array([1.0, 1.0], np.float32)) == 0
