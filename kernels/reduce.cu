// Fixed-order float64 reductions (twin of gpusim/reduce.py): the order is part of the definition.
// Pass 1: one thread per (z, y) x-line sums it from x = 0 (adjacent threads read rows nx apart; the
// rows stream through L2, and this runs once per recorded step, not per field step).
// Pass 2: one thread per z-plane sums its line sums from y = 0. The host sums planes from z = 0.
// Same float64 additions in the same order as the numba CPU twin, so the totals are bitwise equal.

extern "C" __global__ void line_sums(const float* __restrict__ a, double* __restrict__ out,
                                     long long nlines, int nx) {
    long long l = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= nlines) return;
    const float* p = a + l * nx;
    double line = 0.0;
    for (int x = 0; x < nx; ++x) line += (double)p[x];
    out[l] = line;
}

extern "C" __global__ void plane_sums(const double* __restrict__ lines, double* __restrict__ out,
                                      int nz, int ny) {
    int z = blockIdx.x * blockDim.x + threadIdx.x;
    if (z >= nz) return;
    double plane = 0.0;
    for (int y = 0; y < ny; ++y) plane += lines[(long long)z * ny + y];
    out[z] = plane;
}
