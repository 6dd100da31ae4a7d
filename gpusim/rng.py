"""Counter-based random numbers (Philox4x32-10) and exact-arithmetic exp/log for decisions.

Everything here is a plain Python function decorated with ``numba.extending.register_jitable``, so the
one source runs in plain Python, inside ``numba.njit`` code, inside ``numba.cuda.jit`` kernels and under
the CUDA simulator, with bitwise identical results (DESIGN.md section 2).

Counter and key layout (RNG scheme version ``RNG_SCHEME_VERSION``):

* agents: counter ``(uid_lo, uid_hi, step, purpose << 16 | draw)``
* voxels: counter ``(voxel, 0, step, purpose << 16 | draw)``
* key ``(seed_lo ^ stream, seed_hi)`` with one ``STREAM_*`` per family of draws.

Integer arithmetic is done in ``uint64`` with explicit masks because the targets type integers
differently (njit widens ``uint32 + uint32`` to 64 bits, numpy scalars wrap and warn).

**Why exp/log are written this way.** numba.cuda compiles through NVVM with FMA contraction on (there is
no per-kernel switch), so ``a * b + c`` becomes ``fma(a, b, c)`` on the GPU but stays two roundings on
the CPU. Here every product that feeds an addition is *exact* in float64 (both factors together carry at
most 53 significant bits: float32 values have 24, the ``lo`` part of a split has at most 29, the ln 2
pieces 42 and the exponent k at most 11), and for an exact product the fused and unfused results are the
same number. Products that are not exact feed only conversions, divisions or comparisons, which are never
contracted. Division is IEEE ``div.rn`` on every target (no fastmath). No libm/libdevice call is made.

Accuracy: the float64 internals have relative error below 2**-44 (measured), so ``exp_f32``,
``expm1_f32`` and ``log_f32`` are within 1 ulp of the correctly rounded float32; on 23 M (exp) and 35 M
(log) float32 inputs spread over every binade they equalled numpy's float64 result rounded to float32.

Caching caveat: numba's on-disk cache of a ``cache=True`` caller in another module is keyed on that
caller's file only, so it keeps the old code after an edit here; clear ``NUMBA_CACHE_DIR`` then.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.extending import register_jitable

U32 = np.uint32
U64 = np.uint64
F32 = np.float32
F64 = np.float64

#: Bump when the counter/key layout or any draw's meaning changes (stored in run metadata).
RNG_SCHEME_VERSION = 1

# --- streams (the key's low word is seed_lo ^ stream) -------------------------------------------
STREAM_AGENTS = 1  # T-cell decisions
STREAM_VOXELS = 2  # tumour-lattice decisions
STREAM_EVENTS = 3  # therapy events (infusion placement, ...)
STREAM_SETUP = 4  # vessel networks and initial placement

# --- purposes (the counter's last word is purpose << 16 | draw; each must be < 2**16) ------------
PURPOSE_MOVE_DIR = 1  # new persistent-walk direction
PURPOSE_TURN = 2  # reserved (the turn decision is word 3 of the PURPOSE_ENGAGE draw)
PURPOSE_ENGAGE = 3  # free T cell: engage (word 0), target (1), synapse time (2), turn (3)
PURPOSE_TARGET = 4  # reserved (the target is word 1 of the PURPOSE_ENGAGE draw)
PURPOSE_HIT = 5  # per-step T-cell draw: word 0 the hit of an engaged cell, word 1 apoptosis
PURPOSE_SYNAPSE = 6  # reserved (the synapse time is word 2 of the PURPOSE_ENGAGE draw)
PURPOSE_PRIORITY = 7  # hashed priority for move claims and kill credit
PURPOSE_DIVIDE = 8  # tumour cell or T cell divides
PURPOSE_DIVIDE_DIR = 9  # which free neighbour receives the daughter
PURPOSE_NECROSIS = 10  # hypoxic tumour cell turns necrotic
PURPOSE_APOPTOSIS = 11  # tumour-cell apoptosis (voxel stream; T cells use word 1 of PURPOSE_HIT)
PURPOSE_RECRUIT = 12  # T-cell recruitment at a vessel voxel
PURPOSE_PROLIF = 13  # T-cell proliferation after a kill
PURPOSE_VESSEL = 14  # random vessel network (setup)
PURPOSE_PLACEMENT = 15  # initial T-cell placement (setup)
PURPOSE_INFUSION = 16  # T-cell infusion placement (events)

#: name -> id of every purpose above, for validation and run metadata.
PURPOSES = {name[len("PURPOSE_"):].lower(): value for name, value in globals().items()
            if name.startswith("PURPOSE_") and isinstance(value, int)}

# --- Philox4x32-10 constants (Salmon et al., SC'11; Random123) -----------------------------------
M32 = U64(0xFFFFFFFF)
M16 = U64(0xFFFF)
PHILOX_M0 = U64(0xD2511F53)
PHILOX_M1 = U64(0xCD9E8D57)
PHILOX_W0 = U64(0x9E3779B9)  # golden ratio
PHILOX_W1 = U64(0xBB67AE85)  # sqrt(3) - 1
_S8 = U64(8)
_S16 = U64(16)
_S32 = U64(32)
_S52 = U64(52)

# --- float constants -------------------------------------------------------------------------------
_TWO_M24 = F32(2.0 ** -24)  # spacing of the 24-bit uniforms
_INF32 = F32(np.inf)
_NAN32 = F32(np.nan)
_ZERO32 = F32(0.0)
_ONE32 = F32(1.0)
# ln 2 = _LN2_HI + _LN2_LO to 2**-89; each piece has 42 significant bits so k * piece is exact.
_LN2_HI = F64(float.fromhex("0x1.62e42fefa3800p-1"))
_LN2_LO = F64(float.fromhex("0x1.ef35793c76800p-45"))
_LOG2E = F64(1.4426950408889634)  # only picks k; its product is never added
_SQRT2 = F64(float.fromhex("0x1.6a09e667f3bcdp+0"))
# float64 values at or above this round to +inf in float32: FLT_MAX plus half its ulp (ties to even go up)
_F32_OVERFLOW = F64(2.0 ** 128 - 2.0 ** 103)
_EXP_ARG_MAX = F64(89.0)  # exp(89) overflows float32 (ln FLT_MAX = 88.72)
_EXP_ARG_MIN = F64(-104.0)  # exp(-104) < 2**-150 rounds to 0 in float32
_HALF = F64(0.5)
_ONE = F64(1.0)
_TWO = F64(2.0)
_MANT64 = U64(0x000FFFFFFFFFFFFF)
_EXP64 = U64(0x7FF)
_EXP_ONE64 = U64(1023) << _S52
# Taylor coefficients of expm1(r)/r = sum r**j / (j+1)!, j = 0..10: truncation < 2**-47 for |r| <= ln2/2
_E0, _E1, _E2, _E3 = F64(1.0), F64(1.0 / 2), F64(1.0 / 6), F64(1.0 / 24)
_E4, _E5, _E6 = F64(1.0 / 120), F64(1.0 / 720), F64(1.0 / 5040)
_E7, _E8, _E9, _E10 = F64(1.0 / 40320), F64(1.0 / 362880), F64(1.0 / 3628800), F64(1.0 / 39916800)
# atanh(s)/s - 1 = z * sum z**j / (2j+3), z = s*s <= 0.0295: truncation < 2e-12
_A0, _A1, _A2, _A3 = F64(1.0 / 3), F64(1.0 / 5), F64(1.0 / 7), F64(1.0 / 9)
_A4, _A5, _A6 = F64(1.0 / 11), F64(1.0 / 13), F64(1.0 / 15)


# ================================================================================================
# Philox4x32-10
# ================================================================================================
@register_jitable
def _mulhilo(m, a):
    """(hi, lo) uint32 words of the 64-bit product of uint64-held 32-bit values m and a."""
    p = m * U64(a)  # a 32x32 product always fits in 64 bits
    return U32(p >> _S32), U32(p & M32)


@register_jitable
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 block: four uint32 counter words and two uint32 key words -> four uint32 words.

    Inputs must lie in [0, 2**32). Matches Random123's ``philox4x32_R(10, ...)``.
    """
    c0 = U32(U64(c0) & M32)
    c1 = U32(U64(c1) & M32)
    c2 = U32(U64(c2) & M32)
    c3 = U32(U64(c3) & M32)
    k0 = U64(k0) & M32
    k1 = U64(k1) & M32
    for _ in range(10):
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        n0 = U32(U64(hi1) ^ U64(c1) ^ k0)
        n2 = U32(U64(hi0) ^ U64(c3) ^ k1)
        c0, c1, c2, c3 = n0, lo1, n2, lo0
        k0 = (k0 + PHILOX_W0) & M32
        k1 = (k1 + PHILOX_W1) & M32
    return c0, c1, c2, c3


