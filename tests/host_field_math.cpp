// Host builds of the GPU field code, for the CPU test suite (tests/host_cuda.py builds this as a shared
// library and loads it through ctypes). Built with g++ -O2 -ffp-contract=off -fno-fast-math, so every double
// operation is one IEEE operation, as on the GPU with --fmad=false.
//
// 1. host_lod_step / host_explicit_step: whole-array steps written with kernels/field_math.cuh's
//    functions in plain loops; host_voxel_rates / host_lod_reaction_terms: the per-voxel terms in
//    float64. Equal to gpusim/fields/reference.py bitwise => the arithmetic the CUDA kernels use is
//    the contract's.
// 2. emu_sweep_x / emu_sweep_diffusion / emu_explicit: kernels/fields.cu itself, compiled for the host
//    with a minimal CUDA execution model: __shared__ as block-wide statics, blocks one after another, one std::thread per
//    CUDA thread but only one running at a time. Each thread runs up to its next __syncthreads (or its
//    end) and hands over to the next; the order reverses at every barrier. So a missing barrier shows
//    deterministically: some thread then reads shared memory another has not yet written, or already
//    overwrote. Equal to the reference => the kernels' indexing, tiling, prefetching and barriers are
//    right, with the launch shapes gpusim.fields.cuda_kernels uses.
// 3. emu_part_*: kernels/partitioned.cu (a GPU rank's partitioned LOD sweeps) under the same model, with
//    the launch shapes of gpusim.parallel.partitioned_cuda (tests/test_partitioned_cuda.py: equal to the
//    CPU rank's numba kernels bitwise).
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "field_math.cuh"

using namespace gpusim;

// ---- 1. host twin ----------------------------------------------------------------------------------

namespace {

struct Inputs {
    const uint8_t *vessel, *n_tumor, *n_tcell;
    const float* src;
    int flags;
};

Rates rates_at(const FieldCoef& cf, const Inputs& in, double c, long long idx) {
    const int f = in.flags;
    return voxel_rates(cf, f, c, (f & HAS_VESSEL) ? double(in.vessel[idx]) : 0.0,
                       (f & HAS_TUMOR) ? double(in.n_tumor[idx]) : 0.0, (f & HAS_TCELL) ? double(in.n_tcell[idx]) : 0.0,
                       (f & HAS_SRC) ? double(in.src[idx]) : 0.0);
}

Reaction reaction_at(const FieldCoef& cf, const Inputs& in, double c, long long idx) {
    const int f = in.flags;
    return lod_reaction_terms(cf, f, c, (f & HAS_VESSEL) && in.vessel[idx] != 0,
                              (f & HAS_TUMOR) ? double(in.n_tumor[idx]) : 0.0,
                              (f & HAS_TCELL) ? double(in.n_tcell[idx]) : 0.0, (f & HAS_SRC) ? double(in.src[idx]) : 0.0);
}

// The Thomas solve of one line (elements c[base + i*stride]) as the contract writes it: with the
// reaction terms of each voxel's input value (first sweep, in != nullptr) or pure diffusion.
void solve_line(float* c, const FieldCoef& cf, const LineEnds& e, const Inputs* in, long long base, long long stride,
                int n, std::vector<double>& g) {
    double gi = 0.0, y = 0.0;
    for (int i = 0; i < n; ++i) {
        const long long idx = base + i * stride;
        const double cv = double(c[idx]);
        const Row row = in ? lod_row(cf, e, i, n, reaction_at(cf, *in, cv, idx), cv) : lod_row_diffusion(cf, e, i, n, cv);
        if (i == 0)
            thomas_first(cf.r, row, gi, y);
        else
            thomas_next(cf.r, row, gi, y);
        g[i] = gi;
        c[idx] = float(y);
    }
    double x = y;
    c[base + (n - 1) * stride] = float(x);
    for (int i = n - 2; i >= 0; --i) {
        const long long idx = base + i * stride;
        x = thomas_back(c[idx], g[i], x);
        c[idx] = float(x);
    }
}

}  // namespace

