"""The partitioned tridiagonal algorithm of ``parallel.partitioned`` on plain arrays, one line at a time
or many (PaScaL_TDMA style: Kim, Kang, Ha & Seo, Comput. Phys. Commun. 260, 107722, 2021).

A segment ``j = 0..n-1`` of a line's rows ``a_j x_{j-1} + b_j x_j + c_j x_{j+1} = d_j`` is eliminated
(``eliminate``) to rows ``A_j x_0 + x_j + C_j x_{n-1} = D_j``; the first and last rows of every segment
form a tridiagonal system in the segment ends (``reduced_system``, ``reduced_solve``,
``segment_ends``), and each segment back-substitutes (``substitute``). ``solve_split`` runs the three
on one process for any cut of a line (the test of the algorithm); the numba row helpers (``_pivot``,
``_down_a``, ...) are the single definition of each row operation, called by the sweep kernels in
``parallel.partitioned`` as well. Arithmetic in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

__all__ = ["eliminate", "reduced_solve", "reduced_system", "segment_ends", "solve_split", "substitute"]


# -- one row of the segment elimination (float64 scalars); every path below calls these ----------------
@register_jitable
def _pivot(first, a, b, c_prev):
    """Inverse pivot of a row in the downward pass: ``1/b`` on the segment's rows 0 and 1 (not
    eliminated), else ``1/(b - a*C_{j-1})``."""
    return 1.0 / b if first else 1.0 / (b - a * c_prev)


@register_jitable
def _down_a(first, a, r, a_prev):
    """``A_j`` after the downward pass: the coupling to the unknown before row 0 (row 0), to ``x_0``."""
    return a * r if first else (-a * a_prev) * r


@register_jitable
def _down_d(first, a, d, r, d_prev):
    """``D_j`` after the downward pass."""
    return d * r if first else (d - a * d_prev) * r


@register_jitable
def _up(c, v, v_next):
    """The upward pass of ``A_j`` or ``D_j``: ``v - C_j*v_{j+1}`` (``C_j``'s own is ``-C_j*C_{j+1}``)."""
    return v - c * v_next


@register_jitable
def _top_pivot(c0, a1):
    """Row 0's pivot after it is reduced with row 1."""
    return 1.0 / (1.0 - c0 * a1)


@register_jitable
def _value(a, c, d, x_first, x_last):
    """``x_j = D_j - A_j x_0 - C_j x_{n-1}``."""
    return (d - a * x_first) - c * x_last


@register_jitable
def _down_row(j, a, c, A, C, D, l0, nl):
    """Downward pass of row ``j`` of lines ``l0:l0+nl`` of (n, L) float64 arrays: on entry ``C[j]``
    holds the diagonals and ``D[j]`` the right sides."""
    first, jp = j < 2, max(j - 1, 0)
    lu = np.uint64(l0)  # unsigned offsets: numba adds no negative-index fix-up, the loops vectorise
    for k in range(nl):
        l = lu + np.uint64(k)
        r = _pivot(first, a, C[j, l], C[jp, l])
        A[j, l] = _down_a(first, a, r, A[jp, l])
        D[j, l] = _down_d(first, a, D[j, l], r, D[jp, l])
        C[j, l] = c * r


@register_jitable
def _up_row(j, A, C, D, l0, nl):
    """Upward pass of row ``j`` (``n-3 >= j >= 1``)."""
    lu = np.uint64(l0)
    for k in range(nl):
        l = lu + np.uint64(k)
        c = C[j, l]
        A[j, l] = _up(c, A[j, l], A[j + 1, l])
        D[j, l] = _up(c, D[j, l], D[j + 1, l])
        C[j, l] = -c * C[j + 1, l]


@register_jitable
def _top_row(A, C, D, l0, nl):
    """Row 0 reduced with row 1 (segments of 3 rows or more)."""
    lu = np.uint64(l0)
    for k in range(nl):
        l = lu + np.uint64(k)
        c = C[0, l]
        r = _top_pivot(c, A[1, l])
        A[0, l] = A[0, l] * r
        D[0, l] = _up(c, D[0, l], D[1, l]) * r
        C[0, l] = (-c * C[1, l]) * r


@register_jitable
def _up_lines(A, C, D, l0, nl):
    """The upward pass and row 0's reduction of lines ``l0:l0+nl`` after their downward pass."""
    n = D.shape[0]
    for j in range(n - 3, 0, -1):
        _up_row(j, A, C, D, l0, nl)
    if n >= 3:
        _top_row(A, C, D, l0, nl)


# -- the algorithm as plain functions (no MPI): what the sweeps do, testable on one process ---------
@njit(cache=True)
def eliminate(arow, crow, b, d):
    """``(A, C, D)`` (each (n, L) float64) of the segment rows ``arow[j] x_{j-1} + b[j, l] x_j + crow[j]
    x_{j+1} = d[j, l]`` of L lines: every row reads ``A_j x_0 + x_j + C_j x_{n-1} = D_j``."""
    n, nl = d.shape
    A, C, D = np.empty((n, nl)), b.copy(), d.copy()
    for j in range(n):
        _down_row(j, arow[j], crow[j], A, C, D, 0, nl)
    _up_lines(A, C, D, 0, nl)
    return A, C, D


def reduced_system(lengths, rows):
    """``(alpha, gamma, delta)`` (each (M, Lc)) of the reduced system of lines cut into segments of
    ``lengths`` (in line order): ``rows[q]`` is segment q's ``(A_0, C_0, D_0, A_{n-1}, C_{n-1},
    D_{n-1})``, a (6, Lc) array; a 1-voxel segment gives one row, the others two."""
    m = sum(1 if n == 1 else 2 for n in lengths)
    out = np.empty((3, m, rows[0].shape[1]))
    k = 0
    for n, r in zip(lengths, rows):
        out[:, k] = r[0:3]
        k += 1
        if n >= 2:
            out[:, k] = r[3:6]
            k += 1
    return out[0], out[1], out[2]


@njit(cache=True)
def reduced_solve(alpha, gamma, delta):
    """The ends ``u`` (M, Lc) with ``alpha[k] u[k-1] + u[k] + gamma[k] u[k+1] = delta[k]`` per line
    (Thomas; unit diagonal), the lines in lockstep."""
    m, nl = delta.shape
    u, g = np.empty((m, nl)), np.empty((m, nl))
    for l in range(nl):
        g[0, l] = gamma[0, l]
        u[0, l] = delta[0, l]
    for k in range(1, m):
        for l in range(nl):
            w = 1.0 / (1.0 - alpha[k, l] * g[k - 1, l])
            g[k, l] = gamma[k, l] * w
            u[k, l] = (delta[k, l] - alpha[k, l] * u[k - 1, l]) * w
    for k in range(m - 2, -1, -1):
        for l in range(nl):
            u[k, l] = u[k, l] - g[k, l] * u[k + 1, l]
    return u


def segment_ends(lengths, u):
    """Per segment, its ``(x_0, x_{n-1})`` as a (2, Lc) array from the reduced solution ``u``."""
    out, k = [], 0
    for n in lengths:
        last = k + (1 if n >= 2 else 0)
        out.append(np.stack((u[k], u[last])))
        k = last + 1
    return out


@njit(cache=True)
def substitute(A, C, D, x_first, x_last):
    """The segment's values (n, L) float64 from its reduced form and its solved ends."""
    n, nl = D.shape
    x = np.empty((n, nl))
    for l in range(nl):
        x[0, l], x[n - 1, l] = x_first[l], x_last[l]
        for j in range(1, n - 1):
            x[j, l] = _value(A[j, l], C[j, l], D[j, l], x_first[l], x_last[l])
    return x


def solve_split(arow, crow, b, d, lengths):
    """The lines ``(arow, b, crow; d)`` ((n,) per-row off-diagonals, (n, L) diagonals and right sides)
    solved through segments of ``lengths``, all on this process: the partitioned algorithm without MPI."""
    starts = np.cumsum([0] + list(lengths))
    parts = [eliminate(arow[s:e].copy(), crow[s:e].copy(), b[s:e].copy(), d[s:e].copy())
             for s, e in zip(starts[:-1], starts[1:])]
    rows = [np.stack((A[0], C[0], D[0], A[-1], C[-1], D[-1])) for A, C, D in parts]
    ends = segment_ends(lengths, reduced_solve(*reduced_system(lengths, rows)))
    return np.concatenate([substitute(A, C, D, e[0], e[1]) for (A, C, D), e in zip(parts, ends)])
