"""The viewer's widgets and entry points under real Qt (pytest-xvfb, make_napari_viewer(show=True)): the
run widget completes a tiny scenario with the layers growing as it goes, and its Stop checkpoints a
resumable, interrupted store; a click on the populations plot moves the time slider and the slider's
line follows; the sample run opens and a 3D screenshot of it is not blank; `gpusim view` opens a store.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the viewer tests need napari: pip install -e '.[viewer]'")
pytest.importorskip("pytestqt", reason="the viewer tests need pytest-qt")

import gpusim  # noqa: E402
from gpusim.viewer.populations import PopulationsWidget  # noqa: E402
from gpusim.viewer.run_widget import SAMPLE, RunWidget  # noqa: E402

pytestmark = [pytest.mark.viewer,
              pytest.mark.skipif(not os.environ.get("DISPLAY"),
                                 reason="no X display: install Xvfb (pytest-xvfb starts it) or use xvfb-run")]

#: screenshots for people to look at (gitignored)
OUTPUT = Path(__file__).resolve().parent / "output"


def _run_widget(viewer, out, minutes: float, every: int) -> RunWidget:
    w = RunWidget(viewer)
    w.scenario.setCurrentText(SAMPLE)
    w.days.setValue(minutes / 1440.0)
    w.every.setValue(every)
    w.backend.setCurrentText("cpu")
    w.out.setText(str(out))
    return w


def test_the_run_widget_completes_a_tiny_run_and_the_layers_grow(tmp_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    out = tmp_path / "live.zarr"
    w = _run_widget(viewer, out, minutes=10.0, every=5)
    assert w.tcells.value() == 150 and w.serum_mg.isEnabled()
    w.serum_mg.setValue(0.3)
    frames = []
    w.updated.connect(lambda _done: frames.append(viewer.layers["mg (mM)"].data[0].shape[0]))
    w.start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=90_000)
    assert w.result == (10, 10, False)
    assert frames == [2, 3]  # t = 0 and 5, then 10
    run = gpusim.open_run(out)
    assert run.status == "complete" and len(run.timeseries) == 10
    assert run.config.substrates[0].serum == pytest.approx(0.3)
    assert len(np.unique(viewer.layers["T cells"].data[:, 0])) == 3
    assert w.progress.value() == 10


def test_stop_in_the_run_widget_checkpoints_and_the_store_resumes(tmp_path, make_napari_viewer, qtbot):
    from gpusim.io import checkpoint

    viewer = make_napari_viewer(show=True)
    out = tmp_path / "stopped.zarr"
    w = _run_widget(viewer, out, minutes=60.0, every=5)
    w.updated.connect(lambda done: w.stop() if done >= 5 else None)
    w.start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=90_000)
    assert w.result == (5, 60, True)
    run = gpusim.open_run(out)
    assert run.status == "interrupted"
    assert checkpoint.latest_slot(out)["step"] == 5
    sim = gpusim.Simulation.resume(out)
    assert sim.time_min == 5.0
    sim.run(minutes=5, progress=False)
    assert gpusim.open_run(out).n_frames["fields/mg"] == 3  # t = 0, 5, 10


def test_a_click_on_the_populations_plot_moves_the_time_slider(viewer_tiny_store, make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(viewer_tiny_store), plugin="gpusim")
    w = PopulationsWidget(viewer)
    viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: len(w.lines) == 4, timeout=10_000)
    assert [len(ax.lines) for ax in w.axes] == [4, 4, 2, 2]  # curves + the slider line
    w.canvas.draw()
    ax = w.axes[0]
    x_disp, y_disp = ax.transData.transform((0.25, np.mean(ax.get_ylim())))  # 15 min
    ratio = w.canvas.device_pixel_ratio
    from qtpy.QtCore import QPoint, Qt

    qtbot.mouseClick(w.canvas, Qt.MouseButton.LeftButton,
                     pos=QPoint(int(x_disp / ratio), int(w.canvas.height() - y_disp / ratio)))
    assert abs(viewer.dims.point[0] - 15.0) <= 1.0
    assert w.lines[0].get_xdata()[0] == pytest.approx(viewer.dims.point[0] / 60.0)
    viewer.dims.set_point(0, 24.0)  # the line follows the slider
    assert w.lines[0].get_xdata()[0] == pytest.approx(0.4)
    w.recolor("lfa1")
    assert viewer.layers["T cells"].metadata["color_by"] == "lfa1"


def test_the_sample_run_opens_and_its_3d_view_is_not_blank(viewer_tiny_store, make_napari_viewer, tmp_path,
                                                          monkeypatch):
    import gpusim.viewer.sample as sample

    # the sample's run is the session's tiny store (written by the same write_tiny_run): copy it, not rerun
    monkeypatch.setattr(sample, "write_tiny_run", lambda path: shutil.copytree(viewer_tiny_store, path))
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("gpusim", "tiny")
    assert {"mg (mM)", "tumour", "T cells", "T-cell tracks", "kill sites"} <= {layer.name for layer in viewer.layers}
    from gpusim.viewer.app import show_3d

    show_3d(viewer)
    viewer.dims.set_point(0, 30.0)
    img = viewer.screenshot(canvas_only=True, flash=False)
    colours = np.unique(img.reshape(-1, img.shape[-1]), axis=0)
    from imageio.v3 import imwrite

    png = tmp_path / "sample_3d.png"
    imwrite(png, img)
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(png, OUTPUT / "sample_3d.png")
    assert img.std() > 1 and len(colours) > 10, f"blank 3D screenshot (see {png})"


def test_gpusim_view_opens_the_store_with_the_populations_plot(viewer_tiny_store, make_napari_viewer,
                                                               monkeypatch):
    from gpusim.cli import main

    made = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: made.append(make_napari_viewer(**kw)) or made[-1])
    monkeypatch.setattr(napari, "run", lambda: None)
    assert main(["view", str(viewer_tiny_store), "--color-by", "lfa1"]) == 0
    (viewer,) = made
    assert "mg (mM)" in viewer.layers and viewer.dims.ndisplay == 3
    assert viewer.layers["T cells"].metadata["color_by"] == "lfa1"
    assert any("Populations" in name for name in viewer.window.dock_widgets)
    assert main(["view", str(viewer_tiny_store.parent / "missing.zarr")]) == 2
