"""Running a sweep on Dask: a local cluster by default, any scheduler by address, SLURM/PBS jobs.

    sweep_dir/sweep.json             the spec and the plan (member id, arm, point, seed, parameters)
    sweep_dir/members/<id>.zarr      each member's own run store
    sweep_dir/members/<id>.json      its record: status, error text, wall seconds
    sweep_dir/summary.parquet        one row per member (summary.csv on request)

A member is complete when its store's status is ``complete`` and its stored config is the member's:
re-running skips it. A member that raises is recorded as failed with its error and the others go on.
Members are deterministic per seed whatever the worker: the run is a function of its config alone
(DESIGN §2), and each worker runs one member at a time with ``threads_per_member`` threads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
import warnings
from pathlib import Path

from gpusim.config import ConfigError

from .summary import PLAN_FILE, store_outcomes, summary_frame, write_summary

__all__ = ["run_sweep", "run_member", "plan_of", "make_client"]

FORMAT = 1


def _thread_env(threads: int) -> dict:
    # set before the worker process imports numba/OpenMP, so members do not oversubscribe the cores
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "NUMBA_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "OMP_WAIT_POLICY": "PASSIVE"}


def run_member(config_json: str, minutes: float, store: str, threads: int = 1) -> dict:
    """Run one member on this process (a Dask worker) into ``store``; returns its record. Only the
    config's JSON text crosses to the worker; it is validated again here."""
    import numba

    from gpusim.config import Config
    from gpusim.simulation import Simulation

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    cfg = Config.from_json(config_json, source=f"{store} (member config)")
    t0 = time.perf_counter()
    sim = Simulation(cfg)
    summary = sim.run(minutes=minutes, out=store, overwrite=True, progress=False)
    if summary.interrupted:
        raise RuntimeError(f"the member was interrupted after {summary.minutes:g} simulated min")
    wall = time.perf_counter() - t0
    # outcomes from the store as written, the same path a re-run's skipped member takes
    return {"status": "complete", "error": "", "wall_s": wall, "outcomes": store_outcomes(store)}


def plan_of(spec) -> tuple[list, list[dict]]:
    """The members (validated configs) and their JSON-able plan rows."""
    members = spec.members()
    rows = [{"id": m.id, "arm": m.arm, "point": m.point, "seed": m.seed, "params": m.params} for m in members]
    return members, rows


def _stored_config(store: Path) -> tuple[str | None, str | None]:
    """(status, config JSON) of an existing run store, (None, None) when there is none or it is unreadable."""
    if not (store / "zarr.json").exists():
        return None, None
    try:
        from gpusim.io.store import get_attrs, open_store

        attrs = get_attrs(open_store(store, mode="r"))
        return attrs.get("status"), attrs.get("config")
    except Exception:  # a damaged or foreign store is simply not complete: the member runs again
        return None, None


def _same_config(stored_json: str | None, member) -> bool:
    from gpusim.config import Config

    if stored_json is None:
        return False
    try:
        return Config.from_json(stored_json) == member.config
    except ConfigError:
        return False


def _write_plan(out: Path, spec, rows: list[dict], overwrite: bool) -> None:
    plan = {"format": FORMAT, "name": spec.name, "spec": spec.model_dump(mode="json"),
            "base_dir": spec.base_dir, "source": spec.source, "members": rows}
    path = out / PLAN_FILE
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        if [m["id"] for m in old.get("members", [])] != [m["id"] for m in rows] or \
                [m["params"] for m in old["members"]] != [m["params"] for m in rows]:
            raise ConfigError.single("--out", str(out), "holds a different sweep (other members); give "
                                     "another --out, or --overwrite to replace it", "<command line>")
    tmp = out / (PLAN_FILE + ".tmp")
    tmp.write_text(json.dumps(plan, indent=1, allow_nan=False))
    os.replace(tmp, path)


def make_client(spec, scheduler: str | None = None, workers: int | None = None):
    """(client, cluster we started or None): ``scheduler`` address, else the spec's [cluster]."""
    from distributed import Client

    if not logging.getLogger("gpusim").isEnabledFor(logging.INFO):
        # the scheduler runs in this process; its start-up chatter would break the progress bar
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        return Client(scheduler), None
    kind = spec.cluster.kind
    env = _thread_env(spec.threads_per_member)
    if kind in ("slurm", "pbs"):
        import dask_jobqueue

        cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
        opts = {"cores": spec.threads_per_member, "processes": 1, "memory": "8GB", **spec.cluster.options}
        opts.setdefault("job_script_prologue", [f"export {k}={v}" for k, v in env.items()])
        cluster = cls(**opts)
        cluster.scale(jobs=spec.cluster.jobs)
        return Client(cluster), cluster
    gpus = _local_gpus(spec)
    n = workers or spec.cluster.workers or (gpus or max(1, (os.cpu_count() or 1) // spec.threads_per_member))
    kw = dict(threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
              silence_logs=50)  # CRITICAL: a member's error is recorded in the summary, not logged
    with warnings.catch_warnings():
        # the scheduler's HTTP (health) server moves to a free port when 8787 is taken: that is fine
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = _local_cluster(n, gpus, env, kw)
    return Client(cluster), cluster


def _local_cluster(n: int, gpus: int, env: dict, kw: dict):
    if gpus:
        from distributed import Nanny, Scheduler, SpecCluster

        # one GPU per worker: each worker process sees only its own device
        specs = {i: {"cls": Nanny, "options": {"nthreads": 1, "env": {**env, "CUDA_VISIBLE_DEVICES": str(i % gpus)}}}
                 for i in range(n)}
        return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {
            "host": "127.0.0.1", "dashboard_address": None}}, silence_logs=50)
    from distributed import LocalCluster

    return LocalCluster(n_workers=n, env=env, **kw)


