// Field kernels: one LOD field step = lod_sweep_x, lod_sweep_y, lod_sweep_z (in that order, in place),
// and one explicit sub-step = explicit_step. Twins of gpusim/fields/cpu_kernels.py; the arithmetic is
// field_math.cuh, in the order gpusim/fields/layout.py defines, so results equal the CPU bitwise.
// Compiled with --fmad=false (gpusim.kernelsrc); launched by gpusim/fields/cuda_kernels.py, which owns
// the launch shapes (block sizes below are assumed by the kernels).
//
// Only the first LOD sweep (x) carries the reaction and the sources (the full DT, layout.py); the y and
// z sweeps are pure diffusion with constant coefficients, so they take no per-voxel inputs at all.
//
// Arguments: per-voxel arrays (z, y, x) C-contiguous; vessel, n_tumor, n_tcell uint8 and src float32
// (lod_sweep_x and explicit_step only) are read only where their HAS_* bit is set in flags (else any
// valid pointer); par = float64[NPAR] (coefficients then bc_value[6]); dirichlet_mask bit f set when
// face f (z_lo, z_hi, y_lo, y_hi, x_lo, x_hi) is Dirichlet.
//
// Design against the floor of DESIGN.md section 6 (8 B per voxel and sweep: read c, write c; 24 B per
// LOD step), for 256^3 on an H100 (estimates, not measurements):
// - Thomas factor g (float64, per voxel): in shared memory, LINES x n x 8 B per block (64 KiB at
//   n = 256, so 3 blocks per SM), never in DRAM. Where fewer than two such blocks fit on an SM
//   (n > ~420 on an H100), the launcher switches to a global scratch (g_global = 1, +16 B per voxel of
//   DRAM traffic) so that all lines are in flight instead of one warp per SM. (In the y and z sweeps g
//   no longer depends on the data, only on the position along the line, so every line of an axis has
//   the same g; the kernels still compute and keep it per line, as the x sweep must.)
// - y as float32 goes into c in place in the forward pass and is read back in the backward pass (the
//   contract's order). With ~100 lines in flight per SM their y32 is ~13 MB on the GPU, which stays in
//   L2 (50 MB) between the passes and is overwritten there: L2 traffic, not DRAM traffic.
// - Per-voxel bytes: the x sweep reads the per-voxel inputs, +1 B per flagged uint8 array and +4 B
//   for src (8 to 15 B per voxel); the y and z sweeps read and write c only, 8 B per voxel. A step with
//   all four flags moves 31 B per voxel, so the 24 B floor is ~77 % of the memory bound itself.
// - FP64 work per voxel: the y and z sweeps ~25 operations (the float64 reciprocal is most of it) and
//   4 float32<->float64 conversions, no limit at the ~1.4 voxels per clock per SM the floor asks for
//   (their limit is the recurrence's latency, below); the x sweep ~40 operations and 8 conversions without uptake terms, ~60 with
//   both Michaelis-Menten divisions (16 conversions per clock per SM on sm_80/sm_90), which caps it at
//   roughly 80 % (no uptake) to 50 % (both uptake terms) of its floor.
// - Latency: the forward recurrence is ~70 cycles per element (a float64 reciprocal in the chain); three
//   warps per SM keep ~1.1 elements per clock in flight, and PF-deep register prefetch (y, z) or the
//   next tile in registers (x) keeps the loads in flight meanwhile.
//   That caps the y and z sweeps at ~80 % of their floor.
// Expected (y and z ~80 % each; x 50-80 % of its own floor, and ~1.9x its bytes with all inputs):
// ~75 % of the 24 B floor for a step without inputs or uptake, ~65 % with all inputs and both uptake
// terms (was 55-75 % and ~50 % while every sweep carried the reaction). To be measured.

#include "field_math.cuh"

// Dynamic shared memory; the host-side emulation in tests/host_field_math.cpp redefines this.
#ifndef GPUSIM_DYNAMIC_SHARED
#define GPUSIM_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

