"""The T-cell store: a structure of arrays on a backend, and the uids that name its agents.

Columns (DESIGN.md §1, T-cell row), one array each, ``n`` live rows at the front of a buffer of
``capacity`` rows:

=============  ===========  ==================================================================
column         dtype        meaning
=============  ===========  ==================================================================
``pos_um``     float32 (3)  position (z, y, x) in µm
``dir``        float32 (3)  persistent-walk direction (z, y, x), unit length when set
``uid``        uint64       unique id (see ``uid_*`` below); seeds the agent's Philox counter
``state``      uint8        :class:`TCellState`
``lfa1``       float32      extended (high-affinity) LFA-1 fraction A
``target``     int64        global voxel index of the engaged tumour cell, -1 for none
``timer_min``  float32      minutes left of the current synapse / division delay
``kills``      uint16       tumour cells this T cell has killed
``function``   float32      remaining function 1 - E (1 = fresh, falls with each engagement)
``div_timer``  float32      minutes until a pending division (+inf: none pending)
``births``     uint16       daughters this T cell has had (names the next daughter's uid)
``voxel``      int64        scratch: the agent's voxel at this step's sort
``hit``        uint8        scratch: delivered a hit this step
``flags``      uint8        scratch: what happened this step (``rules.FL_*`` bits)
``prop``       int64        scratch: the voxel a move or division proposes, -1 for none
``prio``       uint32       scratch: the proposal's hashed priority
``pos_new``    float32 (3)  scratch: the position a move proposes
=============  ===========  ==================================================================

The scratch columns are rewritten every step before they are read; they are part of the store so
that the sort carries them along and every rule reads them at the agent's row.

**uids (DESIGN.md §2).** A uid is a pure function of where the agent came from, never of the
order agents are created in, so a run gives the same uids at any thread count or rank layout:
daughters from (parent uid, birth count), recruited cells from (vessel voxel, step, k), infused
cells from (event index, i), initial cells from their index. Each mixes its inputs as a Philox4x32-10 counter
``(a, b, c, KIND)`` under the fixed key ``key(0, STREAM_UIDS)`` (uids do not depend on the run seed)
and keeps the first two output words as ``w0 | w1 << 32``. The kind tag in the last counter word
makes the three kinds' counters disjoint, and Philox is a bijection of the counter for a fixed
key, so distinct origins give distinct 128-bit blocks; keeping 64 bits leaves a collision chance of
about n²/2⁶⁵ (3e-8 for a million agents), which :func:`check_unique` turns into an error, never a
silent merge.
"""

from __future__ import annotations

from enum import IntEnum

import numba
import numpy as np
from numba.extending import register_jitable

from gpusim.rng import STREAM_SETUP, key, philox4x32

#: Philox stream of uid derivation (next after the streams of gpusim.rng).
STREAM_UIDS = STREAM_SETUP + 1
#: Kind tags, the last counter word: they keep the three origins' counters disjoint.
UID_KIND_DAUGHTER = 1
UID_KIND_RECRUITED = 2
UID_KIND_INFUSED = 3
UID_KIND_INITIAL = 4

_U32_MAX = 2**32 - 1
_S32 = np.uint64(32)


class TCellState(IntEnum):
    """Life state of a T cell (the ``state`` column)."""

    FREE = 0
    ENGAGED = 1
    DEAD = 2


#: name -> (dtype, per-agent shape, fill value of new rows when not given)
COLUMNS = {
    "pos_um": (np.float32, (3,), None),
    "dir": (np.float32, (3,), 0.0),
    "uid": (np.uint64, (), None),
    "state": (np.uint8, (), int(TCellState.FREE)),
    "lfa1": (np.float32, (), 0.0),
    "target": (np.int64, (), -1),
    "timer_min": (np.float32, (), 0.0),
    "kills": (np.uint16, (), 0),
    "function": (np.float32, (), 1.0),
    "div_timer": (np.float32, (), np.inf),
    "births": (np.uint16, (), 0),
    "voxel": (np.int64, (), -1),
    "hit": (np.uint8, (), 0),
    "flags": (np.uint8, (), 0),
    "prop": (np.int64, (), -1),
    "prio": (np.uint32, (), 0),
    "pos_new": (np.float32, (3,), 0.0),
}
#: the columns that carry state from step to step (the rest are per-step scratch)
STATE_COLUMNS = ("pos_um", "dir", "uid", "state", "lfa1", "target", "timer_min", "kills", "function",
                 "div_timer", "births")
#: the columns that permute and compact carry: the state and the sort's voxel column
CARRIED_COLUMNS = STATE_COLUMNS + ("voxel",)

#: snapshot name -> the store column it is read from (``Simulation.tcell_snapshot``; the run store's
#: ``tcells/`` and ``tracks/`` write a subset of them)
SNAPSHOT_COLUMNS = {"uid": "uid", "position_um": "pos_um", "state": "state", "lfa1": "lfa1", "kills": "kills",
                    "function": "function", "target": "target"}


