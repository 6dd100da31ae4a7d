"""The Zarr v3 run store (DESIGN.md §4): RunWriter writes what the simulation held at each scheduled
time, open_run gives it back bit for bit; the OME-Zarr 0.5 metadata validates with ome-zarr-models and
the level-1 field is the 2x2x2 block mean; a resume truncates every output to the resume step and the
continued store equals the uninterrupted one; bad paths and newer formats are refused with clear errors
and foreign data are never touched.

The run: 9 x 10 x 11 voxels (odd sizes, so the 2x levels have partial blocks), Mg, O2 and chemokine, a
50 µm tumour with 20 T cells in it (the busy rates of test_cells_determinism), dt = 1 min, fields every
3 min, tumour every 4 min, T cells every 5 min.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

import gpusim
from gpusim.io.reader import open_run
from gpusim.io.store import FORMAT_VERSION, StoreError, create_store, open_store
from gpusim.io.writer import RunWriter
from test_cells_determinism import busy_config

EVERY = {"fields": 3.0, "tumor": 4.0, "tcells": 5.0}
TCELL_COLS = ("uid", "state", "lfa1", "kills")


def _config() -> dict:
    cfg = busy_config()
    cfg["grid"]["shape"] = [9, 10, 11]
    cfg["tumor"]["initial_radius_um"] = 50.0
    cfg["tcells"]["initial_count"] = 20
    cfg["output"] = {"fields_every_min": EVERY["fields"], "tumor_every_min": EVERY["tumor"],
                     "tcells_every_min": EVERY["tcells"]}
    return cfg


def _capture(sim, captured: dict) -> None:
    """Host copies of what is due at the simulation's current time (the end of the step just done)."""
    t = sim.time_min
    if t % EVERY["fields"] == 0:
        captured["fields"].append((t, {n: sim.field_host(n) for n in sim.fields}))
    if t % EVERY["tumor"] == 0:
        captured["tumor"].append((t, sim.tumor_state()))
    if t % EVERY["tcells"] == 0:
        captured["tcells"].append((t, sim.tcell_snapshot()))


def _run_captured(path, steps: int):
    sim = gpusim.Simulation(_config())
    captured = {"fields": [], "tumor": [], "tcells": []}
    w = RunWriter(sim, path)
    sim.operations.append(w)
    _capture(sim, captured)
    for _ in range(steps):
        sim.step()
        _capture(sim, captured)
    w.close()
    return sim, captured