namespace gpusim {

constexpr int LINES = 32;   // lines per block in every sweep: one warp, one line per thread
constexpr int PF = 8;       // y/z sweeps: elements prefetched per line into registers (loads in flight)
constexpr int XT = 16;      // x sweep: tile width along x (32 lines x 16 values per tile)
constexpr int XRPP = LINES / XT;   // tile rows covered by one warp-wide load (2 rows x 16 values)
constexpr int XPASS = LINES / XRPP;  // warp-wide loads per tile and array
constexpr int EX_BX = 32, EX_BY = 8, EX_ZCH = 8;  // explicit: block 32 x 8 (x, y), 8 z-planes per thread

typedef unsigned char u8;

// The optional per-voxel inputs of one element of the explicit step, as loaded (float32/uint8);
// converted to double on use.
struct VoxIn {
    float src;
    unsigned int v, nt, nc;
};

// The optional inputs of voxel idx (zeros where the flag is off).
__device__ __forceinline__ void load_inputs(VoxIn& a, const u8* vessel, const u8* n_tumor, const u8* n_tcell,
                                            const float* src, long long idx, int flags) {
    a.v = (flags & HAS_VESSEL) ? vessel[idx] : 0u;
    a.nt = (flags & HAS_TUMOR) ? n_tumor[idx] : 0u;
    a.nc = (flags & HAS_TCELL) ? n_tcell[idx] : 0u;
    a.src = (flags & HAS_SRC) ? src[idx] : 0.0f;
}

__device__ __forceinline__ Rates rates_of(const FieldCoef& cf, int flags, double c, const VoxIn& a) {
    return voxel_rates(cf, flags, c, double(a.v), double(a.nt), double(a.nc),
                       (flags & HAS_SRC) ? double(a.src) : 0.0);
}

// One line of a strided (y or z) sweep, by one thread: pure diffusion, so only c is read. Coalescing:
// consecutive threads own consecutive lines, i.e. consecutive x, so each step of the recurrence is one
// 128-byte warp load/store of c. The next PF elements are loaded before the current PF are computed, so
// the loads are in flight during the (latency-bound) recurrence. g goes to gp[i * gstride] (shared or
// global scratch).
__device__ __forceinline__ void sweep_line_diffusion(float* c, const double* par, double* gp, long long gstride,
                                                     long long base, long long stride, int n, int axis,
                                                     int dirichlet_mask) {
    const FieldCoef cf = load_coef(par);
    const LineEnds e = line_ends(cf, par, dirichlet_mask, axis);
    float nxt[PF];
#pragma unroll
    for (int j = 0; j < PF; ++j)
        if (j < n) nxt[j] = c[base + j * stride];
    double g = 0.0, y = 0.0;
    for (int i0 = 0; i0 < n; i0 += PF) {
        float cur[PF];
#pragma unroll
        for (int j = 0; j < PF; ++j) cur[j] = nxt[j];
#pragma unroll
        for (int j = 0; j < PF; ++j) {
            const int i = i0 + PF + j;
            if (i < n) nxt[j] = c[base + i * stride];
        }
#pragma unroll
        for (int j = 0; j < PF; ++j) {
            const int i = i0 + j;
            if (i < n) {
                const Row row = lod_row_diffusion(cf, e, i, n, double(cur[j]));
                if (i == 0)
                    thomas_first(cf.r, row, g, y);
                else
                    thomas_next(cf.r, row, g, y);
                gp[i * gstride] = g;
                c[base + i * stride] = float(y);
            }
        }
    }
    // Back substitution from x_{n-1} = y_{n-1} (float64), whose float32 the forward pass already stored.
    double x = y;
    float ynx[PF];
    const int top = n - 2;
#pragma unroll
    for (int j = 0; j < PF; ++j)
        if (top - j >= 0) ynx[j] = c[base + (top - j) * stride];
    for (int i0 = top; i0 >= 0; i0 -= PF) {
        float ycur[PF];
#pragma unroll
        for (int j = 0; j < PF; ++j) ycur[j] = ynx[j];
#pragma unroll
        for (int j = 0; j < PF; ++j) {
            const int i = i0 - PF - j;
            if (i >= 0) ynx[j] = c[base + i * stride];
        }
#pragma unroll
        for (int j = 0; j < PF; ++j) {
            const int i = i0 - j;
            if (i >= 0) {
                x = thomas_back(ycur[j], gp[i * gstride], x);
                c[base + i * stride] = float(x);
            }
        }
    }
}

}  // namespace gpusim

