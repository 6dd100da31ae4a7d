"""The configuration: PARAMETERS.md defaults, errors that name the key, round trips, overrides, overlays."""

import copy
import json
import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpusim.config import (
    SUBSTRATE_DEFAULTS,
    Config,
    ConfigError,
    Grid,
    Substrate,
    TCells,
    Tumor,
    UnknownSubstrateError,
    apply_overlay,
    parse_override,
)
from gpusim.config_cells import LFA1, Vessels
from gpusim.config_events import EVENT_TYPES
from gpusim.config_schema import Boundary, Output, Parallel, Secretion, Time, Uptake, UptakeRates

THREE = [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}]


def error_of(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config.model_validate(data)
    return info.value


def full_config() -> dict:
    """A config with every section, as a TOML file would give it."""
    return {
        "seed": 7,
        "init": "steady",
        "grid": {"shape": [32, 32, 32], "dx_um": 15},
        "substrates": [{"name": "mg", "boundary": "serum"}, {"name": "o2"}, {"name": "chemokine"}],
        "vessels": {"kind": "random", "voxel_fraction": 0.02},
        "tumor": {"initial_radius_um": 100},
        "tcells": {"initial_count": 50, "lfa1": {"K_half_mM": 0.3}},
        "events": [
            {"name": "implant", "type": "implant", "substrate": "mg", "center_um": [240.0, 240.0, 240.0],
             "radius_um": 50.0, "rate_umol_per_min": 3.5e-5},
            {"name": "infusion", "type": "serum", "substrate": "mg", "value": 0.72, "duration_min": 240,
             "repeat_every_min": 1440, "repeat_count": 14},
        ],
        "output": {"tracks_every_min": 1.0, "tracks_count": 10},
    }


# --- defaults: PARAMETERS.md ------------------------------------------------------------------------------


def test_mg_defaults_are_parameters_md_ionised_values():
    mg = Config(substrates=THREE).substrate("mg")
    assert mg.unit == "mM"
    assert mg.D_um2_per_min == 2.0e4
    assert mg.decay_per_min == 0.0
    assert mg.initial == 0.47 and mg.serum == 0.47
    assert mg.faces() == (("zero_flux", None),) * 6
    assert mg.vessel_supply_per_min == 2.5
    assert (mg.uptake.tumor.vmax_per_min, mg.uptake.tumor.km) == (0.008, 0.1)
    assert (mg.uptake.tcell.vmax_per_min, mg.uptake.tcell.km) == (0.0008, 0.1)
    assert mg.secretion_per_min.tumor == 0.0
    assert (mg.substeps, mg.method) == ("auto", "lod")


def test_o2_defaults_are_physicell_values_with_dirichlet_38_mmHg():
    o2 = Config(substrates=THREE).substrate("o2")
    assert o2.unit == "mmHg"
    assert (o2.D_um2_per_min, o2.decay_per_min) == (1.0e5, 0.1)
    assert (o2.initial, o2.serum) == (38.0, 38.0)
    assert o2.faces() == (("value", 38.0),) * 6
    assert o2.vessel_supply_per_min == 1.0e4
    assert (o2.uptake.tumor.vmax_per_min, o2.uptake.tumor.km) == (380.0, 1.0)
    assert (o2.uptake.tcell.vmax_per_min, o2.uptake.tcell.km) == (38.0, 1.0)
    assert (o2.method, o2.update_every_min) == ("steady", 10.0)


def test_chemokine_defaults_decay_with_43_min_half_life_and_are_secreted_by_tumour():
    ck = Config(substrates=THREE).substrate("chemokine")
    assert ck.unit == "nM"
    assert (ck.D_um2_per_min, ck.decay_per_min) == (1000.0, 0.016)
    assert math.log(2) / ck.decay_per_min == pytest.approx(43, abs=0.5)
    assert (ck.initial, ck.serum, ck.vessel_supply_per_min) == (0.0, 0.0, 0.0)
    assert ck.faces() == (("zero_flux", None),) * 6
    assert ck.secretion_per_min.tumor == 0.1
    assert ck.uptake.tumor.vmax_per_min == 0.0 and ck.uptake.tcell.vmax_per_min == 0.0


def test_every_substrate_default_has_a_source():
    for name, table in SUBSTRATE_DEFAULTS.items():
        for key, (value, source) in table.items():
            assert source.strip(), f"{name}.{key} has no source"


def test_section_defaults_are_parameters_md_values():
    t, c, lfa = Tumor(), TCells(), LFA1()
    assert (t.initial_radius_um, t.cell_volume_um3, t.cycle_rate_per_min) == (250.0, 2494.0, 7.2e-4)
    assert (t.o2_prolif_threshold_mmHg, t.o2_prolif_saturation_mmHg) == (5.0, 38.0)
    assert (t.o2_necrosis_threshold_mmHg, t.o2_necrosis_max_mmHg, t.necrosis_max_per_min) == (5.0, 2.5, 2.78e-3)
    assert (t.apoptosis_per_min, t.apoptotic_clear_min, t.necrotic_clear_min) == (0.0, 516.0, 86400.0)
    assert (t.hits_to_kill, t.hit_recovery_min, t.mg_growth_km_mM, t.center_um) == (3, 50.0, 0.0, None)
    assert (c.initial_count, c.placement, c.cell_volume_um3) == (1000, "tumor", 500.0)
    assert (c.speed_um_per_min, c.persistence_min, c.chemotaxis_bias) == (4.0, 5.0, 0.5)
    assert (c.max_per_voxel, c.max_per_voxel_with_tumor) == (4, 1)
    assert (c.k_on_per_min, c.k_hit_per_min, c.synapse_min) == (0.3, 0.05, 30.0)
    assert (c.apoptosis_per_min, c.prolif_prob_per_kill, c.division_delay_min) == (6.94e-5, 0.2, 720.0)
    assert (c.exhaust_per_engagement, c.exhausted_below) == (0.014, 0.25)
    assert (c.recruit_per_vessel_per_min, c.recruit_chemokine_half_nM, c.recruit_scales_with_serum_mg) == (
        1e-4, 1.0, True)
    assert (lfa.K_half_mM, lfa.hill_n, lfa.tau_min, lfa.A_floor) == (0.33, 2.0, 5.0, 0.05)
    v = Vessels()
    assert (v.kind, v.voxel_fraction, v.prune_in_necrosis, v.tumor_fraction) == ("random", 0.02, False, 0.02)
    cfg = Config()
    assert (cfg.seed, cfg.backend, cfg.solver, cfg.init) == (0, "auto", "lod", "given")
    assert (cfg.grid.nzyx, cfg.grid.dx_um, cfg.time.dt_min) == ((64, 64, 64), 15.0, 1.0)
    assert (cfg.vessels, cfg.tumor, cfg.tcells, cfg.substrates, cfg.events) == (None, None, None, [], [])
    assert (cfg.output.fields_every_min, cfg.output.tcells_every_min, cfg.output.checkpoint_every_wall_min) == (
        60.0, 360.0, 30.0)
    assert (cfg.parallel.ranks_zyx, cfg.parallel.lod_mode) == (None, "partitioned")


def test_lfa1_defaults_give_the_tabulated_activation_at_normal_serum():
    lfa = LFA1()
    a_star = lfa.A_floor + (1 - lfa.A_floor) * 0.47**2 / (lfa.K_half_mM**2 + 0.47**2)
    assert a_star == pytest.approx(0.69, abs=0.005)  # PARAMETERS §2


def test_every_field_documents_itself():
    for cls in (Config, Grid, Time, Substrate, Boundary, Uptake, UptakeRates, Secretion, Vessels, Tumor, TCells,
                LFA1, Output, Parallel, *EVENT_TYPES.values()):
        for name, field in cls.model_fields.items():
            assert field.description and len(field.description) > 8, f"{cls.__name__}.{name}"


def test_user_key_wins_over_name_default_and_serum_follows_initial():
    cfg = Config(substrates=[{"name": "mg", "initial": 0.3, "uptake": {"tumor": {"km": 0.2}}},
                             {"name": "o2", "serum": 20}])
    mg, o2 = cfg.substrate("mg"), cfg.substrate("o2")
    assert (mg.initial, mg.serum) == (0.3, 0.3)
    assert (mg.uptake.tumor.km, mg.uptake.tumor.vmax_per_min) == (0.2, 0.008)
    assert (o2.initial, o2.serum) == (38.0, 20.0)


def test_other_substrate_needs_unit_and_diffusion_and_defaults_rates_to_zero():
    err = error_of({"substrates": [{"name": "lactate"}]})
    assert [p for p, _ in err.problems] == ["substrates.lactate.unit", "substrates.lactate.D_um2_per_min"]
    lac = Config(substrates=[{"name": "lactate", "unit": "uM", "D_um2_per_min": 5e4}]).substrate("lactate")
    assert (lac.decay_per_min, lac.initial, lac.serum, lac.vessel_supply_per_min) == (0.0, 0.0, 0.0, 0.0)
    assert lac.uptake.tumor.vmax_per_min == 0.0 and lac.faces() == (("zero_flux", None),) * 6


def test_a_fields_only_config_is_valid():
    cfg = Config.model_validate({"substrates": [{"name": "mg"}]})
    assert cfg.substrate_names == ("mg",) and cfg.tumor is None and cfg.tcells is None


# --- errors for people --------------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest_key_with_its_path():
    err = error_of({"substrates": [{"name": "mg", "D_um2_per_mn": 3}]})
    assert err.path == "substrates.mg.D_um2_per_mn"
    assert str(err) == "<dict>: substrates.mg.D_um2_per_mn = 3: unknown key; did you mean 'D_um2_per_min'?"
    err = error_of({"tcells": {"lfa1": {"K_half_m": 0.2}}, "tumor": {}})
    assert err.path == "tcells.lfa1.K_half_m" and "did you mean 'K_half_mM'?" in str(err)


def test_bad_value_message_names_path_value_and_range():
    err = error_of({"tumor": {}, "tcells": {"speed_um_per_min": -3}})
    assert str(err) == "<dict>: tcells.speed_um_per_min = -3: must be >= 0"
    err = error_of({"tumor": {}, "tcells": {"prolif_prob_per_kill": 1.5}})
    assert "tcells.prolif_prob_per_kill = 1.5: must be in [0, 1]" in str(err)
    err = error_of({"tumor": {}, "tcells": {"lfa1": {"A_floor": 1.0}}})
    assert "tcells.lfa1.A_floor = 1.0: must be in [0, 1)" in str(err)
    err = error_of({"vessels": {"voxel_fraction": 0}})
    assert "vessels.voxel_fraction = 0: must be in (0, 1)" in str(err)
    err = error_of({"seed": 2**64})
    assert err.path == "seed" and "must be in [0, 2^64)" in str(err)
    err = error_of({"solver": "implicit"})
    assert "solver = 'implicit': must be 'lod' or 'explicit'" in str(err)
    err = error_of({"tumor": {"hits_to_kill": 2.5}})
    assert "tumor.hits_to_kill = 2.5: must be an integer in [1, 255]" in str(err)


def test_every_problem_gets_its_own_line():
    err = error_of({"time": {"dt_min": 0}, "grid": {"dx_um": -1}, "backend": "gpu"})
    assert len(str(err).splitlines()) == 3
    assert {p for p, _ in err.problems} == {"time.dt_min", "grid.dx_um", "backend"}


def test_numbers_must_be_finite_numbers_not_strings_or_booleans():
    for bad in ("1.0", True, float("nan"), float("inf"), None):
        err = error_of({"time": {"dt_min": bad}})
        assert err.path == "time.dt_min", bad
    dt = Config(time={"dt_min": 2}).time.dt_min
    assert dt == 2.0 and isinstance(dt, float)


def test_list_items_are_named_by_name_else_by_index():
    err = error_of({"substrates": [{"name": "mg"}, {"unit": "mM", "D_um2_per_min": 1}]})
    assert err.path == "substrates.1.name"
    err = error_of({"events": [{"name": "diet", "type": "serum", "substrate": "mg", "value": -1}],
                    "substrates": [{"name": "mg"}]})
    assert err.path == "events.diet.value"


def test_duplicate_substrate_names_are_an_error():
    err = error_of({"substrates": [{"name": "mg"}, {"name": "mg"}]})
    assert err.path == "substrates.1.name" and "duplicate" in str(err)


def test_direct_construction_raises_config_error_too():
    with pytest.raises(ConfigError, match="hits_to_kill = 0: must be in"):
        Tumor(hits_to_kill=0)
    with pytest.raises(ConfigError, match="seed = -1"):
        Config(seed=-1)
    with pytest.raises(ConfigError) as info:
        Config.model_validate([1, 2])
    assert info.value.path


def test_substrate_lookup_of_unknown_name_is_a_key_error_with_suggestion():
    cfg = Config(substrates=THREE)
    assert cfg.substrate_names == ("mg", "o2", "chemokine")
    with pytest.raises(KeyError) as info:
        cfg.substrate("Mg")
    assert isinstance(info.value, UnknownSubstrateError) and isinstance(info.value, ConfigError)
    assert "did you mean 'mg'?" in str(info.value)


# --- grid, boundary, cross-section checks -----------------------------------------------------------------


def test_grid_from_size_rounds_to_whole_voxels_and_excludes_shape():
    g = Config(grid={"size_um": [960, 300, 22.5], "dx_um": 15}).grid
    assert g.shape is None and g.nzyx == (64, 20, 2) and g.extent_um == (960.0, 300.0, 30.0)
    assert error_of({"grid": {"shape": [8, 8, 8], "size_um": [1, 1, 1]}}).path == "grid.size_um"
    assert error_of({"grid": {"size_um": [5, 100, 100]}}).path == "grid.size_um"
    err = error_of({"grid": {"shape": [2048, 2048, 1024]}})
    assert err.path == "grid.shape" and "2^32" in str(err)
    assert Config(grid={"shape": [2048, 2048, 1023]}).grid.nzyx == (2048, 2048, 1023)


def test_boundary_forms_normalise_to_six_faces():
    def faces(b):
        return Config(substrates=[{"name": "mg", "boundary": b}]).substrate("mg").faces()

    assert faces("serum") == (("serum", None),) * 6
    assert faces(0.5) == (("value", 0.5),) * 6
    assert faces({"z_lo": "serum", "x_hi": 2}) == (
        ("serum", None), ("zero_flux", None), ("zero_flux", None), ("zero_flux", None), ("zero_flux", None),
        ("value", 2.0))
    err = error_of({"substrates": [{"name": "mg", "boundary": {"z_low": 1}}]})
    assert err.path == "substrates.mg.boundary.z_low" and "did you mean 'z_lo'?" in str(err)
    assert error_of({"substrates": [{"name": "mg", "boundary": -1}]}).path == "substrates.mg.boundary"


def test_tcell_step_longer_than_half_a_voxel_is_rejected_with_the_fix():
    err = error_of({"tumor": {}, "tcells": {"speed_um_per_min": 8}, "time": {"dt_min": 1}})
    assert err.path == "tcells.speed_um_per_min"
    assert "time.dt_min" in str(err) and "grid.dx_um/2" in str(err) and "lower" in str(err)
    assert Config(tumor={}, tcells={"speed_um_per_min": 7.5}).tcells.speed_um_per_min == 7.5  # dx/2 exactly
    err = error_of({"tumor": {}, "tcells": {}, "time": {"dt_min": 2}})  # default 4 µm/min × 2 min > 7.5 µm
    assert err.path == "tcells.speed_um_per_min"


def event(**kw) -> dict:
    base = {"name": "e", "type": "implant", "substrate": "mg", "center_um": [10.0, 10.0, 10.0], "radius_um": 0,
            "rate_umol_per_min": 1e-5}
    return {**base, **kw}


def test_event_substrate_must_be_declared():
    err = error_of({"substrates": [{"name": "mg"}], "events": [event(substrate="mgg")]})
    assert err.path == "events.e.substrate" and "did you mean 'mg'?" in str(err) and "declared: mg" in str(err)


def test_doses_in_umol_need_a_molar_substrate():
    err = error_of({"substrates": [{"name": "o2"}], "events": [event(substrate="o2")]})
    assert err.path == "events.e.substrate" and "mmHg" in str(err)
    bolus = {"name": "b", "type": "bolus", "substrate": "o2", "center_um": [1, 1, 1], "radius_um": 10,
             "amount_umol": 1e-4}
    assert error_of({"substrates": [{"name": "o2"}], "events": [bolus]}).path == "events.b.substrate"


def test_event_centre_must_lie_in_the_grid():
    err = error_of({"substrates": [{"name": "mg"}], "grid": {"shape": [10, 10, 10]},
                    "events": [event(center_um=[10.0, 150.0, 10.0])]})
    assert err.path == "events.e.center_um" and "150.0" in str(err)
    assert error_of({"substrates": [{"name": "mg"}], "events": [event(center_um=[-1.0, 1.0, 1.0])]}).path == (
        "events.e.center_um")


def test_hold_in_tumour_needs_tumour_and_infusion_needs_tcells():
    hold = {"name": "h", "type": "hold", "substrate": "mg", "region": "tumor", "value": 0.9}
    assert error_of({"substrates": [{"name": "mg"}], "events": [hold]}).path == "events.h.region"
    assert Config(substrates=[{"name": "mg"}], tumor={}, events=[hold]).events[0].region == "tumor"
    sphere = {"name": "h", "type": "hold", "substrate": "mg", "value": 0.9}
    assert {p for p, _ in error_of({"substrates": [{"name": "mg"}], "events": [sphere]}).problems} == {
        "events.h.center_um", "events.h.radius_um"}
    infusion = {"name": "t", "type": "tcell_infusion", "count": 7500, "placement": "uniform"}
    assert error_of({"events": [infusion]}).path == "events.t.type"
    assert Config(tcells={"placement": "uniform"}, events=[infusion]).events[0].count == 7500


def test_event_timing_rules():
    serum = {"name": "s", "type": "serum", "substrate": "mg", "value": 0.72, "repeat_count": 3}
    assert error_of({"substrates": [{"name": "mg"}], "events": [serum]}).path == "events.s.repeat_every_min"
    serum.update(repeat_every_min=60, duration_min=120)
    assert error_of({"substrates": [{"name": "mg"}], "events": [serum]}).path == "events.s.duration_min"
    bolus = {"name": "b", "type": "bolus", "substrate": "mg", "center_um": [1, 1, 1], "radius_um": 10,
             "amount_umol": 1e-4, "duration_min": 5}
    assert error_of({"substrates": [{"name": "mg"}], "events": [bolus]}).path == "events.b.duration_min"
    err = error_of({"events": [{"name": "x", "type": "infusion"}]})
    assert err.path == "events.x.type" and "'tcell_infusion'" in str(err)


# --- files and round trips ------------------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('seed = 1\n[grid]\nshape = [64, 64 64]\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path)
    assert str(info.value).startswith(f"{path}: line 3: invalid TOML")


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        Config.from_toml(tmp_path / "absent.toml")


def test_toml_value_error_names_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[[substrates]]\nname = "mg"\nserum = -0.1\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path)
    assert str(info.value) == f"{path}: substrates.mg.serum = -0.1: must be >= 0"