// One LOD step: the x sweep with the reaction and the sources, then y and z pure diffusion (which get
// no per-voxel inputs at all).
extern "C" void host_lod_step(float* c, int nz, int ny, int nx, const double* par, int dirichlet_mask,
                              const uint8_t* vessel, const uint8_t* n_tumor, const uint8_t* n_tcell, const float* src,
                              int flags) {
    const FieldCoef cf = load_coef(par);
    const Inputs in{vessel, n_tumor, n_tcell, src, flags};
    const long long plane = (long long)ny * nx;
    std::vector<double> g(std::max(nx, std::max(ny, nz)));
    const LineEnds ex = line_ends(cf, par, dirichlet_mask, 2);
    for (long long r = 0; r < (long long)nz * ny; ++r) solve_line(c, cf, ex, &in, r * nx, 1, nx, g);
    const LineEnds ey = line_ends(cf, par, dirichlet_mask, 1);
    for (int z = 0; z < nz; ++z)
        for (int x = 0; x < nx; ++x) solve_line(c, cf, ey, nullptr, z * plane + x, nx, ny, g);
    const LineEnds ez = line_ends(cf, par, dirichlet_mask, 0);
    for (long long l = 0; l < plane; ++l) solve_line(c, cf, ez, nullptr, l, plane, nz, g);
}

extern "C" void host_explicit_step(const float* c_in, float* c_out, int nz, int ny, int nx, const double* par,
                                   int dirichlet_mask, const uint8_t* vessel, const uint8_t* n_tumor,
                                   const uint8_t* n_tcell, const float* src, int flags) {
    const FieldCoef cf = load_coef(par);
    const Inputs in{vessel, n_tumor, n_tcell, src, flags};
    const double* bc = par + coef::BC_VALUE;
    const int n[3] = {nz, ny, nx};
    const long long stride[3] = {(long long)ny * nx, nx, 1};
    for (int z = 0; z < nz; ++z)
        for (int y = 0; y < ny; ++y)
            for (int x = 0; x < nx; ++x) {
                const int pos[3] = {z, y, x};
                const long long idx = z * stride[0] + y * stride[1] + x;
                const double cv = double(c_in[idx]);
                double t[3][2];  // [axis][minus, plus]
                for (int a = 0; a < 3; ++a) {
                    t[a][0] = pos[a] > 0 ? face_interior(double(c_in[idx - stride[a]]), cv)
                                         : face_boundary((dirichlet_mask >> (2 * a)) & 1, bc[2 * a], cv);
                    t[a][1] = pos[a] < n[a] - 1 ? face_interior(double(c_in[idx + stride[a]]), cv)
                                                : face_boundary((dirichlet_mask >> (2 * a + 1)) & 1, bc[2 * a + 1], cv);
                }
                c_out[idx] = explicit_update(cf, cv, t[2][0], t[2][1], t[1][0], t[1][1], t[0][0], t[0][1],
                                             rates_at(cf, in, cv, idx));
            }
}

// The per-voxel rates (k, s) in float64 of n voxels.
extern "C" void host_voxel_rates(const float* c, long long n, const double* par, const uint8_t* vessel,
                                 const uint8_t* n_tumor, const uint8_t* n_tcell, const float* src, int flags, double* k,
                                 double* s) {
    const FieldCoef cf = load_coef(par);
    const Inputs in{vessel, n_tumor, n_tcell, src, flags};
    for (long long i = 0; i < n; ++i) {
        const Rates r = rates_at(cf, in, double(c[i]), i);
        k[i] = r.k;
        s[i] = r.s;
    }
}

// The first LOD sweep's per-voxel terms (diag, rhs) in float64 of n voxels.
extern "C" void host_lod_reaction_terms(const float* c, long long n, const double* par, const uint8_t* vessel,
                                        const uint8_t* n_tumor, const uint8_t* n_tcell, const float* src, int flags,
                                        double* diag, double* rhs) {
    const FieldCoef cf = load_coef(par);
    const Inputs in{vessel, n_tumor, n_tcell, src, flags};
    for (long long i = 0; i < n; ++i) {
        const Reaction r = reaction_at(cf, in, double(c[i]), i);
        diag[i] = r.diag;
        rhs[i] = r.rhs;
    }
}