def snapshot(columns: dict, names=None) -> dict:
    """The snapshot of host ``columns`` (store names, any rows): the living T cells (state not DEAD) in
    uid order, as the snapshot ``names`` (default all of :data:`SNAPSHOT_COLUMNS`); ``target`` is the
    engaged cells' target voxel, -1 for the others (a free cell's column keeps a stale value). The one
    rule of a snapshot, whichever process or rank holds the rows."""
    names = tuple(SNAPSHOT_COLUMNS) if names is None else tuple(names)
    state = np.asarray(columns["state"])
    keep = np.flatnonzero(state != np.uint8(TCellState.DEAD))
    keep = keep[np.argsort(np.asarray(columns["uid"])[keep], kind="stable")]
    out = {}
    for name in names:
        values = np.asarray(columns[SNAPSHOT_COLUMNS[name]])
        if name == "target":
            values = np.where(state == np.uint8(TCellState.ENGAGED), values, -1)
        out[name] = values[keep]
    return out


def bytes_per_tcell(columns=None) -> int:
    """Bytes one T cell occupies in the store: the sum of its column sizes (all columns: 95; the
    step-to-step state alone, ``STATE_COLUMNS``: 61)."""
    names = COLUMNS if columns is None else columns
    return sum(np.dtype(COLUMNS[c][0]).itemsize * int(np.prod(COLUMNS[c][1], dtype=np.int64)) for c in names)


