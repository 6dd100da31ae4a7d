"""Pure-NumPy float32 reference of the field kernels: the executable specification.

Slow but plain: every operation is a float64 NumPy ufunc (IEEE, correctly rounded, no FMA), in the order
``fields.layout`` documents; fields are float32 in and out. The numba CPU kernels and the CUDA C kernels
must equal it bitwise. Arrays are ``(z, y, x)``; counts are uint8; ``src`` is float32 or ``None``;
``coef`` and ``bc_value`` are float64, ``bc_type`` int32.
"""

from __future__ import annotations

import numpy as np

from . import layout as L

F32 = np.float32
F64 = np.float64
ONE = F64(1.0)


def voxel_rates(c, coef, vessel=None, n_tumor=None, n_tcell=None, src=None):
    """Return ``(k, s)`` in float64: the diagonal rate (1/min) and the source (unit/min) of each voxel."""
    c = c.astype(F64)
    zero = np.zeros_like(c)
    vf = zero if vessel is None else vessel.astype(F64)
    ntf = zero if n_tumor is None else n_tumor.astype(F64)
    ncf = zero if n_tcell is None else n_tcell.astype(F64)
    k = coef[L.LAM] + vf * coef[L.KV]
    k = k + (ntf * coef[L.VT]) / (coef[L.KMT] + c)
    k = k + (ncf * coef[L.VC]) / (coef[L.KMC] + c)
    s = vf * coef[L.KV_CS] + ntf * coef[L.SEC_T]
    s = s + (zero if src is None else src.astype(F64))
    return k, s


def lod_reaction_terms(c, coef, vessel=None, n_tumor=None, n_tcell=None, src=None):
    """``(diag, rhs)`` the first LOD sweep adds to each row: ``gc + DT*mm`` and ``sc + DT*q`` (float64)."""
    c = c.astype(F64)
    zero = np.zeros_like(c)
    vessel_mask = np.zeros(c.shape, bool) if vessel is None else vessel != 0
    ntf = zero if n_tumor is None else n_tumor.astype(F64)
    ncf = zero if n_tcell is None else n_tcell.astype(F64)
    gc = np.where(vessel_mask, coef[L.G1], coef[L.G0])
    sc = np.where(vessel_mask, coef[L.SG1], F64(0.0))
    mm = (ntf * coef[L.VT]) / (coef[L.KMT] + c) + (ncf * coef[L.VC]) / (coef[L.KMC] + c)
    q = ntf * coef[L.SEC_T] + (zero if src is None else src.astype(F64))
    return gc + coef[L.DT] * mm, sc + coef[L.DT] * q


def _sweep(c, axis, coef, bc_type, bc_value, diag=None, rhs=None):
    """Implicit 1D solve along ``axis`` of every line (Thomas algorithm), returning the new field.

    ``diag``/``rhs`` (float64, per voxel) are the reaction terms of the first sweep; None for a pure
    diffusion sweep."""
    lo, hi = 2 * axis, 2 * axis + 1  # face order z_lo, z_hi, y_lo, y_hi, x_lo, x_hi
    cl = np.moveaxis(c, axis, -1)
    kl = None if diag is None else np.moveaxis(diag, axis, -1)
    sl = None if rhs is None else np.moveaxis(rhs, axis, -1)
    n = cl.shape[-1]
    R = coef[L.R]
    g = np.empty(cl.shape, F64)
    y32 = np.empty(cl.shape, F32)
    for i in range(n):
        m = (i > 0) + (i < n - 1)
        d = cl[..., i].astype(F64)
        if sl is not None:
            d = d + sl[..., i]
        if i == 0 and bc_type[lo] == L.BC_DIRICHLET:
            m += 2
            d = d + coef[L.R2] * bc_value[lo]
        if i == n - 1 and bc_type[hi] == L.BC_DIRICHLET:
            m += 2
            d = d + coef[L.R2] * bc_value[hi]
        b = np.full(d.shape, coef[L.B0 + m]) if kl is None else coef[L.B0 + m] + kl[..., i]
        if i == 0:
            w = ONE / b
            y = d * w
        else:
            w = ONE / (b - R * g[..., i - 1])
            y = (d + R * y) * w
        g[..., i] = R * w
        y32[..., i] = y.astype(F32)
    out = np.empty(cl.shape, F32)
    x = y
    out[..., n - 1] = x.astype(F32)
    for i in range(n - 2, -1, -1):
        x = y32[..., i].astype(F64) + g[..., i] * x
        out[..., i] = x.astype(F32)
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


def lod_step(c, coef, bc_type, bc_value, vessel=None, n_tumor=None, n_tcell=None, src=None):
    """One LOD field step of length dt_f: x sweep with the reaction and sources, then y and z diffusion."""
    c = np.asarray(c, dtype=F32)
    diag, rhs = lod_reaction_terms(c, coef, vessel, n_tumor, n_tcell, src)
    c = _sweep(c, 2, coef, bc_type, bc_value, diag, rhs)
    c = _sweep(c, 1, coef, bc_type, bc_value)
    return _sweep(c, 0, coef, bc_type, bc_value)


def _face_terms(c, axis, bc_type, bc_value):
    """(minus-side, plus-side) neighbour differences c_nb - c along ``axis`` with the ghost rules."""
    lo, hi = 2 * axis, 2 * axis + 1
    cl = np.moveaxis(c, axis, -1).astype(F64)
    tm = np.zeros_like(cl)
    tp = np.zeros_like(cl)
    tm[..., 1:] = cl[..., :-1] - cl[..., 1:]
    tp[..., :-1] = cl[..., 1:] - cl[..., :-1]
    if bc_type[lo] == L.BC_DIRICHLET:
        d = bc_value[lo] - cl[..., 0]
        tm[..., 0] = d + d
    if bc_type[hi] == L.BC_DIRICHLET:
        d = bc_value[hi] - cl[..., -1]
        tp[..., -1] = d + d
    return np.moveaxis(tm, -1, axis), np.moveaxis(tp, -1, axis)


def explicit_step(c, coef, bc_type, bc_value, vessel=None, n_tumor=None, n_tcell=None, src=None):
    """One explicit sub-step of length DT: 7-point diffusion, reaction implicit on the diagonal."""
    c = np.asarray(c, dtype=F32)
    k, s = voxel_rates(c, coef, vessel, n_tumor, n_tcell, src)
    xm, xp = _face_terms(c, 2, bc_type, bc_value)
    ym, yp = _face_terms(c, 1, bc_type, bc_value)
    zm, zp = _face_terms(c, 0, bc_type, bc_value)
    lap = ((((xm + xp) + ym) + yp) + zm) + zp
    dt = coef[L.DT]
    return ((c.astype(F64) + dt * (coef[L.RD] * lap + s)) / (ONE + dt * k)).astype(F32)
