"""The napari reader (gpusim.viewer): a run store opens as the right layers, with the store's frames,
values and scales, T cells and kill sites drawn in the voxels the store says; anything that is not a
run store is left to other readers; a damaged store is a notification, never an exception; a store
still being written shows its frames so far and a refresh picks up new ones.

Real Qt under a virtual X display (pytest-xvfb), napari's make_napari_viewer(show=True)
(../shared/TOOLCHAIN.md §3: offscreen Qt fails for the GL canvas).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the viewer tests need napari: pip install -e '.[viewer]'")
pytest.importorskip("pytestqt", reason="the viewer tests need pytest-qt")

import gpusim  # noqa: E402
from gpusim.agents.spatial_index import voxel_of  # noqa: E402
from gpusim.viewer.layers import Options  # noqa: E402
from gpusim.viewer.reader import get_reader, read_store, refresh_viewer, store_layers  # noqa: E402
from gpusim.viewer.sample import tiny_config  # noqa: E402

pytestmark = [pytest.mark.viewer,
              pytest.mark.skipif(not os.environ.get("DISPLAY"),
                                 reason="no X display: install Xvfb (pytest-xvfb starts it) or use xvfb-run")]


@pytest.fixture
def notes(monkeypatch):
    """Every napari notification during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen = []

    def keep(n):
        seen.append((str(n.severity), str(n.message)))

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)


def test_the_reader_claims_run_stores_and_leaves_everything_else(viewer_tiny_store, tmp_path):
    import zarr

    assert get_reader(str(viewer_tiny_store)) is read_store
    assert get_reader([str(viewer_tiny_store)]) is read_store
    (tmp_path / "image.tif").write_bytes(b"not ours")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["ome"] = {"version": "0.5"}
    for other in (tmp_path / "image.tif", tmp_path / "other.zarr", tmp_path / "missing.zarr", tmp_path):
        assert get_reader(str(other)) is None, other
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(viewer_tiny_store, damaged)
    (damaged / "zarr.json").unlink()
    assert get_reader(str(damaged)) is read_store  # claimed, so the user is told why it does not open


def test_layers_hold_the_stored_frames_values_and_scales(viewer_tiny_store, make_napari_viewer):
    run = gpusim.open_run(viewer_tiny_store)
    dx = run.dx_um
    viewer = make_napari_viewer(show=True)
    viewer.open(str(viewer_tiny_store), plugin="gpusim")
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds == {"chemokine (nM)": "Image", "mg (mM)": "Image", "o2 (mmHg)": "Image", "tumour": "Labels",
                     "T cells": "Points", "T-cell tracks": "Tracks", "kill sites": "Points"}

    mg = viewer.layers["mg (mM)"]
    assert mg.multiscale and len(mg.data) == 2
    assert mg.data[0].shape == (7, 20, 20, 20) and mg.data[1].shape == (7, 10, 10, 10)  # every 5 min
    np.testing.assert_allclose(mg.scale, [5.0, dx, dx, dx])  # minutes, then µm
    np.testing.assert_allclose(mg.translate, [0.0, dx / 2, dx / 2, dx / 2])  # voxel centres
    np.testing.assert_array_equal(np.asarray(mg.data[0][4]), run.fields["mg"].isel(t=4).values)
    lo, hi = mg.contrast_limits
    values = run.fields["mg"].values
    assert lo <= values.min() and hi >= values.max()

    tum = viewer.layers["tumour"]
    np.testing.assert_array_equal(np.asarray(tum.data[0][-1]), run.tumor.isel(t=-1).values)
    assert dict(zip(tum.features["index"], tum.features["state"])) == {
        int(s): s.name for s in gpusim.TumorState}

    cells = viewer.layers["T cells"]
    times = run.tcell_times()
    frames = [run.tcells(k) for k in range(len(times))]
    assert len(cells.data) == sum(len(f) for f in frames)
    np.testing.assert_allclose(cells.scale, [5.0, 1.0, 1.0, 1.0])
    world_t = cells.data[:, 0] * cells.scale[0]
    np.testing.assert_allclose(np.unique(world_t), times)
    assert set(cells.features.columns) >= {"state", "lfa1", "kills"}

    # every T cell is drawn inside the voxel the simulation bins it in (an independent floor(pos / dx))
    last = frames[-1]
    pos = last[["z_um", "y_um", "x_um"]].to_numpy(np.float32)
    sim_voxel = voxel_of(pos, dx, run.attrs["grid_shape"])
    drawn = cells.data[np.isclose(world_t, times[-1])]
    assert len(drawn) == len(last)
    drawn_voxel = np.array([np.rint(mg.world_to_data(cells.data_to_world(p))[1:]) for p in drawn], np.int64)
    nz, ny, nx = run.attrs["grid_shape"]
    np.testing.assert_array_equal((drawn_voxel[:, 0] * ny + drawn_voxel[:, 1]) * nx + drawn_voxel[:, 2],
                                  sim_voxel)
    np.testing.assert_array_equal(cells.features["uid"].to_numpy()[np.isclose(world_t, times[-1])], last["uid"])

    tracks = viewer.layers["T-cell tracks"]
    assert len(tracks.data) == len(run.tracks)
    assert len(np.unique(tracks.data[:, 0])) == len(run.tracked_uids)

    kills = viewer.layers["kill sites"]
    ev = run.events
    killed = ev[ev["kind"] == "kill"]
    assert len(kills.data) == len(killed) > 0
    site_voxel = np.array([np.rint(tum.world_to_data(kills.data_to_world(p))[1:]) for p in kills.data], np.int64)
    np.testing.assert_array_equal(np.ravel_multi_index(site_voxel.T, (nz, ny, nx)), killed["voxel"].to_numpy())

    assert viewer.dims.range[0].start == 0.0 and viewer.dims.range[0].stop == 30.0  # minutes


