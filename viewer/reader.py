"""napari reader for gpusim run stores, and the refresh that re-reads them.

``get_reader(path)`` claims a directory that is a gpusim run store (or one that looks like a damaged
one, so its reason can be shown) and returns None for anything else, so other readers can take it.
``read_store(path)`` gives the layers of :mod:`gpusim.viewer.layers`; a store that cannot be opened is
a napari error notification naming the reason (and no layers), a part that cannot be read a warning
(the other layers still load). A store still being written (status ``running``) shows the frames
committed so far; ``refresh_viewer(viewer)`` (the "Refresh gpusim runs" command, and the button of the
populations widget) re-reads every open store in place.
"""

from __future__ import annotations

import os
from pathlib import Path

from .layers import (Options, field_layers, kill_layers, tcell_colors, tcell_layers, tracks_layers,
                     tumor_layers)

#: ``GPUSIM_VIEWER_MAX_POINTS``: the T-cell point budget over all frames (see layers.Options)
OPTIONS = Options(max_points=int(float(os.environ.get("GPUSIM_VIEWER_MAX_POINTS", "1e6"))),
                  color_by=os.environ.get("GPUSIM_VIEWER_COLOR_BY", "state"))
#: the output groups of a run store (a directory holding some, without readable root metadata, is a
#: damaged store: claimed so the user is told why it does not open)
_OUTPUT_GROUPS = ("fields", "tumor", "tcells", "tracks", "events", "timeseries", "perf", "checkpoint")


def _notify(level: str, message: str) -> None:
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[level](message)


def is_run_store(path) -> bool:
    """True for a directory that is a gpusim run store or a damaged one (not for other Zarr data)."""
    from gpusim.io.store import is_gpusim_store

    p = Path(path)
    if not p.is_dir():
        return False
    if is_gpusim_store(p):
        return True
    root = p / "zarr.json"
    if root.exists():
        try:
            import json

            json.loads(root.read_text())
            return False  # readable metadata of some other Zarr group: not ours
        except (OSError, ValueError):
            pass
    return any((p / g).is_dir() for g in _OUTPUT_GROUPS)


def get_reader(path):
    """npe2 reader hook: :func:`read_store` for a gpusim run store, None otherwise."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)) or not is_run_store(path):
        return None
    return read_store


def _open(path):
    from gpusim.io.reader import open_run

    return open_run(path)


def store_layers(run, options: Options | None = None, warn=None) -> list:
    """Every layer of ``run`` (fields, tumour, T cells, tracks, kill sites); a part that fails is
    reported with ``warn(reason)`` and left out."""
    options = options or OPTIONS
    warn = warn or (lambda msg: _notify("warning", msg))
    out = []
    parts = (("fields", lambda: field_layers(run, warn)), ("tumour", lambda: tumor_layers(run, warn)),
             ("T cells", lambda: tcell_layers(run, warn, options)), ("tracks", lambda: tracks_layers(run)),
             ("kill sites", lambda: kill_layers(run)))
    for what, build in parts:
        try:
            out += build()
        except Exception as exc:  # one damaged output must not hide the others
            warn(f"{run.path}: the {what} cannot be shown ({type(exc).__name__}: {exc})")
    return out


def read_store(path, options: Options | None = None):
    """napari reader: the layers of the store at ``path`` (a path or a one-element list)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        run = _open(path)
        n = run.n_frames
    except Exception as exc:  # StoreError (damaged, foreign, newer) or a Zarr error: tell, don't raise
        _notify("error", f"cannot open the gpusim run store {path}: {exc}")
        return [(None,)]  # napari's "nothing to add" (no second reader, no traceback dialog)
    layers = store_layers(run, options)
    if run.status == "running":
        shown = ", ".join(f"{k} {v}" for k, v in n.items() if not k.startswith(("perf", "timeseries")))
        _notify("info", f"{path} is still being written (status running): showing the frames so far "
                        f"({shown}); refresh with 'Refresh gpusim runs' or the populations widget")
    if not layers:
        _notify("warning", f"{path}: the run store holds no frames yet")
        return [(None,)]
    return layers


# -- refresh --------------------------------------------------------------------------------------
def _key(layer):
    g = getattr(layer, "metadata", {}).get("gpusim")
    return (g["store"], g["key"]) if isinstance(g, dict) and "store" in g and "key" in g else None


def open_stores(viewer) -> list[str]:
    """The run-store paths of the viewer's gpusim layers, in layer order."""
    seen = []
    for layer in viewer.layers:
        k = _key(layer)
        if k is not None and k[0] not in seen:
            seen.append(k[0])
    return seen


def _update(layer, data, kwargs, kind: str) -> None:
    """Put the re-read ``data`` into ``layer``, keeping the user's display settings."""
    if kind in ("image", "labels"):
        old = layer.metadata.get("gpusim", {}).get("contrast_limits")
        layer.data = data
        if kind == "image":
            new = tuple(kwargs["contrast_limits"])
            # follow the run's range unless the user set their own limits
            if old is None or tuple(layer.contrast_limits) == tuple(old):
                layer.contrast_limits_range = new
                layer.contrast_limits = new
            layer.metadata["gpusim"]["contrast_limits"] = new
    elif kind == "points":
        by = layer.metadata.get("color_by", "state")
        layer.data = data
        layer.features = kwargs["features"]
        if "state_code" in kwargs["features"]:
            layer.face_color = tcell_colors(kwargs["features"], by)
    elif kind == "tracks":
        by = layer.color_by
        layer.color_by = "track_id"  # the old features do not fit the new rows until replaced
        layer.data = data
        layer.features = kwargs["features"]
        layer.color_by = by
    else:
        raise TypeError(kind)


def add_layers(viewer, layer_data) -> list:
    """Add LayerData tuples to ``viewer`` (what napari does with a reader's result)."""
    added = []
    for ld in layer_data:
        if ld[0] is None:
            continue
        data, kwargs, kind = ld
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added


def refresh_viewer(viewer, paths=None, options: Options | None = None) -> int:
    """Re-read the stores behind the viewer's gpusim layers (or ``paths``), updating the layers in
    place and adding any new ones; returns how many layers were updated or added."""
    paths = [str(p) for p in paths] if paths is not None else open_stores(viewer)
    changed = 0
    for path in paths:
        try:
            run = _open(path)
        except Exception as exc:
            _notify("error", f"cannot re-read the gpusim run store {path}: {exc}")
            continue
        by_key = {_key(layer): layer for layer in viewer.layers}
        new = []
        for data, kwargs, kind in store_layers(run, options):
            layer = by_key.get((path, kwargs["metadata"]["gpusim"]["key"]))
            if layer is None:
                new.append((data, kwargs, kind))
                continue
            try:
                _update(layer, data, kwargs, kind)
            except Exception as exc:  # napari refused the in-place update: replace the layer
                idx = viewer.layers.index(layer)
                viewer.layers.remove(layer)
                (fresh,) = add_layers(viewer, [(data, kwargs, kind)])
                viewer.layers.move(viewer.layers.index(fresh), idx)
                _notify("info", f"{layer.name}: replaced on refresh ({type(exc).__name__}: {exc})")
            changed += 1
        changed += len(add_layers(viewer, new))
    return changed


def refresh_command(viewer) -> None:
    """The "Refresh gpusim runs" command (napari passes the viewer)."""
    n = refresh_viewer(viewer)
    _notify("info", f"gpusim: {n} layers re-read from {len(open_stores(viewer))} run store(s)")