def _block_mean_loops(a: np.ndarray) -> np.ndarray:
    """Independent 2x2x2 block mean: explicit loops over blocks, partial edge blocks averaged."""
    nz, ny, nx = a.shape
    out = np.zeros(((nz + 1) // 2, (ny + 1) // 2, (nx + 1) // 2), np.float64)
    for k in range(out.shape[0]):
        for j in range(out.shape[1]):
            for i in range(out.shape[2]):
                out[k, j, i] = a[2 * k:2 * k + 2, 2 * j:2 * j + 2, 2 * i:2 * i + 2].astype(np.float64).mean()
    return out


def _store_outputs(path) -> dict:
    """Every committed output of a store as host arrays (perf excluded: timings)."""
    run = open_run(path)
    out = {f"field_{n}": run.fields[n].values for n in run.fields}
    out.update({f"time_{n}": run.fields[n].time_min.values for n in run.fields})
    out["tumor"] = run.tumor.values
    out["tumor_time"] = run.tumor.time_min.values
    for k in range(run.n_frames["tcells"]):
        for col, values in run.tcells(k).items():
            out[f"tcells{k}_{col}"] = values.to_numpy()
    for col, values in run.timeseries.items():
        out[f"ts_{col}"] = values.to_numpy()
    return out


def test_round_trip_gives_back_every_scheduled_frame_bitwise(tmp_path):
    path = tmp_path / "run.zarr"
    sim, cap = _run_captured(path, 12)
    run = open_run(path)

    assert run.status == "complete"
    assert run.config == sim.config
    assert run.attrs["format_version"] == FORMAT_VERSION
    assert run.attrs["seed"] == sim.config.seed
    assert run.attrs["n_sub"] == {n: p.n_sub for n, p in sim.field_update.plans.items()}
    assert run.attrs["units"] == {"mg": "mM", "o2": sim.field_update.plans["o2"].unit,
                                  "chemokine": sim.field_update.plans["chemokine"].unit}
    assert run.attrs["grid_shape"] == [9, 10, 11] and run.attrs["dx_um"] == 15.0
    assert run.attrs["end_time"] is not None

    # frames at 0, 3, ..., 12 (fields); 0, 4, 8, 12 (tumour); 0, 5, 10 (T cells)
    assert [t for t, _ in cap["fields"]] == [0, 3, 6, 9, 12]
    assert run.n_frames == {"fields/chemokine": 5, "fields/mg": 5, "fields/o2": 5, "tumor": 4,
                            "tcells": 3, "timeseries": 12, "perf": 12}
    for name in ("mg", "o2", "chemokine"):
        da = run.fields[name]
        assert da.dims == ("t", "z", "y", "x") and da.attrs["units"] == sim.field_update.plans[name].unit
        np.testing.assert_array_equal(da.time_min.values, [t for t, _ in cap["fields"]])
        want = np.stack([f[name] for _, f in cap["fields"]])
        assert da.dtype == np.float32 and da.values.tobytes() == want.tobytes()
    assert not np.array_equal(run.fields["mg"].values[0], run.fields["mg"].values[-1])  # the field changed
    np.testing.assert_array_equal(run.fields["mg"].x.values, (np.arange(11) + 0.5) * 15.0)

    lattice = np.stack([a for _, a in cap["tumor"]])
    assert run.tumor.dtype == np.uint8 and np.array_equal(run.tumor.values, lattice)
    np.testing.assert_array_equal(run.tumor.time_min.values, [0, 4, 8, 12])
    assert run.tumor.attrs["labels"] == {0: "EMPTY", 1: "LIVE", 2: "DEAD", 3: "NECROTIC"}
    assert (lattice == 1).any()

    for k, (t, snap) in enumerate(cap["tcells"]):
        df = run.tcells(k)
        assert len(df) == len(snap["uid"]) > 0
        assert (df["time_min"] == t).all()
        pos = np.stack([df["z_um"], df["y_um"], df["x_um"]], axis=1)
        assert pos.dtype == np.float32 and pos.tobytes() == snap["position_um"].tobytes()
        for col in TCELL_COLS:
            assert df[col].dtype == snap[col].dtype and np.array_equal(df[col].to_numpy(), snap[col]), col
    assert not np.array_equal(run.tcells(0)[["z_um", "y_um", "x_um"]].to_numpy(),
                              run.tcells(2)[["z_um", "y_um", "x_um"]].to_numpy())  # the T cells moved

    ts = run.timeseries
    assert list(ts.columns) == list(sim.timeseries)
    for col, values in sim.timeseries.items():
        assert ts[col].to_numpy().dtype == values.dtype and ts[col].to_numpy().tobytes() == values.tobytes(), col
    np.testing.assert_array_equal(run.perf["step"].to_numpy(), np.arange(12))


def test_ome_metadata_validates_and_level_1_is_the_2x_block_mean(tmp_path):
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    path = tmp_path / "run.zarr"
    _run_captured(path, 6)
    for name in ("mg", "o2", "chemokine"):
        g = zarr.open_group(str(path / "fields" / name), mode="r")
        img = Image.from_zarr(g)
        ms = img.attributes.ome.multiscales[0]
        assert [a.name for a in ms.axes] == ["t", "z", "y", "x"]
        assert [a.unit for a in ms.axes] == ["minute", "micrometer", "micrometer", "micrometer"]
        assert list(ms.datasets[0].coordinateTransformations[0].scale) == [3.0, 15.0, 15.0, 15.0]
        assert list(ms.datasets[1].coordinateTransformations[0].scale) == [3.0, 30.0, 30.0, 30.0]
        lvl0, lvl1 = np.asarray(g["0"][:]), np.asarray(g["1"][:])
        assert lvl1.shape == (3, 5, 5, 6)
        for t in range(lvl0.shape[0]):
            np.testing.assert_allclose(lvl1[t], _block_mean_loops(lvl0[t]), rtol=1e-6, atol=0)
    tg = zarr.open_group(str(path / "tumor"), mode="r")
    label = ImageLabel.from_zarr(tg)
    assert {p.label_value for p in label.attributes.ome.image_label.properties} == {0, 1, 2, 3}
    assert np.array_equal(np.asarray(tg["1"][:]), np.asarray(tg["0"][:])[:, ::2, ::2, ::2])


def test_a_frame_written_but_not_committed_is_ignored(tmp_path):
    path = tmp_path / "run.zarr"
    _run_captured(path, 3)  # field frames at 0 and 3
    before = open_run(path).fields["mg"].values
    g = zarr.open_group(str(path / "fields" / "mg"), mode="r+")  # a crash mid-frame: data, no counter
    g["0"].resize((3, 9, 10, 11))
    g["0"][2] = np.float32(-1.0)
    g["time_min"].resize((3,))
    g["time_min"][2] = 6.0
    run = open_run(path)
    assert run.n_frames["fields/mg"] == 2
    assert run.fields["mg"].values.tobytes() == before.tobytes()


def test_resume_truncates_to_the_step_and_the_continued_store_equals_the_uninterrupted_one(tmp_path):
    path, ref = tmp_path / "run.zarr", tmp_path / "ref.zarr"
    _run_captured(path, 30)
    shutil.copytree(path, ref)

    again = gpusim.Simulation(_config())  # the same seed and config: the state of step 20
    again.run(minutes=20, progress=False)
    with pytest.raises(StoreError, match="simulation is at step 20"):
        RunWriter(again, path, resume_step=19)
    w = RunWriter(again, path, resume_step=20)
    run = open_run(path)
    assert run.status == "running"
    # kept: times <= 20 min; fields 0..18 by 3, tumour 0..20 by 4, T cells 0..20 by 5, 20 rows
    assert run.n_frames == {"fields/chemokine": 7, "fields/mg": 7, "fields/o2": 7, "tumor": 6,
                            "tcells": 5, "timeseries": 20, "perf": 20}
    np.testing.assert_array_equal(run.fields["mg"].time_min.values, np.arange(0, 19, 3))
    np.testing.assert_array_equal(run.timeseries["time_min"].to_numpy(), np.arange(1, 21))
    assert zarr.open_array(str(path / "fields" / "mg" / "0"), mode="r").shape[0] == 7
    assert zarr.open_array(str(path / "tcells" / "offsets"), mode="r").shape[0] == 6

    again.operations.append(w)
    again.run(minutes=10, progress=False)
    w.close()
    a, b = _store_outputs(ref), _store_outputs(path)
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k].dtype != b[k].dtype or a[k].tobytes() != b[k].tobytes()]
    assert not diff, f"resumed store differs in {diff}"
    run = open_run(path)
    assert run.status == "complete" and run.attrs["resumes"] == [{"step": 20, "time_min": 20.0}]
    np.testing.assert_array_equal(run.perf["step"].to_numpy(), np.arange(30))