def test_a_store_without_root_metadata_is_a_notification_not_an_exception(viewer_tiny_store, tmp_path,
                                                                          make_napari_viewer, notes):
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(viewer_tiny_store, damaged)
    (damaged / "zarr.json").unlink()
    viewer = make_napari_viewer(show=True)
    viewer.open(str(damaged), plugin="gpusim")
    assert len(viewer.layers) == 0
    errors = [m for s, m in notes if s == "error"]
    assert len(errors) == 1 and "zarr.json" in errors[0] and "damaged" in errors[0]


def test_a_damaged_chunk_is_a_warning_and_the_rest_still_shows(viewer_tiny_store, tmp_path, make_napari_viewer,
                                                              notes):
    damaged = tmp_path / "chunk.zarr"
    shutil.copytree(viewer_tiny_store, damaged)
    chunk = damaged / "fields" / "mg" / "0" / "c" / "6" / "0" / "0" / "0"
    assert chunk.exists()
    chunk.write_bytes(b"\x00garbage, not zstd")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(damaged), plugin="gpusim")
    assert "mg (mM)" in [layer.name for layer in viewer.layers] and "T cells" in viewer.layers
    viewer.dims.set_point(0, 30.0)  # the damaged last frame
    np.asarray(viewer.layers["mg (mM)"].data[0][6])
    warnings = [m for s, m in notes if s == "warning"]
    assert any("fields/mg/0" in m and "damaged" in m for m in warnings), notes


def test_a_store_being_written_shows_its_frames_and_refresh_adds_new_ones(tmp_path, make_napari_viewer, notes):
    from gpusim.io.writer import RunWriter

    path = tmp_path / "live.zarr"
    sim = gpusim.Simulation(tiny_config())
    w = RunWriter(sim, path)
    sim.operations.append(w)
    for _ in range(10):
        sim.step()
    w.flush()
    assert gpusim.open_run(path).status == "running"
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="gpusim")
    assert viewer.layers["mg (mM)"].data[0].shape[0] == 3  # t = 0, 5, 10
    assert len(np.unique(viewer.layers["T cells"].data[:, 0])) == 3
    assert any(s == "info" and "still being written" in m for s, m in notes)
    for _ in range(10):
        sim.step()
    w.flush()
    assert refresh_viewer(viewer) >= 4
    assert viewer.layers["mg (mM)"].data[0].shape[0] == 5
    assert viewer.layers["tumour"].data[0].shape[0] == 5
    assert len(np.unique(viewer.layers["T cells"].data[:, 0])) == 5
    assert viewer.dims.range[0].stop == 20.0
    w.close()


def test_many_t_cells_are_subsampled_the_same_in_every_frame_with_a_density_image(viewer_tiny_store):
    run = gpusim.open_run(viewer_tiny_store)
    budget = 600
    layers = {kw["name"]: (data, kw) for data, kw, _ in store_layers(run, Options(max_points=budget),
                                                                     warn=pytest.fail)}
    (name,) = [n for n in layers if n.startswith("T cells (")]
    coords, kw = layers[name]
    total = sum(len(run.tcells(k)) for k in range(run.n_frames["tcells"]))
    assert 0.5 * budget < len(coords) < 1.5 * budget < total
    uids = kw["features"]["uid"].to_numpy()
    first, last = run.tcells(0)["uid"].to_numpy(), run.tcells(-1)["uid"].to_numpy()
    kept_first, kept_last = set(uids[coords[:, 0] == 0]), set(uids[coords[:, 0] == coords[:, 0].max()])
    common = set(first) & set(last)
    assert kept_first & common == kept_last & common  # a uid kept in one frame is kept in all
    density, dkw = layers[next(n for n in layers if n.startswith("T-cell density"))]
    assert density.shape == (run.n_frames["tcells"], 10, 10, 10)
    assert [int(density[k].sum().compute()) for k in (0, -1)] == [len(run.tcells(0)), len(run.tcells(-1))]


def test_the_manifest_validates_and_its_commands_import():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("gpusim")
    assert pm.name == "gpusim"
    pm.validate_imports()
    assert {c.id for c in pm.contributions.commands} >= {"gpusim.read_store", "gpusim.refresh",
                                                          "gpusim.run_widget", "gpusim.populations_widget",
                                                          "gpusim.sample_tiny"}
