// Partitioned LOD sweeps on one rank's box (parallel.lod_mode = "partitioned", GPU ranks): the CUDA twins
// of gpusim/parallel/partitioned_cpu.py's _fixed_sweep and _reaction_sweep, equal to them bit for bit (the
// same float64 operations in the same order: tdma.cuh, field_math.cuh; compiled with --fmad=false).
// Launched by gpusim/parallel/partitioned_cuda.py, which owns the launch shapes and picks the variants.
//
// A sweep along axis (0 z, 1 y, 2 x) of the box c (float32 (nz, ny, nx), C-contiguous) treats every line
// of the box as one segment of a longer line cut between ranks. Line l is y*nx + x (z sweep), z*nx + x
// (y sweep) or z*ny + y (x sweep), as on the CPU; one thread per line. A sweep has two phases, with the
// reduced rows exchanged and solved (on the host, gpusim.parallel.tdma) in between:
//   elimination: the segment's rows reduced to A_j x_0 + x_j + C_j x_{n-1} = D_j, and the reduced rows
//                into ends ([k][l]): D_0, D_{n-1} (fixed), or A_0, C_0, D_0, A_{n-1}, C_{n-1}, D_{n-1}
//                (reaction);
//   substitution: the values x_j = D_j - A_j x_first - C_j x_last from the solved ends, as float32 into c.
// fixed: sweeps whose coefficients depend only on the position (y, z, and an x sweep without per-voxel
// terms): rows = float64 [5][n]: the downward pass's a_j, its inverse pivots r_j and c_j*r_j, and the
// reduced form's A_j and C_j (every line has the same); only D is per line. part_fixed_onchip keeps D in
// shared memory and eliminates again in the substitution (4 B a voxel read, then 4 read and 4 written:
// 12 B against the single-process sweep's 8); where a block's D does not fit (long lines),
// part_fixed_eliminate/_substitute keep it in a global scratch ([j][l], a warp's accesses contiguous)
// from one kernel to the next: ~40 B a voxel.
// reaction: the x sweep with the per-voxel reaction (field_math.cuh's lod_reaction_terms on the step's
// input value); rows = float64 [3][n]: a_j, B0[m_j], c_j; A, C and D are per line, in the global scratch
// (too large for shared memory at 256-voxel lines): ~110 B a voxel.
//
// The x sweeps read c with a stride of nx between a warp's threads (each thread walks its own contiguous
// line): correct, not coalesced; tiling them through shared memory as fields.cu's lod_sweep_x does is the
// next step once a GPU can measure it.

#include "field_math.cuh"
#include "tdma.cuh"

namespace gpusim {

constexpr int PLINES = 128;  // threads per block, one line each (gpusim.parallel.partitioned_cuda.PLINES)
constexpr int PLINES_ONCHIP = 32;  // part_fixed_onchip: one warp, its D in shared memory (.PLINES_ONCHIP)

// The element of row j of line l of a sweep along axis.
__device__ __forceinline__ long long part_elem(int axis, long long l, int j, int ny, int nx) {
    if (axis == 0) return (long long)j * ny * nx + l;
    if (axis == 1) {
        const long long z = l / nx;
        return (z * ny + j) * nx + (l - z * nx);
    }
    return l * nx + j;
}

__device__ __forceinline__ int part_len(int axis, int nz, int ny, int nx) {
    return axis == 0 ? nz : axis == 1 ? ny : nx;
}

__device__ __forceinline__ long long part_lines(int axis, int nz, int ny, int nx) {
    return axis == 0 ? (long long)ny * nx : axis == 1 ? (long long)nz * nx : (long long)nz * ny;
}

}  // namespace gpusim

using namespace gpusim;

// Dynamic shared memory; the host-side emulation in tests/host_field_math.cpp redefines this.
#ifndef GPUSIM_DYNAMIC_SHARED
#define GPUSIM_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif
// Nothing on a GPU. The host emulation hands the turn to the block's next thread here, so that its
// threads interleave row by row and a scratch column two threads shared would show.
#ifndef GPUSIM_EMU_YIELD
#define GPUSIM_EMU_YIELD()
#endif