def test_an_existing_store_is_refused_without_overwrite_and_replaced_with_it(tmp_path):
    path = tmp_path / "run.zarr"
    sim = gpusim.Simulation(_config())
    create_store(path, sim)
    with pytest.raises(StoreError, match="already exists.*overwrite"):
        RunWriter(sim, path)
    w = RunWriter(sim, path, overwrite=True)
    w.close()
    assert open_run(path).n_frames["fields/mg"] == 1


def test_foreign_data_are_refused_even_with_overwrite_and_left_intact(tmp_path):
    sim = gpusim.Simulation(_config())
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.txt").write_text("precious")
    with pytest.raises(StoreError, match="not a gpusim run store"):
        create_store(foreign, sim, overwrite=True)
    assert (foreign / "chapter1.txt").read_text() == "precious"
    other = tmp_path / "other.zarr"  # a Zarr group, but not ours
    zarr.open_group(str(other), mode="w").create_array("x", shape=(3,), dtype="i4")[:] = [1, 2, 3]
    with pytest.raises(StoreError, match="not a gpusim run store"):
        RunWriter(sim, other, overwrite=True)
    assert list(zarr.open_array(str(other / "x"), mode="r")[:]) == [1, 2, 3]
    with pytest.raises(StoreError, match="not a gpusim run store"):
        open_run(other)
    afile = tmp_path / "file.zarr"
    afile.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        create_store(afile, sim, overwrite=True)
    assert afile.read_text() == "x"


