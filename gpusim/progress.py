"""A progress bar for long runs: simulated time, steps/s and ETA (rich)."""

from __future__ import annotations

import time

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


def _fmt_minutes(m: float) -> str:
    if m >= 1440:
        return f"{m / 1440:.2f} d"
    if m >= 60:
        return f"{m / 60:.1f} h"
    return f"{m:.0f} min"


def run_with_progress(sim, n_steps: int, should_stop=lambda: False) -> int:
    """Step ``sim`` up to ``n_steps`` times under a live bar (refreshed at most ~10 times a second),
    stopping between steps once ``should_stop()`` is true; returns the steps taken."""
    columns = (
        TextColumn("[bold]gpusim"),
        BarColumn(),
        TextColumn("{task.fields[simtime]}"),
        TextColumn("{task.fields[rate]} steps/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("run", total=n_steps, simtime=_fmt_minutes(sim.time_min), rate="-")
        t0 = time.perf_counter()
        last = t0
        done = 0
        for i in range(n_steps):
            if should_stop():
                break
            sim.step()
            done += 1
            now = time.perf_counter()
            if now - last > 0.1 or i == n_steps - 1:
                last = now
                bar.update(
                    task,
                    completed=i + 1,
                    simtime=_fmt_minutes(sim.time_min),
                    rate=f"{(i + 1) / max(now - t0, 1e-9):.1f}",
                )
    return done