@register_jitable
def key(seed, stream):
    """Philox key (seed_lo ^ stream, seed_hi) as two uint32 from a uint64 seed and a stream id."""
    s = U64(seed)
    return U32((s & M32) ^ (U64(stream) & M32)), U32(s >> _S32)


@register_jitable
def _purpose_draw(purpose, draw):
    # both fields are 16 bits; masking keeps an out-of-range draw from spilling into the purpose
    return U32(((U64(purpose) & M16) << _S16) | (U64(draw) & M16))


@register_jitable
def agent_counter(uid, step, purpose, draw):
    """Counter (uid_lo, uid_hi, step, purpose << 16 | draw) for a uint64 agent uid; uint32 words."""
    u = U64(uid)
    return U32(u & M32), U32(u >> _S32), U32(U64(step) & M32), _purpose_draw(purpose, draw)


@register_jitable
def voxel_counter(voxel, step, purpose, draw):
    """Counter (voxel, 0, step, purpose << 16 | draw) for a global voxel index < 2**32; uint32 words."""
    return U32(U64(voxel) & M32), U32(0), U32(U64(step) & M32), _purpose_draw(purpose, draw)


@register_jitable
def philox_agent(seed, stream, uid, step, purpose, draw):
    """The four uint32 Philox words of draw ``draw`` for agent ``uid`` at ``step`` for ``purpose``."""
    c0, c1, c2, c3 = agent_counter(uid, step, purpose, draw)
    k0, k1 = key(seed, stream)
    return philox4x32(c0, c1, c2, c3, k0, k1)


