"""Reading a run store: ``open_run(path)`` -> :class:`Run` (lazy; only committed frames are shown).

    run = open_run("run.zarr")
    run.timeseries.tail()                          # pandas DataFrame, one row per step
    run.fields["mg"].sel(time_min=60.0)            # xarray over dask, dims t z y x, coords in µm / min
    run.tumor.isel(t=-1).values                    # uint8 lattice codes (EMPTY/LIVE/DEAD/NECROTIC)
    run.tcells(0)                                  # DataFrame: z_um, y_um, x_um, uid, state, lfa1, kills, time_min

Everything is read from plain Zarr arrays and JSON attributes: nothing is unpickled or evaluated. A
frame beyond an output's ``frames_committed`` (one a crash cut short) is never shown.
"""

from __future__ import annotations

import numpy as np

from .store import StoreError, get_attrs, open_store

__all__ = ["Run", "open_run"]


def _committed(group) -> int:
    n = group.attrs.get("frames_committed")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise StoreError(f"group {group.path!r} has no valid frames_committed ({n!r}); the store is damaged")
    return n


class Run:
    """A run store opened for reading (see the module docstring)."""

    def __init__(self, path):
        self.path = path
        self.group = open_store(path, mode="r")
        self.attrs = get_attrs(self.group)
        self._fields = None
        self._tumor = None

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
        g = self.group
        out = {}
        if "fields" in g:
            for name in sorted(g["fields"].group_keys()):
                out[f"fields/{name}"] = _committed(g["fields"][name])
        for name in ("tumor", "tcells", "timeseries", "perf"):
            if name in g:
                out[name] = _committed(g[name])
        return out

    # -- tables --------------------------------------------------------------------------------
    def _table(self, name: str, columns=None):
        import pandas as pd

        grp = self.group[name]
        n = _committed(grp)
        names = list(columns if columns is not None else grp.attrs.get("columns", sorted(grp.array_keys())))
        data = {}
        for col in names:
            if col in grp:
                arr = grp[col]
                if arr.shape[0] < n:
                    raise StoreError(f"{name}/{col} holds {arr.shape[0]} rows but {n} are committed; the store is damaged")
                data[col] = np.asarray(arr[:n])
            else:
                data[col] = np.zeros(n, np.float64)
        return pd.DataFrame(data)

    @property
    def timeseries(self):
        """Per-step scalars (committed rows only), a pandas DataFrame with the columns of ``sim.timeseries``."""
        return self._table("timeseries")

    @property
    def perf(self):
        """Wall seconds per step (``step``, ``wall_s``); for information, never compared."""
        return self._table("perf", ["step", "wall_s"])

    # -- images --------------------------------------------------------------------------------
    def _image(self, grp, name: str, unit: str | None):
        import dask.array as da
        import xarray as xr

        n = _committed(grp)
        arr = grp["0"]
        if arr.shape[0] < n or grp["time_min"].shape[0] < n:
            raise StoreError(f"{grp.path!r} holds fewer frames than the {n} committed; the store is damaged")
        data = da.from_zarr(arr)[:n]
        dx = self.dx_um
        nz, ny, nx = arr.shape[1:]
        coords = {"time_min": ("t", np.asarray(grp["time_min"][:n], np.float64)),
                  "z": (np.arange(nz) + 0.5) * dx, "y": (np.arange(ny) + 0.5) * dx, "x": (np.arange(nx) + 0.5) * dx}
        attrs = {"space_unit": "micrometer", "time_unit": "minute"}
        if unit is not None:
            attrs["units"] = unit
        return xr.DataArray(data, dims=("t", "z", "y", "x"), coords=coords, name=name, attrs=attrs)

    @property
    def fields(self) -> dict:
        """Substrate name -> lazy xarray.DataArray (level 0, dims t z y x; coords ``time_min`` on t and
        voxel centres in µm on z, y, x; ``attrs['units']`` the substrate unit)."""
        if self._fields is None:
            g = self.group
            out = {}
            if "fields" in g:
                for name in sorted(g["fields"].group_keys()):
                    fg = g["fields"][name]
                    out[name] = self._image(fg, name, fg.attrs.get("unit"))
            self._fields = out
        return self._fields

    @property
    def tumor(self):
        """The tumour lattice over time, a lazy uint8 xarray.DataArray like :attr:`fields` (attrs
        ``labels``: code -> name), or None when the run has no lattice."""
        if "tumor" not in self.group:
            return None
        if self._tumor is None:
            tg = self.group["tumor"]
            da_ = self._image(tg, "tumor", None)
            props = tg.attrs["ome"].get("image-label", {}).get("properties", [])
            da_.attrs["labels"] = {int(p["label-value"]): str(p.get("name")) for p in props}
            self._tumor = da_
        return self._tumor

    # -- T cells -------------------------------------------------------------------------------
    def tcell_times(self) -> np.ndarray:
        if "tcells" not in self.group:
            return np.zeros(0, np.float64)
        cg = self.group["tcells"]
        return np.asarray(cg["time_min"][:_committed(cg)], np.float64)

    def tcells(self, frame: int):
        """The T cells of snapshot ``frame`` (negative counts from the end): a DataFrame with z_um, y_um,
        x_um, uid, state, lfa1, kills and time_min."""
        import pandas as pd

        if "tcells" not in self.group:
            raise KeyError("this run has no T-cell snapshots (no [tcells] section)")
        cg = self.group["tcells"]
        n = _committed(cg)
        k = int(frame)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"T-cell frame {frame}: the run has {n} committed frames")
        lo, hi = (int(v) for v in cg["offsets"][k:k + 2])
        pos = np.asarray(cg["position_um"][lo:hi])
        t = float(cg["time_min"][k])
        return pd.DataFrame({
            "z_um": pos[:, 0], "y_um": pos[:, 1], "x_um": pos[:, 2],
            "uid": np.asarray(cg["uid"][lo:hi]), "state": np.asarray(cg["state"][lo:hi]),
            "lfa1": np.asarray(cg["lfa1"][lo:hi]), "kills": np.asarray(cg["kills"][lo:hi]),
            "time_min": np.full(hi - lo, t),
        })


def open_run(path) -> Run:
    """Open the run store at ``path`` for reading; StoreError if it is missing, not a gpusim store or
    from a newer format version."""
    return Run(path)

