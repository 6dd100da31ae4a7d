"""The steady-state diffusion-reaction solver (gpusim.fields.steady), each test against an independent answer.

- 1D decay with a Dirichlet face equals the analytic cosh profile, and the discrete solution equals a
  direct sparse solve of the same operator built here; a small 3D problem with every term (vessels,
  Michaelis-Menten uptake, sources, mixed faces) equals Newton's method on a sparse matrix built here.
- A sphere of first-order uptake has the sinh(r/L)/r profile with L = sqrt(D/rate).
- The O2 problem of PARAMETERS.md section 1 converges, stays non-negative and satisfies the nonlinear
  equation (rates from fields.reference, the stencil written here).
- Thread count, warm starts, singular problems, odd grid sizes.
- kernels/multigrid.cu: built for the host with g++ (no FMA contraction) and run through
  gpusim.fields.mg_cuda's own wrappers, it equals the numba kernels bitwise; on a GPU, mg_cuda equals
  mg_cpu bitwise.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import minimize_scalar

from gpusim.fields import layout as L
from gpusim.fields import mg_cpu, mg_cuda, steady
from gpusim.fields.reference import voxel_rates

REPO = Path(__file__).resolve().parent.parent
U8, F32 = np.uint8, np.float32
DUMMY_U8 = np.zeros((1, 1, 1), U8)
DUMMY_F32 = np.zeros((1, 1, 1), F32)
ALL = L.HAS_VESSEL | L.HAS_TUMOR | L.HAS_TCELL


def make_coef(D=1.0, dx=1.0, decay=0.0, kv=0.0, serum=0.0, vt=0.0, kmt=1.0, vc=0.0, kmc=1.0, sec=0.0):
    coef = np.zeros(L.NCOEF)
    coef[L.RD] = D / dx**2
    coef[L.LAM], coef[L.KV], coef[L.KV_CS] = decay, kv, kv * serum
    coef[L.VT], coef[L.KMT], coef[L.VC], coef[L.KMC], coef[L.SEC_T] = vt, kmt, vc, kmc, sec
    return coef


def faces(dirichlet=(), value=0.0):
    bc_type = np.zeros(6, np.int32)
    bc_type[list(dirichlet)] = L.BC_DIRICHLET
    return bc_type, np.full(6, float(value))


def o2_problem(shape, seed=1, radius_um=250.0, dx=15.0):
    """PARAMETERS.md section 1 O2: D 1e5 um2/min, decay 0.1, vessel supply 1e4 at 38 mmHg, tumour Vmax
    380*2494/3375 per voxel, T cells 38*500/3375, Km 1; Dirichlet 38 on every face."""
    rng = np.random.default_rng(seed)
    coef = make_coef(D=1e5, dx=dx, decay=0.1, kv=1e4, serum=38.0, vt=380 * 2494 / 3375, kmt=1.0,
                     vc=38 * 500 / 3375, kmc=1.0)
    centres = [(np.arange(n) + 0.5) * dx for n in shape]
    z, y, x = np.meshgrid(*centres, indexing="ij")
    r = np.sqrt((z - shape[0] * dx / 2) ** 2 + (y - shape[1] * dx / 2) ** 2 + (x - shape[2] * dx / 2) ** 2)
    vessel = ((rng.random(shape) < 0.02) & (r > 0.6 * radius_um)).astype(U8)
    tumor = ((r <= radius_um) & (vessel == 0)).astype(U8)
    tcell = (rng.random(shape) < 0.05).astype(U8)
    bc_type, bc_value = faces(range(6), 38.0)
    return coef, bc_type, bc_value, vessel, tumor, tcell


def solve(c, coef, bc_type, bc_value, vessel=DUMMY_U8, tumor=DUMMY_U8, tcell=DUMMY_U8, src=DUMMY_F32,
          flags=0, kernels=mg_cpu, **kw):
    return steady.steady_solve(kernels, c, coef, bc_type, bc_value, vessel, tumor, tcell, src, flags, **kw)


def residual_terms(c, coef, bc_type, bc_value, vessel=None, tumor=None, tcell=None, src=None):
    """(residual, size of the terms) of RD*sum(c - c_nb) + k(c) c = s per voxel, written independently."""
    k, s = voxel_rates(c, coef, vessel, tumor, tcell, src)
    c64 = c.astype(np.float64)
    flux = np.zeros_like(c64)
    size = np.abs(s) + k * c64
    for axis in range(3):
        lo, hi = 2 * axis, 2 * axis + 1
        for side, face in ((0, lo), (-1, hi)):
            nb = np.roll(c64, 1 if side == 0 else -1, axis=axis)
            edge = [slice(None)] * 3
            edge[axis] = side
            if bc_type[face] == L.BC_DIRICHLET:
                nb[tuple(edge)] = 2.0 * bc_value[face] - c64[tuple(edge)]
            else:
                nb[tuple(edge)] = c64[tuple(edge)]
            flux += coef[L.RD] * (c64 - nb)
            size += coef[L.RD] * np.abs(c64 - nb)
    return s - (flux + k * c64), size


def sparse_operator(shape, coef, bc_type, bc_value, k):
    """The 7-point matrix A (with rates k on the diagonal) and the Dirichlet right-side terms."""
    n = int(np.prod(shape))
    idx = np.arange(n).reshape(shape)
    rows, cols, vals = [], [], []
    diag = k.ravel().astype(np.float64).copy()
    rhs = np.zeros(n)
    rd = coef[L.RD]
    for axis in range(3):
        for face, step in ((2 * axis, -1), (2 * axis + 1, 1)):
            nb = np.roll(idx, -step, axis=axis)
            inside = np.ones(shape, bool)
            edge = [slice(None)] * 3
            edge[axis] = 0 if step == -1 else -1
            inside[tuple(edge)] = False
            rows += [idx[inside]]
            cols += [nb[inside]]
            vals += [np.full(inside.sum(), -rd)]
            diag[idx[inside]] += rd
            if bc_type[face] == L.BC_DIRICHLET:
                diag[idx[tuple(edge)].ravel()] += 2 * rd
                rhs[idx[tuple(edge)].ravel()] += 2 * rd * bc_value[face]
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return a, rhs


# ---- accuracy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, face", [((1, 1, 40), 4), ((40, 1, 1), 0), ((1, 40, 1), 3)])
def test_1d_decay_matches_cosh_profile_and_sparse_solve(shape, face):
    D, decay, bc = 1.0e3, 0.1, 2.0
    length = np.sqrt(D / decay)
    dx = length / 10
    coef = make_coef(D=D, dx=dx, decay=decay)
    bc_type, bc_value = faces([face], bc)
    c = np.zeros(shape, F32)
    info = solve(c, coef, bc_type, bc_value, tol=1e-10)
    assert info.converged
    profile = c.ravel() if face % 2 == 0 else c.ravel()[::-1]  # distance grows from the Dirichlet face
    n = profile.size
    x = (np.arange(n) + 0.5) * dx  # the Dirichlet value sits on the face, half a voxel before centre 0
    exact = bc * np.cosh((n * dx - x) / length) / np.cosh(n * dx / length)
    assert np.max(np.abs(profile / exact - 1)) < 0.01

    # the same discrete operator as a tridiagonal matrix, solved directly
    main = np.full(n, decay + 2 * coef[L.RD])
    main[0] = decay + 3 * coef[L.RD]  # one neighbour + the Dirichlet face (2 RD)
    main[-1] = decay + coef[L.RD]  # one neighbour, zero flux
    a = sp.diags([main, -coef[L.RD] * np.ones(n - 1), -coef[L.RD] * np.ones(n - 1)], [0, -1, 1], format="csc")
    rhs = np.zeros(n)
    rhs[0] = 2 * coef[L.RD] * bc
    direct = spla.spsolve(a, rhs)
    assert np.max(np.abs(profile / direct - 1)) < 1e-6


def test_3d_every_term_matches_newton_on_a_sparse_matrix():
    shape = (7, 8, 9)
    rng = np.random.default_rng(3)
    coef = make_coef(D=50.0, dx=1.0, decay=0.05, kv=80.0, serum=5.0, vt=30.0, kmt=0.7, vc=4.0, kmc=2.0, sec=0.4)
    bc_type, bc_value = faces([1, 2, 5], 0.0)
    bc_value[[1, 2, 5]] = [3.0, 1.0, 6.0]
    vessel = (rng.random(shape) < 0.05).astype(U8)
    tumor = rng.integers(0, 2, shape).astype(U8)
    tcell = rng.integers(0, 3, shape).astype(U8)
    src = (rng.random(shape) * 2).astype(F32)
    flags = ALL | L.HAS_SRC
    c = np.full(shape, 1.0, F32)
    info = solve(c, coef, bc_type, bc_value, vessel, tumor, tcell, src, flags, tol=1e-11)
    assert info.converged

    # Newton's method on the assembled matrix: uptake V c/(Km + c) differentiated exactly
    x = np.ones(int(np.prod(shape)))
    nt, nc, vf = (a.ravel().astype(float) for a in (tumor, tcell, vessel))
    a0, rhs_bc = sparse_operator(shape, coef, bc_type, bc_value, np.zeros(shape))
    lin = coef[L.LAM] + vf * coef[L.KV]
    s = vf * coef[L.KV_CS] + nt * coef[L.SEC_T] + src.ravel()
    for _ in range(30):
        up = nt * coef[L.VT] * x / (coef[L.KMT] + x) + nc * coef[L.VC] * x / (coef[L.KMC] + x)
        dup = nt * coef[L.VT] * coef[L.KMT] / (coef[L.KMT] + x) ** 2 + nc * coef[L.VC] * coef[L.KMC] / (coef[L.KMC] + x) ** 2
        f = a0 @ x + lin * x + up - s - rhs_bc
        x = x - spla.spsolve((a0 + sp.diags(lin + dup)).tocsc(), f)
    assert np.max(np.abs(c.ravel() / x - 1)) < 1e-6


def test_uptake_sphere_has_sinh_profile_with_length_sqrt_d_over_rate():
    n, radius, length = 56, 12.0, 5.0  # voxels
    rate = 1.0 / length**2  # D = dx = 1
    coef = make_coef(D=1.0, dx=1.0, kmt=1e9, vt=rate * 1e9)  # Km >> c: first order, rate = VT/KMT
    bc_type, bc_value = faces(range(6), 1.0)
    z, y, x = np.meshgrid(*(np.arange(n) + 0.5,) * 3, indexing="ij")
    r = np.sqrt((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2)
    tumor = (r <= radius).astype(U8)
    c = np.ones((n, n, n), F32)
    assert solve(c, coef, bc_type, bc_value, tumor=tumor, flags=L.HAS_TUMOR, tol=1e-9).converged
    inside = r <= radius - 1.5
    rr, cc = r[inside], c[inside].astype(np.float64)

    def misfit(ell):
        shape_fn = np.sinh(rr / ell) / rr
        amp = (shape_fn @ cc) / (shape_fn @ shape_fn)
        return np.sum((cc - amp * shape_fn) ** 2)

    fit = minimize_scalar(misfit, bounds=(0.3 * length, 3 * length), method="bounded")
    assert abs(fit.x / length - 1) < 0.05
    assert cc.min() < 0.6 * cc.max()  # the profile really is curved (sinh(0)/0 : sinh(2.1)/2.1 = 0.5)


def test_o2_with_vessels_and_michaelis_menten_satisfies_the_nonlinear_equation():
    shape = (40, 40, 40)
    coef, bc_type, bc_value, vessel, tumor, tcell = o2_problem(shape, radius_um=200.0)
    c = np.full(shape, 38.0, F32)
    info = solve(c, coef, bc_type, bc_value, vessel, tumor, tcell, flags=ALL)
    assert info.converged and info.cycles <= 12  # 8 measured; 19 without KCAP
    assert c.min() >= 0.0 and c.max() <= 38.0
    assert c[tumor == 1].min() < 0.8 * 38  # the tumour really consumes
    res, size = residual_terms(c, coef, bc_type, bc_value, vessel, tumor, tcell)
    assert np.max(np.abs(res)) / np.max(size) < 1e-5
    assert info.max_residual < 1e-5


# ---- behaviour -----------------------------------------------------------------------------------


def test_warm_start_after_a_small_change_needs_fewer_cycles():
    shape = (48, 48, 48)
    coef, bc_type, bc_value, vessel, tumor, tcell = o2_problem(shape)
    c = np.full(shape, 38.0, F32)
    cold = solve(c, coef, bc_type, bc_value, vessel, tumor, tcell, flags=ALL)
    flip = (np.random.default_rng(9).random(shape) < 0.01) & (vessel == 0)
    tumor2 = tumor.copy()
    tumor2[flip] = 1 - tumor2[flip]
    warm = solve(c, coef, bc_type, bc_value, vessel, tumor2, tcell, flags=ALL)
    fresh = np.full(shape, 38.0, F32)
    solve(fresh, coef, bc_type, bc_value, vessel, tumor2, tcell, flags=ALL, tol=1e-9)
    assert warm.converged and warm.cycles < cold.cycles
    assert np.max(np.abs(c - fresh)) < 1e-4 * 38


def test_not_converging_within_max_cycles_is_reported():
    shape = (24, 24, 24)
    coef, bc_type, bc_value, vessel, tumor, tcell = o2_problem(shape, radius_um=100.0)
    c = np.full(shape, 38.0, F32)
    info = solve(c, coef, bc_type, bc_value, vessel, tumor, tcell, flags=ALL, max_cycles=2)
    assert info.cycles == 2 and not info.converged and info.max_residual > 1e-5


@pytest.mark.parametrize("shape, max_cycles", [((1, 1, 65), 16), ((65, 50, 33), 20), ((17, 1, 33), 14)])
def test_odd_grid_sizes_keep_multigrid_convergence(shape, max_cycles):
    # 2^k + 1 sizes coarsen oddly at every level; before the coarse residual was volume-weighted this
    # took 200+ cycles (1D) and 38 (3D)
    coef = make_coef(D=1.0, dx=1.0, decay=1e-3, vt=0.05, kmt=1.0)
    bc_type, bc_value = faces([5], 1.0)  # one Dirichlet face: the hardest smooth mode
    tumor = np.zeros(shape, U8)
    tumor[..., : shape[2] // 3] = 1
    c = np.zeros(shape, F32)
    info = solve(c, coef, bc_type, bc_value, tumor=tumor, flags=L.HAS_TUMOR, tol=1e-8)
    assert info.converged and info.cycles <= max_cycles
    res, size = residual_terms(c, coef, bc_type, bc_value, tumor=tumor)
    assert np.max(np.abs(res)) / np.max(size) < 1e-5


def test_singular_problems_are_refused():
    bc_zero, bc_value = faces()
    none = make_coef(D=1.0)
    assert steady.is_singular(none, bc_zero, 0)
    assert steady.is_singular(none, bc_zero, ALL)  # flags alone do not help: the rates are 0
    assert not steady.is_singular(make_coef(decay=0.1), bc_zero, 0)
    assert not steady.is_singular(none, faces([3])[0], 0)
    assert not steady.is_singular(make_coef(kv=1.0), bc_zero, L.HAS_VESSEL)
    assert steady.is_singular(make_coef(kv=1.0), bc_zero, 0)  # no vessel array
    assert not steady.is_singular(make_coef(vt=1.0), bc_zero, L.HAS_TUMOR)
    assert not steady.is_singular(make_coef(vc=1.0), bc_zero, L.HAS_TCELL)
    c = np.ones((4, 4, 4), F32)
    with pytest.raises(steady.SteadyStateUndefined, match="undefined"):
        solve(c, none, bc_zero, bc_value)
    with pytest.raises(ValueError, match="no decay"):  # uptake enabled but no cell anywhere
        solve(c, make_coef(vt=1.0), bc_zero, bc_value, tumor=np.zeros((4, 4, 4), U8), flags=L.HAS_TUMOR)
    assert np.all(c == 1.0)
    # one consuming cell makes it defined: the steady state of uptake alone is zero
    tumor = np.zeros((4, 4, 4), U8)
    tumor[1, 2, 3] = 1
    assert solve(c, make_coef(vt=1.0), bc_zero, bc_value, tumor=tumor, flags=L.HAS_TUMOR).converged
    assert c.max() < 1e-5


_THREAD_SCRIPT = """
import sys, numba, numpy as np
sys.path.insert(0, sys.argv[1])
import test_steady as t
from gpusim.fields import mg_cpu, steady
assert numba.get_num_threads() == int(sys.argv[3])
np.savez(sys.argv[2], **t.kernel_outputs(mg_cpu, (40, 40, 40)))
"""


def kernel_outputs(kernels, shape):
    """Every kernel's float64 result, and a whole solve's float32 field, on the O2 problem."""
    coef, bc_type, bc_value, vessel, tumor, tcell = o2_problem(shape)
    rng = np.random.default_rng(4)
    src = rng.random(shape).astype(F32)
    xp = kernels.xp
    dev = {k: xp.asarray(v) for k, v in dict(vessel=vessel, tumor=tumor, tcell=tcell, src=src).items()}
    out = {}
    u = xp.asarray(rng.normal(20.0, 15.0, shape))
    levels = steady._build_levels(xp, shape, coef[L.RD], 0b110110)
    fine, coarse = levels[0], levels[1]
    bct = xp.asarray(rng.random(6) * 1e4)
    for newton in (0, 1):
        kernels.rates(u, xp.asarray(coef), bct, dev["vessel"], dev["tumor"], dev["tcell"], dev["src"],
                      ALL | L.HAS_SRC, bool(newton), fine.k, fine.b)
        out[f"k{newton}"], out[f"b{newton}"] = fine.k.copy(), fine.b.copy()
    r3 = (fine.rz, fine.ry, fine.rx)
    kernels.restrict(u, fine.b, fine.k, *r3, 0b110110, coarse.b, coarse.k, *coarse.children)
    out["bc"], out["kc"] = coarse.b, coarse.k
    uc = xp.asarray(rng.normal(0.0, 1.0, coarse.shape))
    v = u.copy()
    kernels.prolong_add(uc, v, *coarse.prolong)
    out["prolong"] = v
    v = u.copy()
    kernels.smooth(v, fine.b, fine.k, *r3, 0b110110, 2)
    out["smooth"] = v
    last = levels[-1]
    kernels.coarse_solve(last.u, xp.asarray(rng.random(last.shape)), xp.asarray(rng.random(last.shape)),
                         last.rz, last.ry, last.rx, 0b110110)
    out["coarse"] = last.u
    prev = u * 1.01
    v = u.copy()
    out["change"] = np.array(kernels.clamp_change(v, prev))
    out["clamped"], out["prev"] = v, prev
    out["residual"] = np.array(kernels.residual_max(u, fine.b, fine.k, *r3, 0b110110))
    c = xp.full(shape, 38.0, xp.float32)
    info = solve(c, coef, bc_type, bc_value, dev["vessel"], dev["tumor"], dev["tcell"], dev["src"],
                 ALL | L.HAS_SRC, kernels=kernels)
    out["field"], out["cycles"] = c, np.array(info.cycles)
    return {k: (v.get() if hasattr(v, "get") else np.asarray(v)) for k, v in out.items()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), f"{key} differs"


def test_thread_count_does_not_change_a_bit(tmp_path):
    kernel_outputs(mg_cpu, (8, 8, 8))  # compile into numba's cache before the subprocesses start
    results = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        subprocess.run([sys.executable, "-c", _THREAD_SCRIPT, str(REPO / "tests"), str(out), str(threads)],
                       env=env, check=True, timeout=300)
        with np.load(out) as data:
            results.append({k: data[k] for k in data.files})
    assert_bitwise_equal(*results)


# ---- the CUDA C source -------------------------------------------------------------------------------

_HOST_HARNESS = r"""
// kernels/multigrid.cu built for the host: every CUDA thread is one loop iteration (the kernels use no
// shared memory or barriers, so thread order cannot matter)
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
using std::fabs;
struct Dim3 { long long x; };
static Dim3 blockIdx, threadIdx, blockDim = {1};
#define __global__
#define __device__
#define __forceinline__ inline
#include "multigrid.cu"
template <typename... A, std::size_t... I>
static void call(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}
template <typename... A>
static void launch(void (*k)(A...), long long n, void** args) {
    for (long long t = 0; t < n; ++t) { blockIdx.x = t; call(k, args, std::index_sequence_for<A...>{}); }
}
#define K(name) if (!std::strcmp(kname, #name)) { launch(name, n, args); return 0; }
extern "C" int emu_launch(const char* kname, long long n, void** args) {
    K(mg_rates) K(mg_smooth_colour) K(mg_restrict) K(mg_prolong_add) K(mg_coarse_solve)
    K(mg_clamp_change) K(mg_residual_abs)
    return 1;
}
"""


class _HostArray(np.ndarray):
    def get(self):
        return np.asarray(self)


@pytest.fixture(scope="module")
def host_mg_cuda(tmp_path_factory):
    """gpusim.fields.mg_cuda with CuPy replaced by NumPy and its launches by the host build of the .cu."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.fail("g++ is needed to build kernels/multigrid.cu for the host (apt-get install g++)")
    folder = tmp_path_factory.mktemp("mg_host")
    (folder / "harness.cpp").write_text(_HOST_HARNESS)
    lib_path = folder / "mg_host.so"
    subprocess.run([gxx, "-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c++17", "-shared", "-fPIC",
                    f"-I{REPO / 'kernels'}", str(folder / "harness.cpp"), "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_longlong, ctypes.POINTER(ctypes.c_void_p)]
    ctype = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float64: ctypes.c_double}

    def launch(name, n_threads, args):
        vals = [ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray) else ctype[type(a)](a) for a in args]
        assert all(a.flags.c_contiguous for a in args if isinstance(a, np.ndarray))
        ptrs = (ctypes.c_void_p * len(vals))(*[ctypes.addressof(v) for v in vals])
        assert lib.emu_launch(name.encode(), int(n_threads), ptrs) == 0, name

    fake_cupy = types.ModuleType("cupy")
    fake_cupy.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake_cupy.stack = lambda xs: np.stack(xs).view(_HostArray)
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "cupy", fake_cupy)
    mp.setattr(mg_cuda, "_launch", launch)
    mp.setattr(mg_cuda, "_kernel", lambda name: (lambda grid, block, args: launch(name, 1, args)))
    yield mg_cuda
    mp.undo()