@register_jitable
def philox_voxel(seed, stream, voxel, step, purpose, draw):
    """The four uint32 Philox words of draw ``draw`` for global voxel ``voxel`` at ``step``."""
    c0, c1, c2, c3 = voxel_counter(voxel, step, purpose, draw)
    k0, k1 = key(seed, stream)
    return philox4x32(c0, c1, c2, c3, k0, k1)


@register_jitable
def u01(x):
    """float32 uniform in [0, 1) from the top 24 bits of a uint32 word: (x >> 8) * 2**-24, exact."""
    return F32(U64(x) >> _S8) * _TWO_M24


@register_jitable
def u01_open(x):
    """float32 uniform in (0, 1] from the top 24 bits of a uint32 word (safe to take the log of)."""
    return F32((U64(x) >> _S8) + U64(1)) * _TWO_M24


@numba.njit(cache=True, parallel=True)
def philox_uniform_voxels(seed, stream, step, purpose, n, draw=0):
    """float32 uniforms in [0, 1) for voxels 0..n-1: u01 of word 0 of ``philox_voxel``. Host setup."""
    out = np.empty(n, dtype=np.float32)
    for v in numba.prange(n):
        r0, _r1, _r2, _r3 = philox_voxel(seed, stream, v, step, purpose, draw)
        out[v] = u01(r0)
    return out


