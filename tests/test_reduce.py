"""The timeseries sums (gpusim.reduce): exact fixed point, so the same integers in any order, on any
split of the grid between ranks, and within half a quantum per value of the exact total."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from gpusim import reduce as R


def _field(rng, shape=(9, 7, 5)):
    a = rng.lognormal(0.0, 3.0, shape).astype(np.float32)  # values over ~8 decades
    a[0, 0, 0] = 0.0
    a[1, 2, 3] = np.float32(1e-30)
    return a


def test_the_sum_is_within_half_a_quantum_per_value_of_the_exact_rational_total():
    a = _field(np.random.default_rng(1))
    k = R.scale_exponent(float(np.abs(a).max()), a.size)
    exact = sum(Fraction(float(v)) for v in a.ravel())
    got = Fraction(R.fixed_sum(a, k), 2**k)
    assert abs(got - exact) <= Fraction(a.size, 2 ** (k + 1))
    assert R.exact_sum(a) == math.ldexp(float(R.fixed_sum(a, k)), -k)
    assert abs(R.exact_sum(a) - float(exact)) <= 1e-12 * float(np.abs(a).max())


def test_any_order_and_any_split_into_boxes_gives_the_same_integer():
    """What MPI ranks do: each sums its box with the global k and the integers are added."""
    rng = np.random.default_rng(2)
    a = _field(rng)
    k = R.scale_exponent(float(np.abs(a).max()), a.size)
    whole = R.fixed_sum(a, k)
    flat = a.ravel()
    for _ in range(5):
        assert R.fixed_sum(flat[rng.permutation(flat.size)].reshape(a.shape), k) == whole
    for cz, cy, cx in [(4, 0, 0), (0, 3, 0), (0, 0, 2), (5, 1, 4)]:
        parts = [a[zs, ys, xs] for zs in (slice(0, cz), slice(cz, None)) for ys in (slice(0, cy), slice(cy, None))
                 for xs in (slice(0, cx), slice(cx, None))]
        assert sum(R.fixed_sum(np.ascontiguousarray(p), k) for p in parts if p.size) == whole


def test_the_scale_leaves_no_room_for_overflow_and_handles_zero_and_nonfinite():
    n = 2**21
    top = np.float32(3.0e38)
    k = R.scale_exponent(float(top), n)
    assert n * math.ldexp(float(top), k) < 2.0**62 + 1  # n values at the max fit the int64 total
    a = np.full((1, 1, 8), top, np.float32)
    assert R.exact_sum(a) == pytest.approx(8 * float(top), rel=1e-15)
    assert R.exact_sum(np.zeros((2, 2, 2), np.float32)) == 0.0
    bad = np.ones((2, 2, 2), np.float32)
    bad[1, 0, 1] = np.nan
    assert math.isnan(R.exact_sum(bad))
    assert R.first_nonfinite(bad) == (1, 0, 1)


def test_ties_round_to_even_as_the_cuda_twin_does():
    a = np.array([0.5, 1.5, 2.5, -0.5, -2.5], np.float32).reshape(1, 1, 5)
    assert R.fixed_sum(a, 0) == 0 + 2 + 2 + 0 - 2


@pytest.mark.gpu
def test_the_cuda_twin_gives_the_same_integers():
    from gpusim.backend import cuda_status

    if not cuda_status()[0]:
        pytest.skip(f"no usable GPU: {cuda_status()[1]}")
    import cupy

    from gpusim import reduce_cuda

    a = _field(np.random.default_rng(3), (33, 17, 65))
    a[2, 3, :4] = np.array([0.5, 1.5, 2.5, 3.5], np.float32) * np.float32(2.0**-20)  # ties after scaling by 2**20
    for k in (R.scale_exponent(float(np.abs(a).max()), a.size), 20):
        assert reduce_cuda.fixed_sum(cupy.asarray(a), k) == R.fixed_sum(a, k)
    assert reduce_cuda.exact_sum(cupy.asarray(a)) == R.exact_sum(a)