def test_toml_file_loads_and_vessel_path_is_relative_to_it(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('init = "steady"\n[[substrates]]\nname = "mg"\n[vessels]\nkind = "file"\npath = "mask.npy"\n'
                    '[tcells]\nplacement = "vessels"\nlfa1.K_half_mM = 0.2\n')
    cfg = Config.from_toml(path)
    assert cfg.vessels.path == str(tmp_path / "mask.npy")
    assert cfg.tcells.lfa1.K_half_mM == 0.2 and cfg.init == "steady"


def test_json_round_trip_is_exact():
    cfg = Config.model_validate(full_config())
    text = cfg.to_json()
    assert Config.from_json(text) == cfg
    assert json.loads(text) == cfg.to_dict()
    assert Config.from_json(text).to_json() == text
    sized = Config(grid={"size_um": [100.0, 200.0, 0.1 + 0.2], "dx_um": 0.1})
    assert Config.from_json(sized.to_json()) == sized


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
unit_interval = st.floats(min_value=0, max_value=1, exclude_max=True)


@st.composite
def valid_configs(draw) -> dict:
    """Valid config dicts: random sections, substrates and events, random (finite) values."""
    dx = draw(st.floats(min_value=5, max_value=30))
    if draw(st.booleans()):
        grid = {"shape": draw(st.lists(st.integers(1, 40), min_size=3, max_size=3)), "dx_um": dx}
        n = grid["shape"]
    else:
        grid = {"size_um": [dx * draw(st.floats(min_value=1, max_value=40)) for _ in range(3)], "dx_um": dx}
        n = Grid(**grid).nzyx
    extent = [k * dx for k in n]
    dt = draw(st.floats(min_value=0.01, max_value=2))
    cfg: dict = {"seed": draw(st.integers(0, 2**64 - 1)), "grid": grid, "time": {"dt_min": dt},
                 "solver": draw(st.sampled_from(["lod", "explicit"])),
                 "init": draw(st.sampled_from(["given", "steady"]))}
    face = st.one_of(st.sampled_from(["zero_flux", "serum"]), finite)
    subs = []
    for name in draw(st.lists(st.sampled_from(["mg", "o2", "chemokine", "lactate"]), unique=True)):
        s = {"name": name, "serum": draw(finite), "decay_per_min": draw(finite),
             "boundary": draw(st.one_of(face, st.dictionaries(st.sampled_from(["z_lo", "y_hi", "x_lo"]), face))),
             "uptake": {"tumor": {"km": draw(st.floats(min_value=1e-9, max_value=1e3))}},
             "substeps": draw(st.one_of(st.just("auto"), st.integers(1, 1000)))}
        if name == "lactate":
            s.update(unit="uM", D_um2_per_min=draw(finite))
        subs.append(s)
    cfg["substrates"] = subs
    has_tumor = draw(st.booleans())
    if has_tumor:
        cfg["tumor"] = {"initial_radius_um": draw(finite), "hits_to_kill": draw(st.integers(1, 255)),
                        "center_um": [draw(st.floats(0, 0.999)) * e for e in extent]}
    if draw(st.booleans()):
        cfg["vessels"] = {"kind": draw(st.sampled_from(["random", "shell"])),
                          "voxel_fraction": draw(st.floats(0.001, 0.5)),
                          "tumor_voxel_fraction": draw(st.one_of(st.none(), unit_interval))}
    if draw(st.booleans()):
        placements = ["tumor", "shell", "uniform"] if has_tumor else ["uniform"]
        cfg["tcells"] = {"speed_um_per_min": draw(st.floats(0, dx / 2 / dt)),
                         "placement": draw(st.sampled_from(placements)),
                         "chemotaxis_bias": draw(st.floats(0, 1)), "lfa1": {"A_floor": draw(unit_interval)}}
    events = []
    names = [s["name"] for s in subs]
    for i, kind in enumerate(draw(st.lists(st.sampled_from(["serum", "implant", "hold"]), max_size=3))):
        if not names:
            break
        ev = {"name": f"e{i}", "type": kind, "time_min": draw(finite), "substrate": draw(st.sampled_from(names))}
        if kind == "serum":
            ev.update(value=draw(finite), ramp_min=draw(finite))
        elif kind == "implant":
            ev.update(substrate=draw(st.sampled_from([m for m in names if m != "o2"] or ["mg"])),
                      center_um=[draw(st.floats(0, 0.999)) * e for e in extent], radius_um=draw(finite),
                      rate_umol_per_min=draw(finite))
            if ev["substrate"] not in names:
                continue
        else:
            ev.update(value=draw(finite), center_um=[0.0, 0.0, 0.0], radius_um=draw(finite))
        events.append(ev)
    cfg["events"] = events
    return cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs())