# ================================================================================================
# Exact-arithmetic exp / log (see the module docstring for the no-FMA-sensitivity argument)
# ================================================================================================
@register_jitable
def _split(a):
    """a = hi + lo exactly: hi is a float32 value (24 bits), lo has at most 29 significant bits."""
    hi = F64(F32(a))
    return hi, a - hi


@register_jitable
def _mul24(a, b24):
    """a * b24 for float64 a and a float32-valued b24, as a sum of two exact products (one rounding)."""
    a_hi, a_lo = _split(a)
    return a_hi * b24 + a_lo * b24


@register_jitable
def _mul(a, b):
    """a * b for float64 a, b from three exact partial products; relative error below 2**-47."""
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    return a_hi * b_hi + (a_hi * b_lo + a_lo * b_hi)


@register_jitable
def _pow2(k):
    """2.0**k as float64 for integer k in [-1022, 1023], built from its bits."""
    return U64(U64(k + 1023) << _S52).view(F64)


@register_jitable
def _expm1_reduced(r):
    """expm1(r) for |r| <= ~0.35 (float64), relative error < 2**-44."""
    r_hi, r_lo = _split(r)
    q = _E10
    q = _mul24(q, r_hi) + _E9
    q = _mul24(q, r_hi) + _E8
    q = _mul24(q, r_hi) + _E7
    q = _mul24(q, r_hi) + _E6
    q = _mul24(q, r_hi) + _E5
    q = _mul24(q, r_hi) + _E4
    q = _mul24(q, r_hi) + _E3
    q = _mul24(q, r_hi) + _E2
    q = _mul24(q, r_hi) + _E1
    q = _mul24(q, r_hi) + _E0
    em = _mul24(q, r_hi)  # expm1(r_hi)
    em_hi = F64(F32(em))
    # expm1(r_hi + r_lo) = em + exp(r_hi) * r_lo + O(r_lo**2), exp(r_hi) ~ 1 + em_hi
    return em + (r_lo + em_hi * r_lo)


@register_jitable
def _reduce(xd):
    """k = nearest integer to xd / ln 2 and r = xd - k ln 2, for |xd| <= 104 (float64)."""
    t = xd * _LOG2E
    k = int(t)  # truncation; fixed up by comparisons, never by adding to the product t
    kd = F64(k)
    if t >= kd + _HALF:
        k += 1
    elif t <= kd - _HALF:
        k -= 1
    kd = F64(k)
    return k, (xd - kd * _LN2_HI) - kd * _LN2_LO


@register_jitable
def _exp_f64(xd):
    """exp(xd) in float64 for xd in [-104, 89], relative error < 2**-46."""
    k, r = _reduce(xd)
    return (_ONE + _expm1_reduced(r)) * _pow2(k)


@register_jitable
def _expm1_f64(xd):
    """expm1(xd) in float64 for xd in [-104, 89], relative error < 2**-44."""
    k, r = _reduce(xd)
    if k == 0:
        return _expm1_reduced(r)
    return (_ONE + _expm1_reduced(r)) * _pow2(k) - _ONE


@register_jitable
def _to_f32(y):
    """Round a float64 to float32, giving +-inf explicitly (numpy warns on overflowing casts)."""
    if y >= _F32_OVERFLOW:
        return _INF32
    if y <= -_F32_OVERFLOW:
        return -_INF32
    return F32(y)


@register_jitable
def exp_f32(x):
    """e**x for float32 x, within 1 ulp of the correctly rounded value; float32.

    nan -> nan; x > 88.7228 (incl. +inf) -> +inf; -inf -> 0; results below 2**-126 are float32
    subnormals rounded once from the float64 value, and below 2**-150 (x < -103.97) they are 0.
    """
    xd = F64(F32(x))
    if xd != xd:
        return _NAN32
    if xd > _EXP_ARG_MAX:
        return _INF32
    if xd < _EXP_ARG_MIN:
        return _ZERO32
    return _to_f32(_exp_f64(xd))


