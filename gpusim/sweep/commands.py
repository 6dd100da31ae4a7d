"""The ``gpusim sweep`` and ``gpusim report`` subcommands (cli.py adds and dispatches them here)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_commands", "run_command"]


def add_commands(sub) -> None:
    """Add ``sweep`` and ``report`` to the ``gpusim`` subparsers ``sub``."""
    sw = sub.add_parser("sweep", help="run an ensemble / parameter sweep on a Dask cluster")
    sw.add_argument("spec", nargs="?", help="a sweep.toml (see examples/sweep.toml)")
    sw.add_argument("--builtin", metavar="NAME", help="a built-in study instead of a file: paper")
    sw.add_argument("--out", "-o", metavar="DIR", help="sweep directory (default: <spec name>.sweep)")
    sw.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786")
    sw.add_argument("--workers", type=int, help="local workers (default: one per core, or per GPU)")
    sw.add_argument("--seeds", type=int, help="override the spec's seeds with 1..N")
    length = sw.add_mutually_exclusive_group()
    length.add_argument("--days", type=float, help="override the spec's simulated days per member")
    length.add_argument("--minutes", type=float, help="override the spec's simulated minutes per member")
    sw.add_argument("--csv", action="store_true", help="also write summary.csv")
    sw.add_argument("--overwrite", action="store_true", help="run every member again, replacing the stores")
    sw.add_argument("--check", action="store_true", help="validate the spec and list the members; run nothing")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.add_argument("--no-report", action="store_true", help="do not write DIR/report.html at the end")

    rep = sub.add_parser("report", help="write an HTML report of a run store or a sweep directory")
    rep.add_argument("path", help="a run store (run.zarr) or a sweep directory")
    rep.add_argument("--out", "-o", metavar="HTML", help="output file (default: beside the input)")


def run_command(args, console) -> int:
    if args.command == "report":
        from .report import write_report

        out = write_report(args.path, args.out)
        console.print(f"report: {out}")
        return 0
    return _sweep(args, console)


def _spec(args):
    from gpusim.config import ConfigError

    from .spec import builtin_spec, load_spec

    over = {"days": args.days, "minutes": args.minutes, "seeds": args.seeds}
    if args.csv:
        over["csv"] = True
    if bool(args.spec) == bool(args.builtin):
        raise ConfigError.single("spec", args.spec, "give a sweep.toml or --builtin NAME (one of them)",
                                 "<command line>")
    return builtin_spec(args.builtin, over) if args.builtin else load_spec(args.spec, over)


def _sweep(args, console) -> int:
    from rich.table import Table

    from .checks import evaluate_checks
    from .execute import plan_of, run_sweep

    spec = _spec(args)
    if args.check:
        members, _ = plan_of(spec)
        console.print(f"{spec.source}: valid; {len(members)} members ({len(spec.arm_names)} arm(s) x "
                      f"{len(spec.design_points())} point(s) x {len(spec.seed_list)} seed(s)), "
                      f"{spec.total_minutes:g} min each")
        return 0
    out = Path(args.out) if args.out else Path(f"{spec.name}.sweep")
    df = run_sweep(spec, out, scheduler=args.scheduler, workers=args.workers, progress=not args.no_progress,
                   overwrite=args.overwrite, console=console)
    failed = df[df["status"] == "failed"]
    console.print(f"summary: {out / 'summary.parquet'} ({len(df)} members, {len(failed)} failed)")
    for _, r in failed.head(10).iterrows():
        console.print(f"  failed {r['member']}: {r['error']}")
    if spec.checks:
        checks = evaluate_checks(spec, df)
        table = Table("claim", "arm / reference", "ratio", "diff [interval]", "p", "verdict",
                      title="expected directions (paired by seed, one-sided)")
        for _, c in checks.iterrows():
            table.add_row(c["claim"], f"{c['arm']} / {c['reference']}", f"{c['ratio']:.3g}",
                          f"{c['diff']:.3g} [{c['diff_lo']:.3g}, {c['diff_hi']:.3g}]", f"{c['p']:.2g}", c["verdict"])
        console.print(table)
    if spec.assumptions:
        console.print("unverified assumptions of this study:")
        for a in spec.assumptions:
            console.print(f"  - {a}")
    if not args.no_report:
        from .report import write_report

        console.print(f"report: {write_report(out)}")
    return 1 if len(failed) else 0