using namespace gpusim;

// y sweep (pure diffusion): line (z, x) = divmod(L, nx), elements c[z, i, x], stride nx. Block LINES
// threads, grid ceil(nz*nx / LINES); dynamic shared LINES*ny*8 bytes unless g_global. 8 B per voxel.
extern "C" __global__ void __launch_bounds__(LINES)
    lod_sweep_y(float* c, const double* __restrict__ par, double* __restrict__ gscratch, int nz, int ny, int nx,
                int dirichlet_mask, int g_global) {
    GPUSIM_DYNAMIC_SHARED(double, gsh);
    const long long nlines = (long long)nz * nx;
    const long long L = (long long)blockIdx.x * LINES + threadIdx.x;
    if (L >= nlines) return;  // no block-wide barrier in this kernel
    const long long z = L / nx, x = L - z * nx;
    double* gp = g_global ? gscratch + L : gsh + threadIdx.x;
    const long long gstride = g_global ? nlines : (long long)LINES;
    sweep_line_diffusion(c, par, gp, gstride, z * ny * (long long)nx + x, nx, ny, 1, dirichlet_mask);
}

// z sweep (pure diffusion): line L = y*nx + x, elements c[i, y, x], stride ny*nx. Block LINES threads,
// grid ceil(ny*nx / LINES); dynamic shared LINES*nz*8 bytes unless g_global. 8 B per voxel.
extern "C" __global__ void __launch_bounds__(LINES)
    lod_sweep_z(float* c, const double* __restrict__ par, double* __restrict__ gscratch, int nz, int ny, int nx,
                int dirichlet_mask, int g_global) {
    GPUSIM_DYNAMIC_SHARED(double, gsh);
    const long long nlines = (long long)ny * nx;
    const long long L = (long long)blockIdx.x * LINES + threadIdx.x;
    if (L >= nlines) return;  // no block-wide barrier in this kernel
    double* gp = g_global ? gscratch + L : gsh + threadIdx.x;
    const long long gstride = g_global ? nlines : (long long)LINES;
    sweep_line_diffusion(c, par, gp, gstride, L, nlines, nz, 0, dirichlet_mask);
}

