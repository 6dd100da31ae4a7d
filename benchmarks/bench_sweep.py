"""Sweep throughput: members per hour on this machine with 1 and 2 Dask workers, against running the
same members one after another in one process, and the scheduling overhead per member as a fraction
of the member's own time (issue 7's benchmark). Writes JSON + Markdown to
benchmarks/results/sweep_cpu_<device>_<date>.

    python benchmarks/bench_sweep.py                      # 8 members (baseline, 24³, 0.05 days)
    python benchmarks/bench_sweep.py --members 16 --days 0.1 --size 32

Each member is `baseline` on a small block; the serial row runs them with `run_member` (the worker's
own function) in this process with one thread each, so the three rows do the same work. Overhead per
member = (sweep wall * workers / members - mean member wall) / mean member wall: the time a worker
spends on anything but its member (scheduling, process start and the JIT cache load on a cold worker,
the summary at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402


def _spec(members: int, days: float, size: int):
    from gpusim.sweep.spec import spec_from_dict

    return spec_from_dict({"base": "baseline", "days": days, "seeds": list(range(1, members + 1)), "design": "grid",
                           "set": {"grid.shape": [size, size, size], "tumor.initial_radius_um": 4.0 * size,
                                   "tcells.initial_count": 2 * size}}, source="bench_sweep")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--days", type=float, default=0.05)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    from gpusim.sweep.execute import run_member, run_sweep

    spec = _spec(args.members, args.days, args.size)
    members = spec.members()
    minutes = spec.total_minutes
    tmp = Path(tempfile.mkdtemp(prefix="gpusim_bench_sweep_"))
    rows = []
    try:
        os.environ.update({"OMP_WAIT_POLICY": "PASSIVE"})
        import numba

        numba.set_num_threads(1)
        run_member(members[0].config.to_json(), minutes, str(tmp / "warm.zarr"))  # JIT cache warm for all rows
        t0 = time.perf_counter()
        walls = [run_member(m.config.to_json(), minutes, str(tmp / f"serial_{m.id}.zarr"))["wall_s"] for m in members]
        serial = time.perf_counter() - t0
        rows.append({"mode": "serial (one process)", "workers": 1, "wall_s": serial, "member_wall_s": walls})
        for workers in (1, 2):
            t0 = time.perf_counter()
            df = run_sweep(spec, tmp / f"sweep{workers}", workers=workers, progress=False)
            wall = time.perf_counter() - t0
            if not (df["status"] == "complete").all():
                raise RuntimeError(f"members failed: {df[df['status'] != 'complete']['error'].tolist()}")
            rows.append({"mode": f"Dask, {workers} worker{'s' if workers > 1 else ''}", "workers": workers,
                         "wall_s": wall, "member_wall_s": [float(v) for v in df["wall_s"]]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(members)
    md = [f"# Sweep throughput ({common.cpu_name()}, {common.utc_now()})", "",
          f"{n} members of `baseline` on a {args.size}³ block, {minutes:g} simulated min each, one thread per "
          "member; the JIT cache warm. Overhead: a worker's time per member beyond the member's own wall time.", "",
          "| mode | workers | wall s | members / hour | mean member s | overhead per member |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        mean = sum(r["member_wall_s"]) / n
        over = (r["wall_s"] * r["workers"] / n - mean) / mean
        r.update(members_per_hour=3600.0 * n / r["wall_s"], mean_member_s=mean, overhead_fraction=over)
        md.append(f"| {r['mode']} | {r['workers']} | {r['wall_s']:.1f} | {r['members_per_hour']:.0f} | {mean:.2f} | "
                  f"{100 * over:.0f} % |")
    md += ["", f"Speed-up of 2 workers over serial: {rows[0]['wall_s'] / rows[2]['wall_s']:.2f}x."]
    text = "\n".join(md) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sweep_cpu_{common.utc_now()[:10]}"
    (out / f"{stem}.json").write_text(json.dumps({"date_utc": common.utc_now(), "git": common.git_provenance(),
                                                  "members": n, "minutes": minutes, "size": args.size,
                                                  "rows": rows}, indent=1))
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
