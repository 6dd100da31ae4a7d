"""Reusable parts of the gpusim benchmarks: device facts, a STREAM-like copy bandwidth, timers, writers.

The performance model (DESIGN.md §6): every hot operation is bandwidth-bound, so its *floor* is the
least bytes it must move per item divided by the device's bandwidth. Bandwidth here is measured in the
same run as the kernels, as (bytes read + bytes written)/s of a large float32 copy ``dst[:] = src``
(best of N), so a result says how close a kernel comes to what this machine can stream, not to a
datasheet number. A result row carries ``floor_B_per_item``; the writers derive

    achieved B/s            = floor_B_per_item * items/s
    fraction of bandwidth   = achieved B/s / measured copy bandwidth

A fraction near 1 means the kernel moves little more than its unavoidable bytes at copy speed; a
fraction above 1 is possible when the working set fits in cache (the copy is sized to miss it).
Timings are measurements, never test assertions.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numba import njit, prange

REPO_ROOT = Path(__file__).resolve().parent.parent

# The copy is sized well past the last-level cache (32 MiB on the 2-core EPYC, 50 MiB on an H100), so it
# measures DRAM/HBM, not cache.
CPU_COPY_BYTES = 256 * 2**20  # per array
GPU_COPY_BYTES = 1024 * 2**20  # per array (an H100 streams it in well under a millisecond)


# --- device and provenance ------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_name() -> str:
    """This machine's CPU for a results title: model and core count."""
    return f"{_cpu_model()}, {os.cpu_count()} cores"


def device_info(backend) -> dict:
    """Facts about the machine and the backend a benchmark ran on (goes into the JSON as is)."""
    import numba

    info = {
        "backend": backend.name,
        "device_name": backend.device_name,
        "device_total_bytes": int(backend.total_bytes),
        "backend_reason": backend.reason,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
    }
    if backend.is_gpu:
        info["cupy"] = backend.xp.__version__
        try:
            info["cuda_driver"] = backend.xp.cuda.runtime.driverGetVersion()
            info["cuda_runtime"] = backend.xp.cuda.runtime.runtimeGetVersion()
        except Exception:  # informational only; a missing entry point must not stop a benchmark
            pass
    return info


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        return "not yet initialised"


def device_slug(info: dict) -> str:
    """A short file-name-safe name of the device: ``amd-epyc-2c`` or ``nvidia-h100-80gb-hbm3``."""
    if info["backend"] == "cuda":
        name = re.sub(r"\(sm_\d+\)", "", info["device_name"])
    else:
        name = f"{info['cpu_model']} {info['cpu_count']}c"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:48] or "unknown"


