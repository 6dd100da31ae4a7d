"""Run-store overhead: the `baseline` scenario with its default output schedule vs the same run without
output (issue 4: at most 1.2x). Writes JSON + Markdown to benchmarks/results/output_<backend>_<device>_<date>.

    python benchmarks/bench_output.py                       # 360 simulated min, 3 alternating pairs
    python benchmarks/bench_output.py --minutes 1440 --pairs 2 --backend cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

import gpusim  # noqa: E402

TARGET = 1.2


def one_run(backend: str, minutes: float, out, queue_steps: int | None = None) -> float:
    """Wall seconds of ``minutes`` of baseline; ``queue_steps``: output.write_queue_steps (None: default)."""
    over = {"backend": backend}
    if queue_steps is not None:
        over["output.write_queue_steps"] = queue_steps
    cfg = gpusim.scenario_config("baseline").with_overrides(over)
    sim = gpusim.Simulation(cfg)
    sim.step()  # JIT warm-up and first steady solve, outside the timing
    t0 = time.perf_counter()
    sim.run(minutes=minutes - sim.dt_min, out=out, progress=False)
    sim.backend.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--minutes", type=float, default=360.0)
    ap.add_argument("--pairs", type=int, default=3,
                    help="alternating rounds: without output, with background output, with synchronous output")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gpusim_bench_output_"))
    plain, stored, synced, sizes = [], [], [], []
    try:
        for k in range(args.pairs):
            plain.append(one_run(args.backend, args.minutes, None))
            path = tmp / f"run{k}.zarr"
            stored.append(one_run(args.backend, args.minutes, path))
            sizes.append(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
            synced.append(one_run(args.backend, args.minutes, tmp / f"sync{k}.zarr", queue_steps=0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    be = gpusim.Simulation(gpusim.Config.model_validate({"backend": args.backend})).backend
    info = common.device_info(be)
    ratio = float(np.median(stored) / np.median(plain))
    ratio_sync = float(np.median(synced) / np.median(plain))
    result = {"date_utc": common.utc_now(), "git": common.git_provenance(), "device": info,
              "scenario": "baseline (64³, 1000 T cells; default [output] schedule)", "minutes": args.minutes,
              "wall_s_without_output": plain, "wall_s_with_output": stored, "wall_s_with_synchronous_output": synced,
              "store_bytes": sizes, "ratio_median": ratio, "ratio_median_synchronous": ratio_sync,
              "target_ratio": TARGET}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"output_{be.name}_{common.device_slug(info)}_{result['date_utc'][:10]}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    md = [f"# Run-store overhead ({info.get('device_name', be.name)}, {result['date_utc']})", "",
          f"`baseline`, {args.minutes:g} simulated min after one warm-up step, default output schedule "
          "(fields and tumour every 60 min, T cells every 360 min, timeseries every step, a final checkpoint); "
          f"{args.pairs} alternating rounds, medians. With `--out` the writes run on the background writer "
          "thread (`output.write_queue_steps` = 2); the synchronous row writes inside the step (= 0).", "",
          "| run | wall s (median) | runs |", "|---|---|---|",
          f"| without output | {np.median(plain):.2f} | {', '.join(f'{v:.2f}' for v in plain)} |",
          f"| with `--out` (background writer) | {np.median(stored):.2f} | {', '.join(f'{v:.2f}' for v in stored)} |",
          f"| with `--out`, synchronous | {np.median(synced):.2f} | {', '.join(f'{v:.2f}' for v in synced)} |", "",
          f"**ratio {ratio:.3f}** (target ≤ {TARGET}; synchronous {ratio_sync:.3f}); store size "
          f"{np.median(sizes) / 2**20:.1f} MiB."]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
