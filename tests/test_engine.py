"""The engine end to end: the README snippet, vessels, events, the CLI, backends and error messages."""

import json
import subprocess
import sys

import numpy as np
import pytest

import gpusim
from gpusim import vessels
from gpusim.backend import BackendError, check_memory, cuda_status, select_backend
from gpusim.cli import main
from gpusim.events import UMOL_PER_UM3


def small_cfg(**extra):
    base = {
        "grid": {"shape": [12, 10, 14], "dx_um": 15.0},
        "substrates": [{"name": "mg"}],
        "seed": 3,
        "backend": "cpu",
    }
    base.update(extra)
    return gpusim.Config.model_validate(base)


def test_readme_snippet_conserves_a_point_mass():
    cfg = gpusim.Config.model_validate({
        "grid": {"shape": [64, 64, 64], "dx_um": 10.0},
        "time": {"dt_min": 0.5},
        "solver": "lod",
        "substrates": [{"name": "mg", "D_um2_per_min": 1000.0, "decay_per_min": 0.0,
                        "initial": 0.0, "boundary": "zero_flux"}],
        "seed": 1, "backend": "cpu"})
    sim = gpusim.Simulation(cfg)
    sim.fields["mg"][32, 32, 32] = 1.0
    sim.run(minutes=20, progress=False)
    c = sim.field_host("mg")
    assert abs(c.sum(dtype=np.float64) - 1.0) < 1e-6
    assert c.max() < 0.1  # it did spread: sqrt(2*D*t) = 200 um = 20 voxels
    assert sim.time_min == 20.0


def test_random_vessels_cover_the_requested_fraction_and_depend_only_on_the_seed():
    a = vessels.random_mask((40, 30, 50), 0.02, 150.0, 15.0, seed=7)
    b = vessels.random_mask((40, 30, 50), 0.02, 150.0, 15.0, seed=7)
    c = vessels.random_mask((40, 30, 50), 0.02, 150.0, 15.0, seed=8)
    assert a.sum() == round(0.02 * a.size)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_shell_vessels_are_exactly_the_boundary_voxels():
    m = vessels.shell_mask((5, 6, 7))
    assert m.sum() == 5 * 6 * 7 - 3 * 4 * 5
    assert m[1:-1, 1:-1, 1:-1].sum() == 0


def test_vessel_file_is_validated_and_never_unpickled(tmp_path):
    good = tmp_path / "v.npy"
    np.save(good, np.eye(4, dtype=bool)[None].repeat(3, 0))
    assert vessels.load_mask(good, (3, 4, 4)).sum() == 12
    with pytest.raises(vessels.VesselFileError, match="shape"):
        vessels.load_mask(good, (4, 4, 4))
    obj = tmp_path / "o.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(vessels.VesselFileError, match="pickle"):
        vessels.load_mask(obj, (1,))


def test_bolus_adds_its_amount_at_its_step():
    cfg = small_cfg(events=[{"name": "b", "type": "bolus", "time_min": 3, "substrate": "mg",
                             "center_um": [90.0, 75.0, 105.0], "radius_um": 40.0, "amount_umol": 2e-7}])
    sim = gpusim.Simulation(cfg)
    v_voxel = 15.0**3
    totals = []
    for _ in range(5):
        sim.step()
        totals.append(sim.field_host("mg").sum(dtype=np.float64) * v_voxel * UMOL_PER_UM3["mM"])
    # zero-flux, no sinks: the total jumps by the amount in step 3 only
    assert totals[2] == pytest.approx(totals[0], rel=1e-6)
    assert totals[3] - totals[2] == pytest.approx(2e-7, rel=1e-5)
    assert totals[4] == pytest.approx(totals[3], rel=1e-6)


def test_serum_event_ramps_and_reverts():
    cfg = small_cfg(vessels={"kind": "shell"},
                    events=[{"name": "diet", "type": "serum", "time_min": 2, "duration_min": 4,
                             "ramp_min": 2, "substrate": "mg", "value": 0.2}])
    sim = gpusim.Simulation(cfg)
    seen = []
    for _ in range(8):
        sim.step()
        seen.append(sim.field_update.plans["mg"].serum)
    # step n is evaluated at t = n: base 0.47, ramp from t=2 over 2 min, held to t=6, then back
    assert seen == pytest.approx([0.47, 0.47, 0.47, 0.335, 0.2, 0.2, 0.47, 0.47])


def test_repeating_bolus_fires_the_stated_number_of_times():
    cfg = small_cfg(events=[{"name": "b", "type": "bolus", "time_min": 1, "repeat_every_min": 3,
                             "repeat_count": 4, "substrate": "mg", "center_um": [90.0, 75.0, 105.0],
                             "radius_um": 20.0, "amount_umol": 1e-7}])
    sim = gpusim.Simulation(cfg)
    before = sim.field_host("mg").sum(dtype=np.float64)
    sim.run(minutes=20, progress=False)
    added = (sim.field_host("mg").sum(dtype=np.float64) - before) * 15.0**3 * 1e-12
    assert added == pytest.approx(4e-7, rel=1e-5)