namespace gpusim {

// The fixed sweep's segment elimination of line l into D[j*ds] (ds: the scratch's row stride): right
// sides d_j = c_j + rhs0 (+ the Dirichlet term of a global end) through the position-only factors.
__device__ __forceinline__ void part_fixed_line(const float* c, const double* rows, double* D, long long ds,
                                                long long l, int n, int axis, int ny, int nx, double r0, double rhs0,
                                                int lo, double dlo, int hi, double dhi) {
    const double* a = rows;
    const double* r = rows + n;
    const double* cf = rows + 2 * n;
    double prev = 0.0;
    for (int j = 0; j < n; ++j) {
        double d = double(c[part_elem(axis, l, j, ny, nx)]) + rhs0;
        if (j == 0 && lo) d = d + dlo;
        if (j == n - 1 && hi) d = d + dhi;
        prev = tdma_down_d(j < 2, a[j], d, r[j], prev);
        D[j * ds] = prev;
        GPUSIM_EMU_YIELD();
    }
    if (n >= 3) {
        double next = D[(n - 2) * ds];
        for (int j = n - 3; j >= 1; --j) {
            next = tdma_up(cf[j], D[j * ds], next);
            D[j * ds] = next;
            GPUSIM_EMU_YIELD();
        }
        D[0] = tdma_up(cf[0], D[0], next) * r0;
    }
}

// The values of line l from its solved ends and its reduced form D; A_j, C_j are rows[3][j], rows[4][j].
__device__ __forceinline__ void part_fixed_values(float* c, const double* rows, const double* D, long long ds,
                                                  long long l, int n, int axis, int ny, int nx, double xf,
                                                  double xl) {
    const double* fa = rows + 3 * n;
    const double* fc = rows + 4 * n;
    c[part_elem(axis, l, 0, ny, nx)] = float(xf);
    for (int j = 1; j < n - 1; ++j) {
        c[part_elem(axis, l, j, ny, nx)] = float(tdma_value(fa[j], fc[j], D[j * ds], xf, xl));
        GPUSIM_EMU_YIELD();
    }
    c[part_elem(axis, l, n - 1, ny, nx)] = float(xl);
}

}  // namespace gpusim

// The fixed sweep with D in a global scratch ([j][l]) kept from this kernel to part_fixed_substitute:
// the reduced rows D_0, D_{n-1} into ends. rhs0 is an x sweep's empty-voxel source (0 on the y and z
// sweeps), lo/hi: the segment holds the line's Dirichlet end (dlo/dhi: R2*bc), r0: row 0's final pivot.
extern "C" __global__ void __launch_bounds__(PLINES)
part_fixed_eliminate(const float* __restrict__ c, const double* __restrict__ rows, double* __restrict__ D,
                     double* __restrict__ ends, int nz, int ny, int nx, int axis, double r0, double rhs0, int lo,
                     double dlo, int hi, double dhi) {
    const long long L = part_lines(axis, nz, ny, nx);
    const long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    const int n = part_len(axis, nz, ny, nx);
    part_fixed_line(c, rows, D + l, L, l, n, axis, ny, nx, r0, rhs0, lo, dlo, hi, dhi);
    ends[l] = D[l];
    ends[L + l] = D[(long long)(n - 1) * L + l];
}

// The values of the segments from their solved ends x_first[l], x_last[l] and part_fixed_eliminate's D.
extern "C" __global__ void __launch_bounds__(PLINES)
part_fixed_substitute(float* __restrict__ c, const double* __restrict__ rows, const double* __restrict__ D,
                      const double* __restrict__ x_first, const double* __restrict__ x_last, int nz, int ny, int nx,
                      int axis) {
    const long long L = part_lines(axis, nz, ny, nx);
    const long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    part_fixed_values(c, rows, D + l, L, l, part_len(axis, nz, ny, nx), axis, ny, nx, x_first[l], x_last[l]);
}

// The fixed sweep with D on chip (dynamic shared memory, PLINES_ONCHIP x n doubles; each thread its own
// column, so no barrier): phase 0 eliminates and writes the reduced rows into ends, phase 1 eliminates
// again (the same bits, as the CPU kernels do) and stores the values from the solved ends. 4 B a voxel
// read in phase 0, 4 read and 4 written in phase 1, against ~40 B with the global scratch.
extern "C" __global__ void __launch_bounds__(PLINES_ONCHIP)
part_fixed_onchip(float* __restrict__ c, const double* __restrict__ rows, double* __restrict__ ends,
                  const double* __restrict__ x_first, const double* __restrict__ x_last, int nz, int ny, int nx,
                  int axis, double r0, double rhs0, int lo, double dlo, int hi, double dhi, int phase) {
    GPUSIM_DYNAMIC_SHARED(double, dsh);
    const long long L = part_lines(axis, nz, ny, nx);
    const long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;  // no block-wide barrier in this kernel
    const int n = part_len(axis, nz, ny, nx);
    double* D = dsh + threadIdx.x;
    part_fixed_line(c, rows, D, PLINES_ONCHIP, l, n, axis, ny, nx, r0, rhs0, lo, dlo, hi, dhi);
    if (phase == 0) {
        ends[l] = D[0];
        ends[L + l] = D[(long long)(n - 1) * PLINES_ONCHIP];
    } else {
        part_fixed_values(c, rows, D, PLINES_ONCHIP, l, n, axis, ny, nx, x_first[l], x_last[l]);
    }
}

