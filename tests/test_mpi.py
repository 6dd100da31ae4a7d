"""MPI domain decomposition (issue 6, first slice): the process grid and boxes (no MPI needed), and
under ``mpiexec`` with CPU ranks (marker ``mpi``): the halo exchange fills faces, edges and corners
with the neighbours' voxels, and explicit substrate fields stepped on 1, 2, 3 or 4 ranks, in several
process-grid shapes, are bitwise equal to the single-process run."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpusim
from gpusim.parallel.decomposition import Decomposition, choose_process_grid, split

HERE = Path(__file__).resolve().parent
REPO_ROOT = Path(gpusim.__file__).resolve().parent.parent


# -- decomposition (pure) ---------------------------------------------------------------------------
def test_split_covers_the_axis_with_runs_differing_by_at_most_one():
    for n, p in itertools.product(range(1, 40), range(1, 9)):
        if p > n:
            with pytest.raises(ValueError, match="ranks"):
                split(n, p)
            continue
        runs = split(n, p)
        assert [s for s, _ in runs] == list(np.cumsum([0] + [m for _, m in runs])[:-1])
        lengths = [m for _, m in runs]
        assert sum(lengths) == n and max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_aligned_runs_are_whole_blocks_but_the_last():
    runs = split(300, 3, align=64)  # 5 blocks of 64 (the last partial) over 3 ranks: 2, 2, 1 blocks
    assert runs == [(0, 128), (128, 128), (256, 44)]
    with pytest.raises(ValueError, match="whole 64-voxel blocks"):
        split(100, 3, align=64)


def test_the_process_grid_minimises_the_cut_surface():
    assert choose_process_grid(1, (8, 8, 8)) == (1, 1, 1)
    assert choose_process_grid(8, (64, 64, 64)) == (2, 2, 2)
    assert choose_process_grid(4, (128, 16, 16)) == (4, 1, 1)  # thin slabs across the long axis
    assert choose_process_grid(4, (16, 64, 64)) == (1, 2, 2)
    assert choose_process_grid(2, (10, 10, 10)) == (2, 1, 1)  # ties: more ranks on z
    assert choose_process_grid(3, (2, 2, 9)) == (1, 1, 3)  # z and y too thin for 3
    with pytest.raises(ValueError, match="cannot split"):
        choose_process_grid(5, (2, 2, 2))


def test_boxes_tile_the_grid_and_owner_neighbour_and_ghosts_agree():
    d = Decomposition((7, 6, 5), ranks_zyx=(2, 3, 1))
    seen = np.zeros(d.shape, np.int64)
    for r, b in enumerate(d.boxes()):
        seen[b.slices] += 1
        for z, y, x in itertools.product(*(range(o, o + n) for o, n in zip(b.offset, b.shape))):
            assert d.owner(z, y, x) == r
        for axis, side in itertools.product(range(3), (-1, 1)):
            nb = d.neighbour(r, axis, side)
            edge = b.offset[axis] - 1 if side < 0 else b.stop[axis]
            assert (nb is None) == (not 0 <= edge < d.shape[axis])
            assert d.ghosts(r)[axis][(side + 1) // 2] == (0 if nb is None else 1)
    assert np.all(seen == 1)
    with pytest.raises(ValueError, match="makes 6 ranks but the run has 4"):
        Decomposition((7, 6, 5), n_ranks=4, ranks_zyx=(2, 3, 1))


# -- under mpiexec ----------------------------------------------------------------------------------
def _mpiexec():
    exe = shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return exe


needs_mpi = [pytest.mark.mpi, pytest.mark.skipif(_mpiexec() is None, reason="needs mpiexec and mpi4py "
                                                 "(pip install -e \".[dev]\" brings mpich and mpi4py)")]


def _launch(n, script, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")  # n ranks on 2 cores: one thread each
    p = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(HERE / "mpi" / script), *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.parametrize("ranks", [[1, 2, 2], [2, 2, 1], [4, 1, 1], [2, 1, 2]])
@needs_mpi[0]
@needs_mpi[1]
def test_halo_exchange_fills_faces_edges_and_corners_from_the_neighbours(tmp_path, ranks):
    _launch(4, "halo_driver.py", json.dumps(ranks), str(tmp_path))
    lines = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert sorted(r["rank"] for r in lines) == [0, 1, 2, 3]
    assert all(r["halo"] and r["scatter"] for r in lines)
    assert [r["gather"] for r in lines if r["rank"] == 0] == [True]





_ONE = {}


def _one_process(solver):
    """The single-process fields after 4 min (cached per solver)."""
    if solver not in _ONE:
        sys.path.insert(0, str(HERE / "mpi"))
        from fields_driver import config

        sim = gpusim.Simulation(config(solver))
        start = {n: sim.field_host(n) for n in sim.fields}
        sim.run(minutes=4, progress=False)
        end = {n: sim.field_host(n) for n in sim.fields}
        for n in end:
            assert not np.array_equal(start[n], end[n])  # the fields evolve: the comparison has content
        _ONE[solver] = end
    return _ONE[solver]


_SLOW = pytest.mark.slow  # more process grids of the same check: the default suite keeps a few
_GRIDS = [pytest.param(1, None, marks=_SLOW), (2, [1, 1, 2]), pytest.param(2, [2, 1, 1], marks=_SLOW),
          pytest.param(3, None, marks=_SLOW), (4, [2, 1, 2]), pytest.param(4, [1, 2, 2], marks=_SLOW)]


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("solver", ["explicit", "lod"])
@pytest.mark.parametrize("n, ranks", _GRIDS)
def test_fields_on_n_ranks_are_bitwise_the_single_process_run(tmp_path, solver, n, ranks):
    """Explicit: halo exchanges; LOD (bitwise mode): whole lines through slab and pencil transposes."""
    want = _one_process(solver)
    out = str(tmp_path / "fields.npz")
    _launch(n, "fields_driver.py", out, "4", json.dumps(ranks), solver)
    got = np.load(out)
    meta = json.loads(Path(out + ".json").read_text())
    if ranks:
        assert meta["ranks_zyx"] == ranks
    assert int(np.prod(meta["ranks_zyx"])) == n
    for name, values in want.items():
        assert got[name].dtype == values.dtype and got[name].tobytes() == values.tobytes(), name
    moved = meta["bytes_per_step_rank0"]
    if n > 1:  # something crossed between ranks: the halo for explicit, the transposes for LOD
        assert moved["halo" if solver == "explicit" else "transpose"] > 0


# -- the command line under mpiexec -------------------------------------------------------------------
_FIELDS_ONLY = """seed = 4
init = "given"
solver = "{solver}"
[grid]
shape = [14, 12, 10]
dx_um = 15.0
[[substrates]]
name = "mg"
initial = 0.1
serum = 0.47
[[substrates]]
name = "chemokine"
initial = 1.0
serum = 0.0
decay_per_min = 0.05
[vessels]
kind = "random"
voxel_fraction = 0.05
[output]
fields_every_min = 2.0
checkpoint_every_steps = 3
"""


def _gpusim(*args, n=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gpusim.cli", *args, "--no-progress"]
    if n is not None:
        cmd = [_mpiexec(), "-n", str(n), *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _zarr_arrays(path) -> dict:
    import zarr

    def walk(g, prefix=""):
        out = {}
        for k, v in g.members():
            if isinstance(v, zarr.Array):
                out[prefix + k] = v
            else:
                out.update(walk(v, prefix + k + "/"))
        return out

    return walk(zarr.open_group(str(path), mode="r"))


def _differing(a, b, skip=("perf/",)) -> list:
    """Arrays of store ``a`` and ``b`` (all but ``skip``) that differ in shape or in any byte; a missing one counts."""
    aa, bb = _zarr_arrays(a), _zarr_arrays(b)
    names = {k for k in set(aa) | set(bb) if not k.startswith(skip)}
    return sorted(k for k in names if k not in aa or k not in bb or aa[k].shape != bb[k].shape
                  or aa[k][...].tobytes() != bb[k][...].tobytes())


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("n, solver", [(2, "lod"), (3, "explicit")])
def test_mpiexec_gpusim_run_writes_the_single_process_store_and_resumes_on_one_process(tmp_path, n, solver):
    cfg = tmp_path / "fields.toml"
    cfg.write_text(_FIELDS_ONLY.format(solver=solver))
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    p = _gpusim("run", str(cfg), "--minutes", "4", "--out", str(many), "--set", "parallel.lod_mode=bitwise", n=n)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"parallel: {n} MPI ranks" in p.stdout
    assert zarr_attrs(many)["parallel"]["ranks"] == n
    assert _gpusim("run", str(cfg), "--minutes", "4", "--out", str(one)).returncode == 0
    assert _differing(many, one) == []
    # the N-rank checkpoint (whole-grid arrays) continues on one process, as the one-process run does
    for store in (many, one):
        r = _gpusim("resume", str(store), "--minutes", "2")
        assert r.returncode == 0, r.stderr[-3000:]
    assert _differing(many, one) == []
    assert gpusim.open_run(many).n_frames["timeseries"] == 6
    # `gpusim info` of a fields-only N-rank store: the per-rank table has the field step and no T cells
    info = subprocess.run([sys.executable, "-m", "gpusim.cli", "info", str(many)], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="160"), timeout=120)
    assert info.returncode == 0, info.stderr[-2000:]
    assert "MPI ranks over" in info.stdout and "field step" in info.stdout and "T cells (mean)" not in info.stdout


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.slow  # the default suite runs init = "steady" on ranks in every busy-config test
def test_init_steady_on_ranks_keeps_a_substrate_without_steady_state_as_one_process_does(tmp_path):
    """init = "steady" runs on all ranks; the chemokine here (no decay, no tumour to take it up) has no
    steady state: every rank finds so at the same point, the field keeps its initial value, the run goes
    on and the store is the one-process store."""
    cfg = tmp_path / "fields.toml"
    cfg.write_text(_FIELDS_ONLY.format(solver="lod").replace('init = "given"', 'init = "steady"')
                   .replace("decay_per_min = 0.05", "decay_per_min = 0.0"))
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    p = _gpusim("run", str(cfg), "--minutes", "2", "--out", str(many), "--set", "parallel.lod_mode=bitwise", n=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "init = steady: the initial fields were solved on all 2 ranks" in p.stdout
    assert _gpusim("run", str(cfg), "--minutes", "2", "--out", str(one)).returncode == 0
    assert _differing(many, one) == []
    f = gpusim.open_run(many).fields
    assert float(f["chemokine"].values[0].min()) == float(f["chemokine"].values[0].max()) == 1.0  # kept
    assert float(f["mg"].values[0].max()) > 0.1  # solved: Mg from the vessels


@needs_mpi[0]
@needs_mpi[1]
def test_every_rank_knows_its_number_and_count_on_its_node():
    """MPIComm.local_rank/local_size (MPI's shared-memory split): the GPU a rank takes on a GPU node.
    Here one node holds all 3 ranks."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    code = ("from gpusim.parallel.comm import world; c = world(); "
            "print(c.rank, c.local_rank, c.local_size, c.local_rank, flush=True)")
    p = subprocess.run([_mpiexec(), "-n", "3", sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = sorted(tuple(int(v) for v in line.split()) for line in p.stdout.split("\n") if line.strip())
    assert rows == [(0, 0, 3, 0), (1, 1, 3, 1), (2, 2, 3, 2)]


@needs_mpi[0]
@needs_mpi[1]
def test_mpiexec_with_backend_cuda_on_ranks_without_a_gpu_says_so_and_writes_nothing(tmp_path):
    """GPU ranks (the partitioned LOD sweeps on each rank's GPU) need a GPU on every rank: here none has
    one, and every rank stops with the reason before anything is written; the bitwise LOD with GPU
    ranks is refused with what to set."""
    out = tmp_path / "run.zarr"
    p = _gpusim("run", "--scenario", "baseline", "--minutes", "1", "--out", str(out), "--set", "backend=cuda", n=2)
    assert p.returncode == 2, p.stdout + p.stderr[-2000:]
    assert "backend 'cuda' was requested but" in p.stderr and "--backend cpu" in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()
    p = _gpusim("run", "--scenario", "baseline", "--minutes", "1", "--out", str(out), "--set", "backend=cuda",
                "--set", "parallel.lod_mode=bitwise", n=2)
    assert p.returncode == 2
    assert "cannot run on 2 MPI ranks yet" in p.stdout and 'parallel.lod_mode = "partitioned"' in p.stdout
    assert not out.exists()


# -- the tumour lattice, T cells and events across ranks ---------------------------------------------
# A busy block: a tumour cut by every process grid below, T cells engaging, killing, dividing and moving
# across the faces, recruitment at vessels, an Mg implant, a T-cell infusion, O2 by its steady solver;
# every output written (fields, tumour, T-cell snapshots, tracks, events, timeseries, checkpoints).
_BUSY = """seed = 3
init = "steady"
[grid]
shape = [20, 18, 16]
dx_um = 15.0
[[substrates]]
name = "mg"
[[substrates]]
name = "o2"
[[substrates]]
name = "chemokine"
[vessels]
kind = "random"
voxel_fraction = 0.02
[tumor]
initial_radius_um = 90.0
cycle_rate_per_min = 0.005
hits_to_kill = 2
hit_recovery_min = 20.0
apoptotic_clear_min = 60.0
[tcells]
initial_count = 150
placement = "tumor"
k_on_per_min = 0.5
k_hit_per_min = 0.1
synapse_min = 15.0
prolif_prob_per_kill = 0.5
division_delay_min = 30.0
recruit_per_vessel_per_min = 0.005
apoptosis_per_min = 1e-3
speed_um_per_min = 6.0
[[events]]
name = "implant"
type = "implant"
substrate = "mg"
time_min = 5.0
center_um = [150.0, 135.0, 120.0]
radius_um = 30.0
rate_umol_per_min = 1e-6
[[events]]
name = "infusion"
type = "tcell_infusion"
time_min = 10.0
count = 40
placement = "shell"
shell_um = [0.0, 30.0]
[output]
fields_every_min = 10.0
tumor_every_min = 10.0
tcells_every_min = 10.0
tracks_every_min = 1.0
tracks_count = 20
events = true
checkpoint_every_steps = 20
[parallel]
lod_mode = "bitwise"
"""
_BUSY_MIN = 40


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """The busy config and its single-process store."""
    d = tmp_path_factory.mktemp("busy")
    cfg = d / "busy.toml"
    cfg.write_text(_BUSY)
    one = d / "one.zarr"
    p = _gpusim("run", str(cfg), "--minutes", str(_BUSY_MIN), "--out", str(one))
    assert p.returncode == 0, p.stderr[-3000:]
    return cfg, one


def _crossings(cfg_path, ranks_zyx) -> dict:
    """On one process, step by step: T cells that moved into another rank's box, and kills whose killer
    sat in another box than its target (what the N-rank run must get right across the faces)."""
    from gpusim.agents import rules as R
    from gpusim.agents.spatial_index import voxel_of

    sim = gpusim.Simulation(str(cfg_path))
    d = Decomposition(sim.state.shape, n_ranks=int(np.prod(ranks_zyx)), ranks_zyx=ranks_zyx)
    owner = np.empty(sim.state.shape, np.int64)
    for r, b in enumerate(d.boxes()):
        owner[b.slices] = r
    owner = owner.reshape(-1)
    moved = kills = 0
    for _ in range(_BUSY_MIN):
        sim.step()
        s = sim.tcells
        new_vox = voxel_of(s.pos_um, sim.state.dx_um, sim.state.shape)
        m = (s.flags & R.FL_MOVED) != 0
        moved += int(np.count_nonzero(owner[s.voxel[m]] != owner[new_vox[m]]))
        k = (s.flags & R.FL_KILL) != 0
        kills += int(np.count_nonzero(owner[s.voxel[k]] != owner[s.target[k]]))
    return {"moved": moved, "kills": kills}


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("n, ranks", [(2, [2, 1, 1]), pytest.param(3, None, marks=_SLOW), (4, [2, 2, 1]),
                                     pytest.param(4, [1, 2, 2], marks=_SLOW), pytest.param(4, [4, 1, 1], marks=_SLOW)])
def test_cells_on_n_ranks_write_the_single_process_store_bitwise(tmp_path, busy, n, ranks):
    """Fields, lattice, T-cell snapshots, tracks, events, timeseries and checkpoints: every byte equal."""
    cfg, one = busy
    many = tmp_path / "many.zarr"
    extra = ["--set", f"parallel.ranks_zyx={json.dumps(ranks)}"] if ranks else []
    p = _gpusim("run", str(cfg), "--minutes", str(_BUSY_MIN), "--out", str(many), *extra, n=n)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"parallel: {n} MPI ranks" in p.stdout
    assert f"init = steady: the initial fields were solved on all {n} ranks" in p.stdout
    assert _differing(one, many) == []
    r = gpusim.open_run(many)
    assert r.timeseries["kills"].iloc[-1] > 0 and r.timeseries["tumor_births"].iloc[-1] > 0
    assert r.events is not None and len(r.events) > 0
    if ranks is not None:  # the comparison covered T cells crossing faces and kills across them
        crossed = _crossings(cfg, ranks)
        assert crossed["moved"] > 0 and crossed["kills"] > 0, crossed
    if ranks == [2, 2, 1]:  # and the store opens in the viewer as the one-process store does
        pytest.importorskip("napari")
        from gpusim.viewer.reader import store_layers

        def layers(path):
            return [(kw.get("name"), kind, np.asarray(data[0] if isinstance(data, list) else data).shape)
                    for data, kw, kind in store_layers(gpusim.open_run(path))]

        got = layers(many)
        assert got == layers(one) and {"tumour", "T cells"} <= {name for name, _, _ in got}, got


_MAKING = (("initial_count = 150", "initial_count = 60"), ("prolif_prob_per_kill = 0.5", "prolif_prob_per_kill = 1.0"),
           ("division_delay_min = 30.0", "division_delay_min = 5.0"),
           ("recruit_per_vessel_per_min = 0.005", "recruit_per_vessel_per_min = 0.02"))


def _made(cfg_path, ranks_zyx) -> dict:
    """On one process, step by step: the T cells that appeared (recruits, daughters, infused), by the
    rank whose box holds the voxel they appeared in (what each rank makes on its own in an N-rank run)."""
    from gpusim.agents.spatial_index import voxel_of

    sim = gpusim.Simulation(str(cfg_path))
    d = Decomposition(sim.state.shape, n_ranks=int(np.prod(ranks_zyx)), ranks_zyx=ranks_zyx)
    seen = set(sim.tcells.uid.tolist())
    per_rank = [0] * d.n_ranks
    for _ in range(_BUSY_MIN):
        sim.step()
        s = sim.tcells
        new = np.flatnonzero([u not in seen for u in s.uid.tolist()])
        seen |= set(s.uid[new].tolist())
        for v in voxel_of(s.pos_um[new], sim.state.dx_um, sim.state.shape):
            per_rank[d.owner(*(int(c) for c in np.unravel_index(int(v), sim.state.shape)))] += 1
    return {"per_rank": per_rank, "totals": dict(sim.cells.totals)}


@needs_mpi[0]
@needs_mpi[1]
def test_recruits_and_daughters_made_on_the_ranks_give_the_single_process_store(tmp_path):
    """Each rank recruits at the vessel voxels of its box (reading the chemokine and the crowding of
    its region, one voxel wider for it) and divides its own T cells: with recruitment and division
    four times the busy run's, on 3 ranks cut along y, every byte of the store is the one process's,
    and T cells appeared in every rank's box."""
    cfg = tmp_path / "making.toml"
    text = _BUSY
    for a, b in _MAKING:
        assert a in text
        text = text.replace(a, b)
    cfg.write_text(text)
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    for out, extra in ((one, {}), (many, {"n": 3})):
        args = ["--set", "parallel.ranks_zyx=[1,3,1]"] if extra else []
        p = _gpusim("run", str(cfg), "--minutes", str(_BUSY_MIN), "--out", str(out), *args, **extra)
        assert p.returncode == 0, p.stderr[-3000:]
    assert _differing(one, many) == []
    made = _made(cfg, [1, 3, 1])
    assert made["totals"]["tcells_recruited"] > 0 and made["totals"]["tcells_born"] > 0, made
    assert min(made["per_rank"]) > 0, made


_DOSED_EVENTS = """
[[events]]
name = "dose"
type = "bolus"
time_min = 12.0
substrate = "mg"
center_um = [150.0, 135.0, 120.0]
radius_um = 60.0
amount_umol = 1e-6
[[events]]
name = "pinch"
type = "bolus"
time_min = 0.0
repeat_every_min = 10.0
repeat_count = 2
substrate = "chemokine"
center_um = [100.0, 130.0, 70.0]
radius_um = 1.0
amount_umol = 1e-9
[[events]]
name = "clamp_tumour"
type = "hold"
time_min = 15.0
duration_min = 10.0
substrate = "chemokine"
region = "tumor"
value = 0.5
[[events]]
name = "clamp_sphere"
type = "hold"
time_min = 30.0
substrate = "mg"
center_um = [90.0, 75.0, 105.0]
radius_um = 40.0
value = 2.0
[[events]]
name = "clamp_o2"
type = "hold"
time_min = 18.0
duration_min = 15.0
substrate = "o2"
center_um = [150.0, 135.0, 120.0]
radius_um = 45.0
value = 5.0
"""


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("solver, n", [("explicit", 3), pytest.param("lod", 2, marks=_SLOW)])
def test_a_bolus_and_holds_on_fields_the_ranks_keep_give_the_single_process_store(tmp_path, solver, n):
    """The fields live on the ranks between steps: boluses (one on a sphere holding no voxel centre:
    its centre's voxel, due first in the first step, before the ranks hold the field) dosed and holds on the tumour and on spheres clamped by the ranks over their
    boxes (gpusim.parallel.events; O₂'s hold also spans steady solves, which start from the ranks'
    clamped copy), with the implant's source made by each rank, leave every byte of the store as one
    process writes it, with the fields in the halo layout (explicit), on z-slabs (bitwise LOD) and on
    the boxes (steady); rank 0's mirror gathers nothing."""
    cfg = tmp_path / "dosed.toml"
    cfg.write_text(f'solver = "{solver}"\n' + _BUSY + _DOSED_EVENTS)
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    for out, ranks in ((one, None), (many, n)):
        p = _gpusim("run", str(cfg), "--minutes", str(_BUSY_MIN), "--out", str(out), n=ranks)
        assert p.returncode == 0, p.stderr[-3000:]
    assert _differing(one, many) == []
    ts = gpusim.open_run(one).timeseries
    chem_min = next(c for c in ts if c.startswith("chemokine_min"))
    assert ts["mg_max_mM"].iloc[-1] == np.float32(2.0) and ts[chem_min].iloc[20] <= 0.5  # the holds acted
    assert ts["mg_mean_mM"].iloc[12] > ts["mg_mean_mM"].iloc[11]  # the bolus dosed
    assert ts["o2_min_mmHg"].iloc[25] == np.float32(5.0) < ts["o2_min_mmHg"].iloc[10]  # O₂'s hold acted
    assert (gpusim.open_run(many).perf["mirror_gathered_bytes"].to_numpy() == 0).all()


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.slow
def test_a_region_narrower_than_the_rules_reach_is_caught(tmp_path, busy, monkeypatch):
    """With one voxel of region around each box instead of CELL_GHOST the 4-rank store differs: the
    bitwise comparison above can fail."""
    cfg, one = busy
    monkeypatch.setenv("GPUSIM_TEST_CELL_GHOST", "1")
    many = tmp_path / "narrow.zarr"
    p = _gpusim("run", str(cfg), "--minutes", str(_BUSY_MIN), "--out", str(many), "--set",
                "parallel.ranks_zyx=[4,1,1]", n=4)
    assert p.returncode == 0, p.stderr[-3000:]
    assert any(k.startswith("tcells/") for k in _differing(one, many))


@needs_mpi[0]
@needs_mpi[1]
def test_a_4_rank_checkpoint_resumes_on_3_ranks_and_on_1_bitwise(tmp_path, busy):
    cfg, one = busy
    four = tmp_path / "four.zarr"
    p = _gpusim("run", str(cfg), "--minutes", "25", "--out", str(four), n=4)
    assert p.returncode == 0, p.stderr[-3000:]
    copy = tmp_path / "copy.zarr"
    shutil.copytree(four, copy)
    rest = str(_BUSY_MIN - 25)
    r3 = _gpusim("resume", str(four), "--minutes", rest, n=3)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert "parallel: 3 MPI ranks" in r3.stdout
    r1 = _gpusim("resume", str(copy), "--minutes", rest)
    assert r1.returncode == 0, r1.stderr[-3000:]
    # the outputs are the uninterrupted run's; the checkpoint slots hold other steps (25, 40 vs 20, 40)
    for store in (four, copy):
        assert _differing(one, store, skip=("perf/", "checkpoint/")) == []
        assert gpusim.open_run(store).n_frames["timeseries"] == _BUSY_MIN


@needs_mpi[0]
@needs_mpi[1]
def test_even_boxes_give_the_same_store_and_perf_records_each_ranks_share(tmp_path, busy):
    """parallel.balance = "even" (the fields' boxes) writes the same bytes as the default cell-balanced
    boxes; perf/ holds every rank's T cells, which add up to the run's T cells (the infused ones
    included), `gpusim info` shows them, and rank 0's mirror gathered nothing during the run."""
    cfg, one = busy
    many = tmp_path / "even.zarr"
    p = _gpusim("run", str(cfg), "--minutes", str(_BUSY_MIN), "--out", str(many), "--set", "parallel.balance=even",
                n=4)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _differing(one, many) == []
    r = gpusim.open_run(many)
    perf, ts = r.perf, r.timeseries
    owned = sum(perf[f"tcells_r{k}"].to_numpy() for k in range(4))
    # a step's T cells at its sort are the previous step's survivors; the infusion (10 min, dt 1 min)
    # adds 40 at the start of step 10
    for step in range(1, _BUSY_MIN):
        want = int(ts["tcells"].iloc[step - 1]) + (40 if step == 10 else 0)
        assert int(owned[step]) == want, step
    # the infusion is placed by the ranks (parallel.placement) and every frame, snapshot and checkpoint
    # is written by them: rank 0's mirror gathers no field, lattice or T cell before the run's end
    assert (perf["mirror_gathered_bytes"].to_numpy() == 0).all()
    info = subprocess.run([sys.executable, "-m", "gpusim.cli", "info", str(many)], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="120"), timeout=120)
    assert info.returncode == 0, info.stderr[-2000:]
    assert "MPI ranks over 39 steps" in info.stdout and "max/mean" in info.stdout
    assert "steady solves" in info.stdout  # O₂'s solves on all ranks (gpusim.parallel.steady)


def test_balanced_runs_tile_the_axis_and_share_the_weight():
    from gpusim.parallel.decomposition import balanced_runs

    rng = np.random.default_rng(1)
    for n, p in [(20, 2), (20, 4), (37, 3), (9, 9), (64, 8)]:
        for w in (rng.random(n), np.r_[np.zeros(n - 3), 5.0, 1.0, 1.0], np.zeros(n)):
            runs = balanced_runs(w, p)
            assert [s for s, _ in runs] == list(np.cumsum([0] + [m for _, m in runs])[:-1])
            assert sum(m for _, m in runs) == n and min(m for _, m in runs) >= 1 and len(runs) == p
            if w.sum() > 0 and w.max() <= w.sum() / (4 * p):  # no voxel outweighs a share: shares even
                shares = [w[s:s + m].sum() for s, m in runs]
                assert max(shares) - min(shares) <= 2 * w.max(), (n, p, shares)
    assert balanced_runs(np.zeros(10), 3) == [(0, 4), (4, 3), (7, 3)]  # no weight: split()
    with pytest.raises(ValueError, match="do not tile"):
        Decomposition.from_runs((10, 4, 4), [[(0, 4), (5, 5)], [(0, 4)], [(0, 4)]])


def test_the_lattice_partials_of_uneven_boxes_add_up_to_the_whole_grid():
    """What each rank sends rank 0 of its lattice box (event counts, code counts, plane sums) summed
    over an uneven decomposition equals the numbers of the whole lattice, which one process computes."""
    from gpusim.agents import rules as R
    from gpusim.agents.cells import lattice_events
    from gpusim.census import lattice_counts
    from gpusim.parallel.cell_op import cell_weights
    from gpusim.parallel.cells import plane_sites, plane_tcells
    from gpusim.parallel.decomposition import Box

    shape = (9, 7, 5)
    g = np.random.default_rng(3)
    tumor = g.choice([R.EMPTY, R.LIVE, R.DEAD, R.NECROTIC], size=shape, p=[0.5, 0.3, 0.1, 0.1]).astype(np.uint8)
    event = g.integers(0, 256, size=shape).astype(np.uint8)
    d = Decomposition.from_runs(shape, [[(0, 2), (2, 7)], [(0, 4), (4, 3)], [(0, 5)]])
    parts = sum(np.concatenate([lattice_events(np, event[b.slices]), lattice_counts(np, tumor[b.slices]),
                                plane_sites(tumor[b.slices], b, shape)]) for b in d.boxes())
    whole = np.concatenate([lattice_events(np, event), lattice_counts(np, tumor),
                            plane_sites(tumor, Box((0, 0, 0), shape), shape)])
    assert np.array_equal(parts, whole)
    assert whole[4] == np.count_nonzero(tumor == R.LIVE) and whole[1] == np.count_nonzero(event & R.EV_BORN)
    z, y, x = np.unravel_index(g.integers(0, tumor.size, 50), shape)
    planes = sum(plane_tcells(z[inside], y[inside], x[inside], shape) for inside in
                 (((z >= b.offset[0]) & (z < b.stop[0]) & (y >= b.offset[1]) & (y < b.stop[1])) for b in d.boxes()))
    weights = cell_weights(parts[7:7 + sum(shape)], planes, shape)
    for axis, w in enumerate(weights):
        others = tuple(a for a in range(3) if a != axis)
        expect = (tumor != 0).sum(axis=others) + np.bincount((z, y, x)[axis], minlength=shape[axis])
        assert np.array_equal(w, expect.astype(np.float64))


def test_a_corner_tumour_is_shared_out_by_the_cell_balance():
    """A tumour in one corner on 4 ranks (2, 2, 1): equal boxes give one rank nearly all of it; the
    cell-balanced boxes give each rank a quarter of the T cells and tumour cells, to within 15 %."""
    from gpusim.parallel.cell_op import cell_weights
    from gpusim.parallel.cells import plane_sites, plane_tcells
    from gpusim.parallel.decomposition import Box

    shape = (32, 32, 32)
    tumor = np.zeros(shape, np.uint8)
    z, y, x = np.indices(shape)
    tumor[(z - 6) ** 2 + (y - 7) ** 2 + (x - 8) ** 2 <= 25] = 1
    occupied = np.flatnonzero(tumor.reshape(-1))
    tcells = np.repeat(occupied[::3], 2)  # two T cells on every third tumour voxel
    weights = cell_weights(plane_sites(tumor, Box((0, 0, 0), shape), shape),
                           plane_tcells(*np.unravel_index(tcells, shape), shape), shape)

    def shares(d):
        per = np.zeros(d.n_ranks)
        w = tumor.astype(np.float64).reshape(-1) + np.bincount(tcells, minlength=tumor.size)
        for r, b in enumerate(d.boxes()):
            per[r] = w.reshape(shape)[b.slices].sum()
        return per / per.sum()

    even = shares(Decomposition(shape, ranks_zyx=(2, 2, 1)))
    from gpusim.parallel.decomposition import balanced_runs

    runs = [balanced_runs(w, p) for w, p in zip(weights, (2, 2, 1))]
    balanced = shares(Decomposition.from_runs(shape, runs))
    assert even.max() > 0.95
    assert np.all(np.abs(balanced - 0.25) < 0.15 * 0.25 * 4), balanced  # within 15 % of the total


@needs_mpi[0]
@needs_mpi[1]
def test_a_failing_rank_ends_the_job_with_its_error_instead_of_hanging(tmp_path, busy, monkeypatch):
    cfg, _ = busy
    monkeypatch.setenv("GPUSIM_TEST_FAIL_RANK", "1")
    p = _gpusim("run", str(cfg), "--minutes", "3", "--out", str(tmp_path / "run.zarr"), n=2, timeout=120)
    assert p.returncode != 0
    assert "rank 1 of 2 failed" in p.stderr and "fails on purpose" in p.stderr


@needs_mpi[0]
@needs_mpi[1]
def test_the_readme_launch_of_baseline_on_4_ranks_writes_the_one_process_store(tmp_path):
    """`mpiexec -n 4 gpusim run --scenario baseline --out run.zarr --set parallel.lod_mode=bitwise`
    (README), 64³, for 3 minutes: the one-process store byte for byte."""
    one, four = tmp_path / "one.zarr", tmp_path / "run.zarr"
    p = _gpusim("run", "--scenario", "baseline", "--minutes", "3", "--out", str(four), "--set",
                "parallel.lod_mode=bitwise", n=4)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "parallel: 4 MPI ranks" in p.stdout
    assert _gpusim("run", "--scenario", "baseline", "--minutes", "3", "--out", str(one)).returncode == 0
    assert _differing(one, four) == []
    assert zarr_attrs(four)["parallel"] == {"ranks": 4, "ranks_zyx": [2, 2, 1], "lod_mode": "bitwise"}


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.slow
def test_the_readme_default_launch_of_baseline_on_4_ranks_is_within_the_partitioned_tolerance(tmp_path):
    """`mpiexec -n 4 gpusim run --scenario baseline --out run.zarr` (README; partitioned LOD, the
    default), 64³, 5 minutes: every field frame within 1e-6 of one process, and the tumour and T-cell
    counts those of one process (the fields' ~1e-7 differences flip no decision in 5 steps)."""
    one, four = tmp_path / "one.zarr", tmp_path / "run.zarr"
    every = ("--set", "output.fields_every_min=1")
    p = _gpusim("run", "--scenario", "baseline", "--minutes", "5", "--out", str(four), *every, n=4)
    assert p.returncode == 0, p.stderr[-3000:]
    assert zarr_attrs(four)["parallel"]["lod_mode"] == "partitioned"
    assert _gpusim("run", "--scenario", "baseline", "--minutes", "5", "--out", str(one), *every).returncode == 0
    ra, rb = gpusim.open_run(four), gpusim.open_run(one)
    for name in rb.fields:
        a, b = ra.fields[name].values, rb.fields[name].values
        assert a.shape == b.shape and max(_rel(a[t], b[t]) for t in range(b.shape[0])) <= _PART_TOL, name
    for col in ("tumor_live", "tcells", "kills", "engagements"):
        assert ra.timeseries[col].tolist() == rb.timeseries[col].tolist(), col
    assert not ra.timeseries["mg_mean_mM"].equals(rb.timeseries["mg_mean_mM"])  # not the bitwise mode


@needs_mpi[0]
@needs_mpi[1]
def test_the_readme_mpi_example_runs_on_two_ranks(tmp_path):
    p = _gpusim("run", str(REPO_ROOT / "examples" / "mg_fields_mpi.toml"), "--set", "grid.shape=[16,12,10]",
                "--minutes", "2", "--out", str(tmp_path / "run.zarr"), n=2)
    assert p.returncode == 0, p.stderr[-3000:]
    ts = gpusim.open_run(tmp_path / "run.zarr").timeseries
    assert len(ts) == 2 and ts["mg_mean_mM"].iloc[-1] > 0.1  # Mg fills from the vessels


def zarr_attrs(path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


# -- LOD in the partitioned mode (parallel.lod_mode = "partitioned") -----------------------------------
# Lines that cross ranks are solved where they lie (gpusim.parallel.partitioned); the result is not
# bitwise the single-process one. Agreement is measured per substrate as max|a - b| / max|b| over the
# grid (b the reference); the tolerance is 1e-6 (float32 keeps ~6e-8).
_PART_TOL = 1e-6
_PART_GRIDS = [(2, [1, 1, 2]), pytest.param(2, [1, 2, 1], marks=_SLOW), pytest.param(2, [2, 1, 1], marks=_SLOW),
               pytest.param(3, [1, 1, 3], marks=_SLOW), (3, [1, 3, 1]), (4, [2, 1, 2]),
               pytest.param(4, [1, 2, 2], marks=_SLOW), pytest.param(4, [1, 1, 4], marks=_SLOW)]


def _rel(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def _random_lines(rng, n, n_lines):
    """Diagonally dominant tridiagonal lines like the LOD rows: per-row off-diagonals, per-line diagonals."""
    arow, crow = -rng.uniform(0.1, 3.0, n), -rng.uniform(0.1, 3.0, n)
    arow[0] = crow[-1] = 0.0
    b = (-arow - crow)[:, None] + rng.uniform(0.2, 2.0, (n, n_lines))
    return arow, crow, b, rng.normal(size=(n, n_lines))


def test_partitioned_tridiagonal_solve_is_the_dense_solve_for_any_cut_of_the_line():
    """Segment elimination, reduced system of the segment ends, back substitution: the same solution as
    a dense solve, whatever the segments (1- and 2-voxel ones included)."""
    from gpusim.parallel.tdma import solve_split

    rng = np.random.default_rng(6)
    arow, crow, b, d = _random_lines(rng, 17, 4)
    want = np.stack([np.linalg.solve(np.diag(b[:, l]) + np.diag(arow[1:], -1) + np.diag(crow[:-1], 1), d[:, l])
                     for l in range(d.shape[1])], axis=1)
    for lengths in ([17], [9, 8], [1, 16], [16, 1], [5, 1, 1, 10], [2, 2, 2, 2, 2, 2, 2, 2, 1], [1] * 17):
        got = solve_split(arow, crow, b, d, lengths)
        assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max(), lengths
    wrong = solve_split(arow, np.where(np.arange(17) == 8, 0.0, crow), b, d, [9, 8])  # the cut as a face
    assert np.abs(wrong - want).max() > 1e-3 * np.abs(want).max()


def test_partitioned_sweeps_of_an_uncut_box_agree_with_the_single_process_lod_step():
    """The partitioned kernels (forced on one box: one segment per line) against ``lod_step`` with every
    per-voxel term present (vessels, tumour and T-cell uptake, a source) and Dirichlet faces."""
    from gpusim.fields import layout as L
    from gpusim.fields.cpu_kernels import lod_step
    from gpusim.parallel.comm import SerialComm
    from gpusim.parallel.partitioned import PartitionedLOD

    sys.path.insert(0, str(HERE / "mpi"))
    from partitioned_driver import config

    sim = gpusim.Simulation(config())
    plan = sim.field_update.plans["mg"]
    rng = np.random.default_rng(2)
    shape = sim.state.shape
    ops = ((rng.random(shape) < 0.05).astype(np.uint8), rng.integers(0, 2, shape, dtype=np.uint8),
           rng.integers(0, 3, shape, dtype=np.uint8), rng.uniform(0, 0.01, shape).astype(np.float32))
    flags = L.HAS_VESSEL | L.HAS_TUMOR | L.HAS_TCELL | L.HAS_SRC
    start = rng.uniform(0.05, 0.5, shape).astype(np.float32)
    want, got = start.copy(), start.copy()
    box = PartitionedLOD(SerialComm(), Decomposition(shape, ranks_zyx=(1, 1, 1)))
    for _ in range(plan.n_sub):
        lod_step(want, plan.coef, plan.bc_type, plan.bc_value, *ops, flags)
        box.sweep(got, 2, plan.coef, plan.bc_type, plan.bc_value, (*ops, flags))
        box.sweep(got, 1, plan.coef, plan.bc_type, plan.bc_value)
        box.sweep(got, 0, plan.coef, plan.bc_type, plan.bc_value)
    assert _rel(want, start) > 0.1  # the step changes the field: the comparison has content
    assert _rel(got, want) <= _PART_TOL
    assert box.bytes_sent == 0


_ONE_PART = {}


def _one_process_partitioned_config(minutes):
    """The single-process fields of partitioned_driver's config after ``minutes``, each substrate's
    operand flags, and the initial fields (cached)."""
    if minutes not in _ONE_PART:
        sys.path.insert(0, str(HERE / "mpi"))
        from partitioned_driver import config

        sim = gpusim.Simulation(config())
        flags = {n: int(sim.field_update._operands(sim.state, n)[0]) for n in sim.fields}
        start = {n: sim.field_host(n) for n in sim.fields}
        sim.run(minutes=minutes, progress=False)
        end = {n: sim.field_host(n) for n in sim.fields}
        for n in end:
            assert _rel(end[n], start[n]) > 1e-2, n  # the fields evolve: the comparison has content
        _ONE_PART[minutes] = end, flags, start
    return _ONE_PART[minutes]


def _reduced_row_bytes(shape, ranks, n_sub, flags) -> int:
    """partitioned.py's message volume per step, summed over ranks: per LOD step and cut axis a,
    8 B * (k_a + 2) * (p_a - 1) * N / n_a, k_a = 6 on the x sweep with reaction arrays, else 2."""
    total = 0
    n_voxels = int(np.prod(shape))
    for name, n in n_sub.items():
        for axis in range(3):
            k = 6 if axis == 2 and flags[name] != 0 else 2
            total += n * 8 * (k + 2) * (ranks[axis] - 1) * n_voxels // shape[axis]
    return total


def _boxes_alone(ranks):
    """One step of the boxes of ``ranks`` each solved alone, the cut faces taken as zero-flux faces:
    the coupling of the lines across ranks dropped."""
    from gpusim.fields import layout as L
    from gpusim.fields.cpu_kernels import lod_step

    sys.path.insert(0, str(HERE / "mpi"))
    from partitioned_driver import config

    sim = gpusim.Simulation(config())
    fu = sim.field_update
    d = Decomposition(sim.state.shape, ranks_zyx=ranks)
    out = {}
    for name, plan in fu.plans.items():
        flags, *ops = fu._operands(sim.state, name)
        whole = sim.field_host(name)
        for r, box in enumerate(d.boxes()):
            c = np.ascontiguousarray(whole[box.slices])
            cut = [a if a.shape == (1, 1, 1) else np.ascontiguousarray(np.asarray(a)[box.slices]) for a in ops]
            bc_type = plan.bc_type.copy()
            for axis, side in itertools.product(range(3), (-1, 1)):
                if d.neighbour(r, axis, side) is not None:
                    bc_type[2 * axis + (side > 0)] = L.BC_ZERO_FLUX
            for _ in range(plan.n_sub):
                lod_step(c, plan.coef, bc_type, plan.bc_value, *cut, flags)
            whole[box.slices] = c
        out[name] = whole
    return out


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("n, ranks", _PART_GRIDS)
def test_partitioned_lod_on_n_ranks_is_within_1e_6_of_one_process_after_a_step(tmp_path, n, ranks):
    """x, y and z cuts, Dirichlet and zero-flux faces, vessels (reaction on the x sweep): within 1e-6
    of one process, while the same boxes solved without the exchange are far off; the bytes sent are
    the module's formula."""
    want, flags, _ = _one_process_partitioned_config(1)
    out = str(tmp_path / "part.npz")
    _launch(n, "partitioned_driver.py", out, "1", json.dumps(ranks), "partitioned")
    got = np.load(out)
    meta = json.loads(Path(out + ".json").read_text())
    assert meta["ranks_zyx"] == ranks
    alone = _boxes_alone(ranks)
    for name, values in want.items():
        assert got[name].dtype == np.float32
        assert _rel(got[name], values) <= _PART_TOL, name
        assert _rel(alone[name], values) > 100 * _PART_TOL, name  # the tolerance tells the exchange is needed
    sent = meta["bytes_per_step_total"]
    assert sent["partitioned"] == _reduced_row_bytes(want["mg"].shape, ranks, meta["n_sub"], flags) > 0
    assert sent["transpose"] == 0 and sent["halo"] == 0


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("n, ranks", [(2, [1, 1, 2]), (3, [3, 1, 1])])
def test_partitioned_lod_over_100_steps_stays_within_1e_6_of_the_bitwise_mode(tmp_path, n, ranks):
    out = {}
    for mode in ("bitwise", "partitioned"):
        out[mode] = str(tmp_path / f"{mode}.npz")
        _launch(n, "partitioned_driver.py", out[mode], "100", json.dumps(ranks), mode)
    bitwise, part = np.load(out["bitwise"]), np.load(out["partitioned"])
    _, _, start = _one_process_partitioned_config(1)
    for name in bitwise.files:
        assert _rel(bitwise[name], start[name]) > 1e-2, name  # the fields evolve: the comparison has content
        assert _rel(part[name], bitwise[name]) <= _PART_TOL, name


@needs_mpi[0]
@needs_mpi[1]
def test_partitioned_lod_sends_an_eighth_of_the_bitwise_bytes_on_64_voxel_lines(tmp_path):
    """Two ranks cutting 64-voxel z lines: the reduced rows (32 B per line per LOD step) against the
    bitwise mode's two moves of half the field (4 B per voxel per LOD step): 8x fewer bytes."""
    shape = [64, 16, 16]
    sent = {}
    for mode in ("bitwise", "partitioned"):
        out = str(tmp_path / f"{mode}.npz")
        _launch(2, "partitioned_driver.py", out, "1", json.dumps([2, 1, 1]), mode, json.dumps(shape))
        meta = json.loads(Path(out + ".json").read_text())
        sent[mode] = meta["bytes_per_step_total"]
    lod_steps = sum(meta["n_sub"].values())
    assert sent["partitioned"]["transpose"] == 0 and sent["bitwise"]["partitioned"] == 0
    assert sent["partitioned"]["partitioned"] == lod_steps * 32 * 16 * 16
    assert sent["bitwise"]["transpose"] == lod_steps * 4 * int(np.prod(shape))
    assert sent["bitwise"]["transpose"] == 8 * sent["partitioned"]["partitioned"]


@needs_mpi[0]
@needs_mpi[1]
def test_mpiexec_gpusim_run_in_partitioned_mode_is_within_1e_6_of_one_process(tmp_path):
    """The coordinated run (rank 0 sends the boxes every step): every field frame within 1e-6."""
    cfg = tmp_path / "fields.toml"
    cfg.write_text(_FIELDS_ONLY.format(solver="lod") + '[parallel]\nlod_mode = "partitioned"\nranks_zyx = [1, 2, 1]\n')
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    p = _gpusim("run", str(cfg), "--minutes", "4", "--out", str(many), n=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert zarr_attrs(many)["parallel"]["lod_mode"] == "partitioned"
    assert _gpusim("run", str(cfg), "--minutes", "4", "--out", str(one)).returncode == 0
    ra, rb = gpusim.open_run(many), gpusim.open_run(one)
    assert ra.n_frames == rb.n_frames
    for name in rb.fields:
        a, b = ra.fields[name].values, rb.fields[name].values
        assert _rel(a[-1], b[0]) > 1e-2  # the frames differ over the run: the comparison has content
        assert max(_rel(a[t], b[t]) for t in range(b.shape[0])) <= _PART_TOL, name
    assert np.allclose(ra.timeseries["mg_mean_mM"], rb.timeseries["mg_mean_mM"], rtol=_PART_TOL, atol=0)


# Population statistics over seeds, partitioned against bitwise. Bitwise runs are the one-process runs
# byte for byte (the tests above), so they run here on one process. Over 8 seeds the busy block is run
# for 120 min; a statistic counts as indistinguishable when the two means differ by at most 2 standard
# errors of their difference. The same criterion must tell apart a real effect of the size the model is
# for: serum Mg 0.15 instead of 0.47 mM (fewer kills, more tumour; measured 6 and 3.8 standard errors).
_POP_SEEDS = list(range(1, 9))
_POP_MIN = 120
_POP_STATS = ("tumor_live", "tcells", "kills", "lfa1_mean")


def _one_process_finals(cfg, seeds, minutes):
    finals, series = {k: [] for k in _POP_STATS}, []
    for seed in seeds:
        sim = gpusim.Simulation(cfg.with_overrides({"seed": seed}))
        sim.run(minutes=minutes, progress=False)
        ts = sim.timeseries
        series.append(ts)
        for k in _POP_STATS:
            finals[k].append(float(ts[k][-1]))
    return {k: np.array(v) for k, v in finals.items()}, series


def _standard_errors_apart(a, b) -> float:
    se = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / len(a))
    diff = abs(a.mean() - b.mean())
    return 0.0 if diff == 0 else (np.inf if se == 0 else float(diff / se))


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.slow
def test_partitioned_mode_population_statistics_over_seeds_match_the_bitwise_runs(tmp_path):
    cfg_path = tmp_path / "busy.toml"
    cfg_path.write_text(_BUSY.replace('lod_mode = "bitwise"', 'lod_mode = "partitioned"\nranks_zyx = [2, 1, 1]'))
    out = tmp_path / "partitioned.json"
    _launch(2, "seeds_driver.py", str(cfg_path), str(out), str(_POP_MIN), *map(str, _POP_SEEDS), timeout=900)
    runs = json.loads(out.read_text())
    part = {k: np.array([runs[str(s)][k][-1] for s in _POP_SEEDS]) for k in _POP_STATS}
    base = gpusim.Config.from_toml(cfg_path).with_overrides({"parallel.lod_mode": "bitwise"})
    bitwise, series = _one_process_finals(base, _POP_SEEDS, _POP_MIN)
    for k in _POP_STATS:
        assert _standard_errors_apart(part[k], bitwise[k]) <= 2.0, (k, part[k], bitwise[k])
    # the fields of each seed stay within the partitioned tolerance of its bitwise run at every step
    for seed, ts in zip(_POP_SEEDS, series):
        for col in ("mg_mean_mM", "chemokine_mean_nM"):
            got, want = np.array(runs[str(seed)][col]), ts[col]
            assert got.shape == want.shape and _rel(got, want) <= _PART_TOL, (seed, col)
            assert not np.array_equal(got, want)  # partitioned, not bitwise: the modes did differ
    # the criterion has power: serum Mg 0.15 mM is told apart from 0.47 in kills and in live tumour cells
    subs = [s.model_dump() for s in base.substrates]
    for s in subs:
        if s["name"] == "mg":
            s["serum"] = 0.15
    low, _ = _one_process_finals(base.with_overrides({"substrates": subs}), _POP_SEEDS, _POP_MIN)
    assert low["kills"].mean() < bitwise["kills"].mean() and low["tumor_live"].mean() > bitwise["tumor_live"].mean()
    assert _standard_errors_apart(low["kills"], bitwise["kills"]) > 3.0
    assert _standard_errors_apart(low["tumor_live"], bitwise["tumor_live"]) > 3.0


@needs_mpi[0]
@needs_mpi[1]
def test_ranks_write_their_own_shards_of_a_sharded_grid_and_the_store_is_one_processs(tmp_path):
    """288 voxels along z are two shards (256 + 32): rank 0 writes the first, rank 1 the second and
    sends rank 0 only its part of the first (z 144..255) and the level-1 means of its own shard (level
    1 is one shard, rank 0's); the store is the
    one-process store byte for byte, and rank 0 moved less than a gather of rank 1's half would."""
    cfg = tmp_path / "fields.toml"
    cfg.write_text(_FIELDS_ONLY.format(solver="lod").replace("shape = [14, 12, 10]", "shape = [288, 6, 6]"))
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    p = _gpusim("run", str(cfg), "--minutes", "4", "--out", str(many), "--set", "parallel.lod_mode=bitwise", n=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _gpusim("run", str(cfg), "--minutes", "4", "--out", str(one)).returncode == 0
    assert _differing(many, one) == []
    perf = gpusim.open_run(many).perf
    moved = perf["frames_rank0_bytes"].to_numpy()
    per_field = (256 - 144) * 36 * 4 + (144 - 128) * 9 * 4  # level 0 of z 144..255, level 1 of z 128..143
    assert moved.tolist() == [0.0, 2 * per_field, 0.0, 2 * per_field]  # frames at t = 2 and 4 min
    assert 2 * per_field < 2 * 144 * 36 * 4  # less than gathering rank 1's half of each field


@needs_mpi[0]
@needs_mpi[1]
@pytest.mark.parametrize("solver", ["explicit", "lod"])
def test_an_implant_source_is_made_by_each_rank_and_never_sent(tmp_path, solver):
    """Each rank makes its cut of the implant's source when the implant starts (gpusim.parallel.events)
    and keeps it while the same implants are active: rank 0's bytes per step stay what they were
    before it (before 2026-12-03 it sent the cuts once, before that every step); the store is the
    one-process store."""
    cfg = tmp_path / "implant.toml"
    cfg.write_text(_FIELDS_ONLY.format(solver=solver).replace("shape = [14, 12, 10]", "shape = [16, 12, 10]")
                   + '[[events]]\nname = "implant"\ntype = "implant"\nsubstrate = "mg"\ntime_min = 2.0\n'
                     'center_um = [120.0, 90.0, 75.0]\nradius_um = 40.0\nrate_umol_per_min = 1e-6\n')
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    p = _gpusim("run", str(cfg), "--minutes", "6", "--out", str(many), "--set", "parallel.lod_mode=bitwise", n=2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _gpusim("run", str(cfg), "--minutes", "6", "--out", str(one)).returncode == 0
    assert _differing(many, one) == []
    r = gpusim.open_run(many)
    assert r.timeseries["mg_max_mM"].iloc[-1] > r.timeseries["mg_max_mM"].iloc[1]  # the implant releases Mg
    moved = r.perf["fields_rank0_bytes"].to_numpy()  # steps 0..5; the implant starts at step 2
    assert moved[1] > 0 and (moved[1:] == moved[1]).all(), moved.tolist()  # the halos or transposes alone