def test_json_round_trip_is_exact_for_generated_configs(data):
    cfg = Config.model_validate(data)
    back = Config.from_json(cfg.to_json())
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()


# --- overrides --------------------------------------------------------------------------------------------


def test_with_overrides_addresses_items_by_name_and_leaves_the_original():
    cfg = Config.model_validate(full_config())
    new = cfg.with_overrides({"substrates.mg.serum": 0.3, "grid.shape": [48, 48, 48],
                              "tcells.lfa1.K_half_mM": 0.2, "events.implant.rate_umol_per_min": 1e-5})
    assert new.substrate("mg").serum == 0.3 and new.grid.nzyx == (48, 48, 48)
    assert new.tcells.lfa1.K_half_mM == 0.2 and new.events[0].rate_umol_per_min == 1e-5
    assert cfg.substrate("mg").serum == 0.47 and cfg.grid.nzyx == (32, 32, 32)
    assert cfg.tcells.lfa1.K_half_mM == 0.3 and cfg.events[0].rate_umol_per_min == 3.5e-5
    assert new.with_overrides({"substrates.0.serum": 0.5}).substrate("mg").serum == 0.5


def test_with_overrides_creates_absent_sections_with_defaults():
    cfg = Config(substrates=[{"name": "mg"}])
    new = cfg.with_overrides({"tumor.initial_radius_um": 100})
    assert new.tumor == Tumor(initial_radius_um=100)
    new = new.with_overrides({"tcells.lfa1.tau_min": 0})
    assert new.tcells.lfa1.tau_min == 0.0 and new.tcells.speed_um_per_min == 4.0
    assert cfg.tumor is None and cfg.tcells is None