def test_a_newer_format_version_and_a_missing_path_give_clear_errors(tmp_path):
    path = tmp_path / "run.zarr"
    sim = gpusim.Simulation(_config())
    create_store(path, sim)
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["gpusim"]["format_version"] = FORMAT_VERSION + 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=f"format version {FORMAT_VERSION + 1}.*upgrade gpusim"):
        open_run(path)
    with pytest.raises(StoreError, match=f"format version {FORMAT_VERSION + 1}"):
        RunWriter(sim, path, resume_step=0)
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(StoreError, match="nowhere.zarr.*does not exist"):
        open_store(missing)
    assert not missing.exists()


# -- tracks and events ---------------------------------------------------------------------------
def _tracks_events_config(**output) -> dict:
    cfg = _config()
    cfg["tcells"]["apoptosis_per_min"] = 0.03  # so that some tracked T cells die within the run
    cfg["output"].update({"tcells_every_min": 4.0, "tracks_every_min": 1.0, "tracks_count": 8, "events": True,
                          **output})
    return cfg


def _track_key_python(seed: int, uid: int) -> int:
    """Independent track key: the Philox words called as plain Python (not the writer's compiled loop)."""
    from gpusim import rng

    w = rng.philox_agent(np.uint64(seed), rng.STREAM_SETUP, np.uint64(uid), 0, rng.PURPOSE_PLACEMENT, 7)
    return (int(w[0]) << 32) | int(w[1])


def _run_stepwise(path, steps: int):
    """The run with a writer, and host copies after every step: T-cell snapshot, flags/hit/uid/target
    columns of the store, the lattice."""
    from gpusim.agents import rules as R

    sim = gpusim.Simulation(_tracks_events_config())
    w = RunWriter(sim, path)
    sim.operations.append(w)
    initial = sim.tcell_snapshot()
    after = []
    for _ in range(steps):
        sim.step()
        s = sim.tcells
        after.append({"snap": sim.tcell_snapshot(), "tumor": sim.tumor_state(),
                      "died": np.asarray(s.uid)[(np.asarray(s.flags) & R.FL_DIED) != 0]})
    w.close()
    return sim, initial, after


def test_tracks_follow_a_fixed_subset_and_equal_the_snapshots_at_common_frames(tmp_path):
    path = tmp_path / "run.zarr"
    steps = 20
    sim, initial, after = _run_stepwise(path, steps)
    run = open_run(path)
    seed = sim.config.seed

    # the subset: the 8 smallest keys among the 20 initial T cells, computed independently
    uids0 = [int(u) for u in initial["uid"]]
    want = sorted(sorted(uids0, key=lambda u: (_track_key_python(seed, u), u))[:8])
    assert [int(u) for u in run.tracked_uids] == want

    tr = run.tracks
    assert list(tr.columns) == ["time_min", "uid", "z_um", "y_um", "x_um", "state", "lfa1"]
    assert run.n_frames["tracks"] == steps + 1
    np.testing.assert_array_equal(np.unique(tr["time_min"]), np.arange(steps + 1, dtype=np.float64))
    snaps = [initial] + [a["snap"] for a in after]  # the state at t = 0, 1, ..., steps min
    tracked = np.asarray(want, np.uint64)
    for t, snap in enumerate(snaps):
        frame = tr[tr["time_min"] == t]
        sel = np.isin(snap["uid"], tracked)
        order = np.argsort(snap["uid"][sel])
        assert frame["uid"].to_numpy().tobytes() == snap["uid"][sel][order].tobytes(), t
        pos = frame[["z_um", "y_um", "x_um"]].to_numpy()
        assert pos.dtype == np.float32 and pos.tobytes() == snap["position_um"][sel][order].tobytes(), t
        assert frame["state"].to_numpy().tobytes() == snap["state"][sel][order].tobytes(), t
        assert frame["lfa1"].to_numpy().tobytes() == snap["lfa1"][sel][order].tobytes(), t

    # ... and equal the store's own T-cell snapshots (every 4 min) at the common frames
    for k, t in enumerate(run.tcell_times()):
        snap = run.tcells(k).set_index("uid")
        frame = tr[tr["time_min"] == t].set_index("uid")
        assert len(frame) > 0
        cols = ["z_um", "y_um", "x_um", "state", "lfa1"]
        assert frame[cols].equals(snap.loc[frame.index, cols]), t
        assert set(frame.index) == set(snap.index) & set(want), t

    # tracked T cells that die stop appearing, and never come back
    died = {int(u) for a in after for u in a["died"]} & set(want)
    assert died, "no tracked T cell died: raise apoptosis_per_min"
    seen_last = tr.groupby("uid")["time_min"].max()
    for u in want:
        rows = tr[tr["uid"] == np.uint64(u)]["time_min"].to_numpy()
        np.testing.assert_array_equal(rows, np.arange(rows.size))  # present from 0 without gaps
        if u in died:
            assert seen_last[np.uint64(u)] < steps
        else:
            assert seen_last[np.uint64(u)] == steps