// The index constants the .cuh uses, for comparison with gpusim/fields/layout.py.
extern "C" void host_constants(int* out) {
    const int v[] = {coef::R,      coef::R2,      coef::DT,    coef::LAM,     coef::KV,      coef::KV_CS,
                     coef::VT,     coef::KMT,     coef::VC,    coef::KMC,     coef::SEC_T,   coef::RD,
                     coef::G0,     coef::G1,      coef::SG1,   coef::B0,      coef::NCOEF,   coef::BC_VALUE,
                     coef::NPAR,   BC_ZERO_FLUX,  BC_DIRICHLET, HAS_VESSEL,   HAS_TUMOR,     HAS_TCELL,
                     HAS_SRC};
    std::memcpy(out, v, sizeof v);
}

// ---- 2. the CUDA kernels under a host execution model ------------------------------------------------

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
namespace emu {
thread_local dim3 thread_idx;
thread_local unsigned int me;  // linear thread index in the block
dim3 block_idx, block_dim, grid_dim;
unsigned char* dynamic_shared = nullptr;

// The baton: order[pos] is the one thread allowed to run.
struct Baton {
    std::mutex m;
    std::condition_variable cv;
    std::vector<unsigned int> order;
    std::vector<bool> done;
    size_t pos = 0, left = 0;