def test_with_overrides_rejects_unknown_paths_with_suggestions():
    cfg = Config.model_validate(full_config())
    cases = {"tcells.speeed_um_per_min": "did you mean 'speed_um_per_min'?",
             "substrates.mgg.serum": "did you mean 'mg'?",
             "events.implnt.radius_um": "did you mean 'implant'?",
             "seed.low": "not a table"}
    for path, text in cases.items():
        with pytest.raises(ConfigError) as info:
            cfg.with_overrides({path: 1})
        assert text in str(info.value) and info.value.path, path
    with pytest.raises(ConfigError) as info:
        cfg.with_overrides({"events.implant.rate_umol_per_min": -1})
    assert info.value.path == "events.implant.rate_umol_per_min"


def test_with_overrides_merges_tables_and_swaps_shape_for_size():
    cfg = Config(substrates=[{"name": "mg"}], grid={"size_um": [300, 300, 300]})
    new = cfg.with_overrides({"grid.shape": [8, 8, 8], "substrates.mg": {"serum": 0.24},
                              "substrates.mg.boundary.x_lo": "serum"})
    assert new.grid.nzyx == (8, 8, 8) and new.grid.size_um is None
    mg = new.substrate("mg")
    assert (mg.serum, mg.D_um2_per_min, mg.faces()[4]) == (0.24, 2.0e4, ("serum", None))