@pytest.mark.parametrize("shape", [(9, 10, 11), (24, 20, 33)])
def test_cuda_source_on_the_host_equals_numba_bitwise(host_mg_cuda, shape):
    assert_bitwise_equal(kernel_outputs(host_mg_cuda, shape), kernel_outputs(mg_cpu, shape))


def _cuda_devices():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver or no device: the GPU test is skipped
        return 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() == 0, reason="CuPy sees no CUDA device")
def test_cuda_equals_cpu_bitwise_on_64_cubed():
    assert_bitwise_equal(kernel_outputs(mg_cuda, (64, 64, 64)), kernel_outputs(mg_cpu, (64, 64, 64)))


def test_steady_is_due_predicts_exactly_the_steps_that_re_solve():
    """FieldUpdate.steady_is_due (the pure predicate MPI ranks evaluate for themselves) says yes in the
    step starting at t = 0, 3, 6, ... for update_every_min = 3, and no in the others."""
    import gpusim

    sim = gpusim.Simulation({"seed": 1, "grid": {"shape": [6, 6, 6], "dx_um": 20.0},
                             "substrates": [{"name": "o2", "update_every_min": 3.0}], "backend": "cpu"})
    fu = sim.field_update
    solved = []
    real = fu.solve_steady
    fu.solve_steady = lambda state, name, **kw: (solved.append(state.time_min), real(state, name, **kw))[1]
    predicted = []
    for _ in range(10):
        if fu.steady_is_due(sim.time_min, "o2"):
            predicted.append(sim.time_min)
        sim.step()
    assert predicted == solved == [0.0, 3.0, 6.0, 9.0]
