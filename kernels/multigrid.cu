// Steady-state multigrid kernels: the CUDA twin of gpusim/fields/mg_cpu.py (read its docstring first).
// Each __device__ helper mirrors the numba helper of the same name operation for operation, in float64,
// and the file is compiled with --fmad=false, so both backends produce the same bits.
// Arrays are C-ordered (z, y, x); flat index (z*ny + y)*nx + x in 64 bits.
// dmask: bit f set when face f is Dirichlet, faces z_lo, z_hi, y_lo, y_hi, x_lo, x_hi = bits 0..5.

// coef indices: the same numbers as gpusim/fields/layout.py
#define C_LAM 3
#define C_KV 4
#define C_KV_CS 5
#define C_VT 6
#define C_KMT 7
#define C_VC 8
#define C_KMC 9
#define C_SEC_T 10
#define F_VESSEL 1
#define F_TUMOR 2
#define F_TCELL 4
#define F_SRC 8

typedef long long i64;

__device__ __forceinline__ i64 at(int z, int y, int x, int ny, int nx) {
    return ((i64)z * ny + y) * nx + x;
}

// One thread per voxel of an (nz, ny, nx) grid: its linear index and (z, y, x); false past the end.
__device__ __forceinline__ bool thread_voxel(int nz, int ny, int nx, i64* i, int* z, int* y, int* x) {
    *i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (*i >= (i64)nz * ny * nx) return false;
    *x = (int)(*i % nx);
    i64 line = *i / nx;
    *y = (int)(line % ny);
    *z = (int)(line / ny);
    return true;
}

__device__ __forceinline__ double rate_k(double vf, double ntf, double ncf, double c, const double* coef) {
    return ((coef[C_LAM] + vf * coef[C_KV]) + (ntf * coef[C_VT]) / (coef[C_KMT] + c)) +
           (ncf * coef[C_VC]) / (coef[C_KMC] + c);
}

__device__ __forceinline__ double rate_s(double vf, double ntf, double srcv, const double* coef) {
    return (vf * coef[C_KV_CS] + ntf * coef[C_SEC_T]) + srcv;
}

__device__ __forceinline__ void newton_rates(double vf, double ntf, double ncf, double srcv, double c,
                                             const double* coef, double* k, double* s) {
    double dt = coef[C_KMT] + c;
    double dc = coef[C_KMC] + c;
    double qt = (ntf * coef[C_VT]) / (dt * dt);
    double qc = (ncf * coef[C_VC]) / (dc * dc);
    double cc = c * c;
    *k = ((coef[C_LAM] + vf * coef[C_KV]) + qt * coef[C_KMT]) + qc * coef[C_KMC];
    *s = (rate_s(vf, ntf, srcv, coef) - qt * cc) - qc * cc;
}

__device__ __forceinline__ double face_rhs(int z, int y, int x, int nz, int ny, int nx, const double* bct) {
    double t = 0.0;
    if (x == 0) t += bct[4];
    if (x == nx - 1) t += bct[5];
    if (y == 0) t += bct[2];
    if (y == ny - 1) t += bct[3];
    if (z == 0) t += bct[0];
    if (z == nz - 1) t += bct[1];
    return t;
}

// (off, w) of the level operator at (z, y, x); directions x-, x+, y-, y+, z-, z+
__device__ __forceinline__ void stencil(const double* u, int z, int y, int x, int nz, int ny, int nx,
                                        double rz, double ry, double rx, int dmask, double* off_out,
                                        double* w_out) {
    i64 i = at(z, y, x, ny, nx);
    i64 sy = nx;
    i64 sz = (i64)ny * nx;
    double off = 0.0;
    double w = 0.0;
    if (x > 0) { off += rx * u[i - 1]; w += rx; }
    else if (dmask & 16) { w += rx + rx; }
    if (x < nx - 1) { off += rx * u[i + 1]; w += rx; }
    else if (dmask & 32) { w += rx + rx; }
    if (y > 0) { off += ry * u[i - sy]; w += ry; }
    else if (dmask & 4) { w += ry + ry; }
    if (y < ny - 1) { off += ry * u[i + sy]; w += ry; }
    else if (dmask & 8) { w += ry + ry; }
    if (z > 0) { off += rz * u[i - sz]; w += rz; }
    else if (dmask & 1) { w += rz + rz; }
    if (z < nz - 1) { off += rz * u[i + sz]; w += rz; }
    else if (dmask & 2) { w += rz + rz; }
    *off_out = off;
    *w_out = w;
}