def test_parse_override_reads_toml_values_else_bare_strings():
    assert parse_override("substrates.mg.serum=0.3") == ("substrates.mg.serum", 0.3)
    assert parse_override("grid.shape=[48,48,48]") == ("grid.shape", [48, 48, 48])
    assert parse_override("output.events = true") == ("output.events", True)
    assert parse_override('solver="lod"') == ("solver", "lod")
    assert parse_override("solver=lod") == ("solver", "lod")
    assert parse_override("tcells.initial_count=10_000") == ("tcells.initial_count", 10000)
    assert parse_override("substrates.mg.boundary={z_lo = 'serum'}") == (
        "substrates.mg.boundary", {"z_lo": "serum"})
    assert parse_override("a=b=c") == ("a", "b=c")
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)
    key, value = parse_override("tcells.lfa1.K_half_mM=0.2")
    assert Config(tumor={}, tcells={}).with_overrides({key: value}).tcells.lfa1.K_half_mM == 0.2


# --- scenario overlays ------------------------------------------------------------------------------------


BASE = {
    "init": "steady",
    "substrates": [{"name": "mg"}, {"name": "o2"}],
    "tumor": {},
    "tcells": {},
    "events": [{"name": "implant", "type": "implant", "substrate": "mg", "center_um": [480.0, 480.0, 480.0],
                "radius_um": 50.0, "rate_umol_per_min": 3.5e-5}],
}


