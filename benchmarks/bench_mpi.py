"""Fields across MPI ranks: wall time per step and bytes sent per step, for explicit (halo exchange)
and LOD (bitwise mode: slab/pencil transposes), on 1, 2 and 4 CPU ranks. Writes JSON + Markdown to
benchmarks/results/mpi_fields_<device>_<date>.

    python benchmarks/bench_mpi.py                        # 64³, ranks 1 2 4, 3 timed steps
    python benchmarks/bench_mpi.py --size 96 --ranks 1 2 4 8

Message volumes are the point (issue 6 asks for them): the LOD bitwise mode moves the whole field
twice per LOD step, 2 * n_sub * N * 4 B * (1 - 1/P) per step in all, while the explicit halo moves
n_sub * (cut faces) * 2 * 4 B. The ``partitioned`` LOD mode is not written yet; its row is the
estimate of a PaScaL_TDMA-style reduced system (per cut line and LOD step, each rank sends two rows of
4 float64 to each neighbour on the line: 64 B per line per cut), marked as an estimate.
Oversubscribed ranks (more than the cores) time the MPI wait, not the arithmetic: the wall column
reads as an upper bound there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402


def _config(solver: str, n: int):
    import gpusim

    return gpusim.Config.model_validate({
        "seed": 1, "init": "given", "solver": solver, "grid": {"shape": [n, n, n], "dx_um": 15.0},
        "substrates": [{"name": "mg", "initial": 0.1, "serum": 0.47}],
        "vessels": {"kind": "random", "voxel_fraction": 0.03}})


def worker(solver: str, n: int, steps: int, out: str) -> None:
    from gpusim.parallel.comm import world
    from gpusim.parallel.fields import BoxFieldRun

    comm = world()
    run = BoxFieldRun(_config(solver, n), comm)
    run.step()  # JIT and first exchange outside the timing
    comm.barrier()
    h0, r0 = run.halo.bytes_sent, run.redistributed_bytes
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step()
    comm.barrier()
    wall = (time.perf_counter() - t0) / steps
    halo = int(comm.allreduce_sum(np.int64(run.halo.bytes_sent - h0))) // steps
    moved = int(comm.allreduce_sum(np.int64(run.redistributed_bytes - r0))) // steps
    if comm.rank == 0:
        plan = run.plans["mg"]
        Path(out).write_text(json.dumps({
            "solver": solver, "size": n, "ranks": comm.size, "ranks_zyx": list(run.decomp.ranks_zyx),
            "n_sub": plan.n_sub, "wall_s_per_step": wall, "halo_bytes_per_step": halo,
            "transpose_bytes_per_step": moved, "cut_voxels": run.decomp.cut_voxels()}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", nargs=3, metavar=("SOLVER", "SIZE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.steps, args.worker[2])
        return 0
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        for solver in ("lod", "explicit"):
            for p in args.ranks:
                out = os.path.join(tmp, f"{solver}{p}.json")
                subprocess.run(["mpiexec", "-n", str(p), sys.executable, __file__, "--steps", str(args.steps),
                                "--worker", solver, str(args.size), out], env=env, check=True)
                rows.append(json.loads(Path(out).read_text()))
    cores = os.cpu_count()
    n3 = args.size ** 3
    md = [f"# Fields across MPI ranks ({platform_name()}, {common.utc_now()})", "",
          f"{args.size}³ Mg with vessels, one thread per rank, {cores} cores (ranks beyond them are oversubscribed), "
          f"{args.steps} timed 1-min steps after one warm-up. Bytes: sent per step, summed over ranks.", "",
          "| solver | ranks | process grid | n_sub | wall s / step | halo MB / step | transpose MB / step | "
          "whole-field moves / step |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        moves = r["transpose_bytes_per_step"] / (4 * n3) if r["ranks"] > 1 else 0.0
        md.append(f"| {r['solver']} | {r['ranks']} | {r['ranks_zyx']} | {r['n_sub']} | {r['wall_s_per_step']:.3f} | "
                  f"{r['halo_bytes_per_step'] / 1e6:.2f} | {r['transpose_bytes_per_step'] / 1e6:.2f} | {moves:.1f} |")
    lod = [r for r in rows if r["solver"] == "lod" and r["ranks"] > 1]
    for r in lod:
        pz, py, px = r["ranks_zyx"]
        n = args.size
        cut_lines = (pz - 1) * n * n + (py - 1) * n * n + (px - 1) * n * n
        est = r["n_sub"] * cut_lines * 2 * 64
        md.append(f"| lod partitioned (estimate) | {r['ranks']} | {r['ranks_zyx']} | {r['n_sub']} | - | - | "
                  f"{est / 1e6:.2f} | - |")
    md += ["", "The bitwise LOD mode moves about n × 4 B per cut line and LOD step (the line itself), the partitioned "
           "estimate ~128 B per line and cut whatever n: the gain grows with the line length (2× at 64³, 16× at 512³). "
           "The explicit solver's halo is small per exchange, but it is exchanged every one of its n_sub sub-steps."]
    text = "\n".join(md) + "\n"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"mpi_fields_cpu_{common.utc_now()[:10]}"
    (out_dir / f"{stem}.json").write_text(json.dumps({"date_utc": common.utc_now(), "git": common.git_provenance(),
                                                      "size": args.size, "rows": rows}, indent=1))
    (out_dir / f"{stem}.md").write_text(text)
    print(text)
    return 0


def platform_name() -> str:
    return f"{common._cpu_model()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