def test_the_event_log_reproduces_the_timeseries_kills_and_engagements(tmp_path):
    from gpusim.agents import rules as R

    path = tmp_path / "run.zarr"
    steps = 24
    sim, _initial, after = _run_stepwise(path, steps)
    run = open_run(path)
    ev = run.events
    assert list(ev.columns) == ["step", "kind", "uid", "voxel"]
    assert list(ev["kind"].cat.categories) == ["engage", "hit", "kill", "disengage"]
    assert run.n_frames["events"] == len(ev)
    assert np.all(np.diff(ev["step"].to_numpy()) >= 0)

    ts = sim.timeseries
    for kind, col in (("kill", "kills"), ("engage", "engagements")):
        per_step = np.bincount(ev["step"][ev["kind"] == kind].to_numpy(), minlength=steps)
        np.testing.assert_array_equal(per_step, np.diff(ts[col], prepend=0), err_msg=kind)
    assert ts["kills"][-1] > 0 and ts["engagements"][-1] > 0

    nz, ny, nx = sim.state.shape
    for step, a in enumerate(after):
        rows = ev[ev["step"] == step]
        by = {k: rows[rows["kind"] == k] for k in ("engage", "hit", "kill", "disengage")}
        snap = dict(zip(a["snap"]["uid"].tolist(), zip(a["snap"]["state"], a["snap"]["target"])))
        for _, r in by["engage"].iterrows():  # engaged now, on that voxel
            assert snap[int(r.uid)] == (R.ENGAGED, r.voxel)
        hits = {(int(r.uid), r.voxel) for _, r in by["hit"].iterrows()}
        disengaged = {(int(r.uid), r.voxel) for _, r in by["disengage"].iterrows()}
        for _, r in by["kill"].iterrows():  # a kill: the killer's hit on it, its synapse ends, the cell DEAD
            assert (int(r.uid), r.voxel) in hits and (int(r.uid), r.voxel) in disengaged
            z, rem = divmod(int(r.voxel), ny * nx)
            assert a["tumor"][z, rem // nx, rem % nx] == R.DEAD
        for u, _v in disengaged:
            assert snap[u][0] == R.FREE
        assert not (set(rows["uid"].tolist()) & set(a["died"].tolist()))  # a T cell that died has no event

    # per-target killer counts, against a plain walk over the log: the cell at a voxel ends at its kill
    targets = run.targets()
    assert int(targets["killed"].sum()) == ts["kills"][-1] and int(targets["hits"].sum()) == int((ev["kind"] == "hit").sum())
    cells = {}  # (voxel, n-th cell there) -> {"hit": set, "engage": set, "kill": [uid, step]}
    kills_seen = {}
    for step in range(steps):
        rows = ev[ev["step"] == step]
        for _, r in rows[rows["kind"] != "kill"].iterrows():
            c = cells.setdefault((r.voxel, kills_seen.get(r.voxel, 0)), {"hit": set(), "engage": set(), "kill": None})
            if r.kind in ("hit", "engage"):
                c[r.kind].add(int(r.uid))
        for _, r in rows[rows["kind"] == "kill"].iterrows():
            c = cells.setdefault((r.voxel, kills_seen.get(r.voxel, 0)), {"hit": set(), "engage": set(), "kill": None})
            c["kill"] = (int(r.uid), step)
            kills_seen[r.voxel] = kills_seen.get(r.voxel, 0) + 1
    assert len(targets) == len(cells)
    for (voxel, _n), c in sorted(cells.items()):
        row = targets[(targets["voxel"] == voxel)].iloc[_n]
        assert (row.hitters, row.engagers, bool(row.killed)) == (len(c["hit"]), len(c["engage"]), c["kill"] is not None)
        if c["kill"] is not None:
            assert (int(row.killer_uid), int(row.kill_step)) == c["kill"] and c["kill"][0] in c["hit"]
        z, rem = divmod(int(voxel), ny * nx)
        assert (row.z, row.y, row.x) == (z, rem // nx, rem % nx)


def _point_at_older_checkpoint(path) -> int:
    """Make the store's checkpoint pointer name the other slot (the checkpoint before the last), as if the
    process had died before the last one; returns its step."""
    from gpusim.io import checkpoint

    cur = checkpoint.latest_slot(path)
    other = "B" if cur["slot"] == "A" else "A"
    meta = zarr.open_group(str(path), mode="r")[f"checkpoint/{other}"].attrs["meta"]
    pointer = path / "checkpoint" / "current" / "zarr.json"
    pointer.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "slot": other, "step": meta["step"], "time_min": meta["time_min"]}}))
    return int(meta["step"])


