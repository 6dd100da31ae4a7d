"""Writing overlaps compute (issue 4, item 3): the write queue runs jobs in order on one thread, makes
the caller wait only when it is full, and hands a job's error to the caller with the later jobs
dropped; a store written in the background equals one written inside the step, byte for byte; a grid
larger than one chunk is stored in shards whose shape is a whole number of chunks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr

import gpusim
from gpusim.io.background import WriteQueue
from gpusim.io.layout import IMAGE_CHUNK, image_shards
from gpusim.io.reader import open_run
from gpusim.io.writer import RunWriter
from test_run_store import _config, _store_outputs


def test_jobs_run_in_submission_order_on_one_thread():
    q = WriteQueue(max_jobs=3)
    done, threads = [], set()

    def job(i):
        return lambda: (done.append(i), threads.add(threading.get_ident()))

    for i in range(50):
        q.submit(job(i))
    q.drain()
    assert done == list(range(50))
    assert len(threads) == 1 and threading.get_ident() not in threads
    q.stop()


def test_the_caller_waits_only_when_the_queue_is_full():
    q = WriteQueue(max_jobs=1)
    release, started = threading.Event(), threading.Event()
    q.submit(lambda: (started.set(), release.wait()))  # taken by the thread, which then blocks
    assert started.wait(10)
    q.submit(lambda: None)  # fills the one waiting place: returns at once

    third = threading.Thread(target=q.submit, args=(lambda: None,))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # blocked: one job running, one waiting, max_jobs = 1
    release.set()
    third.join(10)
    assert not third.is_alive()
    q.drain()
    assert q.waited_s > 0.0
    q.stop()


def test_a_failed_job_is_raised_in_the_caller_and_the_jobs_behind_it_are_dropped():
    q = WriteQueue(max_jobs=4)
    release = threading.Event()
    ran = []
    q.submit(release.wait)
    q.submit(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    q.submit(lambda: ran.append("after"))
    release.set()
    with pytest.raises(OSError, match="No space left"):
        q.drain()
    assert ran == []  # never written after a missing write
    with pytest.raises(OSError):
        q.submit(lambda: ran.append("later"))
    assert ran == []


def test_max_jobs_zero_runs_each_job_inside_submit():
    q = WriteQueue(max_jobs=0)
    seen = []
    q.submit(lambda: seen.append(threading.get_ident()))
    assert seen == [threading.get_ident()]
    with pytest.raises(ValueError, match="max_jobs"):
        WriteQueue(max_jobs=-1)


def _write(path, queue_steps: int, steps: int = 12, tracks: bool = True):
    cfg = _config()
    cfg["output"].update({"write_queue_steps": queue_steps, "events": True})
    if tracks:
        cfg["output"].update({"tracks_every_min": 1.0, "tracks_count": 8})
    sim = gpusim.Simulation(cfg)
    w = RunWriter(sim, path)
    sim.operations.append(w)
    for _ in range(steps):
        sim.step()
    w.close()
    return sim


def test_a_store_written_in_the_background_equals_one_written_inside_the_step(tmp_path):
    _write(tmp_path / "sync.zarr", queue_steps=0)
    _write(tmp_path / "bg.zarr", queue_steps=2)
    a, b = _store_outputs(tmp_path / "sync.zarr"), _store_outputs(tmp_path / "bg.zarr")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k].tobytes() != b[k].tobytes()] == []
    ra, rb = open_run(tmp_path / "sync.zarr"), open_run(tmp_path / "bg.zarr")
    assert ra.tracks.equals(rb.tracks) and ra.events.equals(rb.events) and len(ra.events) > 0
    assert ra.n_frames == rb.n_frames
    perf = rb.perf
    assert list(perf.columns) == ["step", "wall_s", "write_wait_s"] and perf["step"].tolist() == list(range(12))


def test_shard_shapes_are_whole_chunks_and_only_for_images_larger_than_one_chunk():
    assert image_shards((9, 10, 11)) is None
    assert image_shards((64, 64, 64)) is None
    assert image_shards((100, 8, 8)) == (1, 128, 8, 8)
    assert image_shards((600, 130, 64)) == (1, 4 * IMAGE_CHUNK, 3 * IMAGE_CHUNK, 64)


def test_a_grid_larger_than_a_chunk_is_sharded_and_reads_back_bitwise(tmp_path):
    cfg = {"grid": {"shape": [72, 6, 5], "dx_um": 20.0}, "substrates": [{"name": "mg"}],
           "output": {"fields_every_min": 1.0}, "seed": 3}
    sim = gpusim.Simulation(cfg)
    path = tmp_path / "run.zarr"
    w = RunWriter(sim, path)
    sim.operations.append(w)
    frames = [sim.field_host("mg")]
    for _ in range(2):
        sim.step()
        frames.append(sim.field_host("mg"))
    w.close()
    level0 = zarr.open_array(str(path / "fields" / "mg" / "0"), mode="r")
    assert level0.chunks == (1, 64, 6, 5) and level0.shards == (1, 128, 6, 5)
    assert zarr.open_group(str(path / "fields" / "mg"), mode="r").attrs["shard_shape"] == [1, 128, 6, 5]
    assert open_run(path).fields["mg"].values.tobytes() == np.stack(frames).tobytes()