def test_overlay_dotted_keys_update_named_items():
    overlay = {"substrates": {"mg": {"serum": 0.24}}, "tcells": {"lfa1": {"A_floor": 0.0}}}
    merged = apply_overlay(BASE, overlay)
    assert merged["substrates"][0] == {"name": "mg", "serum": 0.24}
    assert merged["substrates"][1] == {"name": "o2"} and merged["tcells"] == {"lfa1": {"A_floor": 0.0}}
    assert BASE["substrates"][0] == {"name": "mg"}  # the base is not changed
    dotted = apply_overlay(BASE, {"substrates.mg.serum": 0.24})  # dotted keys, as Python code may give them
    assert dotted == apply_overlay(BASE, {"substrates": {"mg": {"serum": 0.24}}})
    assert Config.model_validate(merged).substrate("mg").serum == 0.24


def test_overlay_events_are_added_and_same_name_replaces():
    infusion = {"name": "infusion", "type": "serum", "substrate": "mg", "value": 0.72}
    implant = {**BASE["events"][0], "rate_umol_per_min": 1e-5}
    merged = apply_overlay(BASE, {"events": [implant, infusion]})
    assert [e["name"] for e in merged["events"]] == ["implant", "infusion"]
    assert merged["events"][0]["rate_umol_per_min"] == 1e-5
    assert BASE["events"][0]["rate_umol_per_min"] == 3.5e-5
    cfg = Config.model_validate(merged)
    assert [e.type for e in cfg.events] == ["implant", "serum"]