def check_column_names(columns, what: str) -> None:
    """``columns`` (names) must be known T-cell columns and include ``pos_um`` and ``uid``; else a
    ``ValueError`` naming ``what`` needs them."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown T-cell column(s) {sorted(unknown)}; known: {list(COLUMNS)}")
    for name in ("pos_um", "uid"):
        if name not in columns:
            raise ValueError(f"{what} needs the {name!r} column")


class TCellStore:
    """T cells as a structure of arrays on ``backend`` (``backend.xp`` is numpy or cupy).

    ``store.<column>`` is a view of the ``n`` live rows; writes through it change the store. The
    buffers grow ×2 (with a copy) when an append does not fit, so appends are amortised O(1).
    """

    def __init__(self, backend, capacity: int = 1024):
        self.backend = backend
        self.n = 0
        self.removed = 0  # DEAD agents the last sort dropped (spatial_index.sort_by_voxel_uid)
        self._buf = {}
        self._spare = {}  # permute's double buffers, allocated on first use
        self._allocate(max(int(capacity), 1))

    def _allocate(self, capacity: int) -> None:
        xp = self.backend.xp
        new = {name: xp.empty((capacity,) + shape, dtype=dt)
               for name, (dt, shape, _) in COLUMNS.items()}
        for name, old in self._buf.items():
            new[name][: self.n] = old[: self.n]
        self._buf = new
        self._spare = {}
        self.capacity = capacity

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):
        # only reached for names that are not ordinary attributes: the column views
        if name in COLUMNS and "_buf" in self.__dict__:
            return self._buf[name][: self.n]
        raise AttributeError(f"TCellStore has no attribute {name!r}")

    def append(self, **columns) -> slice:
        """Add agents; ``pos_um`` (m, 3) and ``uid`` (m,) are required, other columns default
        (``dir`` 0, FREE, ``lfa1`` 0, ``target`` -1, ``timer_min`` 0, ``kills`` 0, ``function`` 1).

        Returns the slice of the new rows. Unknown or mis-shaped columns are a ``ValueError``.
        """
        check_column_names(columns, "TCellStore.append")
        xp = self.backend.xp
        m = int(xp.asarray(columns["uid"]).reshape(-1).shape[0])
        if self.n + m > self.capacity:
            cap = self.capacity
            while cap < self.n + m:
                cap *= 2
            self._allocate(cap)
        rows = slice(self.n, self.n + m)
        for name, (dt, shape, fill) in COLUMNS.items():
            if name in columns:
                values = xp.asarray(columns[name], dtype=dt)
                if values.shape not in ((m,) + shape, shape, ()):
                    raise ValueError(f"column {name!r} has shape {values.shape}; "
                                     f"expected {(m,) + shape}")
                self._buf[name][rows] = values
            else:
                self._buf[name][rows] = fill
        self.n += m
        return rows

    def permute(self, order) -> None:
        """Reorder the live rows: row i becomes old row ``order[i]`` in every carried column
        (``CARRIED_COLUMNS``; the per-step scratch columns are rewritten before they are read).

        A parallel gather into a spare buffer that then swaps with the column (no copy back): one
        read and one write per byte carried.
        """
        gather = self.backend.kernels("agents").gather_rows
        for name in CARRIED_COLUMNS:
            buf = self._buf[name]
            spare = self._spare.get(name)
            if spare is None or spare.shape != buf.shape:
                spare = self.backend.xp.empty_like(buf)
            gather(order, buf[: self.n], spare[: self.n])
            self._buf[name], self._spare[name] = spare, buf

    def compact(self) -> int:
        """Remove DEAD agents, keeping the survivors' order (stable); returns how many were removed.

        Boolean-mask indexing keeps the order of the selected rows on numpy and cupy alike. Only the
        carried columns move (``CARRIED_COLUMNS``); nothing moves when no agent is DEAD.
        """
        keep = self._buf["state"][: self.n] != np.uint8(TCellState.DEAD)
        m = int(keep.sum())
        if m == self.n:
            return 0
        for name in CARRIED_COLUMNS:
            buf = self._buf[name]
            buf[:m] = buf[: self.n][keep]
        removed = self.n - m
        self.n = m
        return removed

    def to_host(self) -> dict:
        """NumPy copies of the live rows of every column."""
        return {name: self.backend.to_host(self._buf[name][: self.n]) for name in COLUMNS}


# ------------------------------------------------------------------------------------------------
# uids
# ------------------------------------------------------------------------------------------------
@register_jitable
def uid_from_counter(c0, c1, c2, kind):
    """uint64 uid of origin (c0, c1, c2, kind): Philox words w0 | w1 << 32 under the uid key.

    Plain Python, njit and cuda.jit; each argument must lie in [0, 2**32).
    """
    k0, k1 = key(0, STREAM_UIDS)
    w0, w1, _w2, _w3 = philox4x32(c0, c1, c2, kind, k0, k1)
    return np.uint64(w0) | (np.uint64(w1) << _S32)


@numba.njit(cache=True)
def _uids_vec(c0, c1, c2, kind):
    out = np.empty(c0.shape[0], dtype=np.uint64)
    for i in range(c0.shape[0]):
        out[i] = uid_from_counter(c0[i], c1[i], c2[i], kind)
    return out


def _check_u32(name, a):
    if a.size and (a.min() < 0 or a.max() > _U32_MAX):
        raise ValueError(f"{name} must lie in [0, 2**32); got values in [{a.min()}, {a.max()}]")


def _derive(kind, named_words):
    """Scalars -> a Python int; any array argument -> a host uint64 array, broadcast shape."""
    words = [np.asarray(v) for _, v in named_words]
    # int64 for signed input, so that a negative value is reported rather than wrapped
    words = [w if w.dtype == np.uint64 else w.astype(np.int64) for w in words]
    arrays = np.broadcast_arrays(*words)
    for (name, _), a in zip(named_words, arrays):
        _check_u32(name, a)
    flat = [np.ascontiguousarray(a.reshape(-1), dtype=np.uint64) for a in arrays]
    if all(w.ndim == 0 for w in words):
        return int(uid_from_counter(flat[0][0], flat[1][0], flat[2][0], kind))
    return _uids_vec(flat[0], flat[1], flat[2], np.uint64(kind)).reshape(arrays[0].shape)


def _split_uid(parent_uid):
    u = np.asarray(parent_uid, dtype=np.uint64)
    return u & np.uint64(_U32_MAX), u >> _S32


def uid_daughter(parent_uid, birth_count):
    """uid of the ``birth_count``-th daughter (0, 1, ...) of the T cell ``parent_uid``."""
    lo, hi = _split_uid(parent_uid)
    return _derive(UID_KIND_DAUGHTER, [("parent_uid low word", lo), ("parent_uid high word", hi),
                                       ("birth_count", birth_count)])


def uid_recruited(voxel, step, k):
    """uid of the ``k``-th T cell recruited at global vessel voxel ``voxel`` in step ``step``."""
    return _derive(UID_KIND_RECRUITED, [("voxel", voxel), ("step", step), ("k", k)])


def uid_infused(event_index, i):
    """uid of the ``i``-th T cell of therapy event occurrence ``event_index``."""
    return _derive(UID_KIND_INFUSED, [("event_index", event_index), ("i", i), ("zero", 0)])


def uid_initial(i):
    """uid of the ``i``-th T cell placed at t = 0."""
    return _derive(UID_KIND_INITIAL, [("i", i), ("zero", 0), ("zero", 0)])


def check_unique(uids) -> None:
    """Raise ``ValueError`` naming a duplicated uid (sort, then compare neighbours).

    Uses array methods only, so it runs on numpy and cupy arrays alike.
    """
    s = uids.reshape(-1).copy()
    s.sort()
    dup = (s[1:] == s[:-1]).nonzero()[0]
    if dup.shape[0]:
        u = int(s[int(dup[0])])
        raise ValueError(f"T-cell uid collision: uid {u} (0x{u:016x}) occurs more than once "
                         f"({int(dup.shape[0])} duplicate(s) among {s.shape[0]} uids)")