def _local_gpus(spec) -> int:
    """GPUs on this host when members may use them (backend cuda/auto), else 0."""
    if spec.backend == "cpu":
        return 0
    if spec.backend is None and all(spec.arm_config(a).backend == "cpu" for a in spec.arm_names):
        return 0
    from gpusim.backend import cuda_status

    ok, _ = cuda_status()
    if not ok:
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def _error_text(exc: BaseException) -> str:
    head = f"{type(exc).__name__}: {exc}".strip()
    return head.splitlines()[0] if len(head) < 2000 else head[:2000]


def run_sweep(spec, out, scheduler: str | None = None, workers: int | None = None, progress: bool = True,
              overwrite: bool = False, console=None):
    """Run every member of ``spec`` not yet complete in ``out``; returns the summary DataFrame (also
    written to ``out/summary.parquet``)."""
    members, rows = plan_of(spec)  # validates every member's config before anything starts
    out = Path(out)
    (out / "members").mkdir(parents=True, exist_ok=True)
    _write_plan(out, spec, rows, overwrite)
    records: dict[str, dict] = {}
    pending = []
    for m in members:
        store = out / "members" / f"{m.id}.zarr"
        status, cfg_json = _stored_config(store)
        if not overwrite and status == "complete" and _same_config(cfg_json, m):
            rec = _read_record(out, m.id)
            rec.update(status="complete", error="", outcomes=store_outcomes(store))
            records[m.id] = rec
        else:
            pending.append(m)
    if console is not None:
        console.print(f"sweep {spec.name!r}: {len(members)} members, {len(members) - len(pending)} complete "
                      f"already, {len(pending)} to run")
    if pending:
        _execute(spec, out, pending, records, scheduler, workers, progress)
    df = summary_frame(rows, records, [p.path for p in spec.parameter_list])
    write_summary(df, out, csv=spec.csv)
    return df


def _read_record(out: Path, mid: str) -> dict:
    p = out / "members" / f"{mid}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _write_record(out: Path, mid: str, rec: dict) -> None:
    p = out / "members" / f"{mid}.json"
    keep = {k: rec.get(k) for k in ("status", "error", "wall_s")}
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(keep, default=float))
    os.replace(tmp, p)


def _execute(spec, out: Path, pending: list, records: dict, scheduler, workers, progress: bool) -> None:
    from distributed import as_completed

    client, cluster = make_client(spec, scheduler, workers)
    futures = {}
    try:
        minutes = spec.total_minutes
        for m in pending:
            store = out / "members" / f"{m.id}.zarr"
            if store.exists() and not (store / "zarr.json").exists():
                shutil.rmtree(store)  # a directory a crash left before the store existed
            fut = client.submit(run_member, m.config.to_json(), minutes, str(store), spec.threads_per_member,
                                key=f"gpusim-member-{spec.name}-{m.id}", pure=False, retries=0)
            futures[fut] = m
        with _Bar(len(pending), progress) as bar:
            for fut in as_completed(list(futures)):
                m = futures[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # the member's own error (or a lost worker): record it, go on
                    rec = {"status": "failed", "error": _error_text(exc), "wall_s": float("nan"), "outcomes": None}
                    (out / "members" / f"{m.id}.error.txt").write_text(
                        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
                records[m.id] = rec
                _write_record(out, m.id, rec)
                bar.advance(rec["status"] == "failed")
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
        client.close()
        if cluster is not None:
            cluster.close()


class _Bar:
    """A rich progress bar over members: done/total, failures, elapsed and ETA."""

    def __init__(self, total: int, show: bool):
        self.total, self.show, self.failed = total, show, 0

    def __enter__(self):
        if self.show:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("members, {task.fields[failed]} failed"), TimeElapsedColumn(),
                               TextColumn("ETA"), TimeRemainingColumn())
            self._p.__enter__()
            self._task = self._p.add_task("members", total=self.total, failed=0)
        return self

    def advance(self, failed: bool) -> None:
        self.failed += bool(failed)
        if self.show:
            self._p.update(self._task, advance=1, failed=self.failed)

    def __exit__(self, *exc):
        if self.show:
            self._p.__exit__(*exc)
        return False