def test_overlay_from_toml_text_as_in_parameters_md_scenarios():
    overlay = tomllib.loads(
        'substrates.mg.serum = 0.33\nsubstrates.mg.boundary = "serum"\n'
        '[[events]]\nname = "tcell_infusion"\ntype = "tcell_infusion"\ntime_min = 0\ncount = 7500\n'
        'placement = "shell"\nshell_um = [30.0, 105.0]\n'
    )
    cfg = Config.model_validate(apply_overlay(BASE, overlay))
    mg = cfg.substrate("mg")
    assert (mg.serum, mg.initial, mg.faces()[0]) == (0.33, 0.47, ("serum", None))
    assert [e.name for e in cfg.events] == ["implant", "tcell_infusion"] and cfg.events[1].count == 7500


def test_overlay_unknown_item_name_is_an_error():
    with pytest.raises(ConfigError) as info:
        apply_overlay(BASE, {"substrates": {"Mg": {"serum": 0.24}}})
    assert info.value.path == "substrates.Mg" and "did you mean 'mg'?" in str(info.value)


def test_overlay_grid_shape_replaces_size():
    merged = apply_overlay({"grid": {"size_um": [300, 300, 300]}}, {"grid": {"shape": [512, 512, 512]}})
    assert merged == {"grid": {"shape": [512, 512, 512]}}


