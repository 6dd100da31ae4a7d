// Per-voxel arithmetic of the field kernels, shared by the CUDA kernels (fields.cu) and a host build
// (tests/host_field_math.cpp, g++ -ffp-contract=off) that the CPU test suite compares bitwise with
// gpusim/fields/reference.py. Every function is the operation order gpusim/fields/layout.py documents,
// in double, one IEEE basic operation at a time: no FMA (fields.cu is compiled with --fmad=false, the
// host build with -ffp-contract=off), no libm, no fast-math. Fields are float32 in and out; the only
// roundings to float32 are the explicit (float) casts below.
//
// No includes: NVRTC has no host standard headers, and nothing here needs one.
#pragma once

#if defined(__CUDACC__)
#define GPUSIM_HD __host__ __device__ __forceinline__
#else
#define GPUSIM_HD inline
#endif

namespace gpusim {

// Indices into the packed coefficient vector: the numbers of gpusim/fields/layout.py (a CPU test reads
// them back from this file and compares).
// The kernels take one float64 array ("par"): the coefficients, then bc_value[6] in face order
// (z_lo, z_hi, y_lo, y_hi, x_lo, x_hi) from BC_VALUE on; one pointer, one cached upload per substrate.
namespace coef {
enum Index : int {
    R = 0,
    R2 = 1,
    DT = 2,
    LAM = 3,
    KV = 4,
    KV_CS = 5,
    VT = 6,
    KMT = 7,
    VC = 8,
    KMC = 9,
    SEC_T = 10,
    RD = 11,
    G0 = 12,
    G1 = 13,
    SG1 = 14,
    B0 = 15,
    NCOEF = 20,
    BC_VALUE = 20,
    NPAR = 26,
};
}  // namespace coef

// Enumerators rather than constexpr variables: NVRTC warns about every unused constexpr variable.
enum BoundaryType : int { BC_ZERO_FLUX = 0, BC_DIRICHLET = 1 };
enum Flag : int { HAS_VESSEL = 1, HAS_TUMOR = 2, HAS_TCELL = 4, HAS_SRC = 8 };

// The coefficients as named values, loaded once per thread (uniform loads; they stay in registers).
// B0[m] is five scalars, not an array: a run-time index into a struct member array would move the
// whole struct to (slow) local memory on the GPU.
struct FieldCoef {
    double r, r2, dt, lam, kv, kv_cs, vt, kmt, vc, kmc, sec_t, rd, g0, g1, sg1;
    double b00, b01, b02, b03, b04;
};

// B0[m] = 1 + m*R for m = 0..4 neighbour weights, chosen by selects.
GPUSIM_HD double b0_of(const FieldCoef& cf, int m) {
    return m == 2 ? cf.b02 : m == 1 ? cf.b01 : m == 3 ? cf.b03 : m == 4 ? cf.b04 : cf.b00;
}

GPUSIM_HD FieldCoef load_coef(const double* p) {
    FieldCoef cf;
    cf.r = p[coef::R];
    cf.r2 = p[coef::R2];
    cf.dt = p[coef::DT];
    cf.lam = p[coef::LAM];
    cf.kv = p[coef::KV];
    cf.kv_cs = p[coef::KV_CS];
    cf.vt = p[coef::VT];
    cf.kmt = p[coef::KMT];
    cf.vc = p[coef::VC];
    cf.kmc = p[coef::KMC];
    cf.sec_t = p[coef::SEC_T];
    cf.rd = p[coef::RD];
    cf.g0 = p[coef::G0];
    cf.g1 = p[coef::G1];
    cf.sg1 = p[coef::SG1];
    cf.b00 = p[coef::B0 + 0];
    cf.b01 = p[coef::B0 + 1];
    cf.b02 = p[coef::B0 + 2];
    cf.b03 = p[coef::B0 + 3];
    cf.b04 = p[coef::B0 + 4];
    return cf;
}

struct Rates {
    double k;  // diagonal rate, 1/min
    double s;  // source, unit/min
};

// The per-voxel reaction of the explicit step. vf, ntf, ncf, srcv are 0.0 where their flag is off. An
// absent tumour or T-cell term is skipped rather than added as (0*Vmax)/(Km + c): that term is +-0 for
// every finite c with Km + c != 0, and the sign of a zero in k never shows (k only enters as 1 + DT*k),
// so skipping saves a float64 division per voxel with no change in any result. The source keeps its
// zero terms: they decide the sign of a zero result.
GPUSIM_HD Rates voxel_rates(const FieldCoef& cf, int flags, double c, double vf, double ntf, double ncf,
                            double srcv) {
    double k = cf.lam + vf * cf.kv;
    if (flags & HAS_TUMOR) k = k + (ntf * cf.vt) / (cf.kmt + c);
    if (flags & HAS_TCELL) k = k + (ncf * cf.vc) / (cf.kmc + c);
    double s = (vf * cf.kv_cs + ntf * cf.sec_t) + srcv;
    Rates r;
    r.k = k;
    r.s = s;
    return r;
}

struct Reaction {
    double diag;  // added to the row's diagonal: gc + DT*mm (dimensionless)
    double rhs;   // added to the row's right side: sc + DT*q (unit)
};

// What the FIRST LOD sweep (x) adds to the row of one voxel (the y and z sweeps are pure diffusion):
//   gc = G1 if vessel else G0;  sc = SG1 if vessel else 0    (selects: a vessel count of 2 is a vessel)
//   mm = (ntf*VT)/(KMT + c) + (ncf*VC)/(KMC + c);  q = ntf*SEC_T + src
//   diag = gc + DT*mm;  rhs = sc + DT*q
// c is the step's input value; vessel is false, ntf, ncf, srcv 0.0 where their flag is off. As in
// voxel_rates, an absent uptake term is skipped rather than added as (0*Vmax)/(Km + c), which is +-0
// for every finite c with Km + c != 0: diag only enters as B0[m] + diag with B0[m] >= 1, so the sign
// of a zero in mm never shows. q keeps its zero terms (they decide the sign of a zero result).
GPUSIM_HD Reaction lod_reaction_terms(const FieldCoef& cf, int flags, double c, bool vessel, double ntf, double ncf,
                                      double srcv) {
    const double gc = vessel ? cf.g1 : cf.g0;
    const double sc = vessel ? cf.sg1 : 0.0;
    double mm = 0.0;
    if (flags & HAS_TUMOR) mm = (ntf * cf.vt) / (cf.kmt + c);
    if (flags & HAS_TCELL) mm = mm + (ncf * cf.vc) / (cf.kmc + c);
    const double q = ntf * cf.sec_t + srcv;
    Reaction rx;
    rx.diag = gc + cf.dt * mm;
    rx.rhs = sc + cf.dt * q;
    return rx;
}

// The two ends of a line along one axis (axis 0 = z, 1 = y, 2 = x): Dirichlet or not, and the
// right-side term R2*bc a Dirichlet end adds.
struct LineEnds {
    bool dir_lo, dir_hi;
    double dlo, dhi;
};

GPUSIM_HD LineEnds line_ends(const FieldCoef& cf, const double* par, int dirichlet_mask, int axis) {
    LineEnds e;
    const int lo = 2 * axis, hi = 2 * axis + 1;
    e.dir_lo = (dirichlet_mask >> lo) & 1;
    e.dir_hi = (dirichlet_mask >> hi) & 1;
    e.dlo = cf.r2 * par[coef::BC_VALUE + lo];
    e.dhi = cf.r2 * par[coef::BC_VALUE + hi];
    return e;
}

// One LOD row i of an n-long line: the diagonal b and the right side d.
struct Row {
    double b, d;
};

// m_i: interior neighbours on the axis + 2 per Dirichlet face at this row.
GPUSIM_HD int row_weight(const LineEnds& e, int i, int n) {
    return int(i > 0) + int(i < n - 1) + ((i == 0 && e.dir_lo) ? 2 : 0) + ((i == n - 1 && e.dir_hi) ? 2 : 0);
}

// d plus the Dirichlet terms of row i: d + R2*bc_lo at i = 0, then + R2*bc_hi at i = n-1.
GPUSIM_HD double with_dirichlet(const LineEnds& e, int i, int n, double d) {
    if (i == 0 && e.dir_lo) d = d + e.dlo;
    if (i == n - 1 && e.dir_hi) d = d + e.dhi;
    return d;
}

// A row of the first sweep (x): b = B0[m] + diag, d = c + rhs (+ Dirichlet terms).
GPUSIM_HD Row lod_row(const FieldCoef& cf, const LineEnds& e, int i, int n, const Reaction& rx, double c) {
    Row row;
    row.b = b0_of(cf, row_weight(e, i, n)) + rx.diag;
    row.d = with_dirichlet(e, i, n, c + rx.rhs);
    return row;
}

// A row of a pure diffusion sweep (y, z): b = B0[m], d = c (+ Dirichlet terms).
GPUSIM_HD Row lod_row_diffusion(const FieldCoef& cf, const LineEnds& e, int i, int n, double c) {
    Row row;
    row.b = b0_of(cf, row_weight(e, i, n));
    row.d = with_dirichlet(e, i, n, c);
    return row;
}

// Thomas forward elimination. Row 0: w = 1/b, g = R*w, y = d*w.
GPUSIM_HD void thomas_first(double r, const Row& row, double& g, double& y) {
    const double w = 1.0 / row.b;
    g = r * w;
    y = row.d * w;
}

// Row i > 0 from the previous row's g and float64 y: w = 1/(b - R*g_prev), g = R*w,
// y = (d + R*y_prev)*w. g and y are updated in place.
GPUSIM_HD void thomas_next(double r, const Row& row, double& g, double& y) {
    const double w = 1.0 / (row.b - r * g);
    g = r * w;
    y = (row.d + r * y) * w;
}

// Back substitution x_i = float64(y32_i) + g_i*x_{i+1}.
GPUSIM_HD double thomas_back(float y32, double g, double x_next) {
    return double(y32) + g * x_next;
}

// Explicit stencil: the neighbour difference of one face direction. Interior: c_nb - c; at a
// zero-flux face 0; at a Dirichlet face 2*(bc - c), formed as d + d.
GPUSIM_HD double face_interior(double c_nb, double c) { return c_nb - c; }

GPUSIM_HD double face_boundary(bool dirichlet, double bc, double c) {
    if (!dirichlet) return 0.0;
    const double d = bc - c;
    return d + d;
}

// c_new = float32((c + DT*(RD*lap + s)) / (1 + DT*k)), lap summed x-, x+, y-, y+, z-, z+.
GPUSIM_HD float explicit_update(const FieldCoef& cf, double c, double txm, double txp, double tym, double typ,
                                double tzm, double tzp, const Rates& rt) {
    const double lap = ((((txm + txp) + tym) + typ) + tzm) + tzp;
    return float((c + cf.dt * (cf.rd * lap + rt.s)) / (1.0 + cf.dt * rt.k));
}

}  // namespace gpusim