// x sweep (the contiguous axis), the first sweep of a step: it alone carries the reaction and the
// sources (lod_reaction_terms of each voxel's input value), so it alone reads the flagged per-voxel
// inputs (8 B per voxel + 1 B per flagged count array + 4 B for src). A block of LINES threads owns
// LINES consecutive (z, y) rows; thread t runs row t's recurrence. Coalescing: the rows are walked in tiles of LINES rows x XT values; each
// warp-wide load or store covers XRPP rows x XT consecutive floats (two 64-byte segments), so DRAM sees
// whole sectors, and the tile is transposed through shared memory (row stride XT+1 floats: thread t
// reading tile[t][l] hits 32 distinct banks). The next tile is loaded into registers while the current
// one is computed. The forward pass keeps the last tile in shared memory for the backward pass.
// Shared memory: g LINES*nx*8 bytes dynamic (unless g_global) + 3 tiles of 32*17*4 bytes static.
// Block LINES threads, grid ceil(nz*ny / LINES).
extern "C" __global__ void __launch_bounds__(LINES)
    lod_sweep_x(float* c, const u8* __restrict__ vessel, const u8* __restrict__ n_tumor,
                const u8* __restrict__ n_tcell, const float* __restrict__ src, const double* __restrict__ par,
                double* __restrict__ gscratch, int nz, int ny, int nx, int flags, int dirichlet_mask,
                int g_global) {
    __shared__ float tc[LINES][XT + 1];           // c, then y32, then x32 of the tile
    __shared__ float ts[LINES][XT + 1];           // src
    __shared__ unsigned int tp[LINES][XT + 1];    // vessel | n_tumor << 8 | n_tcell << 16
    GPUSIM_DYNAMIC_SHARED(double, gsh);

    const long long nrows = (long long)nz * ny;
    const long long row0 = (long long)blockIdx.x * LINES;
    const int t = threadIdx.x;
    const bool active = row0 + t < nrows;
    double* gp = g_global ? gscratch + (row0 + t) : gsh + t;
    const long long gstride = g_global ? nrows : (long long)LINES;
    const FieldCoef cf = load_coef(par);
    const LineEnds e = line_ends(cf, par, dirichlet_mask, 2);

    // This thread's part of the warp-wide tile accesses: rows XRPP*q + h, column col.
    const int h = t / XT, col = t % XT;
    float rc[XPASS], rs[XPASS];
    unsigned int rp[XPASS];
    auto load_tile = [&](int x0, bool inputs) {
#pragma unroll
        for (int q = 0; q < XPASS; ++q) {
            const long long r = row0 + XRPP * q + h;
            const int x = x0 + col;
            if (r < nrows && x < nx) {
                const long long idx = r * nx + x;
                rc[q] = c[idx];
                if (inputs) {
                    rs[q] = (flags & HAS_SRC) ? src[idx] : 0.0f;
                    rp[q] = ((flags & HAS_VESSEL) ? (unsigned int)vessel[idx] : 0u) |
                            ((flags & HAS_TUMOR) ? (unsigned int)n_tumor[idx] << 8 : 0u) |
                            ((flags & HAS_TCELL) ? (unsigned int)n_tcell[idx] << 16 : 0u);
                }
            }
        }
    };
    auto tile_to_shared = [&](bool inputs) {
#pragma unroll
        for (int q = 0; q < XPASS; ++q) {
            tc[XRPP * q + h][col] = rc[q];
            if (inputs) {
                ts[XRPP * q + h][col] = rs[q];
                tp[XRPP * q + h][col] = rp[q];
            }
        }
    };
    auto store_tile = [&](int x0) {
#pragma unroll
        for (int q = 0; q < XPASS; ++q) {
            const long long r = row0 + XRPP * q + h;
            const int x = x0 + col;
            if (r < nrows && x < nx) c[r * nx + x] = tc[XRPP * q + h][col];
        }
    };

    // Forward elimination, tile by tile from x = 0. No barrier is needed between store_tile and the
    // next tile_to_shared: each thread writes exactly the tile cells it has just stored out itself.
    double g = 0.0, y = 0.0;
    load_tile(0, true);
    for (int x0 = 0; x0 < nx; x0 += XT) {
        tile_to_shared(true);
        __syncthreads();
        const bool more = x0 + XT < nx;
        if (more) load_tile(x0 + XT, true);
        if (active) {
            const int lmax = more ? XT : nx - x0;
            for (int l = 0; l < lmax; ++l) {
                const int i = x0 + l;
                const unsigned int p = tp[t][l];
                const double cv = double(tc[t][l]);
                const Reaction rx = lod_reaction_terms(cf, flags, cv, (p & 0xffu) != 0u, double((p >> 8) & 0xffu),
                                                       double(p >> 16), (flags & HAS_SRC) ? double(ts[t][l]) : 0.0);
                const Row rw = lod_row(cf, e, i, nx, rx, cv);
                if (i == 0)
                    thomas_first(cf.r, rw, g, y);
                else
                    thomas_next(cf.r, rw, g, y);
                gp[i * gstride] = g;
                tc[t][l] = float(y);
            }
        }
        if (more) {
            __syncthreads();
            store_tile(x0);
        }
    }

    // Back substitution, tile by tile from the last one (still in tc: each thread wrote only its own
    // row since the last barrier, so no barrier is needed before continuing on it).
    double xv = y;  // x_{nx-1} = y_{nx-1}; tc already holds its float32
    int x0 = ((nx - 1) / XT) * XT;
    if (x0 > 0) load_tile(x0 - XT, false);
    for (;;) {
        if (active) {
            const int lmax = (nx - x0 < XT) ? nx - x0 : XT;
            for (int l = lmax - 1; l >= 0; --l) {
                const int i = x0 + l;
                if (i == nx - 1) continue;
                xv = thomas_back(tc[t][l], gp[i * gstride], xv);
                tc[t][l] = float(xv);
            }
        }
        __syncthreads();
        store_tile(x0);
        if (x0 == 0) break;
        x0 -= XT;
        tile_to_shared(false);
        __syncthreads();
        if (x0 > 0) load_tile(x0 - XT, false);
    }
}

