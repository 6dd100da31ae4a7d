// The row operations of the partitioned tridiagonal algorithm (PaScaL_TDMA style), twins of the numba
// helpers in gpusim/parallel/tdma.py (_pivot, _down_a, _down_d, _up, _top_pivot, _value): the same
// float64 operations in the same order, one IEEE basic operation at a time (no FMA: the kernels are
// compiled with --fmad=false, the host build with -ffp-contract=off), so a GPU rank's sweep equals a
// CPU rank's bit for bit. Used by partitioned.cu.
#pragma once

#include "field_math.cuh"

namespace gpusim {

// Inverse pivot of a row in the downward pass: 1/b on a segment's rows 0 and 1, else 1/(b - a*C_{j-1}).
GPUSIM_HD double tdma_pivot(bool first, double a, double b, double c_prev) {
    return first ? 1.0 / b : 1.0 / (b - a * c_prev);
}

// A_j after the downward pass.
GPUSIM_HD double tdma_down_a(bool first, double a, double r, double a_prev) {
    return first ? a * r : (-a * a_prev) * r;
}

// D_j after the downward pass.
GPUSIM_HD double tdma_down_d(bool first, double a, double d, double r, double d_prev) {
    return first ? d * r : (d - a * d_prev) * r;
}

// The upward pass of A_j or D_j: v - C_j*v_{j+1}.
GPUSIM_HD double tdma_up(double c, double v, double v_next) { return v - c * v_next; }

// Row 0's pivot after it is reduced with row 1.
GPUSIM_HD double tdma_top_pivot(double c0, double a1) { return 1.0 / (1.0 - c0 * a1); }

// x_j = D_j - A_j x_0 - C_j x_{n-1}.
GPUSIM_HD double tdma_value(double a, double c, double d, double x_first, double x_last) {
    return (d - a * x_first) - c * x_last;
}

}  // namespace gpusim
