"""Exact restart (DESIGN.md §2, §4): a run captured at step k and restored into a fresh Simulation
continues bitwise as the uninterrupted run — fields, lattice, T cells, timeseries, counters — which
also proves that the captured state is the whole state. The arrays are plain (no pickle): they
round-trip through an .npz file opened with allow_pickle=False."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpusim
from gpusim.agents.tcell_store import TCellState
from gpusim.io.checkpoint import CheckpointError, capture, restore
from test_cells_determinism import busy_config, state_of


def _config():
    cfg = busy_config()
    cfg["events"] = [
        {"name": "implant", "type": "implant", "time_min": 30.0, "substrate": "mg",
         "center_um": [150.0, 150.0, 150.0], "radius_um": 30.0, "rate_umol_per_min": 2e-5},
        {"name": "infusion", "type": "serum", "time_min": 20.0, "duration_min": 25.0, "repeat_every_min": 50.0,
         "repeat_count": 3, "substrate": "mg", "value": 0.7},
        {"name": "transfer", "type": "tcell_infusion", "time_min": 75.0, "count": 40, "placement": "shell",
         "shell_um": [15.0, 45.0]},
    ]
    return cfg


def test_restored_run_continues_bitwise_as_the_uninterrupted_one(tmp_path):
    whole = gpusim.Simulation(_config())
    whole.run(minutes=120, progress=False)

    first = gpusim.Simulation(_config())
    # at 65 min the O2 steady solve (every 10 min), the implant and a serum pulse are all mid-way
    first.run(minutes=65, progress=False)
    arrays, meta = capture(first)
    np.savez(tmp_path / "ck.npz", **arrays)
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    meta = json.loads(json.dumps(meta))  # the scalars are JSON

    resumed = gpusim.Simulation(gpusim.Config.from_json(meta["config"]))
    restore(resumed, loaded, meta)
    assert resumed.time_min == 65.0
    resumed.run(minutes=55, progress=False)

    a, b = state_of(whole), state_of(resumed)
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k].dtype != b[k].dtype or a[k].tobytes() != b[k].tobytes()]
    assert not diff, f"restored run differs in {diff}"
    ts = whole.timeseries
    assert ts["kills"][-1] > ts["kills"][64] > 0  # both halves kill, so the T-cell state mattered
    assert ts["tcells"][80] >= ts["tcells"][70] + 30  # the infusion came after the checkpoint


def test_restore_refuses_another_config_naming_the_difference():
    sim = gpusim.Simulation(_config())
    sim.step()
    arrays, meta = capture(sim)
    other = gpusim.Simulation(gpusim.Config.model_validate(_config()).with_overrides({"tcells.k_on_per_min": 0.1}))
    with pytest.raises(CheckpointError, match="tcells"):
        restore(other, arrays, meta)
    with pytest.raises(CheckpointError, match="format version"):
        restore(gpusim.Simulation(_config()), arrays, dict(meta, checkpoint_version=99))
    bad = dict(arrays)
    bad["lattice/tumor"] = bad["lattice/tumor"][:-1]
    with pytest.raises(CheckpointError, match="lattice/tumor"):
        restore(gpusim.Simulation(_config()), bad, meta)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    import zarr

    from gpusim.io import checkpoint

    path = tmp_path / "run.zarr"
    sim = gpusim.Simulation(_config())
    sim.run(minutes=5, out=path, progress=False)  # ends with a checkpoint at step 5
    before = checkpoint.latest_slot(path)
    assert before["step"] == 5
    sim.step()
    real_set = zarr.storage.LocalStore.set

    async def full(self, key, value, *args, **kwargs):
        if key.startswith("checkpoint/"):
            raise OSError(errno.ENOSPC, "No space left on device", key)
        return await real_set(self, key, value, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full)
    with pytest.raises(CheckpointError, match=r"disk is full.*step 6.*previous checkpoint is intact"):
        checkpoint.write(path, sim)
    monkeypatch.undo()
    assert checkpoint.latest_slot(path) == before
    arrays, meta = checkpoint.read(path)
    assert meta["step"] == 5


def test_snapshots_and_checkpoints_hold_the_t_cells_in_uid_order_whatever_the_store_order():
    """The live store is in its last sort's (voxel, uid) order with daughters and recruits appended; a
    snapshot and a checkpoint hold the same rows in uid order (canonical, so a run whose cells were
    held by several ranks writes the same arrays), and the store itself is left as it was."""
    sim = gpusim.Simulation(_config())
    sim.run(minutes=20, progress=False)
    s = sim.tcells
    live = np.asarray(s.uid[: s.n]).copy()
    assert np.any(live[1:] < live[:-1]), "the store happens to be in uid order: no power"
    snap = sim.tcell_snapshot()
    assert np.all(snap["uid"][1:] > snap["uid"][:-1])
    alive = np.asarray(s.state[: s.n]) != np.uint8(TCellState.DEAD)
    assert sorted(snap["uid"].tolist()) == sorted(live[alive].tolist())
    arrays, _ = capture(sim)
    order = np.argsort(live, kind="stable")
    np.testing.assert_array_equal(arrays["tcells/uid"], live[order])
    np.testing.assert_array_equal(arrays["tcells/pos_um"], np.asarray(s.pos_um[: s.n])[order])
    np.testing.assert_array_equal(np.asarray(s.uid[: s.n]), live)