def test_tracks_and_events_survive_a_resume_from_an_older_checkpoint(tmp_path):
    cfg = _tracks_events_config(checkpoint_every_steps=8, checkpoint_every_wall_min=None)
    whole = tmp_path / "whole.zarr"
    gpusim.Simulation(cfg).run(minutes=24, out=whole, progress=False)
    path = tmp_path / "run.zarr"
    gpusim.Simulation(cfg).run(minutes=20, out=path, progress=False)  # checkpoints 8, 16 and the final 20
    assert open_run(path).events["step"].max() >= 16 and open_run(path).n_frames["tracks"] == 21
    assert _point_at_older_checkpoint(path) == 16
    sim = gpusim.Simulation.resume(path)
    assert sim.time_min == 16.0
    run = open_run(path)  # truncated: nothing after step 16 is left
    assert run.n_frames["tracks"] == 17 and run.tracks["time_min"].max() == 16.0
    assert run.events["step"].max() < 16
    sim.run(minutes=8, progress=False)

    a, b = open_run(whole), open_run(path)
    assert b.status == "complete"
    assert a.tracked_uids.tobytes() == b.tracked_uids.tobytes()
    for name in ("tracks", "events"):
        x, y = getattr(a, name), getattr(b, name)
        assert len(x) > 0 and list(x.columns) == list(y.columns)
        for col in x.columns:
            if col == "kind":  # categorical: compare the codes and the names
                assert list(x[col].cat.categories) == list(y[col].cat.categories)
                xs, ys = x[col].cat.codes.to_numpy(), y[col].cat.codes.to_numpy()
            else:
                xs, ys = x[col].to_numpy(), y[col].to_numpy()
            assert xs.dtype == ys.dtype and xs.tobytes() == ys.tobytes(), (name, col)


def test_event_rows_of_disjoint_parts_of_the_store_merge_into_the_whole_stores_rows():
    """What MPI ranks holding disjoint T cells send rank 0 (docs/owned_state.md step 11): the rows of
    any partition of the store, merged, are the rows of the whole store, byte for byte."""
    from types import SimpleNamespace

    from gpusim.io.layout import event_rows, merge_event_rows

    sim = gpusim.Simulation(_tracks_events_config())
    rng = np.random.default_rng(8)
    total = 0
    for step in range(24):
        sim.step()
        s = sim.tcells
        whole = event_rows(s, np, np.asarray, step)
        cols = {c: np.asarray(getattr(s, c)) for c in ("flags", "hit", "uid", "target")}
        for holder in (rng.integers(0, 3, s.n), (np.asarray(s.voxel) * 7) % 2):
            parts = [event_rows(SimpleNamespace(n=int(np.count_nonzero(holder == r)),
                                                **{c: a[holder == r] for c, a in cols.items()}), np, np.asarray, step)
                     for r in range(3)]
            merged = merge_event_rows(parts)
            if whole is None:
                assert merged is None
                continue
            assert all(merged[c].dtype == whole[c].dtype and merged[c].tobytes() == whole[c].tobytes()
                       for c in whole), step
        total += 0 if whole is None else whole["step"].shape[0]
    assert total > 0
