// Exact fixed-point sums (twin of gpusim/reduce.py): each value times 2^k (exact in double), rounded to
// the nearest integer with ties to even (__double2ll_rn, as numpy's rint), added in int64. Integer
// addition is associative, so the total is the CPU twin's whatever the order of the threads.
// One thread per (z, y) x-line (adjacent threads read rows nx apart; the rows stream through L2, and this
// runs once per recorded step, not per field step); CuPy sums the line totals (int64, exact).

extern "C" __global__ void line_fixed_sums(const float* __restrict__ a, long long* __restrict__ out,
                                           long long nlines, int nx, double scale) {
    long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= nlines) return;
    const float* p = a + l * nx;
    long long line = 0;
    for (int x = 0; x < nx; ++x) line += __double2ll_rn(__dmul_rn((double)p[x], scale));
    out[l] = line;
}
