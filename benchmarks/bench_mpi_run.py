"""Whole runs across MPI ranks (``mpiexec -n N gpusim run``): strong scaling of ``baseline``, the time per
phase on each rank and rank 0's bytes per step (from the store's perf/), the cell balance with a tumour
in one corner, weak scaling (a 32³ box per rank, the tumour and the T cells grown with the grid), and
the measured inputs of the weak-scaling projection in docs/scaling.md. Writes
benchmarks/results/mpi_run_cpu_<date>.{json,md}.

    python benchmarks/bench_mpi_run.py                    # 64³ baseline, ranks 1 2 4, 12 steps each
    python benchmarks/bench_mpi_run.py --project-only benchmarks/results/mpi_run_cpu_<date>.json

What the numbers are: the ranks keep the fields, the lattice and the T cells, write their parts of
the outputs and place the infusions (MODEL.md 'Parallel runs'); on one machine the wall time
*rises* with the rank count beyond the cores: the tables say by how much and where the time goes,
and what rank 0 moves on output and infusion steps. The projection (``project``) is of the design the issue asks for — ranks that keep their
boxes, exchange halos and migrate T cells — fed with what this code measures: T cells crossing voxel
faces per step, the cell step's reach (CELL_GHOST), the bytes of a lattice voxel and of a T cell,
each substrate's n_sub, and the partitioned LOD's bytes per cut line.
Ranks beyond the cores are oversubscribed: their wall times are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402

#: the projection's machine: per GPU (stated assumptions, docs/scaling.md)
HBM_B_PER_S = 3.0e12  # H100 SXM measured copy bandwidth (DESIGN.md §6)
LINK_B_PER_S = 200e9 / 8  # 200 Gb/s per GPU (one NDR InfiniBand port per GPU)
LATENCY_S = 3e-6  # per message, inter-node
#: the projection's per-GPU problem (the issue's target)
BOX = 256
TCELLS = 1e7
#: floors per step (DESIGN.md §6) and assumptions where the code has no measured floor yet
LOD_B_PER_VOXEL = 24  # per LOD field step
TCELL_B_PER_AGENT = 200  # sort + sense + move + engage, mid of DESIGN's 150-250
LATTICE_B_PER_VOXEL = 8
STEADY_B_PER_VOXEL_PER_SOLVE = 2000  # assumption: ~10 V-cycles of ~200 B/voxel (float64 levels)
# fine-level-equivalent halo exchanges per solve, measured with gpusim.parallel.steady: 9 face exchanges per
# level and V-cycle (8 B per face cell; tests/test_mpi_steady.py counts them), 9 cycles (steady.py: 8 at 64³,
# 9 at 128³), coarse levels adding 1/3 (a quarter of the face area each)
STEADY_SWEEPS_PER_SOLVE = 9 * 9 * 4 / 3
#: the partitioned LOD's bytes per cut line and sweep, as gpusim.parallel.partitioned sends them: the x
#: sweep with per-voxel reaction 8 * (6 + 2) (A, C, D of two reduced rows, two ends back), the
#: position-only y and z sweeps 8 * (2 + 2) (right sides only)
PARTITIONED_B_PER_LINE = (64, 32, 32)


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))


def _run(n, out, minutes, *sets):
    cmd = [sys.executable, "-m", "gpusim.cli", "run", "--scenario", "baseline", "--minutes", str(minutes),
           "--out", str(out), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    if n > 1:
        cmd = ["mpiexec", "-n", str(n), *cmd]
    subprocess.run(cmd, env=_env(), check=True, capture_output=True, text=True)
    import gpusim

    return gpusim.open_run(out).perf.iloc[2:]  # the first steps compile


def _ranks(perf, prefix, n):
    return [float(perf[f"{prefix}{r}"].median()) for r in range(n)]


#: the process grid of n ranks in the weak-scaling runs (doubling z, then y, then x), whose grid is it times the box
WEAK_GRIDS = {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2)}
BASELINE_VOXELS = 64**3  # baseline's grid, for which its 250 µm tumour and 1000 T cells are set


def weak_sets(n, box):
    """``--set``s of baseline on n ranks with a ``box``³ box each: the grid n times the box, and the
    tumour's volume and the T cells in proportion to the grid (baseline's densities)."""
    g = WEAK_GRIDS[n]
    shape = [box * k for k in g]
    scale = int(np.prod(shape)) / BASELINE_VOXELS
    return [f"grid.shape={json.dumps(shape)}", f"parallel.ranks_zyx={json.dumps(list(g))}",
            f"tumor.initial_radius_um={250.0 * scale ** (1 / 3):.1f}", f"tcells.initial_count={round(1000 * scale)}"]


def scaling(tmp, ranks, minutes, size, lod_mode, weak_box=None):
    """Strong scaling (``size``³ on every rank count) or, with ``weak_box``, weak scaling."""
    rows = []
    for n in ranks:
        sets = weak_sets(n, weak_box) if weak_box else [f"grid.shape=[{size},{size},{size}]"]
        p = _run(n, Path(tmp) / f"{'w' if weak_box else 'b'}{n}.zarr", minutes, *sets,
                 f"parallel.lod_mode={lod_mode}")
        row = {"ranks": n, "wall_s_per_step": float(p["wall_s"].median()), "sets": sets}
        if n > 1:
            row.update({
                "cells_s_per_rank": _ranks(p, "cells_s_r", n), "fields_s_per_rank": _ranks(p, "fields_s_r", n),
                "tcells_per_rank": _ranks(p, "tcells_r", n),
                "rank0_other_s": float((p["cells_rank0_other_s"] + p["fields_rank0_other_s"]).median()),
                "rank0_bytes_per_step": float((p["cells_rank0_bytes"] + p["fields_rank0_bytes"]).median())})
        rows.append(row)
    return rows


def corner(tmp, minutes, size):
    """Tumour centred 150 µm from a corner on (2, 2, 1) ranks: the cell step with equal and balanced boxes."""
    out = {}
    for balance in ("even", "cells"):
        p = _run(4, Path(tmp) / f"c_{balance}.zarr", minutes, f"grid.shape=[{size},{size},{size}]",
                 "tumor.center_um=[150,150,150]", "parallel.ranks_zyx=[2,2,1]", f"parallel.balance={balance}")
        t = np.array(_ranks(p, "tcells_r", 4))
        c = np.array([float(p[f"cells_s_r{r}"].sum()) for r in range(4)])
        out[balance] = {"tcells_per_rank": t.tolist(), "cells_s_per_rank": c.tolist(),
                        "tcells_max_over_mean": float(t.max() / t.mean()), "cells_s_max_over_mean": float(c.max() / c.mean())}
    return out


#: the output steps' run: baseline with every output due every 4 min and an infusion at minute 13, for
#: OUTPUTS_MIN minutes (frames end at steps 3, 7, 11, 15, checkpoints after steps 7 and 15)
OUTPUTS_MIN = 16
OUTPUTS_TOML = """
[[events]]
name = "infusion"
type = "tcell_infusion"
time_min = 13.0
count = 5000
placement = "shell"
shell_um = [30.0, 105.0]

