"""The packed per-substrate coefficient vector shared by every field kernel (CPU, CUDA C, reference).

Fields are stored as float32; all arithmetic is float64. Each substrate's constants are computed once
on the host (``fields.coefficients``) and handed to the kernels as one ``float64[NCOEF]`` array, so the
CPU twin, the CUDA C kernel and the NumPy reference read identical constants and do the same arithmetic
in the same order (IEEE basic operations only, no FMA contraction), rounding to float32 only on store.

Why float64 arithmetic: the Thomas recurrence's coefficients (``w``, ``g`` below) do not depend on the
data, so rounding them to float32 biases every step the same way; measured, the total of a zero-flux
field then drifts by 4e-7 per step (4e-4 over 1000 steps). In float64 the drift is below 1e-12 and the
float32 store rounding, which is unbiased, leaves mass conserved to ~1e-7 over 1000 steps.

Per-voxel reaction of the explicit and steady solvers (every backend evaluates it left to right)::

    vf, ntf, ncf = float64(vessel), float64(n_tumor), float64(n_tcell);  c = float64(c32)
    k = ((LAM + vf*KV) + (ntf*VT)/(KMT + c)) + (ncf*VC)/(KMC + c)      # 1/min, on the diagonal
    s = (vf*KV_CS + ntf*SEC_T) + src                                   # unit/min, on the right side

Michaelis-Menten uptake enters as the rate ``Vmax/(Km + c_old)`` on the diagonal, with ``c_old`` the
value before the sweep (or explicit sub-step): positivity-preserving, and exact for first-order uptake.

LOD field step (length ``dt_f`` = DT): sweep x, then y, then z. Only the FIRST sweep (x) carries the
reaction and the sources, with the full ``dt_f``; the y and z sweeps are pure diffusion. Why: a source
split into thirds, one per sweep, leaves its last third spread along z only, and near a point-like
source (an implant, a vessel) the steady field then carries a streak along z (measured: +50 % along z
and -18 % along x three voxels from a 3x3x3 depot at Mg's n_sub = 25). Injected before the first
sweep, every increment is smoothed along all three axes and the error is the same on every axis.
Constant linear rates are exponentially fitted (G0, G1, SG1 below), so a uniform field relaxes at
exactly ``exp(-(decay + k_v)*t)`` to exactly ``k_v*serum/(decay + k_v)``; Michaelis-Menten uptake
is backward Euler with the rate ``Vmax/(Km + c_old)`` on the diagonal (positivity-preserving)::

    first sweep, per voxel (c = float64 of the step's input value):
      gc = G1 if vessel else G0;   sc = SG1 if vessel else 0.0          (a select, not arithmetic)
      mm = (ntf*VT)/(KMT + c) + (ncf*VC)/(KMC + c)
      q  = ntf*SEC_T + src
      b_i = B0[m_i] + (gc + DT*mm);   d_i = c + (sc + DT*q)
    y and z sweeps:  b_i = B0[m_i];   d_i = c
    every sweep, at a Dirichlet end:  d_i = d_i + R2*bc

One line ``c[0..n-1]`` (``m_i`` = interior neighbours on the axis + 2 per Dirichlet face)::

    i = 0:  w = 1/b_0;                 g_0 = R*w;  y_0 = d_0*w
    i > 0:  w = 1/(b_i - R*g_{i-1});   g_i = R*w;  y_i = (d_i + R*y_{i-1})*w      (y in float64)
    store y32_i = float32(y_i); keep g_i in float64 scratch
    x = y_{n-1} (the float64 value);  store float32(x) at n-1
    i = n-2 .. 0:  x = float64(y32_i) + g_i*x;  store float32(x)

Explicit sub-step (``t`` = neighbour difference ``c_nb - c``, 0 at a zero-flux face, ``2*(bc - c)`` at a
Dirichlet face, computed as ``d + d`` with ``d = bc - c``)::

    lap = ((((t_xm + t_xp) + t_ym) + t_yp) + t_zm) + t_zp
    c_new = float32((c + DT*(RD*lap + s)) / (1 + DT*k))

Boundaries: face order ``(z_lo, z_hi, y_lo, y_hi, x_lo, x_hi)``; ``BC_ZERO_FLUX`` or ``BC_DIRICHLET``.
A Dirichlet value holds on the face itself (half a voxel beyond the last centre): the ghost value is
``2*bc - c``, so the face adds ``2R`` to the diagonal and ``2R*bc`` to the right side.
"""

R = 0  # D*dt_f/dx^2 for one LOD field step (dimensionless)
R2 = 1  # R + R, the Dirichlet-face right-side factor
DT = 2  # the field step: dt_f (LOD) or the explicit sub-step dt_e (min)
LAM = 3  # decay_per_min
KV = 4  # vessel_supply_per_min at a vessel voxel
KV_CS = 5  # KV * current serum value (unit/min)
VT = 6  # tumour-cell Vmax scaled to the voxel: vmax_per_min * V_cell/V_voxel (unit/min)
KMT = 7  # tumour Km (unit), > 0
VC = 8  # T-cell Vmax scaled to the voxel (unit/min)
KMC = 9  # T-cell Km (unit), > 0
SEC_T = 10  # tumour secretion per voxel (unit/min)
RD = 11  # D/dx^2 (1/min), explicit stencil and steady solver
G0 = 12  # expm1(LAM*DT): exponentially fitted decay on the LOD diagonal, non-vessel voxel
G1 = 13  # expm1((LAM + KV)*DT): the same at a vessel voxel
SG1 = 14  # KV_CS*G1/(LAM + KV) (0 when LAM + KV == 0): fitted vessel supply on the right side
B0 = 15  # B0 + m: 1 + m*R for m = 0..4 neighbour weights on an LOD row's diagonal (m = 2 interior)
NCOEF = 20

BC_ZERO_FLUX = 0
BC_DIRICHLET = 1

# flags: which per-voxel arrays a kernel must read (the others contribute exact zeros)
HAS_VESSEL = 1
HAS_TUMOR = 2
HAS_TCELL = 4
HAS_SRC = 8

FACES = ("z_lo", "z_hi", "y_lo", "y_hi", "x_lo", "x_hi")