# --- fuzz: only ConfigError, always with a key path -----------------------------------------------------

_KEYS = sorted({k for cls in (Config, Grid, Time, Substrate, Boundary, Uptake, UptakeRates, Secretion, Vessels,
                              Tumor, TCells, LFA1, Output, Parallel, *EVENT_TYPES.values())
                for k in cls.model_fields})
_WORDS = ["mg", "o2", "chemokine", "auto", "lod", "steady", "serum", "zero_flux", "tumor", "sphere", "shell",
          "implant", "bolus", "hold", "tcell_infusion", "mM", "mmHg", "file", "uniform", "x y", ""]
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.sampled_from(_WORDS),
    st.text(max_size=4), st.lists(st.sampled_from([0, 1, 64, -1, 0.5, 480.0, "x"]), min_size=2, max_size=4),
)
_keys = st.one_of(st.sampled_from(_KEYS), st.sampled_from(["junk", "", "a.b", "D_um2_per_mn", "\n"]))
_table = st.dictionaries(_keys, _leaf, max_size=3)
_values = st.one_of(_leaf, _table, st.dictionaries(_keys, st.one_of(_leaf, _table), max_size=3),
                    st.lists(_table, max_size=2))
_named_item = st.tuples(st.sampled_from(_WORDS), st.sampled_from(_WORDS), _table).map(
    lambda t: {"name": t[0], "type": t[1], **t[2]})
_roots = st.one_of(
    st.dictionaries(_keys, _values, max_size=5),
    st.fixed_dictionaries({"substrates": st.lists(_named_item, max_size=3),
                           "events": st.lists(_named_item, max_size=2)},
                          optional={k: _values for k in ("grid", "tumor", "tcells", "time", "vessels", "output")}),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_roots)
def test_fuzzed_input_raises_only_config_error_naming_a_key(data):
    try:
        cfg = Config.model_validate(data)
    except ConfigError as err:
        assert err.path and err.problems
        assert all(path for path, _ in err.problems)
        assert all(line.startswith("<dict>: ") for line in str(err).splitlines())
    else:
        assert Config.from_json(cfg.to_json()) == cfg


def test_config_is_hashable_and_errors_survive_copying():
    cfg = Config.model_validate(full_config())
    assert hash(cfg) == hash(Config.from_json(cfg.to_json()))
    assert cfg.tumor_center_um == (240.0, 240.0, 240.0)  # the grid centre when tumor.center_um is absent
    err = error_of({"time": {"dt_min": -1}})
    clone = copy.copy(err)
    assert (str(clone), clone.path, clone.problems) == (str(err), err.path, err.problems)