__device__ __forceinline__ double capped_rate(double k, double w, double kcap) {
    double cap = w * kcap;
    double r = k;
    if (cap < k) r = cap;
    return r;
}

extern "C" __global__ void mg_rates(const double* __restrict__ u, const double* __restrict__ coef,
                                    const double* __restrict__ bct, const unsigned char* __restrict__ vessel,
                                    const unsigned char* __restrict__ n_tumor,
                                    const unsigned char* __restrict__ n_tcell, const float* __restrict__ src,
                                    int flags, int newton, double* __restrict__ k, double* __restrict__ b,
                                    int nz, int ny, int nx) {
    i64 i;
    int z, y, x;
    if (!thread_voxel(nz, ny, nx, &i, &z, &y, &x)) return;
    double c = u[i];
    if (c < 0.0) c = 0.0;
    double vf = (flags & F_VESSEL) ? (double)vessel[i] : 0.0;
    double ntf = (flags & F_TUMOR) ? (double)n_tumor[i] : 0.0;
    double ncf = (flags & F_TCELL) ? (double)n_tcell[i] : 0.0;
    double sv = (flags & F_SRC) ? (double)src[i] : 0.0;
    double kk, ss;
    if (newton) {
        newton_rates(vf, ntf, ncf, sv, c, coef, &kk, &ss);
    } else {
        kk = rate_k(vf, ntf, ncf, c, coef);
        ss = rate_s(vf, ntf, sv, coef);
    }
    k[i] = kk;
    b[i] = ss + face_rhs(z, y, x, nz, ny, nx, bct);
}

// one colour of a red-black Gauss-Seidel sweep: thread t updates the t-th voxel with (z + y + x + colour)
// even in C order of (line, x/2); red = colour 0 on the whole grid. A box of a distributed level passes
// (colour + parity) & 1, parity = (z + y + x) & 1 of its first element in the whole grid (mg_cuda.smooth)
extern "C" __global__ void mg_smooth_colour(double* __restrict__ u, const double* __restrict__ b,
                                            const double* __restrict__ k, double rz, double ry, double rx,
                                            int dmask, int colour, int nz, int ny, int nx) {
    i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    int half = (nx + 1) / 2;
    i64 n = (i64)nz * ny * half;
    if (t >= n) return;
    int xh = (int)(t % half);
    i64 line = t / half;
    int y = (int)(line % ny);
    int z = (int)(line / ny);
    int x = 2 * xh + ((z + y + colour) & 1);
    if (x >= nx) return;
    double off, w;
    stencil(u, z, y, x, nz, ny, nx, rz, ry, rx, dmask, &off, &w);
    i64 i = at(z, y, x, ny, nx);
    u[i] = (b[i] + off) / (k[i] + w);
}

extern "C" __global__ void mg_restrict(const double* __restrict__ u, const double* __restrict__ b,
                                       const double* __restrict__ k, double rz, double ry, double rx,
                                       int dmask, double* __restrict__ bc, double* __restrict__ kc,
                                       const int* __restrict__ cz, const int* __restrict__ cy,
                                       const int* __restrict__ cx, double vol, double kcap, int nzf,
                                       int nyf, int nxf, int nz, int ny, int nx) {
    i64 i;
    int zc, yc, xc;
    if (!thread_voxel(nz, ny, nx, &i, &zc, &yc, &xc)) return;
    double rs = 0.0;
    double ks = 0.0;
    double cnt = 0.0;
    for (int z = cz[2 * zc]; z <= cz[2 * zc + 1]; ++z) {
        for (int y = cy[2 * yc]; y <= cy[2 * yc + 1]; ++y) {
            for (int x = cx[2 * xc]; x <= cx[2 * xc + 1]; ++x) {
                double off, w;
                stencil(u, z, y, x, nzf, nyf, nxf, rz, ry, rx, dmask, &off, &w);
                i64 f = at(z, y, x, nyf, nxf);
                double kk = k[f];
                rs += (b[f] + off) - (kk + w) * u[f];
                ks += capped_rate(kk, w, kcap);
                cnt += 1.0;
            }
        }
    }
    bc[i] = rs * vol;
    kc[i] = ks / cnt;
}

