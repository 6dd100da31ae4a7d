"""Damage to a run store gives clear errors and costs only what was damaged (issue 4, item 7): a disk
that fills during a frame write gives a StoreError saying so and where, and every frame committed
before it reads back bit for bit; a corrupt chunk fails only the reads that touch it, as a StoreError
naming the array (not a raw codec traceback); a store whose root metadata is missing is refused with a
clear error and is not touched. (A newer format version: tests/test_run_store.py.)
"""

from __future__ import annotations

import errno

import numpy as np
import pytest
import zarr

import gpusim
from gpusim.io.reader import open_run
from gpusim.io.store import StoreError
from gpusim.io.writer import RunWriter
from test_run_store import EVERY, _config


def _run(path, steps: int, captured=None):
    sim = gpusim.Simulation(_config())
    w = RunWriter(sim, path)
    sim.operations.append(w)
    if captured is not None:
        captured.append(sim.field_host("mg"))
    for _ in range(steps):
        sim.step()
        if captured is not None and sim.time_min % EVERY["fields"] == 0:
            captured.append(sim.field_host("mg"))
    return sim, w


def test_a_full_disk_during_a_frame_write_is_a_clear_error_and_earlier_frames_stay_readable(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    frames = []
    sim, w = _run(path, 5, frames)  # field frames at 0 and 3 committed
    w.flush()  # the tables are written in batches and at every flush (a checkpoint flushes first)
    ts_rows = open_run(path).n_frames["timeseries"]
    assert ts_rows == 5

    # chunk writes fail; metadata (resizes) still succeed, so a half-written frame is left behind
    real_set = zarr.storage.LocalStore.set

    async def set_(self, key, value, *args, **kwargs):
        if "/c/" in key:
            raise OSError(errno.ENOSPC, "No space left on device", key)
        return await real_set(self, key, value, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", set_)
    with pytest.raises(StoreError, match=r"disk is full.*fields/\w+ frame 2 \(t = 6 min\).*run\.zarr.*intact"):
        sim.step()  # step 5 ends at t = 6: the next field frame, written in the background:
        w.flush()  # the error reaches the step loop at the next step or flush
    monkeypatch.undo()

    run = open_run(path)
    assert run.n_frames["fields/mg"] == 2 and run.n_frames["timeseries"] == ts_rows
    mg = run.fields["mg"]
    np.testing.assert_array_equal(mg.time_min.values, [0.0, 3.0])
    assert len(frames) == 2 and mg.values.tobytes() == np.stack(frames).tobytes()
    assert zarr.open_array(str(path / "fields" / "mg" / "0"), mode="r").shape[0] >= 2  # (the partial frame
    # may have been resized in; a reader ignores it)
    assert run.timeseries["time_min"].to_numpy().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert run.tcells(0)["uid"].size == 20


def _corrupt(path, relative_chunk: str) -> None:
    chunk = path / relative_chunk
    assert chunk.is_file(), chunk
    chunk.write_bytes(b"\x00garbage, not a zstd frame\xff" * 7)


def test_a_corrupt_field_chunk_fails_only_that_frame_with_a_store_error(tmp_path):
    path = tmp_path / "run.zarr"
    sim, w = _run(path, 6)  # field frames at 0, 3, 6
    w.close()
    good = open_run(path)
    mg = good.fields["mg"].values
    other = {"o2": good.fields["o2"].values, "tumor": good.tumor.values, "ts": good.timeseries}
    _corrupt(path, "fields/mg/0/c/1/0/0/0")  # frame 1 of level 0 (one chunk per frame at this size)

    run = open_run(path)  # the metadata are intact: it opens
    with pytest.raises(StoreError, match=r"cannot read .*fields/mg/0\[1:2.*damaged"):
        run.fields["mg"].values
    with pytest.raises(StoreError, match="fields/mg/0"):
        run.fields["mg"].sel(time_min=3.0).values
    assert run.fields["mg"].isel(t=0).values.tobytes() == mg[0].tobytes()  # the other frames read
    assert run.fields["mg"].isel(t=2).values.tobytes() == mg[2].tobytes()
    assert run.fields["o2"].values.tobytes() == other["o2"].tobytes()  # and the other outputs
    assert run.tumor.values.tobytes() == other["tumor"].tobytes()
    assert run.timeseries.equals(other["ts"])


def test_a_corrupt_table_chunk_fails_that_table_only(tmp_path):
    path = tmp_path / "run.zarr"
    sim, w = _run(path, 4)
    w.close()
    mg = open_run(path).fields["mg"].values
    _corrupt(path, "timeseries/time_min/c/0")
    run = open_run(path)
    with pytest.raises(StoreError, match=r"cannot read .*timeseries/time_min\[0:4\].*damaged"):
        run.timeseries
    assert run.fields["mg"].values.tobytes() == mg.tobytes()
    assert len(run.tcells(0)) == 20


def test_missing_root_metadata_is_a_clear_error_and_nothing_is_touched(tmp_path):
    path = tmp_path / "run.zarr"
    sim, w = _run(path, 3)
    w.close()
    before = open_run(path).fields["mg"].values
    meta = path / "zarr.json"
    saved = meta.read_bytes()
    meta.unlink()
    files = sorted(p.relative_to(path) for p in path.rglob("*"))

    with pytest.raises(StoreError, match=r"root metadata .*zarr\.json.* is missing.*damaged"):
        open_run(path)
    with pytest.raises(StoreError, match="zarr.json.* is missing"):
        gpusim.Simulation.resume(path)
    with pytest.raises(StoreError, match="not a gpusim run store.*refusing to overwrite"):
        RunWriter(gpusim.Simulation(_config()), path, overwrite=True)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == files  # nothing written or removed

    meta.write_bytes(saved)  # put back, the store reads as before
    assert open_run(path).fields["mg"].values.tobytes() == before.tobytes()


@pytest.mark.parametrize("node, damage", [("fields/mg/zarr.json", "garbage"), ("fields/mg/zarr.json", "delete"),
                                          ("fields/mg/0/zarr.json", "delete"), ("tumor/zarr.json", "garbage"),
                                          ("tumor/zarr.json", "delete"), ("tcells/offsets/zarr.json", "garbage"),
                                          ("timeseries/zarr.json", "delete")])
def test_damaged_metadata_of_one_output_is_a_clear_error_for_that_output_only(tmp_path, node, damage):
    path = tmp_path / "run.zarr"
    sim, w = _run(path, 3)
    w.close()
    good = open_run(path)
    want = {"mg": good.fields["mg"].values, "o2": good.fields["o2"].values, "tumor": good.tumor.values,
            "tcells": good.tcells(0), "ts": good.timeseries}
    meta = path / node
    if damage == "garbage":
        meta.write_text("{not json")
    else:
        meta.unlink()
    output = node.split("/zarr.json")[0].rsplit("/0", 1)[0]
    reads = {"mg": lambda r: r.fields["mg"].values, "o2": lambda r: r.fields["o2"].values,
             "tumor": lambda r: r.tumor.values, "tcells": lambda r: r.tcells(0), "ts": lambda r: r.timeseries}
    damaged = {"fields/mg": "mg", "tumor": "tumor", "tcells/offsets": "tcells", "timeseries": "ts"}[output]

    run = open_run(path)  # the root metadata are intact: it opens
    with pytest.raises(StoreError, match=rf"cannot open {output}.*zarr\.json\) is missing or damaged.*others can still"):
        reads[damaged](run)
    for name, read in reads.items():
        if name != damaged:
            got = read(run)
            same = got.equals(want[name]) if hasattr(got, "equals") else got.tobytes() == want[name].tobytes()
            assert same, name