    // Hand over to the next live thread; past the last one a new phase starts in the reverse order.
    void advance() {
        if (left == 0) return;
        do {
            if (++pos == order.size()) {
                std::reverse(order.begin(), order.end());
                pos = 0;
            }
        } while (done[order[pos]]);
    }
    void wait_turn(std::unique_lock<std::mutex>& lock) {
        cv.wait(lock, [this] { return order[pos] == me; });
    }
};
Baton* baton = nullptr;
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one object shared by the block's threads; blocks run one at a time
#define GPUSIM_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::dynamic_shared)
inline void __syncthreads() {
    std::unique_lock<std::mutex> lock(emu::baton->m);
    emu::baton->advance();
    emu::baton->cv.notify_all();
    emu::baton->wait_turn(lock);
}

#include "fields.cu"

namespace {

constexpr unsigned char CANARY = 0xA5;
constexpr size_t GUARD = 256;

// Run kernel() for every thread of every block. Returns 0, or 1 if a block wrote past its dynamic
// shared memory (the guard bytes after it changed).
template <class F>
int launch(const unsigned int grid[3], const unsigned int block[3], size_t dyn_bytes, F kernel) {
    std::vector<unsigned char> shared(dyn_bytes + GUARD, CANARY);
    emu::dynamic_shared = shared.data();
    emu::grid_dim = dim3{grid[0], grid[1], grid[2]};
    emu::block_dim = dim3{block[0], block[1], block[2]};
    const unsigned int nthreads = block[0] * block[1] * block[2];
    for (unsigned int bz = 0; bz < grid[2]; ++bz)
        for (unsigned int by = 0; by < grid[1]; ++by)
            for (unsigned int bx = 0; bx < grid[0]; ++bx) {
                emu::block_idx = dim3{bx, by, bz};
                emu::Baton baton;
                for (unsigned int t = 0; t < nthreads; ++t) baton.order.push_back(t);
                baton.done.assign(nthreads, false);
                baton.left = nthreads;
                emu::baton = &baton;
                std::vector<std::thread> threads;
                threads.reserve(nthreads);
                for (unsigned int t = 0; t < nthreads; ++t)
                    threads.emplace_back([&, t] {
                        emu::me = t;
                        emu::thread_idx = dim3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
                        {
                            std::unique_lock<std::mutex> lock(baton.m);
                            baton.wait_turn(lock);
                        }
                        kernel();
                        std::lock_guard<std::mutex> lock(baton.m);
                        baton.done[t] = true;
                        --baton.left;
                        baton.advance();
                        baton.cv.notify_all();
                    });
                for (auto& th : threads) th.join();
                for (size_t i = dyn_bytes; i < shared.size(); ++i)
                    if (shared[i] != CANARY) return 1;
            }
    return 0;
}

}  // namespace

// The x sweep (reaction and sources) with the given launch shape.
extern "C" int emu_sweep_x(const unsigned int* grid, const unsigned int* block, long long dyn_bytes, float* c,
                           const uint8_t* vessel, const uint8_t* n_tumor, const uint8_t* n_tcell, const float* src,
                           const double* par, double* gscratch, int nz, int ny, int nx, int flags, int dirichlet_mask,
                           int g_global) {
    return launch(grid, block, (size_t)dyn_bytes, [&] {
        lod_sweep_x(c, vessel, n_tumor, n_tcell, src, par, gscratch, nz, ny, nx, flags, dirichlet_mask, g_global);
    });
}

// A pure diffusion sweep along axis 1 (y) or 0 (z) with the given launch shape.
extern "C" int emu_sweep_diffusion(int axis, const unsigned int* grid, const unsigned int* block, long long dyn_bytes,
                                   float* c, const double* par, double* gscratch, int nz, int ny, int nx,
                                   int dirichlet_mask, int g_global) {
    auto kern = axis == 1 ? lod_sweep_y : lod_sweep_z;
    return launch(grid, block, (size_t)dyn_bytes,
                  [&] { kern(c, par, gscratch, nz, ny, nx, dirichlet_mask, g_global); });
}

extern "C" int emu_explicit(const unsigned int* grid, const unsigned int* block, const float* c_in, float* c_out,
                            const uint8_t* vessel, const uint8_t* n_tumor, const uint8_t* n_tcell, const float* src,
                            const double* par, int nz, int ny, int nx, int flags, int dirichlet_mask) {
    return launch(grid, block, 0, [&] {
        explicit_step(c_in, c_out, vessel, n_tumor, n_tcell, src, par, nz, ny, nx, flags, dirichlet_mask);
    });
}

// ---- 3. kernels/partitioned.cu (a GPU rank's partitioned LOD sweeps) under the same execution model --------

// partitioned.cu's kernels have no barrier: the threads of a block hand over the turn after every row
// instead, so that a shared-memory column two threads used would show
#define GPUSIM_EMU_YIELD() __syncthreads()
#include "partitioned.cu"

extern "C" int emu_part_fixed_eliminate(const unsigned int* grid, const unsigned int* block, const float* c,
                                        const double* rows, double* D, double* ends, int nz, int ny, int nx, int axis,
                                        double r0, double rhs0, int lo, double dlo, int hi, double dhi) {
    return launch(grid, block, 0, [&] {
        part_fixed_eliminate(c, rows, D, ends, nz, ny, nx, axis, r0, rhs0, lo, dlo, hi, dhi);
    });
}

extern "C" int emu_part_fixed_substitute(const unsigned int* grid, const unsigned int* block, float* c,
                                         const double* rows, const double* D, const double* x_first,
                                         const double* x_last, int nz, int ny, int nx, int axis) {
    return launch(grid, block, 0, [&] { part_fixed_substitute(c, rows, D, x_first, x_last, nz, ny, nx, axis); });
}

extern "C" int emu_part_reaction_eliminate(const unsigned int* grid, const unsigned int* block, const float* c,
                                           const uint8_t* vessel, const uint8_t* n_tumor, const uint8_t* n_tcell,
                                           const float* src, const double* par, const double* rows, double* A,
                                           double* C, double* D, double* ends, int nz, int ny, int nx, int flags,
                                           int lo, double dlo, int hi, double dhi) {
    return launch(grid, block, 0, [&] {
        part_reaction_eliminate(c, vessel, n_tumor, n_tcell, src, par, rows, A, C, D, ends, nz, ny, nx, flags, lo,
                                dlo, hi, dhi);
    });
}

extern "C" int emu_part_reaction_substitute(const unsigned int* grid, const unsigned int* block, float* c,
                                            const double* A, const double* C, const double* D, const double* x_first,
                                            const double* x_last, int nz, int ny, int nx) {
    return launch(grid, block, 0, [&] { part_reaction_substitute(c, A, C, D, x_first, x_last, nz, ny, nx); });
}

extern "C" int emu_part_fixed_onchip(const unsigned int* grid, const unsigned int* block, long long dyn_bytes, float* c,
                                     const double* rows, double* ends, const double* x_first, const double* x_last,
                                     int nz, int ny, int nx, int axis, double r0, double rhs0, int lo, double dlo,
                                     int hi, double dhi, int phase) {
    return launch(grid, block, (size_t)dyn_bytes, [&] {
        part_fixed_onchip(c, rows, ends, x_first, x_last, nz, ny, nx, axis, r0, rhs0, lo, dlo, hi, dhi, phase);
    });
}