def test_hold_clamps_its_region():
    cfg = small_cfg(vessels={"kind": "shell"},
                    events=[{"name": "h", "type": "hold", "time_min": 0, "duration_min": 5, "substrate": "mg",
                             "center_um": [90.0, 75.0, 105.0], "radius_um": 30.0, "value": 2.0}])
    sim = gpusim.Simulation(cfg)
    mask = sim.state.sphere_mask([90.0, 75.0, 105.0], 30.0)
    sim.run(minutes=3, progress=False)
    assert np.all(sim.field_host("mg")[mask] == np.float32(2.0))
    sim.run(minutes=10, progress=False)
    assert sim.field_host("mg")[mask].max() < 2.0  # released after 5 min, washing out


def test_timeseries_has_one_row_per_step():
    sim = gpusim.Simulation(small_cfg())
    sim.run(minutes=4, progress=False)
    ts = sim.timeseries
    assert list(ts["time_min"]) == [1.0, 2.0, 3.0, 4.0]
    assert {len(v) for v in ts.values()} == {4}
    assert ts["mg_mean_mM"] == pytest.approx(0.47, rel=1e-6)


def test_nonfinite_field_stops_the_run_naming_field_voxel_and_time():
    sim = gpusim.Simulation(small_cfg())
    sim.fields["mg"][4, 5, 6] = np.nan
    # an implicit sweep spreads a NaN along its lines at once, so the named voxel is the first bad one
    with pytest.raises(gpusim.FieldNotFiniteError, match=r"'mg'.*\(z, y, x\) = \(\d+, \d+, \d+\).*t = 1 min"):
        sim.step()


@pytest.mark.skipif(cuda_status()[0], reason="a usable CUDA GPU is present: this checks the no-GPU path")
def test_cuda_backend_without_a_gpu_is_a_clear_error():
    with pytest.raises(BackendError, match="--backend cpu"):
        select_backend("cuda")
    assert select_backend("auto").name == "cpu"


def test_memory_check_refuses_with_the_estimate_and_a_suggestion():
    be = select_backend("cpu")
    be.free_bytes = 1000
    with pytest.raises(BackendError, match=r"needs about .* GiB .* smaller grid.shape"):
        check_memory(be, 10**9, "a test run")


def test_tcell_infusion_without_a_tcells_section_is_refused_naming_the_fix():
    with pytest.raises(gpusim.ConfigError, match=r"events\.act\.type.*\[tcells\]"):
        small_cfg(tumor={"initial_radius_um": 30.0},
                  events=[{"name": "act", "type": "tcell_infusion", "time_min": 0, "count": 10,
                           "placement": "uniform"}])


def test_tcell_infusion_adds_its_count_at_its_time():
    cfg = small_cfg(tumor={"initial_radius_um": 30.0}, tcells={"placement": "uniform", "initial_count": 5,
                                                                "apoptosis_per_min": 0.0,
                                                                "recruit_per_vessel_per_min": 0.0},
                    events=[{"name": "act", "type": "tcell_infusion", "time_min": 2, "count": 10,
                             "placement": "uniform", "repeat_every_min": 3, "repeat_count": 2}])
    sim = gpusim.Simulation(cfg)
    sim.run(minutes=9, progress=False)
    n = sim.timeseries["tcells"]
    # steps 0, 1 before the first dose; +10 in the step starting at t = 2 and at t = 5
    assert n.tolist() == [5, 5, 15, 15, 15, 25, 25, 25, 25]


