"""Reading a run store: ``open_run(path)`` -> :class:`Run` (lazy; only committed frames are shown).

    run = open_run("run.zarr")
    run.timeseries.tail()                          # pandas DataFrame, one row per step
    run.fields["mg"].sel(time_min=60.0)            # xarray over dask, dims t z y x, coords in µm / min
    run.tumor.isel(t=-1).values                    # uint8 lattice codes (EMPTY/LIVE/DEAD/NECROTIC)
    run.tcells(0)                                  # DataFrame: z_um, y_um, x_um, uid, state, lfa1, kills, time_min
    run.tracks                                     # DataFrame: time_min, uid, z_um, y_um, x_um, state, lfa1
    run.events                                     # DataFrame: step, kind (engage/hit/kill/disengage), uid, voxel
    run.targets()                                  # DataFrame: per tumour cell hit or engaged, its killer counts

Everything is read from plain Zarr arrays and JSON attributes: nothing is unpickled or evaluated. A
frame beyond an output's ``frames_committed`` (one a crash cut short) is never shown. A chunk that
cannot be read or decoded (a damaged file) raises :class:`StoreError` naming the array and the rows or
frames asked for, when that part is read (fields and the tumour are lazy: other frames, and other
outputs, stay readable).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .store import StoreError, get_attrs, open_store

__all__ = ["Run", "open_run"]


class _Guarded:
    """A Zarr array for dask whose read errors become StoreErrors naming the array and the slice."""

    def __init__(self, arr, where: str):
        self.arr, self.where = arr, where
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, sel):
        return _read(self.arr, sel, self.where)


def _describe(sel) -> str:
    if not isinstance(sel, tuple):
        sel = (sel,)
    parts = []
    for s in sel:
        if isinstance(s, slice):
            parts.append(f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}")
        else:
            parts.append(str(s))
    return "[" + ", ".join(parts) + "]"


def _read(arr, sel, where: str) -> np.ndarray:
    """``arr[sel]`` as a numpy array; any failure to read or decode it is a StoreError."""
    try:
        return np.asarray(arr[sel])
    except StoreError:
        raise
    except Exception as exc:  # codec errors (zstd), truncated or missing chunk files, bad metadata, ...
        raise StoreError(
            f"cannot read {where}{_describe(sel)}: the data are damaged ({type(exc).__name__}: {exc}); "
            "this part of the store is lost, other frames and outputs can still be read") from None


def _open(parent, key: str, store_path):
    """``parent[key]``; missing or damaged metadata is a StoreError naming the node."""
    try:
        return parent[key]
    except Exception as exc:  # JSONDecodeError, KeyError, zarr's metadata errors, ...
        where = f"{parent.path}/{key}".lstrip("/")
        raise StoreError(
            f"{str(store_path)!r}: cannot open {where}: its metadata ({where}/zarr.json) is missing or damaged "
            f"({type(exc).__name__}: {exc}); this output is lost, the others can still be read") from None


def _has(parent, key: str, store_path) -> bool:
    """Whether ``parent`` holds ``key``, counting a node whose metadata are missing or damaged (a folder
    on disk without a readable zarr.json): opening it then names the problem instead of hiding it."""
    import os

    try:
        if key in parent:
            return True
    except Exception:  # noqa: BLE001 - present but unreadable
        return True
    return os.path.isdir(os.path.join(str(store_path), parent.path, key))


def _committed(group) -> int:
    n = group.attrs.get("frames_committed")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise StoreError(f"group {group.path!r} has no valid frames_committed ({n!r}); the store is damaged")
    return n


class _LazyFields(Mapping):
    """Substrate name -> DataArray, each opened on first access (a damaged field fails alone)."""

    def __init__(self, run):
        self._run, self._names, self._open = run, run.field_names, {}

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(f"no field {name!r}; the run stored {self._names}")
        if name not in self._open:
            fg = self._run._arr(self._run._sub("fields"), name)
            self._open[name] = self._run._image(fg, name, fg.attrs.get("unit"))
        return self._open[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


class Run:
    """A run store opened for reading (see the module docstring)."""

    def __init__(self, path):
        self.path = path
        self.group = open_store(path, mode="r")
        self.attrs = get_attrs(self.group)
        self._fields = None
        self._tumor = None

    def _has(self, key: str) -> bool:
        return _has(self.group, key, self.path)

    def _sub(self, key: str):
        return _open(self.group, key, self.path)

    def _arr(self, grp, key: str):
        return _open(grp, key, self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r}, frames={self.n_frames})"

    @property
    def config(self):
        from ..config import Config

        return Config.from_json(self.attrs["config"], source=f"{self.path}:attrs.gpusim.config")

    @property
    def status(self) -> str:
        return self.attrs.get("status")

    @property
    def dx_um(self) -> float:
        return float(self.attrs["dx_um"])

    @property
    def n_frames(self) -> dict:
        """Committed frames per output (rows for ``timeseries`` and ``perf``)."""
        out = {}
        if self.field_names:
            fields = self._sub("fields")
            for name in self.field_names:
                out[f"fields/{name}"] = _committed(self._arr(fields, name))
        for name in ("tumor", "tcells", "tracks", "events", "timeseries", "perf"):
            if self._has(name):
                out[name] = _committed(self._sub(name))
        return out

    @property
    def field_names(self) -> list:
        """The substrates the run stored (from the root attributes, so a field whose metadata were
        lost is still listed, and opening it says so)."""
        units = self.attrs.get("units")
        if isinstance(units, dict) and units:
            return sorted(units) if self._has("fields") else []
        return sorted(self._sub("fields").group_keys()) if self._has("fields") else []

    def _where(self, grp, col: str) -> str:
        return f"{str(self.path)!r}: {grp.path}/{col}"

    # -- tables --------------------------------------------------------------------------------
    def _table(self, name: str, columns=None):
        import pandas as pd

        grp = self._sub(name)
        n = _committed(grp)
        names = list(columns if columns is not None else grp.attrs.get("columns", sorted(grp.array_keys())))
        data = {}
        for col in names:
            if col in grp:
                arr = self._arr(grp, col)
                if arr.shape[0] < n:
                    raise StoreError(f"{name}/{col} holds {arr.shape[0]} rows but {n} are committed; the store is damaged")
                data[col] = _read(arr, slice(0, n), self._where(grp, col))
            else:
                data[col] = np.zeros(n, np.float64)
        return pd.DataFrame(data)

    @property
    def timeseries(self):
        """Per-step scalars (committed rows only), a pandas DataFrame with the columns of ``sim.timeseries``."""
        return self._table("timeseries")

    @property
    def perf(self):
        """Wall seconds per step (``step``, ``wall_s``, ``write_wait_s``); for information, never compared."""
        return self._table("perf")

    # -- images --------------------------------------------------------------------------------
    def _image(self, grp, name: str, unit: str | None):
        import dask.array as da
        import xarray as xr

        n = _committed(grp)
        arr = self._arr(grp, "0")
        if arr.shape[0] < n or self._arr(grp, "time_min").shape[0] < n:
            raise StoreError(f"{grp.path!r} holds fewer frames than the {n} committed; the store is damaged")
        data = da.from_array(_Guarded(arr, self._where(grp, "0")), chunks=arr.chunks, name=False,
                             asarray=True, lock=False)[:n]
        dx = self.dx_um
        nz, ny, nx = arr.shape[1:]
        times = _read(self._arr(grp, "time_min"), slice(0, n), self._where(grp, "time_min"))
        coords = {"time_min": ("t", np.asarray(times, np.float64)),
                  "z": (np.arange(nz) + 0.5) * dx, "y": (np.arange(ny) + 0.5) * dx, "x": (np.arange(nx) + 0.5) * dx}
        attrs = {"space_unit": "micrometer", "time_unit": "minute"}
        if unit is not None:
            attrs["units"] = unit
        return xr.DataArray(data, dims=("t", "z", "y", "x"), coords=coords, name=name, attrs=attrs)

    @property
    def fields(self) -> Mapping:
        """Substrate name -> lazy xarray.DataArray (level 0, dims t z y x; coords ``time_min`` on t and
        voxel centres in µm on z, y, x; ``attrs['units']`` the substrate unit)."""
        if self._fields is None:
            self._fields = _LazyFields(self)
        return self._fields

    @property
    def tumor(self):
        """The tumour lattice over time, a lazy uint8 xarray.DataArray like :attr:`fields` (attrs
        ``labels``: code -> name), or None when the run has no lattice."""
        if not self._has("tumor"):
            return None
        if self._tumor is None:
            tg = self._sub("tumor")
            da_ = self._image(tg, "tumor", None)
            props = tg.attrs["ome"].get("image-label", {}).get("properties", [])
            da_.attrs["labels"] = {int(p["label-value"]): str(p.get("name")) for p in props}
            self._tumor = da_
        return self._tumor

    # -- T cells -------------------------------------------------------------------------------
    def tcell_times(self) -> np.ndarray:
        if not self._has("tcells"):
            return np.zeros(0, np.float64)
        cg = self._sub("tcells")
        return np.asarray(_read(self._arr(cg, "time_min"), slice(0, _committed(cg)), self._where(cg, "time_min")), np.float64)

    def _ragged_rows(self, grp, columns, lo: int, hi: int) -> dict:
        out = {}
        for col in columns:
            arr = self._arr(grp, col)
            if arr.shape[0] < hi:
                raise StoreError(f"{grp.path}/{col} holds {arr.shape[0]} rows but {hi} are committed; the store is damaged")
            values = _read(arr, slice(lo, hi), self._where(grp, col))
            if col == "position_um":
                out.update({"z_um": values[:, 0], "y_um": values[:, 1], "x_um": values[:, 2]})
            else:
                out[col] = values
        return out

    def tcells(self, frame: int):
        """The T cells of snapshot ``frame`` (negative counts from the end): a DataFrame with z_um, y_um,
        x_um, uid, state, lfa1, kills and time_min."""
        import pandas as pd

        if not self._has("tcells"):
            raise KeyError("this run has no T-cell snapshots (no [tcells] section)")
        cg = self._sub("tcells")
        n = _committed(cg)
        k = int(frame)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"T-cell frame {frame}: the run has {n} committed frames")
        lo, hi = (int(v) for v in _read(self._arr(cg, "offsets"), slice(k, k + 2), self._where(cg, "offsets")))
        t = float(_read(self._arr(cg, "time_min"), slice(k, k + 1), self._where(cg, "time_min"))[0])
        data = self._ragged_rows(cg, ("position_um", "uid", "state", "lfa1", "kills"), lo, hi)
        data["time_min"] = np.full(hi - lo, t)
        return pd.DataFrame(data)

    @property
    def tracked_uids(self) -> np.ndarray:
        """The uids of the tracked T-cell subset (uint64, sorted); empty without tracks."""
        if not self._has("tracks"):
            return np.zeros(0, np.uint64)
        return np.asarray(self._sub("tracks").attrs.get("tracked_uids", []), np.uint64)

    @property
    def tracks(self):
        """Every committed track record, a DataFrame with time_min, uid, z_um, y_um, x_um, state and lfa1
        (frames in time order, uid order within a frame); None when the run recorded no tracks."""
        import pandas as pd

        if not self._has("tracks"):
            return None
        kg = self._sub("tracks")
        n = _committed(kg)
        offsets = _read(self._arr(kg, "offsets"), slice(0, n + 1), self._where(kg, "offsets")).astype(np.int64)
        times = _read(self._arr(kg, "time_min"), slice(0, n), self._where(kg, "time_min")).astype(np.float64)
        if offsets.shape[0] < n + 1 or times.shape[0] < n or np.any(np.diff(offsets) < 0):
            raise StoreError(f"{str(self.path)!r}: tracks/offsets or time_min do not match the {n} committed "
                             "frames; the store is damaged")
        hi = int(offsets[-1])
        cols = self._ragged_rows(kg, ("uid", "position_um", "state", "lfa1"), 0, hi)
        data = {"time_min": np.repeat(times, np.diff(offsets)), "uid": cols["uid"], "z_um": cols["z_um"],
                "y_um": cols["y_um"], "x_um": cols["x_um"], "state": cols["state"], "lfa1": cols["lfa1"]}
        return pd.DataFrame(data)

    @property
    def events(self):
        """Every committed event row, a DataFrame with step (int64), kind (categorical: engage, hit,
        kill, disengage), uid (uint64) and voxel (the target's global voxel index); None when the run
        recorded no events."""
        import pandas as pd

        if not self._has("events"):
            return None
        eg = self._sub("events")
        names = eg.attrs.get("kind_names")
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise StoreError(f"{str(self.path)!r}: events/ has no valid kind_names attribute; the store is damaged")
        df = self._table("events", ["step", "kind", "uid", "voxel"])
        codes = df["kind"].to_numpy()
        if codes.size and int(codes.max()) >= len(names):
            raise StoreError(f"{str(self.path)!r}: events/kind holds code {int(codes.max())}, beyond the "
                             f"{len(names)} kind_names; the store is damaged")
        df["kind"] = pd.Categorical.from_codes(codes.astype(np.int64), categories=names)
        return df

    def targets(self):
        """One row per tumour cell that T cells engaged or hit, from the event log (None without one):
        ``voxel`` (global index) and its ``z``, ``y``, ``x``; ``first_step``; ``engagers`` and ``hitters``
        (distinct T cells that engaged / hit it); ``hits``; ``killed``; ``kill_step`` and ``killer_uid``
        (-1 and 0 when not killed). A voxel holds one cell at a time; a kill ends that cell, so events at
        the voxel after its kill step belong to the next cell there (events of the kill's own step belong
        to the killed cell). A cell that died otherwise (necrosis) is not separated from a successor:
        only kills are logged."""
        import pandas as pd

        ev = self.events
        if ev is None:
            return None
        code = ev["kind"].cat.codes.to_numpy()
        names = list(ev["kind"].cat.categories)
        is_kill = (code == names.index("kill")).astype(np.int64)
        df = pd.DataFrame({"voxel": ev["voxel"].to_numpy(), "step": ev["step"].to_numpy(), "is_kill": is_kill,
                           "code": code, "uid": ev["uid"].to_numpy()})
        df = df.sort_values(["voxel", "step", "is_kill"], kind="stable")  # a kill last within its step
        df["cell"] = df.groupby("voxel")["is_kill"].cumsum() - df["is_kill"]
        key = ["voxel", "cell"]
        grouped = df.groupby(key, sort=True)
        out = grouped["step"].min().rename("first_step").to_frame()

        def distinct(kind):
            rows = df[df["code"] == names.index(kind)]
            return rows.groupby(key)["uid"].nunique().reindex(out.index, fill_value=0).astype(np.int64)

        out["engagers"] = distinct("engage")
        out["hitters"] = distinct("hit")
        out["hits"] = df[df["code"] == names.index("hit")].groupby(key).size().reindex(out.index, fill_value=0)
        kills = df[df["is_kill"] == 1].set_index(key)
        out["killed"] = out.index.isin(kills.index)
        out["kill_step"] = kills["step"].reindex(out.index, fill_value=-1).astype(np.int64)
        out["killer_uid"] = kills["uid"].reindex(out.index, fill_value=0).astype(np.uint64)
        out = out.reset_index().drop(columns="cell")
        _nz, ny, nx = (int(n) for n in self.attrs["grid_shape"])
        z, rem = np.divmod(out["voxel"].to_numpy(), ny * nx)
        out.insert(1, "z", z)
        out.insert(2, "y", rem // nx)
        out.insert(3, "x", rem % nx)
        out["hits"] = out["hits"].astype(np.int64)
        return out


def open_run(path) -> Run:
    """Open the run store at ``path`` for reading; StoreError if it is missing, not a gpusim store or
    from a newer format version."""
    return Run(path)