[output]
fields_every_min = 4.0
tumor_every_min = 4.0
tcells_every_min = 4.0
checkpoint_every_steps = 8
checkpoint_every_wall_min = 1000.0
"""


def outputs(tmp, ranks, size):
    """Rank 0's bytes and the wall time on the steps that write frames, T-cell snapshots and a
    checkpoint or place an infusion, against the plain steps (``OUTPUTS_TOML``); and what the mirror
    gathered over the run (perf ``mirror_gathered_bytes``)."""
    from gpusim.scenarios import __file__ as scenarios

    cfg = Path(tmp) / "outputs.toml"
    cfg.write_text((Path(scenarios).parent / "baseline.toml").read_text() + OUTPUTS_TOML)
    rows = []
    for n in ranks:
        out = Path(tmp) / f"o{n}.zarr"
        cmd = [sys.executable, "-m", "gpusim.cli", "run", str(cfg), "--minutes", str(OUTPUTS_MIN), "--out", str(out),
               "--no-progress", "--set", f"grid.shape=[{size},{size},{size}]"]
        subprocess.run((["mpiexec", "-n", str(n)] if n > 1 else []) + cmd, env=_env(), check=True,
                       capture_output=True, text=True)
        import gpusim

        p = gpusim.open_run(out).perf.reset_index(drop=True)
        step = p["step"].to_numpy()
        # the same T cells before the infusion (step 13): plain steps, frames (3, 11), frames and a
        # checkpoint (7). A row's wall_s ends where the writer starts on the step's outputs, so a step's
        # writes are timed in the next row: the wall of output step k is row k + 1's (a plain step's
        # compute with them), its bytes row k's
        before = (step >= 2) & (step < 13)
        kinds = {"plain": before & (step % 4 != 3) & (step % 4 != 0), "frames (fields, tumour, T cells)": before
                 & (step % 4 == 3) & (step != 7), "frames and a checkpoint": step == 7, "infusion (5000 T cells)":
                 step == 13}
        for kind, m in kinds.items():
            timed = np.flatnonzero(m) + (0 if kind in ("plain", "infusion (5000 T cells)") else 1)
            row = {"ranks": n, "kind": kind, "wall_s": float(p["wall_s"].iloc[timed].median())}
            if n > 1:
                q = p[m]
                row.update({"rank0_step_mb": float((q["cells_rank0_bytes"] + q["fields_rank0_bytes"]).median()) / 1e6,
                            "rank0_output_mb": float((q["frames_rank0_bytes"] + q["snapshots_rank0_bytes"]).median()) / 1e6,
                            "mirror_gathered_mb": float(p["mirror_gathered_bytes"].max()) / 1e6})
            rows.append(row)
    return rows


def crossings(steps=30, size=64):
    """Per step and T cell, the chance that its voxel coordinate on each axis changes (one process)."""
    import gpusim
    from gpusim.agents import rules as R
    from gpusim.agents.spatial_index import voxel_of

    sim = gpusim.Simulation(gpusim.scenario_config("baseline").with_overrides(
        {"grid.shape": [size, size, size], "backend": "cpu"}))
    ny, nx = sim.state.shape[1:]
    per_axis = np.zeros(3)
    alive = 0
    for _ in range(steps):
        sim.step()
        s = sim.tcells
        new = voxel_of(s.pos_um, sim.state.dx_um, sim.state.shape)
        m = (s.flags & R.FL_MOVED) != 0
        old, nw = s.voxel[m], new[m]
        per_axis += [np.count_nonzero(old // (ny * nx) != nw // (ny * nx)),
                     np.count_nonzero((old // nx) % ny != (nw // nx) % ny), np.count_nonzero(old % nx != nw % nx)]
        alive += int(np.count_nonzero(s.state != R.TDEAD))
    return {"p_axis_change_per_step": (per_axis / alive).tolist(), "steps": steps}


def _plans():
    import gpusim
    from gpusim.fields.coefficients import make_plan

    cfg = gpusim.scenario_config("baseline")
    return {s.name: make_plan(s, cfg) for s in cfg.substrates}


#: designs the projection compares (docs/scaling.md): bytes per cut line and LOD sweep for (x, y, z),
#: the T cells' ghost depth and bytes per ghost, the lattice's region depth, and how many axes are cut
DESIGNS = {
    "as built: 6-voxel region, 64/32/32 B per cut line (x/y/z)": dict(
        line_b=PARTITIONED_B_PER_LINE, ghost=None, ghost_b=None, lattice_ghost=None, cut_axes=3),
    "lean: float32 rows; ghosts per phase (2 voxels, 24 B)": dict(
        line_b=(32, 16, 16), ghost=2, ghost_b=24, lattice_ghost=2, cut_axes=3),
    "lean, only z cut (slab boxes)": dict(line_b=(32, 16, 16), ghost=2, ghost_b=24, lattice_ghost=2, cut_axes=1),
    "lean, only z cut, 400 Gb/s per GPU": dict(line_b=(32, 16, 16), ghost=2, ghost_b=24, lattice_ghost=2, cut_axes=1,
                                               link=400e9 / 8),
}


def project(p_axis, design=None, gpus=(64, 512)):
    """Per GPU and step: compute at the bandwidth floor and each message stream of the halo design
    (box of BOX³ voxels and TCELLS T cells, neighbours across ``cut_axes`` axes), for ``gpus`` GPUs
    (weak scaling); ``design`` is one of DESIGNS (default: as built)."""
    from gpusim.agents.tcell_store import bytes_per_tcell
    from gpusim.parallel.cells import CELL_GHOST

    d = dict(next(iter(DESIGNS.values())) if design is None else design)
    ghost = d["ghost"] or CELL_GHOST
    lattice_ghost = d["lattice_ghost"] or CELL_GHOST
    ghost_b = d["ghost_b"] or bytes_per_tcell()
    axes = d["cut_axes"]
    L, V, N = BOX, BOX**3, TCELLS
    plans = _plans()
    lod_steps = sum(p.n_sub for p in plans.values() if p.method == "lod")
    steady = [p for p in plans.values() if p.method == "steady"]
    compute = {
        "LOD field steps": lod_steps * LOD_B_PER_VOXEL * V / HBM_B_PER_S,
        "steady solves (amortised)": sum(STEADY_B_PER_VOXEL_PER_SOLVE * V / p.update_every_min for p in steady)
        / HBM_B_PER_S,
        "T cells": TCELL_B_PER_AGENT * N / HBM_B_PER_S,
        "lattice": LATTICE_B_PER_VOXEL * V / HBM_B_PER_S,
    }

    def shell(w):  # voxels within w of the cut faces, as a fraction of the box (both sides of each cut axis)
        return (L + 2 * w) ** axes * L ** (3 - axes) / V - 1

    lattice_b = 14  # bytes of one lattice voxel the cell step reads (parallel/cells.LATTICE_IN + vessel)
    line_b = d["line_b"]
    comm = {  # bytes per step
        "LOD partitioned (reduced rows)": lod_steps * L * L * sum(line_b[3 - axes:]),
        "steady halo (amortised)": sum(STEADY_SWEEPS_PER_SOLVE * 2 * axes * L * L * 8 / p.update_every_min
                                       for p in steady),
        "lattice ghosts": shell(lattice_ghost) * V * lattice_b,
        "fields the rules read, ghosts": shell(ghost) * V * 3 * 4,
        "T-cell ghosts": shell(ghost) * N * ghost_b,
        "T-cell migration": N * sum(p_axis[3 - axes:]) / L * bytes_per_tcell(),
    }
    neighbours = 3 ** axes - 1
    messages = neighbours * 3 + lod_steps * axes * 2  # (ghosts, migration, fields) + line exchanges
    t_compute = sum(compute.values())
    out = {"compute_s": compute, "comm_bytes": comm, "t_compute_s": t_compute, "by_gpus": {}}
    link = d.get("link", LINK_B_PER_S)
    for g in gpus:
        t_comm = sum(comm.values()) / link + (messages + 2 * np.log2(g)) * LATENCY_S
        out["by_gpus"][g] = {"t_comm_s": t_comm, "comm_fraction": t_comm / (t_comm + t_compute)}
    out["first_bottleneck"] = max(comm, key=comm.get)
    return out


def _scaling_table(rows) -> list:
    md = ["| ranks | grid | wall s / step | vs 1 rank | cell phases s (max rank) | field step s (max rank) | "
          "rank 0 other s | rank 0 MB / step | T cells max/mean |", "|---|---|---|---|---|---|---|---|---|"]
    w1 = rows[0]["wall_s_per_step"]
    for r in rows:
        grid = next((s.split("=", 1)[1] for s in r.get("sets", []) if s.startswith("grid.shape=")), "")
        if r["ranks"] == 1:
            md.append(f"| 1 | {grid} | {r['wall_s_per_step']:.3f} | 1.00 | - | - | - | - | - |")
            continue
        t = np.array(r["tcells_per_rank"])
        md.append(f"| {r['ranks']} | {grid} | {r['wall_s_per_step']:.3f} | {r['wall_s_per_step'] / w1:.2f} | "
                  f"{max(r['cells_s_per_rank']):.4f} | {max(r['fields_s_per_rank']):.4f} | {r['rank0_other_s']:.4f} | "
                  f"{r['rank0_bytes_per_step'] / 1e6:.1f} | {t.max() / t.mean():.2f} |")
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--minutes", type=int, default=12)
    ap.add_argument("--lod-mode", default="partitioned", choices=["partitioned", "bitwise"],
                    help="parallel.lod_mode of the runs (default: partitioned, the config default)")
    ap.add_argument("--weak-box", type=int, default=32, help="voxels per axis of a rank's box in the weak-scaling runs")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--project-only", metavar="JSON",
                    help="redo only the projection, from the runs and crossings measured in this results JSON")
    args = ap.parse_args(argv)
    if args.project_only:
        old = json.loads(Path(args.project_only).read_text())
        rows, bal, cross = old["scaling"], old["corner"], old["crossings"]
        weak = old.get("weak", [])
        outs = old.get("outputs", [])
        args.size, args.minutes, date = old["size"], old["minutes"], old["date_utc"]
        args.lod_mode = old.get("lod_mode", "bitwise")  # results before 2026-12-02 ran the then-default bitwise
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = scaling(tmp, args.ranks, args.minutes, args.size, args.lod_mode)
            weak = scaling(tmp, [n for n in args.ranks if n in WEAK_GRIDS], args.minutes, args.size, args.lod_mode,
                           weak_box=args.weak_box)
            bal = corner(tmp, args.minutes, args.size)
            outs = outputs(tmp, [n for n in args.ranks if n <= 2], args.size)
        cross = crossings(size=args.size)
        date = common.utc_now()
    proj = project(cross["p_axis_change_per_step"])
    designs = {name: project(cross["p_axis_change_per_step"], d) for name, d in DESIGNS.items()}
    md = [f"# Whole runs across MPI ranks ({common.cpu_name()}, {date})", "",
          f"`baseline` at {args.size}³ (Mg, O₂ steady, chemokine, ~19k tumour cells, 1000 T cells), "
          f"{args.minutes} steps, medians from step 2 on; one thread per rank, ranks beyond {os.cpu_count()} "
          f"oversubscribed; `parallel.lod_mode = \"{args.lod_mode}\"`. The ranks keep the fields, the "
          "lattice and the T cells, write their parts of the frames, snapshots and checkpoints and place the "
          "infusions; rank 0's mirror gathers a field only for a bolus or a hold.", "", "### Strong scaling", ""]
    md += _scaling_table(rows)
    if weak:
        md += ["", f"### Weak scaling ({args.weak_box}³ voxels per rank; the tumour's volume and the T cells grow "
               "with the grid)", "", f"Ideal: the same wall time per step on every rank count (ratio 1.00) while ranks <= cores "
               f"({os.cpu_count()} here); n ranks on fewer cores share them, so the ideal ratio is n / cores beyond "
               "that. Rank 0's traffic grows with its own halo share.", ""]
        md += _scaling_table(weak)
    if outs:
        md += ["", "## Output and infusion steps (frames of fields, tumour and T cells every 4 min, a checkpoint "
               "after 8 steps, 5000 T cells infused at minute 13; medians over the steps before it)", "",
               "Rank 0's bytes of the step's exchanges and of its output writes (`frames_rank0_bytes` + "
               "`snapshots_rank0_bytes`): at this size every array is one chunk, so rank 0 writes (and is sent) "
               "each frame whole; the T cells' rows are one chunk too. `mirror MB`: what the mirror gathered "
               "over the run (perf `mirror_gathered_bytes`). One process writes from a background queue; an MPI "
               "run's ranks write synchronously, so their output steps' walls include the writes.", "",
               "| ranks | step | wall s (with its writes) | rank 0 MB (step) | rank 0 MB (output) | mirror MB |", "|---|---|---|---|---|---|"]
        for r in outs:
            extra = (f"{r['rank0_step_mb']:.1f} | {r['rank0_output_mb']:.1f} | {r['mirror_gathered_mb']:.1f}"
                     if "rank0_step_mb" in r else "- | - | -")
            md.append(f"| {r['ranks']} | {r['kind']} | {r['wall_s']:.3f} | {extra} |")
    md += ["", "## A tumour in one corner (4 ranks, process grid (2, 2, 1))", "",
           "| parallel.balance | T cells per rank | T cells max/mean | cell-phase seconds max/mean |", "|---|---|---|---|"]
    for k, v in bal.items():
        md.append(f"| {k} | {[round(x) for x in v['tcells_per_rank']]} | {v['tcells_max_over_mean']:.2f} | "
                  f"{v['cells_s_max_over_mean']:.2f} |")
    pa = cross["p_axis_change_per_step"]
    md += ["", "## Inputs and result of the weak-scaling projection (docs/scaling.md)", "",
           f"Measured: a T cell changes its z / y / x voxel coordinate with probability {pa[0]:.4f} / {pa[1]:.4f} / "
           f"{pa[2]:.4f} per step (baseline, {cross['steps']} steps).", "",
           f"Per GPU: {BOX}³ voxels, {TCELLS:.0e} T cells, {HBM_B_PER_S / 1e12:g} TB/s HBM, "
           f"{LINK_B_PER_S * 8 / 1e9:g} Gb/s link, {LATENCY_S * 1e6:g} µs per message.", "",
           "| part | compute ms / step |", "|---|---|"]
    md += [f"| {k} | {v * 1e3:.2f} |" for k, v in proj["compute_s"].items()]
    md += ["", "| message stream | MB / step | ms / step at the link |", "|---|---|---|"]
    md += [f"| {k} | {v / 1e6:.1f} | {v / LINK_B_PER_S * 1e3:.2f} |" for k, v in proj["comm_bytes"].items()]
    md += ["", "| GPUs | compute ms | communication ms | communication share |", "|---|---|---|---|"]
    md += [f"| {g} | {proj['t_compute_s'] * 1e3:.2f} | {v['t_comm_s'] * 1e3:.2f} | {100 * v['comm_fraction']:.0f} % |"
           for g, v in proj["by_gpus"].items()]
    md += ["", f"First bottleneck: **{proj['first_bottleneck']}**.", "",
           "| design | comm ms / step | share at 64 GPUs | share at 512 GPUs | first bottleneck |",
           "|---|---|---|---|---|"]
    for name, v in designs.items():
        g = v["by_gpus"]
        md.append(f"| {name} | {g[64]['t_comm_s'] * 1e3:.2f} | {100 * g[64]['comm_fraction']:.0f} % | "
                  f"{100 * g[512]['comm_fraction']:.0f} % | {v['first_bottleneck']} |")
    text = "\n".join(md) + "\n"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"mpi_run_cpu_{date[:10]}"
    (out_dir / f"{stem}.json").write_text(json.dumps({"date_utc": date, "git": common.git_provenance(),
                                                      "size": args.size, "minutes": args.minutes, "scaling": rows,
                                                      "weak": weak, "lod_mode": args.lod_mode, "weak_box": args.weak_box,
                                                      "corner": bal, "outputs": outs, "crossings": cross, "projection": proj,
                                                      "designs": designs},
                                                     indent=1, default=float))
    (out_dir / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
