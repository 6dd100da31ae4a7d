"""The ``gpusim`` command: ``run``, ``info``, ``scenarios``, ``view``.

    gpusim run --scenario baseline
    gpusim run my.toml --days 3 --set substrates.mg.serum=0.3 --backend cpu
    gpusim info --scenario diffusion
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import scenarios
from .backend import BackendError
from .agents.cells import summarize
from .agents.placement import PlacementError
from .config import Config, ConfigError, parse_override
from .io.checkpoint import CheckpointError
from .io.store import StoreError
from .vessels import VesselFileError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="a TOML config file")
    p.add_argument("--scenario", "-s", help="a built-in scenario (see `gpusim scenarios`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by dotted path, e.g. substrates.mg.serum=0.3 (repeatable)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"), help="override the config's backend")
    p.add_argument("--seed", type=int, help="override the config's seed")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpusim", description="GPU-accelerated tumour-microenvironment simulator")
    parser.add_argument("--verbose", "-v", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a config or a built-in scenario")
    _add_config_args(run)
    length = run.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="simulated minutes (default: the config's time.duration_min)")
    length.add_argument("--days", type=float, help="simulated days")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--out", "-o", metavar="STORE", help="write the run to this Zarr run store (run.zarr)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run store at --out")

    resume = sub.add_parser("resume", help="continue a run store from its last checkpoint")
    resume.add_argument("store", help="a run store written by `gpusim run --out`")
    more = resume.add_mutually_exclusive_group()
    more.add_argument("--minutes", type=float, help="simulated minutes to add (default: up to the planned end)")
    more.add_argument("--days", type=float, help="simulated days to add")
    resume.add_argument("--backend", choices=("auto", "cpu", "cuda"), help="resume on this backend")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="device, memory estimate and each substrate's method and sub-steps")
    _add_config_args(info)

    sub.add_parser("scenarios", help="list the built-in scenarios")

    view = sub.add_parser("view", help="open a run store in napari (needs the viewer extra)")
    view.add_argument("store", help="a run store written by `gpusim run --out`")
    view.add_argument("--max-points", type=int, metavar="N",
                      help="T-cell points over all frames above which they are subsampled (default 1e6)")
    view.add_argument("--color-by", choices=("state", "lfa1"), help="colour the T cells by state or LFA-1")
    view.add_argument("--2d", dest="ndisplay", action="store_const", const=2, default=3,
                      help="start in the 2D view (default 3D)")
    from .sweep.commands import add_commands as _add_sweep_commands

    _add_sweep_commands(sub)  # sweep, report (gpusim/sweep/commands.py)
    return parser


def load_config(args) -> Config:
    """The Config that ``args`` describe: a file or a scenario, with ``--set``/``--backend``/``--seed``."""
    if args.config and args.scenario:
        raise ConfigError.single("config", args.config, "give either a CONFIG file or --scenario, not both", "<command line>")
    if args.config:
        cfg = Config.from_toml(args.config)
    elif args.scenario:
        cfg = scenarios.scenario_config(args.scenario)
    else:
        raise ConfigError.single(
            "config", None,
            "no config given; name a TOML file or a built-in scenario, e.g. `gpusim run --scenario "
            "diffusion` (list them with `gpusim scenarios`)",
            "<command line>",
        )
    overrides = dict(parse_override(text) for text in args.overrides)
    if args.backend:
        overrides["backend"] = args.backend
    if args.seed is not None:
        overrides["seed"] = args.seed
    return cfg.with_overrides(overrides) if overrides else cfg


def _cmd_scenarios(console: Console) -> int:
    table = Table("scenario", "what it shows", title="built-in scenarios")
    for name in scenarios.names():
        table.add_row(name, scenarios.description(name))
    console.print(table)
    return 0


def _is_store(path) -> bool:
    from pathlib import Path

    return path is not None and Path(path).is_dir() and (Path(path) / "zarr.json").exists()


def _cmd_info(args, console: Console) -> int:
    from .simulation import Simulation

    if _is_store(args.config):
        return _store_info(args.config, console)
    sim = Simulation(load_config(args))
    for line in sim.info():
        console.print(line)
    return 0


def _store_info(path, console: Console) -> int:
    from .io import checkpoint
    from .io.reader import open_run

    run = open_run(path)
    a = run.attrs
    console.print(f"run store {path}: status {run.status}, gpusim {a.get('versions', {}).get('gpusim', '?')}, "
                  f"backend {a.get('backend', '?')} ({a.get('device', '?')}), seed {run.config.seed}")
    ts = run.timeseries
    if len(ts):
        console.print(f"{len(ts)} steps recorded, t = {ts['time_min'].iloc[-1]:g} min")
        cells = summarize({k: ts[k].to_numpy() for k in ts.columns})
        if cells:
            console.print(_cells_table(cells, {k: ts[k].to_numpy() for k in ts.columns}))
    for name, n in run.n_frames.items():
        console.print(f"{name}: {n} frames")
    ck = checkpoint.latest_slot(path)
    console.print("last checkpoint: " + (f"step {ck['step']} (t = {ck['time_min']:g} min)" if ck else "none"))
    ranks = _ranks_table(run.perf)
    if ranks is not None:
        console.print(ranks)
    return 0


def _ranks_table(perf):
    """Per MPI rank: T cells, seconds in the cell phases, the field step and the steady solves, with the
    imbalance (max / mean over ranks) — from an MPI run's perf/ columns (those the run has); None for a
    one-process run. The first step (compilation) is left out."""
    kinds = [("tcells_r", "T cells (mean)", "mean", "{:.1f}"), ("cells_s_r", "cell phases (s)", "sum", "{:.3f}"),
             ("fields_s_r", "field step (s)", "sum", "{:.3f}"), ("steady_s_r", "steady solves (s)", "sum", "{:.3f}")]
    cols = [c for c in perf.columns if c.startswith(("cells_s_r", "fields_s_r"))]
    if not cols or len(perf) < 2:
        return None
    p = perf.iloc[1:]
    n = 1 + max(int(c.rsplit("_r", 1)[1]) for c in cols)
    kinds = [k for k in kinds if any(f"{k[0]}{r}" in p for r in range(n))]
    table = Table("rank", *(k[1] for k in kinds), title=f"MPI ranks over {len(p)} steps (perf/)")
    per = {k[0]: [] for k in kinds}
    for r in range(n):
        row = []
        for prefix, _, how, fmt in kinds:
            v = p.get(f"{prefix}{r}")
            got = float("nan") if v is None else float(v.mean() if how == "mean" else v.sum())
            per[prefix].append(got)
            row.append(fmt.format(got))
        table.add_row(str(r), *row)

    def imbalance(values):
        a = np.asarray(values, np.float64)
        a = a[np.isfinite(a)]
        return f"{a.max() / a.mean():.2f}x" if a.size and a.mean() > 0 else "-"

    table.add_row("max/mean", *(imbalance(per[k]) for k in per))
    other = [c for c in ("cells_rank0_other_s", "fields_rank0_other_s") if c in p]
    if other:
        share = float(sum(p[c].sum() for c in other)) / float(p["wall_s"].sum())
        table.caption = (f"rank 0 spends {100 * share:.0f} % of the wall time sorting, sending and gathering "
                         "(the whole-state mirror of this version)")
    return table


def _report(sim, summary, console: Console) -> None:
    """The field and cell tables after a run."""
    ts = sim.timeseries
    table = Table("field", "unit", "mean", "min", "max", "peak max (at min)",
                  title=f"{summary.minutes:g} simulated min in {summary.steps} steps, "
                        f"{summary.wall_s:.1f} s wall ({summary.steps_per_s:.1f} steps/s)")
    for name, st in summary.fields.items():
        peak = "-"
        series = ts.get(f"{name}_max_{st['unit']}")
        if series is not None and len(series):
            i = int(series.argmax())
            peak = f"{series[i]:.4g} ({ts['time_min'][i]:g})"
        table.add_row(name, st["unit"], f"{st['mean']:.4g}", f"{st['min']:.4g}", f"{st['max']:.4g}", peak)
    console.print(table)
    cells = summarize(ts)
    if cells:
        console.print(_cells_table(cells, ts))


def _cmd_run(args, console: Console) -> int:
    from .simulation import Simulation

    cfg = load_config(args)
    if args.out is not None and _is_store(args.out) and not args.overwrite:
        raise ConfigError.single("--out", args.out, "a run store is already there; resume it with `gpusim "
                                 f"resume {args.out}`, or pass --overwrite to replace it", "<command line>")
    if args.days is not None:
        minutes = args.days * 1440.0
    elif args.minutes is not None:
        minutes = args.minutes
    else:
        minutes = cfg.time.duration_min
    from .parallel.comm import world

    comm = world()
    if comm.size > 1:  # under mpiexec / srun with several ranks
        from .parallel.run import run_cli

        return run_cli(args, cfg, comm, console, minutes)
    sim = Simulation(cfg)
    for line in sim.info():
        console.print(line)
    summary = sim.run(minutes=minutes, out=args.out, overwrite=args.overwrite, progress=not args.no_progress)
    _report(sim, summary, console)
    return _after(summary, args.out, console)


def _after(summary, out, console: Console) -> int:
    if out is not None:
        console.print(f"run store: {out}" + ("" if summary.interrupted else " (complete)"))
    if summary.interrupted:
        where = f"`gpusim resume {out}`" if out is not None else "nothing (no --out store was given)"
        console.print(f"interrupted after {summary.minutes:g} simulated min; checkpointed; to continue: {where}")
        return 130
    return 0


def _cmd_resume(args, console: Console) -> int:
    from .simulation import Simulation

    from .parallel.comm import world

    def planned_minutes(sim) -> float:
        if args.days is not None:
            return args.days * 1440.0
        if args.minutes is not None:
            return args.minutes
        import zarr

        planned = dict(zarr.open_group(str(args.store), mode="r").attrs).get("run", {}).get("planned_end_min")
        return 0.0 if planned is None else max(0.0, float(planned) - sim.time_min)

    comm = world()
    if comm.size > 1:  # under mpiexec / srun: continue on these ranks (the checkpoint holds the whole grid)
        from .parallel.run import resume_cli

        return resume_cli(args, comm, console, planned_minutes)
    sim = Simulation.resume(args.store, backend=args.backend)
    minutes = planned_minutes(sim)
    if minutes == 0.0 and args.days is None and args.minutes is None:
        console.print(f"{args.store} is complete at t = {sim.time_min:g} min; give --days or --minutes to "
                      "extend it")
        return 0
    console.print(f"resuming {args.store} at t = {sim.time_min:g} min for {minutes:g} min")
    summary = sim.run(minutes=minutes, progress=not args.no_progress)
    _report(sim, summary, console)
    return _after(summary, args.store, console)


def _cells_table(c: dict, ts: dict) -> Table:
    """The cell outcomes of a run: start -> end of tumour and T-cell counts, kills, LFA-1."""
    table = Table("cells", "start", "end", title="tumour and T cells")
    first = lambda k: f"{int(ts[k][0])}"  # noqa: E731 - the first recorded step
    table.add_row("tumour cells LIVE", first("tumor_live"), str(c["tumor_live"]))
    table.add_row("tumour cells DEAD / NECROTIC", "", f"{c['tumor_dead']} / {c['tumor_necrotic']}")
    table.add_row("T cells (free / engaged / exhausted)", first("tcells"),
                  f"{c['tcells']} ({c['tcells_free']} / {c['tcells_engaged']} / {c['tcells_exhausted']})")
    table.add_row("engagements, kills", "", f"{c['engagements']}, {c['kills']}")
    table.add_row("kills per T cell (per day)", "", f"{c['kills_per_tcell']:.3g} ({c['kills_per_tcell_per_day']:.3g})")
    table.add_row("mean LFA-1 activity A", f"{ts['lfa1_mean'][0]:.3f}", f"{c['lfa1_mean']:.3f}")
    if "mg_tumor_mean_mM" in c:
        table.add_row("mean ionised Mg in the tumour (mM)", f"{ts['mg_tumor_mean_mM'][0]:.3f}",
                      f"{c['mg_tumor_mean_mM']:.3f}")
    return table


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    console = Console()
    err = Console(stderr=True)
    try:
        if args.command == "scenarios":
            return _cmd_scenarios(console)
        if args.command == "info":
            return _cmd_info(args, console)
        if args.command == "resume":
            return _cmd_resume(args, console)
        if args.command in ("sweep", "report"):
            from .sweep.commands import run_command

            return run_command(args, console)
        if args.command == "view":
            from .viewer.app import main as view_main

            return view_main(args.store, max_points=args.max_points, color_by=args.color_by,
                             ndisplay=args.ndisplay)
        return _cmd_run(args, console)
    except (ConfigError, BackendError, VesselFileError, PlacementError, StoreError, CheckpointError) as exc:
        err.print(Text("error: ", style="bold red") + Text(str(exc)))
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