def git_provenance() -> dict:
    """The checked-out commit and whether the tree differs from it (read-only git calls, no locks)."""
    def run(*args):
        try:
            out = subprocess.run(
                ["git", "--no-optional-locks", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --- machine load -----------------------------------------------------------------------------------


class OtherLoad:
    """CPU cores kept busy by *other* processes while a measurement ran (Linux ``/proc/stat``).

    The 2-core development machine is shared: a test run beside a benchmark halves what the kernels
    get, and numba's threads then wait on each other. Each timing records this number so a disturbed
    result can be recognised (and the README says to rerun on a quiet machine). ``None`` off Linux.
    """

    def __init__(self):
        self._t0 = self._snap()

    @staticmethod
    def _snap():
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        busy = (sum(vals[:8]) - idle) / tick  # user..steal; guest time is already inside user
        t = os.times()
        return busy, t.user + t.system, time.perf_counter()

    def cores(self) -> float | None:
        """Mean number of cores used by other processes since construction."""
        t1 = self._snap()
        if self._t0 is None or t1 is None or t1[2] - self._t0[2] <= 0:
            return None
        other = (t1[0] - self._t0[0]) - (t1[1] - self._t0[1])
        return max(0.0, other / (t1[2] - self._t0[2]))


QUIET_CORES = 0.2  # a measurement is "disturbed" when other processes used more cores than this meanwhile


def load_note(cores: float | None, threshold: float = QUIET_CORES) -> str:
    """A note for a result taken while other processes used more than ``threshold`` cores."""
    if cores is None or cores <= threshold:
        return ""
    return f"; DISTURBED: other processes used {cores:.1f} cores meanwhile"


def wait_for_quiet(max_wait_s: float, threshold: float = QUIET_CORES, window_s: float = 5.0) -> float | None:
    """Wait (up to ``max_wait_s``) until other processes use at most ``threshold`` cores over a
    ``window_s`` window; return the last reading."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        mon = OtherLoad()
        time.sleep(window_s)
        cores = mon.cores()
        if cores is None or cores <= threshold or time.perf_counter() >= deadline:
            return cores
        log(f"machine busy (other processes use {cores:.1f} cores); waiting ...")


def measure_quietly(measure, load_of, seconds_of, retries: int, wait_s: float, threshold: float = QUIET_CORES):
    """Call ``measure()``; while its result was disturbed (``load_of(result) > threshold`` cores used by
    others) and ``retries`` remain, wait up to ``wait_s`` for an idle CPU and measure again. Returns the
    fastest result (contention only ever slows a kernel down), whose own load reading it keeps."""
    best = measure()
    for _ in range(retries):
        load = load_of(best)
        if load is None or load <= threshold:
            break
        log(f"  disturbed ({load:.1f} cores used by others); waiting to measure again ...")
        wait_for_quiet(wait_s, threshold)
        again = measure()
        if seconds_of(again) < seconds_of(best):
            best = again
    return best


# --- timing ---------------------------------------------------------------------------------------


def best_time(fn, backend, repeat: int, min_sample_s: float = 0.05, max_calls: int = 1000) -> dict:
    """Best-of-``repeat`` seconds per call of ``fn()`` (already warmed up by the caller).

    Each sample times ``calls`` back-to-back calls, with ``calls`` doubled from 1 until a sample lasts
    at least ``min_sample_s`` (a 64³ step is too short to time alone, especially on a GPU, where the
    device is synchronised before and after each sample only).
    """
    calls = 1
    while True:
        backend.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        backend.synchronize()
        if time.perf_counter() - t0 >= min_sample_s or calls >= max_calls:
            break
        calls = min(max_calls, 2 * calls)
    load = OtherLoad()
    samples = []
    for _ in range(max(1, repeat)):
        backend.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        backend.synchronize()
        samples.append((time.perf_counter() - t0) / calls)
    return {"s_per_call": min(samples), "samples_s_per_call": samples, "calls_per_sample": calls,
            "other_load_cores": load.cores()}


class PhaseTimer:
    """Wall seconds per named phase, summed over the calls made since the last :meth:`take`.

    ``wrap(fn, key)`` returns ``fn`` timed under ``key`` (``sync()`` before and after each call, so a
    GPU phase is measured to its end). Instrument live objects (``obj.method = timer.wrap(...)``),
    never their classes. A wrapped call inside another wrapped call is counted under both keys.
    """

    def __init__(self, sync):
        self.sync = sync
        self.current: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, fn, key: str):
        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.current[key] = self.current.get(key, 0.0) + time.perf_counter() - t0
                self.calls[key] = self.calls.get(key, 0) + 1
        timed.__name__ = getattr(fn, "__name__", key)
        return timed

    def add(self, key: str, seconds: float) -> None:
        self.current[key] = self.current.get(key, 0.0) + seconds

    def take(self) -> dict[str, float]:
        """The seconds per key since the last take (and start afresh)."""
        out, self.current = self.current, {}
        return out


# --- STREAM-like copy bandwidth ---------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _parallel_copy(dst, src):
    # contiguous chunks per thread: each thread streams its own part, as STREAM's copy does. A slice
    # assignment per chunk (a memcpy); an element loop over runtime bounds ran ~4x slower here.
    n = src.size
    nchunk = 256
    for t in prange(nchunk):
        lo = t * n // nchunk
        hi = (t + 1) * n // nchunk
        dst[lo:hi] = src[lo:hi]


def copy_bandwidth(backend, repeat: int = 10, nbytes: int | None = None) -> dict:
    """Bandwidth as (bytes read + bytes written)/s of ``dst[:] = src`` on float32, best of ``repeat``.

    CPU: the numba ``prange`` copy (all threads) and NumPy's single-threaded copy are both timed; the
    larger is *the* bandwidth, since a kernel using every core should be compared with the best the
    cores can stream. GPU: CuPy's device-to-device ``dst[...] = src``. Write-allocate traffic (the
    CPU reading ``dst``'s lines before writing them) is not counted, as in STREAM.
    """
    xp = backend.xp
    if nbytes is None:
        nbytes = GPU_COPY_BYTES if backend.is_gpu else CPU_COPY_BYTES
        if backend.free_bytes:
            nbytes = min(nbytes, backend.free_bytes // 8)
    n = max(1, nbytes // 4)
    src = xp.arange(n, dtype=xp.float32)
    dst = xp.zeros(n, dtype=xp.float32)
    moved = 2 * 4 * n
    out = {"array_bytes": 4 * n, "bytes_moved_per_copy": moved, "repeat": repeat, "methods": {}}

    def measure(name, fn):
        fn()  # warm-up: JIT, page faults, first-touch
        r = best_time(fn, backend, repeat, min_sample_s=0.0, max_calls=1)
        out["methods"][name] = {"s_per_copy": r["s_per_call"], "bytes_per_s": moved / r["s_per_call"],
                                "other_load_cores": r["other_load_cores"]}

    if backend.is_gpu:
        def gpu_copy():
            dst[...] = src
        measure("cupy dst[...] = src", gpu_copy)
    else:
        measure("numba prange copy", lambda: _parallel_copy(dst, src))
        measure("numpy dst[:] = src (1 thread)", lambda: np.copyto(dst, src))
    best = max(out["methods"], key=lambda k: out["methods"][k]["bytes_per_s"])
    out["method"] = best
    out["bytes_per_s"] = out["methods"][best]["bytes_per_s"]
    del src, dst
    return out


# --- results --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured operation at one size.

    ``items_per_s`` is voxel-updates/s (voxels x calls / s) for field kernels; ``floor_B_per_item`` the
    least bytes per voxel the operation must move (None where no single floor applies, e.g. an
    iterative solve or a whole simulation step).
    """

    operation: str
    size: str
    n_items: int
    s_per_call: float
    items_per_s: float | None
    floor_B_per_item: float | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def achieved_B_per_s(self) -> float | None:
        if self.items_per_s is None or self.floor_B_per_item is None:
            return None
        return self.items_per_s * self.floor_B_per_item

    def fraction_of(self, bandwidth_B_per_s: float) -> float | None:
        a = self.achieved_B_per_s()
        return None if a is None or not bandwidth_B_per_s else a / bandwidth_B_per_s

    def to_json(self, bandwidth_B_per_s: float) -> dict:
        d = asdict(self)
        d["achieved_B_per_s"] = self.achieved_B_per_s()
        d["fraction_of_measured_bandwidth"] = self.fraction_of(bandwidth_B_per_s)
        return d


def _fmt(x, spec: str, none: str = "—") -> str:
    return none if x is None else format(x, spec)


def fmt_time(s: float) -> str:
    if s >= 1.0:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def markdown_table(rows: list[Row], bandwidth_B_per_s: float, rate_label: str = "voxel-updates/s",
                   floor_label: str = "floor B/voxel") -> str:
    """The results table: operation, size, voxel-updates/s, GB/s achieved, floor, fraction, notes.

    ``rate_label`` and ``floor_label`` name the item columns (a benchmark whose items are agents, or a
    mix of agents and voxels, says so there)."""
    head = (
        f"| operation | size | time per call | {rate_label} | GB/s achieved | {floor_label} "
        "| fraction of measured bandwidth | notes |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        ach = r.achieved_B_per_s()
        frac = r.fraction_of(bandwidth_B_per_s)
        lines.append(
            f"| {r.operation} | {r.size} | {fmt_time(r.s_per_call)} | {_fmt(r.items_per_s, '.3g')} | "
            f"{_fmt(None if ach is None else ach / 1e9, '.3g')} | {_fmt(r.floor_B_per_item, 'g')} | "
            f"{_fmt(None if frac is None else 100 * frac, '.1f')}{'' if frac is None else ' %'} | {r.notes} |"
        )
    return head + "\n".join(lines) + "\n"


def header_markdown(title: str, meta: dict) -> str:
    dev = meta["device"]
    bw = meta["bandwidth"]
    git = meta["git"]
    dirty = {True: " (working tree differs from it)", False: "", None: ""}[git.get("dirty")]
    return (
        f"# {title}\n\n"
        f"- date (UTC): {meta['date_utc']}\n"
        f"- git commit: `{git['commit']}`{dirty}\n"
        f"- backend: {dev['backend']} — {dev['device_name']}; CPU {dev['cpu_model']}, {dev['cpu_count']} cores, "
        f"numba {dev['numba']} ({dev['numba_threads']} threads, {dev['numba_threading_layer']}), "
        f"numpy {dev['numpy']}, Python {dev['python']}\n"
        + (f"- sizes: {meta['sizes_text']}\n" if meta.get("sizes_text") else
           f"- sizes: {', '.join(f'{n}³' for n in meta['sizes'])}; best of {meta['repeat']}\n")
        + f"- measured copy bandwidth (read + write of a {bw['array_bytes'] / 2**20:.0f} MiB float32 copy, "
        f"{bw['method']}): **{bw['bytes_per_s'] / 1e9:.1f} GB/s**"
        + "".join(
            f"; {k}: {v['bytes_per_s'] / 1e9:.1f} GB/s" for k, v in bw["methods"].items() if k != bw["method"]
        )
        + "\n"
        + _load_line(meta)
    )


def _load_line(meta: dict) -> str:
    cores = meta.get("other_load_cores_during_run")
    disturbed = meta.get("disturbed_results", [])
    if cores is None:
        return ""
    if disturbed:
        verdict = (f"**{len(disturbed)} result(s) DISTURBED by other processes (marked in the notes): rerun on an "
                   "idle machine before quoting them**")
    else:
        verdict = "every result was measured while the CPU was otherwise idle"
    return (f"- other processes used {cores:.2f} cores on average over the whole run (waits included); "
            f"{verdict}\n")


def write_results(
    out_dir, stem: str, title: str, meta: dict, rows: list[Row], sections: list[str], **table_labels
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (meta + rows with derived columns) and ``<stem>.md`` (header, table,
    extra Markdown ``sections``); return both paths. ``table_labels`` (``rate_label``, ``floor_label``)
    go to :func:`markdown_table`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bw = meta["bandwidth"]["bytes_per_s"]
    payload = {**meta, "rows": [r.to_json(bw) for r in rows]}
    jpath = out_dir / f"{stem}.json"
    jpath.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md = (header_markdown(title, meta) + "\n" + markdown_table(rows, bw, **table_labels)
          + "".join("\n" + s for s in sections))
    mpath = out_dir / f"{stem}.md"
    mpath.write_text(md)
    return jpath, mpath


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