extern "C" __global__ void mg_prolong_add(const double* __restrict__ uc, double* __restrict__ u,
                                          const int* __restrict__ pz, const double* __restrict__ wz,
                                          const int* __restrict__ py, const double* __restrict__ wy,
                                          const int* __restrict__ px, const double* __restrict__ wx,
                                          int nzc, int nyc, int nxc, int nz, int ny, int nx) {
    i64 i;
    int z, y, x;
    if (!thread_voxel(nz, ny, nx, &i, &z, &y, &x)) return;
    int iz = pz[2 * z], jz = pz[2 * z + 1];
    int iy = py[2 * y], jy = py[2 * y + 1];
    int ix = px[2 * x], jx = px[2 * x + 1];
    double ax = wx[2 * x], bx = wx[2 * x + 1];
    double p00 = ax * uc[at(iz, iy, ix, nyc, nxc)] + bx * uc[at(iz, iy, jx, nyc, nxc)];
    double p01 = ax * uc[at(iz, jy, ix, nyc, nxc)] + bx * uc[at(iz, jy, jx, nyc, nxc)];
    double p10 = ax * uc[at(jz, iy, ix, nyc, nxc)] + bx * uc[at(jz, iy, jx, nyc, nxc)];
    double p11 = ax * uc[at(jz, jy, ix, nyc, nxc)] + bx * uc[at(jz, jy, jx, nyc, nxc)];
    double q0 = wy[2 * y] * p00 + wy[2 * y + 1] * p01;
    double q1 = wy[2 * y] * p10 + wy[2 * y + 1] * p11;
    u[i] = u[i] + (wz[2 * z] * q0 + wz[2 * z + 1] * q1);
}

// the coarsest level (at most 8 cells) by Gaussian elimination without pivoting; one thread, the same
// loops as mg_cpu._coarse_solve
#define COARSE_MAX 8
extern "C" __global__ void mg_coarse_solve(double* __restrict__ u, const double* __restrict__ b,
                                           const double* __restrict__ k, double rz, double ry, double rx,
                                           int dmask, int nz, int ny, int nx) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int n = nz * ny * nx;
    double a[COARSE_MAX][COARSE_MAX];
    double rhs[COARSE_MAX];
    double sol[COARSE_MAX];
    for (int p = 0; p < COARSE_MAX; ++p) {
        rhs[p] = 0.0;
        sol[p] = 0.0;
        for (int q = 0; q < COARSE_MAX; ++q) a[p][q] = 0.0;
    }
    for (int z = 0; z < nz; ++z) {
        for (int y = 0; y < ny; ++y) {
            for (int x = 0; x < nx; ++x) {
                int i = (z * ny + y) * nx + x;
                double off, w;
                stencil(u, z, y, x, nz, ny, nx, rz, ry, rx, dmask, &off, &w);
                a[i][i] = k[i] + w;
                rhs[i] = b[i];
                if (x > 0) a[i][i - 1] = -rx;
                if (x < nx - 1) a[i][i + 1] = -rx;
                if (y > 0) a[i][i - nx] = -ry;
                if (y < ny - 1) a[i][i + nx] = -ry;
                if (z > 0) a[i][i - nx * ny] = -rz;
                if (z < nz - 1) a[i][i + nx * ny] = -rz;
            }
        }
    }
    for (int p = 0; p < n; ++p) {
        for (int i = p + 1; i < n; ++i) {
            double f = a[i][p] / a[p][p];
            for (int j = p + 1; j < n; ++j) a[i][j] = a[i][j] - f * a[p][j];
            rhs[i] = rhs[i] - f * rhs[p];
        }
    }
    for (int i = n - 1; i >= 0; --i) {
        double s = rhs[i];
        for (int j = i + 1; j < n; ++j) s = s - a[i][j] * sol[j];
        sol[i] = s / a[i][i];
    }
    for (int i = 0; i < n; ++i) u[i] = sol[i];
}

// project onto u >= 0 (a NaN stays NaN), d = |u - u_prev|, u_prev = u; the host takes the maxima
extern "C" __global__ void mg_clamp_change(double* __restrict__ u, double* __restrict__ u_prev,
                                           double* __restrict__ d, i64 n) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    double v = u[i];
    if (v < 0.0) v = 0.0;
    u[i] = v;
    d[i] = fabs(v - u_prev[i]);
    u_prev[i] = v;
}

// r = |b - A u| per voxel; the host takes the maximum
extern "C" __global__ void mg_residual_abs(const double* __restrict__ u, const double* __restrict__ b,
                                           const double* __restrict__ k, double rz, double ry, double rx,
                                           int dmask, double* __restrict__ r, int nz, int ny, int nx) {
    i64 i;
    int z, y, x;
    if (!thread_voxel(nz, ny, nx, &i, &z, &y, &x)) return;
    double off, w;
    stencil(u, z, y, x, nz, ny, nx, rz, ry, rx, dmask, &off, &w);
    r[i] = fabs((b[i] + off) - (k[i] + w) * u[i]);
}