// The x sweep's segment elimination with the per-voxel reaction: row j's diagonal B0[m_j] + diag and right
// side c_j + rhs (+ a global end's Dirichlet term) from lod_reaction_terms of the step's input value.
// vessel, n_tumor, n_tcell (uint8) and src (float32) are read where their HAS_* bit is set in flags (else
// any valid pointer); par: the packed coefficients (fields.cu's); rows = [a, B0[m], c] per row.
extern "C" __global__ void __launch_bounds__(PLINES)
part_reaction_eliminate(const float* __restrict__ c, const unsigned char* __restrict__ vessel,
                        const unsigned char* __restrict__ n_tumor, const unsigned char* __restrict__ n_tcell,
                        const float* __restrict__ src, const double* __restrict__ par,
                        const double* __restrict__ rows, double* __restrict__ A, double* __restrict__ C,
                        double* __restrict__ D, double* __restrict__ ends, int nz, int ny, int nx, int flags, int lo,
                        double dlo, int hi, double dhi) {
    const int axis = 2;
    const long long L = part_lines(axis, nz, ny, nx);
    const long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    const int n = nx;
    const FieldCoef cf = load_coef(par);
    const double* a = rows;
    const double* bm = rows + n;
    const double* cc = rows + 2 * n;
    double ap = 0.0, cp = 0.0, dp = 0.0;
    for (int j = 0; j < n; ++j) {
        const long long idx = part_elem(axis, l, j, ny, nx);
        const double cv = double(c[idx]);
        const Reaction rx = lod_reaction_terms(cf, flags, cv, (flags & HAS_VESSEL) && vessel[idx] != 0,
                                               (flags & HAS_TUMOR) ? double(n_tumor[idx]) : 0.0,
                                               (flags & HAS_TCELL) ? double(n_tcell[idx]) : 0.0,
                                               (flags & HAS_SRC) ? double(src[idx]) : 0.0);
        const bool first = j < 2;
        const double rr = tdma_pivot(first, a[j], bm[j] + rx.diag, cp);
        double d = cv + rx.rhs;
        if (j == 0 && lo) d = d + dlo;
        if (j == n - 1 && hi) d = d + dhi;
        ap = tdma_down_a(first, a[j], rr, ap);
        dp = tdma_down_d(first, a[j], d, rr, dp);
        cp = cc[j] * rr;
        const long long k = (long long)j * L + l;
        A[k] = ap;
        C[k] = cp;
        D[k] = dp;
    }
    if (n >= 3) {
        const long long k1 = (long long)(n - 2) * L + l;
        double an = A[k1], cn = C[k1], dn = D[k1];
        for (int j = n - 3; j >= 1; --j) {
            const long long k = (long long)j * L + l;
            const double cj = C[k];
            an = tdma_up(cj, A[k], an);
            dn = tdma_up(cj, D[k], dn);
            cn = -cj * cn;
            A[k] = an;
            C[k] = cn;
            D[k] = dn;
        }
        const double c0 = C[l];
        const double r = tdma_top_pivot(c0, an);
        A[l] = A[l] * r;
        D[l] = tdma_up(c0, D[l], dn) * r;
        C[l] = (-c0 * cn) * r;
    }
    const long long last = (long long)(n - 1) * L + l;
    ends[l] = A[l];
    ends[L + l] = C[l];
    ends[2 * L + l] = D[l];
    ends[3 * L + l] = A[last];
    ends[4 * L + l] = C[last];
    ends[5 * L + l] = D[last];
}

// The x sweep's values from the solved ends, with the per-line A_j, C_j, D_j of part_reaction_eliminate.
extern "C" __global__ void __launch_bounds__(PLINES)
part_reaction_substitute(float* __restrict__ c, const double* __restrict__ A, const double* __restrict__ C,
                         const double* __restrict__ D, const double* __restrict__ x_first,
                         const double* __restrict__ x_last, int nz, int ny, int nx) {
    const int axis = 2;
    const long long L = part_lines(axis, nz, ny, nx);
    const long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    const int n = nx;
    const double xf = x_first[l], xl = x_last[l];
    c[part_elem(axis, l, 0, ny, nx)] = float(xf);
    for (int j = 1; j < n - 1; ++j) {
        const long long k = (long long)j * L + l;
        c[part_elem(axis, l, j, ny, nx)] = float(tdma_value(A[k], C[k], D[k], xf, xl));
    }
    c[part_elem(axis, l, n - 1, ny, nx)] = float(xl);
}