@register_jitable
def expm1_f32(x):
    """e**x - 1 for float32 x, within 1 ulp (accurate also for tiny |x|); float32.

    nan -> nan; x > 88.7228 -> +inf; x < -104 -> -1.
    """
    xd = F64(F32(x))
    if xd != xd:
        return _NAN32
    if xd > _EXP_ARG_MAX:
        return _INF32
    if xd < _EXP_ARG_MIN:
        return -_ONE32
    return _to_f32(_expm1_f64(xd))


@register_jitable
def _log_f64(xd):
    """Natural log of a positive, finite, normal float64, relative error < 2**-44."""
    b = F64(xd).view(U64)
    e = np.int64((b >> _S52) & _EXP64) - 1023
    m = U64((b & _MANT64) | _EXP_ONE64).view(F64)  # xd = m * 2**e, m in [1, 2)
    if m > _SQRT2:
        m = m * _HALF
        e += 1
    f = m - _ONE  # exact (Sterbenz)
    s = f / (m + _ONE)  # log(m) = 2 atanh(s), |s| <= 0.1716
    z = _mul(s, s)
    q = _A6
    q = _mul(q, z) + _A5
    q = _mul(q, z) + _A4
    q = _mul(q, z) + _A3
    q = _mul(q, z) + _A2
    q = _mul(q, z) + _A1
    q = _mul(q, z) + _A0
    w = _mul(q, z)  # atanh(s)/s - 1
    two_atanh = _TWO * (s + _mul(s, w))
    ed = F64(e)
    return ed * _LN2_HI + (ed * _LN2_LO + two_atanh)


@register_jitable
def log_f32(x):
    """Natural log of float32 x, within 1 ulp of the correctly rounded value; float32.

    nan -> nan; x < 0 (incl. -inf) -> nan; +-0 -> -inf; +inf -> +inf; subnormal x is exact input.
    """
    xd = F64(F32(x))
    if xd != xd or xd < F64(0.0):
        return _NAN32
    if xd == F64(0.0):
        return -_INF32
    if xd == F64(np.inf):
        return _INF32
    return F32(_log_f64(xd))


@register_jitable
def prob_from_rate(rate_per_min, dt_min):
    """Probability 1 - exp(-rate_per_min * dt_min) of an event with a Poisson rate in one step; float32.

    Computed as -expm1(-rate*dt) with rate and dt rounded to float32 and their product kept exact in
    float64, so small probabilities keep full relative precision (within 1 ulp). rate*dt <= 0 -> 0,
    +inf -> 1, nan -> nan (a comparison u < nan never fires).
    """
    x = F64(F32(rate_per_min)) * F64(F32(dt_min))  # exact: two 24-bit significands
    if x != x:
        return _NAN32
    if x <= F64(0.0):
        return _ZERO32
    if x > -_EXP_ARG_MIN:
        return _ONE32
    return F32(-_expm1_f64(-x))


@register_jitable
def pow_int(x, n):
    """x**n (float64) for a float32-valued ``x`` and an integer n >= 1, by repeated products each
    rounded to float32 (a conversion, never fused into an FMA): the same bits on every target."""
    m = F64(x)
    pw = m
    for _ in range(np.int64(n) - 1):
        pw = F64(F32(pw * m))
    return pw


_BOUND = F64(1.0 + 2.0**-22)


@register_jitable
def fires(u, rate_per_min, dt_min):
    """``u < prob_from_rate(rate_per_min, dt_min)`` for a float32 uniform ``u``, exactly, without
    the expm1 when ``u`` is clearly above the probability.

    With x = rate*dt (exact in float64, as prob_from_rate takes it): the true 1 - exp(-x) is below
    x, expm1 errs by < 2**-44 and the float32 rounding by < 2**-24, so the probability is below
    x*(1 + 2**-23) < x*(1 + 2**-22) rounded. A draw at or above that bound cannot fire: compared,
    never added, so the shortcut changes no decision on any target. Most draws of small
    probabilities stop here.
    """
    x = F64(F32(rate_per_min)) * F64(F32(dt_min))
    if F64(u) >= x * _BOUND:
        return False
    return u < prob_from_rate(rate_per_min, dt_min)
