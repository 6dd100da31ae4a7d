"""``gpusim view STORE``: napari with a run store loaded, the populations plot docked, in 3D."""

from __future__ import annotations


def open_viewer(path, show: bool = True, ndisplay: int = 3, viewer=None):
    """A napari viewer (new unless given) with the run store at ``path`` and the populations widget."""
    import napari

    if viewer is None:
        viewer = napari.Viewer(title=f"gpusim: {path}", show=show)
    viewer.open(str(path), plugin="gpusim")
    viewer.window.add_plugin_dock_widget("gpusim", "Populations")
    if ndisplay == 3:
        show_3d(viewer)
    return viewer


def show_3d(viewer) -> None:
    """The 3D view from an oblique angle (the default looks straight down z, a 2D-looking picture)."""
    viewer.dims.ndisplay = 3
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before (deprecated since)
    camera = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
    camera.angles = (10.0, -35.0, 55.0)


def main(path, max_points: int | None = None, color_by: str | None = None, ndisplay: int = 3) -> int:
    """Check the store, then open it in napari and run the Qt event loop until the window closes."""
    from gpusim.io.reader import open_run

    open_run(path)  # a missing or damaged store is a clear StoreError before any window opens
    try:
        import napari
    except ImportError as exc:
        raise SystemExit(f"error: `gpusim view` needs napari ({exc}); install the viewer extra: "
                         "pip install -e \".[viewer]\"") from None
    from .reader import OPTIONS

    if max_points is not None:
        OPTIONS.max_points = int(max_points)
    if color_by is not None:
        OPTIONS.color_by = color_by
    open_viewer(path, ndisplay=ndisplay)
    napari.run()
    return 0
