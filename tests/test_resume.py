"""Checkpoint, interruption and exact resume through the run store (DESIGN.md §4): a run stopped at a
checkpoint — by returning, by SIGTERM, or by SIGKILL at any moment — and resumed with
``Simulation.resume`` / ``gpusim resume`` ends bitwise equal to the uninterrupted run, outputs
included, with nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpusim
from gpusim.backend import cuda_status
from gpusim.io import checkpoint
from test_cells_determinism import busy_config, state_of

REPO_ROOT = Path(gpusim.__file__).resolve().parent.parent


def _cfg(**output):
    cfg = busy_config()
    cfg["output"] = {"fields_every_min": 10.0, "tumor_every_min": 10.0, "tcells_every_min": 20.0,
                     "checkpoint_every_steps": 15, "checkpoint_every_wall_min": None, **output}
    return cfg


def _store_contents(path) -> dict:
    run = gpusim.open_run(path)
    out = {f"ts_{k}": run.timeseries[k].to_numpy() for k in run.timeseries.columns}
    for name, da in run.fields.items():
        out[f"field_{name}"] = np.asarray(da.values)
    out["tumor"] = np.asarray(run.tumor.values)
    for i in range(run.n_frames["tcells"]):
        frame = run.tcells(i)
        for col in frame.columns:
            out[f"tcells{i}_{col}"] = frame[col].to_numpy()
    for name in ("tracks", "events"):
        table = getattr(run, name)
        if table is not None:
            for col in table.columns:
                values = np.asarray(table[col], dtype="U16") if col == "kind" else np.asarray(table[col])
                out[f"{name}_{col}"] = values  # kind: the category names, as fixed-width text
    return out


def _assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()]
    assert not diff, f"differ in {diff}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("whole") / "run.zarr"
    sim = gpusim.Simulation(_cfg())
    summary = sim.run(minutes=60, out=path, progress=False)
    assert not summary.interrupted
    return path, state_of(sim)


def test_resume_from_the_store_continues_bitwise(tmp_path, uninterrupted):
    whole_path, whole_state = uninterrupted
    path = tmp_path / "run.zarr"
    first = gpusim.Simulation(_cfg())
    first.run(minutes=37, out=path, progress=False)  # ends on a final checkpoint at step 37
    assert gpusim.open_run(path).status == "complete"
    sim = gpusim.Simulation.resume(path)
    assert sim.time_min == 37.0
    sim.run(minutes=23, progress=False)
    _assert_same(state_of(sim), whole_state)
    _assert_same(_store_contents(path), _store_contents(whole_path))


def test_resume_from_an_older_checkpoint_drops_the_outputs_after_it(tmp_path, uninterrupted):
    whole_path, whole_state = uninterrupted
    path = tmp_path / "run.zarr"
    sim = gpusim.Simulation(_cfg())
    sim.run(minutes=50, out=path, progress=False)
    # pretend the process died after step 45's checkpoint (15, 30, 45; the final one at 50 is lost)
    ck_state = dict(checkpoint.latest_slot(path))
    assert ck_state["step"] == 50
    other = "A" if ck_state["slot"] == "B" else "B"
    pointer = Path(path) / "checkpoint" / "current" / "zarr.json"
    text = pointer.read_text().replace(f'"slot": "{ck_state["slot"]}"', f'"slot": "{other}"').replace(
        '"step": 50', '"step": 45').replace('"time_min": 50.0', '"time_min": 45.0')
    pointer.write_text(text)
    resumed = gpusim.Simulation.resume(path)
    assert resumed.time_min == 45.0
    resumed.run(minutes=15, progress=False)
    _assert_same(state_of(resumed), whole_state)
    _assert_same(_store_contents(path), _store_contents(whole_path))


def _cli(*args, extra_env=None, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "gpusim.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


_SETS = ["--set", "grid.shape=[16,16,16]", "--set", "tumor.initial_radius_um=75", "--set",
         "tcells.initial_count=40", "--set", "output.checkpoint_every_steps=20", "--set",
         "output.fields_every_min=20", "--set", "output.tumor_every_min=20", "--set", "output.tcells_every_min=40",
         "--set", "output.tracks_every_min=5", "--set", "output.tracks_count=10", "--set", "output.events=true",
         "--backend", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def cli_whole(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "whole.zarr"
    p = _cli("run", "--scenario", "baseline", "--minutes", "300", "--out", str(path), *_SETS)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    run = gpusim.open_run(path)
    assert len(run.tracks) > 0 and (run.events["kind"] == "kill").sum() > 0  # compared after resumes too
    return path


def _wait_for_checkpoint(path, proc, timeout=300):
    t0 = time.time()
    while checkpoint.latest_slot(path) is None:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.02)


@pytest.mark.parametrize("delay_s", [0.0, pytest.param(0.3, marks=pytest.mark.slow), pytest.param(0.05, marks=pytest.mark.slow),
                                     pytest.param(0.6, marks=pytest.mark.slow),
                                     pytest.param(1.1, marks=pytest.mark.slow)])
def test_sigkill_at_any_moment_then_resume_gives_the_uninterrupted_run(tmp_path, cli_whole, delay_s):
    path = tmp_path / "run.zarr"
    p = _cli("run", "--scenario", "baseline", "--minutes", "300", "--out", str(path), *_SETS)
    _wait_for_checkpoint(path, p)
    time.sleep(delay_s)  # at or after the first checkpoint, possibly inside a later checkpoint write
    p.kill()
    p.communicate(timeout=60)
    r = _cli("resume", str(path), "--no-progress")
    out, err = r.communicate(timeout=600)
    assert r.returncode == 0, err[-3000:]
    assert gpusim.open_run(path).status == "complete"
    _assert_same(_store_contents(path), _store_contents(cli_whole))


def test_sigterm_marks_the_store_interrupted_and_resume_is_exact(tmp_path, cli_whole):
    path = tmp_path / "run.zarr"
    p = _cli("run", "--scenario", "baseline", "--minutes", "300", "--out", str(path), *_SETS)
    _wait_for_checkpoint(path, p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]  # 300 steps take seconds: the signal lands mid-run
    assert "gpusim resume" in out
    assert gpusim.open_run(path).status == "interrupted"
    r = _cli("resume", str(path), "--no-progress")
    _out, err = r.communicate(timeout=600)
    assert r.returncode == 0, err[-3000:]
    _assert_same(_store_contents(path), _store_contents(cli_whole))


# a kill aimed inside a checkpoint write (the hook GPUSIM_TEST_KILL_IN_CHECKPOINT="N:POINT:K" makes the
# run SIGKILL itself during its N-th checkpoint, the K-th time it passes POINT): checkpoints fall at
# steps 20 (slot A), 40 (slot B), 60 (slot A again, over the step-20 one)
_KILL_MOMENTS = [
    ("2:slot:1", 20),  # slot B just emptied: the pointer still names A (step 20)
    ("2:array:4", 20),  # half of slot B's arrays written
    pytest.param("2:meta:1", 20, marks=pytest.mark.slow),  # B complete but not yet synced or named
    pytest.param("2:pointer:1", 20, marks=pytest.mark.slow),  # the new pointer written, not yet renamed
    pytest.param("2:renamed:1", 40, marks=pytest.mark.slow),  # renamed: B (step 40) is the checkpoint
    pytest.param("3:array:9", 40, marks=pytest.mark.slow),  # slot A half overwritten: B (step 40) stands
]


@pytest.mark.parametrize("moment, resumes_from", _KILL_MOMENTS)
def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, cli_whole, moment, resumes_from):
    path = tmp_path / "run.zarr"
    p = _cli("run", "--scenario", "baseline", "--minutes", "300", "--out", str(path), *_SETS,
             extra_env={checkpoint.FAULT_ENV: moment})
    _out, err = p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL, err[-3000:]
    run = gpusim.open_run(path)  # the store opens: committed frames read, the status still "running"
    assert run.status == "running" and run.n_frames["timeseries"] >= 0
    assert checkpoint.latest_slot(path)["step"] == resumes_from
    r = _cli("resume", str(path), "--no-progress")
    _out, err = r.communicate(timeout=600)
    assert r.returncode == 0, err[-3000:]
    _assert_same(_store_contents(path), _store_contents(cli_whole))


def test_sigkill_inside_the_first_checkpoint_leaves_a_readable_store_and_a_clear_resume_error(tmp_path):
    path = tmp_path / "run.zarr"
    p = _cli("run", "--scenario", "baseline", "--minutes", "300", "--out", str(path), *_SETS,
             extra_env={checkpoint.FAULT_ENV: "1:array:3"})
    p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL
    run = gpusim.open_run(path)
    assert run.n_frames["fields/mg"] >= 1 and run.fields["mg"].isel(t=0).values.size == 16 ** 3
    assert checkpoint.latest_slot(path) is None
    r = _cli("resume", str(path), "--no-progress")
    _out, err = r.communicate(timeout=600)
    assert r.returncode != 0 and "no checkpoint yet" in err and "Traceback" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_status()[0], reason=f"no usable GPU: {cuda_status()[1]}")
@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_written_on_one_backend_resumes_bitwise_on_the_other(tmp_path, uninterrupted, first, then):
    """GPU -> CPU (a laptop continues a cluster run) and back: the checkpoint holds host arrays only,
    and the backends compute bitwise alike (tests/test_gpu_simulation.py)."""
    whole_path, whole_state = uninterrupted  # written on the CPU
    path = tmp_path / "run.zarr"
    gpusim.Simulation(_cfg(), backend=first).run(minutes=37, out=path, progress=False)
    sim = gpusim.Simulation.resume(path, backend=then)
    assert sim.backend.name == then
    sim.run(minutes=23, progress=False)
    _assert_same(state_of(sim), whole_state)
    _assert_same(_store_contents(path), _store_contents(whole_path))