def test_cli_runs_a_config_with_overrides_and_prints_a_summary(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('backend = "cpu"\n[grid]\nshape = [8, 8, 8]\n[[substrates]]\nname = "mg"\n')
    assert main(["run", str(path), "--minutes", "3", "--no-progress", "--set", "substrates.mg.initial=0.3"]) == 0
    out = capsys.readouterr().out
    assert "3 simulated min in 3 steps" in out and "0.3" in out


def test_cli_bad_override_names_the_key_and_exits_2(capsys):
    assert main(["info", "--scenario", "diffusion", "--set", "substrates.mg.D_um2_per_mn=1"]) == 2
    err = capsys.readouterr().err
    assert "D_um2_per_mn" in err and "D_um2_per_min" in err


def test_cli_lists_scenarios_and_info_shows_substeps(capsys):
    assert main(["scenarios"]) == 0
    assert "diffusion" in capsys.readouterr().out
    assert main(["info", "--scenario", "diffusion", "--backend", "cpu"]) == 0
    assert "n_sub = 25" in capsys.readouterr().out  # Mg: dt*k_v/0.1 = 1*2.5/0.1


def test_gpusim_command_is_installed_and_runs_the_default_scenario_briefly():
    res = subprocess.run(
        [sys.executable, "-m", "gpusim.cli", "run", "--scenario", "diffusion", "--minutes", "2",
         "--set", "grid.shape=[24,24,24]", "--set", "events.bolus.center_um=[180.0,180.0,180.0]",
         "--set", "events.bolus.radius_um=60.0"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "2 simulated min in 2 steps" in res.stdout


def test_config_json_round_trip_through_a_simulation():
    cfg = gpusim.scenario_config("diffusion")
    again = gpusim.Config.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["substrates"][0]["name"] == "mg"


def test_hold_on_the_tumor_region_clamps_exactly_the_live_tumour_voxels():
    cfg = small_cfg(tumor={"initial_radius_um": 40.0},
                    events=[{"name": "h", "type": "hold", "time_min": 0, "substrate": "mg",
                             "region": "tumor", "value": 0.9}])
    sim = gpusim.Simulation(cfg)
    sim.run(minutes=3, progress=False)
    live = sim.state.n_tumor > 0
    c = sim.field_host("mg")
    assert live.sum() > 0
    assert np.all(c[live] == np.float32(0.9)) and np.all(c[~live] < 0.9)


def test_readme_python_example_runs_and_reports_cells():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = text.split("```python\n")
    example = [b.split("```")[0] for b in blocks[1:] if "scenario_config" in b][0]
    env = {}
    exec(compile(example, "README.md", "exec"), env)  # our own README, not user input
    ts = env["ts"]
    assert len(ts) == 240 and ts["time_min"].iloc[-1] == 240.0
    assert ts["kills"].iloc[-1] > 0 and ts["tumor_live"].iloc[0] > 1000
    assert env["lattice"].shape == (40, 40, 40)
    assert env["cells"]["position_um"].shape == (len(env["cells"]["uid"]), 3)


def test_cli_reports_a_placement_without_room_as_an_error_not_a_traceback(capsys):
    # vessel voxels may hold no T cell at all: the initial T cells have nowhere to go
    code = main(["run", "--scenario", "baseline", "--minutes", "1", "--no-progress",
                 "--set", "grid.shape=[12,12,12]", "--set", "tumor.initial_radius_um=40",
                 "--set", "vessels.kind=shell", "--set", "tcells.placement=vessels",
                 "--set", "tcells.max_per_voxel=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tcells.initial_count" in err and "no free room" in err and "max_per_voxel" in err


def test_cli_names_an_unusable_vessel_file_and_its_fix(tmp_path, capsys):
    bad = tmp_path / "v.npy"
    np.save(bad, np.ones((3, 3, 3), np.uint8))
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'backend = "cpu"\n[grid]\nshape = [8, 8, 8]\n[vessels]\nkind = "file"\npath = "{bad}"\n')
    assert main(["run", str(cfg), "--minutes", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "vessels.path" in err and "does not match grid.shape" in err


def test_whole_grid_readers_synchronize_the_state_first(tmp_path):
    """``Simulation.synchronize_state`` (what an MPI driver's mirror hooks to gather the ranks' fields)
    is called before every whole-grid read: a field frame (``field_host``), ``field_stats``, each
    checkpoint; never inside a step that reads nothing whole, nor at the run's end, whose summary
    is the last timeseries row (the state's own statistics)."""
    cfg = small_cfg(output={"fields_every_min": 2.0, "checkpoint_every_steps": 3})
    sim = gpusim.Simulation(cfg)
    calls = []
    sim.synchronizer = lambda parts: calls.append((int(sim.state.step), parts))
    sim.step()
    assert calls == []  # no store: nothing reads the whole grid
    sim.field_host("mg")
    sim.field_stats()
    assert calls == [(1, ("fields",))] * 2  # only the fields are read
    calls.clear()
    summary = sim.run(minutes=6, out=tmp_path / "run.zarr", progress=False)
    # (the step counter during a step is the step's index): the initial frame at attach (1); frames
    # ending at t = 2, 4, 6 min (steps 1, 3, 5); checkpoints after 3 and 6 steps (steps 2, 5); the
    # run's final checkpoint (7; an MPI run's ranks write theirs without a gather); and nothing for
    # the summary, the last timeseries row
    assert [step for step, _ in calls] == [1, 1, 2, 3, 5, 5, 7]
    assert calls[-1][1] is None
    assert [parts for step, parts in calls if step in (2, 3)] == [None, ("fields",)]  # a checkpoint reads everything
    assert summary.fields == sim.field_stats() and summary.fields["mg"]["unit"] == "mM"
    calls.clear()
    assert sim.run(minutes=0, progress=False).fields == summary.fields  # no row of its own: from the state