// Explicit sub-step: c_out = update(c_in). Block EX_BX x EX_BY threads over (x, y); each thread walks
// EX_ZCH z-planes of its column, keeping c at z-1, z, z+1 in registers, so z-neighbours cost no
// loads; x- and y-neighbours are reads of the block's own rows and hit L1. Coalescing: threadIdx.x is
// x, so every load and store is a 128-byte warp access. Grid (ceil(nx/32), ceil(ny/8), ceil(nz/8)).
extern "C" __global__ void __launch_bounds__(EX_BX * EX_BY)
    explicit_step(const float* __restrict__ c_in, float* __restrict__ c_out, const u8* __restrict__ vessel,
                  const u8* __restrict__ n_tumor, const u8* __restrict__ n_tcell, const float* __restrict__ src,
                  const double* __restrict__ par, int nz, int ny, int nx, int flags, int dirichlet_mask) {
    const int x = blockIdx.x * EX_BX + threadIdx.x;
    const int y = blockIdx.y * EX_BY + threadIdx.y;
    const int z0 = blockIdx.z * EX_ZCH;
    if (x >= nx || y >= ny) return;  // no block-wide barrier in this kernel
    const FieldCoef cf = load_coef(par);
    const int m = dirichlet_mask;
    const double* bc = par + coef::BC_VALUE;
    const long long plane = (long long)ny * nx;
    long long idx = z0 * plane + (long long)y * nx + x;
    double cm = z0 > 0 ? double(c_in[idx - plane]) : 0.0;
    double cc = double(c_in[idx]);
    const int z1 = (z0 + EX_ZCH < nz) ? z0 + EX_ZCH : nz;
    for (int z = z0; z < z1; ++z, idx += plane) {
        const double cp = (z + 1 < nz) ? double(c_in[idx + plane]) : 0.0;
        const double txm = x > 0 ? face_interior(double(c_in[idx - 1]), cc) : face_boundary((m >> 4) & 1, bc[4], cc);
        const double txp =
            x < nx - 1 ? face_interior(double(c_in[idx + 1]), cc) : face_boundary((m >> 5) & 1, bc[5], cc);
        const double tym =
            y > 0 ? face_interior(double(c_in[idx - nx]), cc) : face_boundary((m >> 2) & 1, bc[2], cc);
        const double typ =
            y < ny - 1 ? face_interior(double(c_in[idx + nx]), cc) : face_boundary((m >> 3) & 1, bc[3], cc);
        const double tzm = z > 0 ? face_interior(cm, cc) : face_boundary(m & 1, bc[0], cc);
        const double tzp = z < nz - 1 ? face_interior(cp, cc) : face_boundary((m >> 1) & 1, bc[1], cc);
        VoxIn a;
        load_inputs(a, vessel, n_tumor, n_tcell, src, idx, flags);
        c_out[idx] = explicit_update(cf, cc, txm, txp, tym, typ, tzm, tzp, rates_of(cf, flags, cc, a));
        cm = cc;
        cc = cp;
    }
}
