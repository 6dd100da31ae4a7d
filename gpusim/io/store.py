"""The run store's root (DESIGN.md §4): create, open and mark a Zarr v3 group as a gpusim run.

    g = create_store("run.zarr", sim)            # refuses an existing path unless overwrite=True
    g = open_store("run.zarr", mode="r")          # clear StoreError on anything that is not ours
    set_status(g, "complete")

The root attributes live under the key ``"gpusim"``: ``format_version`` (:data:`FORMAT_VERSION`),
versions (gpusim + git hash, numpy, numba, cupy where installed, the CUDA driver on a GPU run), the RNG
scheme version, the full config as JSON, seed, backend, device, units and sub-steps per substrate,
``dt_min``, grid shape and ``dx_um``, start/end time (UTC ISO) and ``status``. Everything is plain
JSON: nothing is unpickled or evaluated on load.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import subprocess
from pathlib import Path

FORMAT_VERSION = 1
STATUSES = ("running", "complete", "interrupted")
ROOT_KEY = "gpusim"
#: the groups a run store holds under its root (a directory with some of them is a damaged store)
_OUTPUT_GROUPS = ("fields", "tumor", "tcells", "tracks", "events", "timeseries", "perf", "checkpoint")


class StoreError(ValueError):
    """A run store cannot be created or opened; the message names the problem and the fix."""


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git_hash() -> str | None:
    pkg = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pkg, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    h = out.stdout.strip()
    return h if out.returncode == 0 and h else None


def _versions(sim) -> dict:
    import numba
    import numpy

    import gpusim

    v = {"gpusim": gpusim.__version__, "git": _git_hash(), "numpy": numpy.__version__,
         "numba": numba.__version__, "zarr": None, "cupy": None, "cuda_driver": None}
    try:
        import zarr

        v["zarr"] = zarr.__version__
    except ImportError:  # pragma: no cover - zarr is needed to get here
        pass
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            v["cupy"] = cupy.__version__
        except Exception:  # a broken cupy install must not stop a run from writing its store
            v["cupy"] = "unimportable"
    if getattr(sim.backend, "name", None) == "cuda":
        try:
            from numba import cuda

            v["cuda_driver"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
        except Exception:
            pass
    return v


def root_attrs(sim) -> dict:
    """The ``"gpusim"`` root attributes of a new store for ``sim`` (plain JSON values)."""
    from ..rng import RNG_SCHEME_VERSION

    cfg = sim.config
    plans = sim.field_update.plans
    st = sim.state
    return {
        "format_version": FORMAT_VERSION,
        "versions": _versions(sim),
        "rng_scheme_version": int(RNG_SCHEME_VERSION),
        "config": cfg.to_json(),
        "seed": int(cfg.seed),
        "backend": str(sim.backend.name),
        "device": str(sim.backend.device_name),
        "units": {name: str(p.unit) for name, p in plans.items()},
        "n_sub": {name: int(p.n_sub) for name, p in plans.items()},
        "dt_min": float(sim.dt_min),
        "grid_shape": [int(n) for n in st.shape],
        "dx_um": float(st.dx_um),
        "start_time": _utc_now(),
        "end_time": None,
        "status": "running",
    }


def _read_root_attrs(path: Path):
    """(attrs dict or None, reason) for the group at ``path``, without raising."""
    import zarr

    try:
        g = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # FileNotFoundError, GroupNotFoundError, JSON errors, ...
        return None, f"not a Zarr group ({type(exc).__name__}: {exc})"
    a = g.attrs.get(ROOT_KEY)
    if not isinstance(a, dict) or "format_version" not in a:
        return None, "a Zarr group without gpusim run attributes"
    return a, None


def is_gpusim_store(path) -> bool:
    a, _ = _read_root_attrs(Path(path))
    return a is not None


def create_store(path, sim, overwrite: bool = False):
    """A new, empty run store at ``path`` for ``sim``, root attributes written, status ``running``.

    Refuses an existing path unless ``overwrite``; even then refuses (and leaves untouched) anything
    that is not a gpusim store. An empty directory is accepted (there is nothing to lose).
    """
    import zarr

    path = Path(path)
    if path.exists() or path.is_symlink():
        empty_dir = path.is_dir() and not any(path.iterdir())
        if not empty_dir:
            if not path.is_dir():
                raise StoreError(f"{str(path)!r} exists and is a file, not a run store; choose another output path")
            attrs, why = _read_root_attrs(path)
            if attrs is None:
                raise StoreError(
                    f"{str(path)!r} exists and is not a gpusim run store ({why}); refusing to overwrite it "
                    "even with overwrite — choose another output path or remove it yourself")
            if not overwrite:
                raise StoreError(
                    f"run store {str(path)!r} already exists (status {attrs.get('status')!r}); pass "
                    "overwrite=True (--overwrite) to replace it, or resume it")
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs[ROOT_KEY] = root_attrs(sim)
    return group


def check_attrs(attrs, path) -> dict:
    """Validate the ``"gpusim"`` root attributes read from ``path``; returns them."""
    if not isinstance(attrs, dict) or "format_version" not in attrs:
        raise StoreError(f"{str(path)!r} is a Zarr group but not a gpusim run store (no 'gpusim' root "
                         "attributes); open a store written by gpusim")
    v = attrs["format_version"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise StoreError(f"{str(path)!r}: format_version {v!r} is not an integer; the store's metadata is damaged")
    if v > FORMAT_VERSION:
        raise StoreError(
            f"{str(path)!r} has run-store format version {v}, newer than this gpusim reads "
            f"(format version {FORMAT_VERSION}); upgrade gpusim to open it")
    if v < 1:
        raise StoreError(f"{str(path)!r}: format_version {v} is not valid (must be >= 1)")
    return attrs


def open_store(path, mode: str = "r"):
    """Open an existing run store (``mode`` "r" or "r+"); StoreError if it is missing, not a Zarr group,
    not a gpusim store, or from a newer format version."""
    import zarr

    if mode not in ("r", "r+"):
        raise StoreError(f"open_store mode {mode!r}: use 'r' or 'r+' (create_store makes new stores)")
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no run store at {str(path)!r}: the path does not exist; check the path "
                         "(a run writes one with --out / RunWriter)")
    meta = path / "zarr.json"
    if path.is_dir() and not meta.exists() and not (path / ".zgroup").exists():
        parts = sorted(p.name for p in path.iterdir())
        ours = [p for p in parts if p in _OUTPUT_GROUPS]
        if ours:
            raise StoreError(
                f"{str(path)!r}: the root metadata {str(meta)!r} is missing, so the run store cannot be "
                f"opened (it still holds {', '.join(ours)}); the store is damaged — restore zarr.json from "
                "a backup or rerun")
        raise StoreError(f"{str(path)!r} has no Zarr root metadata (no zarr.json): it is not a run store; "
                         "open a run store written by gpusim")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        what = (f"its root metadata {str(meta)!r} cannot be read" if meta.exists() else "it is not a Zarr group")
        raise StoreError(f"{str(path)!r}: {what} ({type(exc).__name__}: {exc}); "
                         "open a run store written by gpusim") from None
    try:
        attrs = group.attrs.get(ROOT_KEY)
    except Exception as exc:
        raise StoreError(f"{str(path)!r}: its root attributes cannot be read ({type(exc).__name__}: {exc}); "
                         "the store's metadata is damaged") from None
    check_attrs(attrs, path)
    return group


def get_attrs(group) -> dict:
    return dict(group.attrs[ROOT_KEY])


def set_status(group, status: str) -> None:
    """Record ``status`` ("running", "complete", "interrupted") and the end time (None while running)."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: must be one of {STATUSES}")
    a = get_attrs(group)
    a["status"] = status
    a["end_time"] = None if status == "running" else _utc_now()
    group.attrs[ROOT_KEY] = a

