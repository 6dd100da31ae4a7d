"""T-cell step benchmark: the phases of the cell operation, per agent, against the floor of DESIGN.md §6.

    python benchmarks/bench_tcells.py [--sizes 1e5 1e6] [--backend cpu|cuda|auto] [--steps 5]
                                      [--density 0.25] [--out benchmarks/results]

Measures, per backend and agent count (default 1e5 and 1e6 on a CPU, 1e5 1e6 1e7 on a GPU):

- every phase of ``gpusim.agents.cells.CellStep.apply`` separately, timed inside real steps: the sort
  (``CellStep.index``: compact, voxel of each agent, (voxel, uid) order, permutation of the columns,
  per-voxel counts), A1 sense, the tumour phases T1 fate / T2 propose / T3 claim, A2 respond, A3
  accept, and the host bookkeeping (counts, recruitment, daughters);
- each phase's floor: the bytes of the columns it must read and write per agent (per voxel for the
  tumour phases), listed column by column from ``gpusim.agents.tcell_store.COLUMNS`` and the rules in
  ``gpusim.agents.rules``, divided by the copy bandwidth measured in the same run;
- the whole T-cell step (sort + sense + respond + accept) in agent-updates/s against the issue's
  target (>= 1e7 agent-updates/s on the 2-core CPU);
- one full ``Simulation.step()`` of the ``baseline`` scenario (64³, 1000 T cells) and what three
  simulated days (4320 steps) take at that rate.

The layout is the ``stress`` scenario's, scaled to each agent count: the tumour fills a cubic block
(vessels on 2 % of the voxels, as in every scenario), and the T cells sit uniformly at ``--density``
T cells per voxel (0.25 by default, as in ``stress``), at most ceil(density) per voxel, with the
capacities raised to match. Fields are at their initial values (Mg 0.47 mM, O2 38 mmHg) except the
chemokine, given a radial profile so that chemotaxis runs; the field operation itself is not run
(``benchmarks/bench_fields.py`` measures it). After one untimed warm-up step (JIT, first full sort)
each of ``--steps`` steps is timed phase by phase and the median over steps is reported.

Writes ``<out>/tcells_<backend>_<device-slug>_<date>.json`` and ``.md`` and prints the tables.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source tree

from benchmarks import common  # noqa: E402

import gpusim  # noqa: E402
from gpusim import state as state_mod  # noqa: E402
from gpusim.agents import cells as cells_module  # noqa: E402
from gpusim.agents import rules as R  # noqa: E402
from gpusim.agents.cells import UID_CHECK_EVERY  # noqa: E402
from gpusim.agents.spatial_index import write_counts  # noqa: E402
from gpusim.agents.tcell_store import COLUMNS, STATE_COLUMNS, bytes_per_tcell  # noqa: E402
from gpusim.backend import select_backend  # noqa: E402

DX_UM = 15.0
DEFAULT_DENSITY = 0.25  # T cells per voxel: stress.toml's 4e6 in 256³ (0.24)
DEFAULT_CPU_SIZES = ("1e5", "1e6")
DEFAULT_GPU_SIZES = ("1e5", "1e6", "1e7")
TARGET_AGENT_UPDATES_PER_S = 1e7  # the target for the T-cell step on the 2-core CPU
TARGET_CONDITIONS = "the whole T-cell step (sort + sense + respond + accept) on the 2-core development CPU"
THREE_DAYS_MIN = 3 * 24 * 60
HALF_FLOOR = 0.5  # DESIGN.md §6: a phase under 50 % of its floor has its reason written next to it

# --- floors: the columns each phase must read and write ------------------------------------------
# Each entry is (array, per, access, bytes or None, remark). ``per`` is "agent" (a store column or an
# agent-indexed value) or "voxel" (a per-voxel array, read once when the phase walks every voxel or,
# agents being in voxel order, streams every neighbourhood through the cache). ``bytes`` None: the
# column's size (tcell_store.COLUMNS, or the live per-voxel array's dtype). A column read or written
# on any common path of a phase counts in full: agents of different kinds are interleaved in voxel
# order, so once a path is taken by more than a few % of the agents nearly every 64-B cache line of
# its columns is touched. Branches taken by a small minority (named in RARE) are left out, which
# keeps each figure a lower bound. Field gathers count 4 B (the value), not the line.
FLOORS = {
    "compact": [("state", "agent", "r", None, "DEAD scan")],
    "voxels": [("pos_um", "agent", "r", None, ""), ("voxel", "agent", "w", None, "")],
    "sort_order": [("voxel", "agent", "r", None, "histogram pass"), ("voxel", "agent", "r", None, "scatter pass"),
                   ("order", "agent", "w", 8, "int64 permutation"), ("counts", "voxel", "w", None, ""),
                   ("offsets", "voxel", "w", None, "")],
    "permute": ([("order", "agent", "r", 8, "int64 permutation")]
                + [(c, "agent", "r", None, "") for c in STATE_COLUMNS + ("voxel",)]
                + [(c, "agent", "w", None, "") for c in STATE_COLUMNS + ("voxel",)]),
    "write_counts": [("counts", "voxel", "r", None, ""), ("n_tcell", "voxel", "w", None, "")],
    "sense": [("uid", "agent", "r", None, "Philox counter (engaged)"), ("state", "agent", "r", None, ""),
              ("voxel", "agent", "r", None, ""), ("lfa1", "agent", "r", None, ""),
              ("function", "agent", "r", None, "engaged"), ("timer_min", "agent", "r", None, "engaged"),
              ("div_timer", "agent", "r", None, ""), ("mg[voxel]", "agent", "r", 4, "field gather"),
              ("hit", "agent", "w", None, ""), ("lfa1", "agent", "w", None, ""),
              ("timer_min", "agent", "w", None, "engaged")],
    "tumor_fate": [("tumor", "voxel", "r", None, ""), ("damage", "voxel", "r", None, "LIVE"),
                   ("o2", "voxel", "r", None, "necrosis test, LIVE"),
                   ("offsets", "voxel", "r", None, "27-voxel hit gather"), ("tumor_event", "voxel", "w", None, ""),
                   ("hit", "agent", "r", None, "every binned agent's hit flag")],
    "tumor_propose": [("tumor", "voxel", "r", None, ""), ("o2", "voxel", "r", None, "division rate, LIVE"),
                      ("div_dir", "voxel", "w", None, "")],
    "tumor_claim": [("tumor", "voxel", "r", None, ""), ("vessel", "voxel", "r", None, ""),
                    ("n_tumor", "voxel", "w", None, "")],
    "respond": [("state", "agent", "r", None, ""), ("voxel", "agent", "r", None, ""),
                ("target", "agent", "r", None, "engaged"), ("timer_min", "agent", "r", None, "engaged"),
                ("tumor[target]", "agent", "r", 1, "engaged: target still LIVE?"),
                ("div_timer", "agent", "r", None, "free"), ("lfa1", "agent", "r", None, "free: engage rate"),
                ("function", "agent", "r", None, "free"), ("uid", "agent", "r", None, "Philox counters (free)"),
                ("dir", "agent", "r", None, "free"), ("pos_um", "agent", "r", None, "free"),
                ("tumor", "voxel", "r", None, "27-voxel LIVE count (free)"),
                ("chemokine", "voxel", "r", None, "gradient (free)"),
                ("flags", "agent", "w", None, ""), ("prop", "agent", "w", None, ""),
                ("pos_um", "agent", "w", None, "move within the voxel"),
                ("prio", "agent", "w", None, "move proposal"), ("pos_new", "agent", "w", None, "move proposal"),
                ("state", "agent", "w", None, "engage / synapse end"), ("target", "agent", "w", None, "engage"),
                ("timer_min", "agent", "w", None, "engage"), ("function", "agent", "w", None, "engage"),
                ("dir", "agent", "w", None, "turn")],
    "accept": [("state", "agent", "r", None, ""), ("prop", "agent", "r", None, ""),
               ("uid", "agent", "r", None, "Philox apoptosis draw, every agent"),
               ("voxel", "agent", "r", None, "proposers"), ("prio", "agent", "r", None, "proposers and rivals"),
               ("pos_new", "agent", "r", None, "proposers"), ("flags", "agent", "r", None, "proposers"),
               ("pos_um", "agent", "w", None, "accepted moves"), ("flags", "agent", "w", None, "proposers")],
}
#: branches left out of the floors because few agents or voxels take them in a step
RARE = {
    "compact": "moving the survivors (in an ideal step, fused into the sort's gather, which skips DEAD rows)",
    "sort_order": "uid reads for the tie-break inside voxels holding several T cells",
    "permute": "the per-step scratch columns (hit, flags, prop, prio, pos_new): every step rewrites them "
               "before it reads them, so they need not travel with the sort",
    "sense": "div_timer write (pending divisions only)",
    "tumor_fate": "state/target of hitters, last_hit (repairs), the writes of deaths and clearances",
    "tumor_propose": "the 26-neighbour scan of the few LIVE cells that divide",
    "tumor_claim": "div_dir of the neighbours of EMPTY voxels (a tumour-filled block has almost none)",
    "respond": "hit/event reads and kill credit when a target died, division proposals",
    "accept": "tumor/counts of the target voxel and the rivals' uids (proposers only), division and "
              "apoptosis writes",
}
#: why a phase falls short of its floor (written next to it when under 50 %)
REASONS_CPU = {
    "compact": "not called by the step any more: the sort drops DEAD agents (a bin past the last voxel), "
               "so this row reads 0",
    "voxels": "float32 divisions and floor/clamp per axis; 2 threads",
    "sort_order": "counting sort: the histogram, prefix sum and the stable scatter into order[] are serial "
                  "(one thread), the per-voxel uid insertion sort is parallel; three passes over the per-voxel "
                  "arrays, fresh allocations",
    "permute": "TCellStore.permute gathers the 12 carried columns (69 B/agent) into spare buffers in "
               "parallel and swaps them in; random-order reads of the source rows",
    "write_counts": "NumPy clip + astype + copy: three one-thread passes through int32/uint8 temporaries",
    "sense": "compute-bound: A*(Mg) by the integer-Hill product path and a float64 division per agent; "
             "engaged agents add a Philox4x32-10 draw and expm1",
    "tumor_fate": "27-voxel gathers: every LIVE voxel reads 27 pairs of int64 offsets (with clamps, after "
                  "split_voxel's two int64 divisions) to count the hits of the few T cells around it",
    "tumor_propose": "Philox compute: one Philox4x32-10 draw and a prob_from_rate (expm1) per LIVE voxel",
    "tumor_claim": "split_voxel's two int64 divisions for every voxel before its state test, and each EMPTY "
                   "non-vessel voxel scans its 26 neighbours' div_dir, all for a 3-B floor",
    "respond": "free T cells: two 27-voxel LIVE scans, up to four Philox draws (engage, turn, direction by "
               "rejection, priority), float64 normalisations of direction and gradient, log for the synapse time",
    "accept": "one Philox draw per agent (apoptosis), and every proposal ranks itself against all T cells "
              "binned in the 27 voxels around its target",
}
REASONS_GPU = {
    "compact": "not called by the step any more: the sort drops DEAD agents",
    "sort_order": "CuPy lexsort of (uid, voxel) (a multi-pass radix sort of two 64-bit keys) + bincount + cumsum",
    "permute": "12 CuPy take() gathers into spare buffers (the carried columns)",
    "write_counts": "clip + astype + copy: three kernels through temporaries",
}
PHASE_TITLE = {
    "compact": "sort · compact (remove DEAD)",
    "voxels": "sort · voxel of each T cell",
    "sort_order": "sort · (voxel, uid) order",
    "permute": "sort · permute the columns",
    "write_counts": "sort · per-voxel T-cell counts (n_tcell)",
    "index": "sort, total (CellStep.index)",
    "sense": "A1 sense (LFA-1, hits)",
    "tumor_fate": "T1 tumour fate",
    "tumor_propose": "T2 tumour division proposal",
    "tumor_claim": "T3 tumour claim",
    "respond": "A2 respond (synapses, engage, move proposal)",
    "accept": "A3 accept (moves under capacity, apoptosis)",
    "rest": "bookkeeping (event counts, recruitment, daughters)",
    "recruit": "R recruitment kernel",
    "check_new": "uid checks of new T cells (agents.cells.check_new)",
}
AGENT_PHASES = ("compact", "voxels", "sort_order", "permute", "write_counts", "index", "sense", "respond", "accept")
TUMOUR_PHASES = ("tumor_fate", "tumor_propose", "tumor_claim")
SORT_PARTS = ("compact", "voxels", "sort_order", "permute", "write_counts")
TCELL_STEP = ("index", "sense", "respond", "accept")


def parse_count(text: str) -> int:
    """An agent count written as 100000, 1e5 or 1_000_000."""
    v = float(str(text).replace("_", ""))
    if not math.isfinite(v) or v < 1 or v != int(v):
        raise argparse.ArgumentTypeError(f"not a positive whole number of agents: {text!r}")
    return int(v)


def count_label(n: int) -> str:
    e = int(math.floor(math.log10(n)))
    return f"1e{e}" if n == 10**e else f"{n:.3g}"


# --- problem set-up ---------------------------------------------------------------------------------


class Layout:
    """Grid and capacities for ``n_agents`` at ``density`` T cells per voxel."""

    def __init__(self, n_agents: int, density: float):
        self.n_agents = int(n_agents)
        self.edge = max(4, int(math.ceil((n_agents / density) ** (1.0 / 3.0))))
        self.n_voxels = self.edge**3
        self.per_voxel = max(1, int(math.ceil(n_agents / self.n_voxels)))  # at most this many per voxel
        if n_agents > self.per_voxel * self.n_voxels:
            raise ValueError("internal: agents do not fit")

    @property
    def voxels_per_agent(self) -> float:
        return self.n_voxels / self.n_agents

    def config(self, backend: str) -> gpusim.Config:
        n = self.edge
        return gpusim.Config.model_validate({
            "seed": 1,
            "backend": backend,
            "init": "given",
            "grid": {"shape": [n, n, n], "dx_um": DX_UM},
            "substrates": [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}],
            "vessels": {"kind": "random"},
            "tumor": {"initial_radius_um": float(n * DX_UM)},  # > half the block's diagonal: fills it
            "tcells": {"initial_count": 0, "placement": "uniform",
                       "max_per_voxel": max(4, self.per_voxel),
                       "max_per_voxel_with_tumor": max(1, self.per_voxel)},
        })

    def estimate_bytes(self, backend: str) -> int:
        """Memory of the run (state, store with growth headroom) plus the sort's temporaries."""
        cfg = self.config(backend).with_overrides({"tcells.initial_count": self.n_agents})
        return int(state_mod.estimate_bytes(cfg) + 12 * self.n_voxels + 3 * bytes_per_tcell() * self.n_agents)

    def positions(self, seed: int = 7) -> np.ndarray:
        """float32 (n, 3) positions: distinct (voxel, slot) pairs drawn uniformly, each at a uniform
        point in the middle 90 % of its voxel (as ``placement = "uniform"`` places them). Drawn here,
        not by the model's placement, which hashes every free slot of the block (slow at 1e7)."""
        rng = np.random.default_rng(seed)
        slot = rng.choice(self.n_voxels * self.per_voxel, size=self.n_agents, replace=False)
        vox = np.sort(slot // self.per_voxel)
        n = self.edge
        z, rem = np.divmod(vox, n * n)
        y, x = np.divmod(rem, n)
        u = rng.random((self.n_agents, 3), dtype=np.float32)
        cell = np.stack([z, y, x], axis=1).astype(np.float32)
        return ((cell + np.float32(0.05) + np.float32(0.9) * u) * np.float32(DX_UM)).astype(np.float32)


def chemokine_profile(edge: int) -> np.ndarray:
    """A radial chemokine profile (nM), 10/(1 + (r/R)^2) with R a quarter of the block: a gradient
    everywhere but the centre, so free T cells take the chemotaxis path."""
    c = (np.arange(edge, dtype=np.float64) + 0.5 - edge / 2) / (edge / 4)
    r2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    return (10.0 / (1.0 + r2)).astype(np.float32)


def build(layout: Layout, backend_name: str):
    """A Simulation of the layout with its T cells added (serum LFA-1 state) and the chemokine set."""
    t0 = time.perf_counter()
    sim = gpusim.Simulation(layout.config(backend_name))
    be = sim.backend
    chem = sim.state.fields["chemokine"]
    chem[...] = be.asarray(chemokine_profile(layout.edge))
    pos = layout.positions()
    a_serum = sim.cells.serum_lfa1(sim)
    sim.add_tcells(pos, lfa1=np.full(pos.shape[0], a_serum, np.float32))
    return sim, time.perf_counter() - t0


def make_sync(backend):
    if backend.is_gpu:
        from numba import cuda

        def sync():
            backend.synchronize()
            cuda.synchronize()
        return sync
    return backend.synchronize


class _TimedKernels:
    """Stands in for ``CellStep.k`` (the backend's agent-kernel module): each kernel timed by name."""

    def __init__(self, module, timer):
        self._module = module
        self._timer = timer
        self._cache = {}

    def __getattr__(self, name):
        if name not in self._cache:
            self._cache[name] = self._timer.wrap(getattr(self._module, name), name)
        return self._cache[name]


def instrument(sim, timer) -> None:
    """Time the phases of the live CellStep (never its class): the sort and its parts, each kernel."""
    cs = sim.cells
    if isinstance(cs.k, _TimedKernels):
        return
    cs.k = _TimedKernels(cs.k, timer)
    cs.index = timer.wrap(cs.index, "index")
    cs.store.compact = timer.wrap(cs.store.compact, "compact")
    cs.store.permute = timer.wrap(cs.store.permute, "permute")
    # uid checks of recruits, daughters and infusions: a module function (the MPI ranks call it too),
    # timed for this benchmark process by wrapping the module's name
    original = getattr(cells_module.check_new, "untimed", cells_module.check_new)  # one wrapper per process
    cells_module.check_new = timer.wrap(original, "check_new")
    cells_module.check_new.untimed = original
    cs.apply = timer.wrap(cs.apply, "apply")


def standalone_sort_parts(sim, sync) -> dict:
    """Seconds of the sort's two kernels and of the count write, on exactly the input the next
    ``CellStep.index`` sees (they are pure but for the voxel column, which the sort recomputes the same;
    DEAD rows go to the extra bin, as in the step)."""
    cs = sim.cells
    st, store = sim.state, cs.store
    kern = store.backend.kernels("agents")
    nz, ny, nx = (int(v) for v in st.shape)
    out = {}
    sync()
    t0 = time.perf_counter()
    nvox = nz * ny * nx
    kern.voxels(np.int64(store.n), np.float32(st.dx_um), np.int64(nz), np.int64(ny), np.int64(nx),
                tuple(np.int64(v) for v in (0, 0, 0, nz, ny, nx)), store.pos_um, store.state, np.int64(nvox), store.voxel)
    sync()
    t1 = time.perf_counter()
    order, _counts, _offsets = kern.sort_order(store.voxel, store.uid, nvox + 1)
    sync()
    t2 = time.perf_counter()
    write_counts(cs.counts, st.n_tcell)
    sync()
    t3 = time.perf_counter()
    del order, _counts, _offsets
    out["voxels"], out["sort_order"], out["write_counts"] = t1 - t0, t2 - t1, t3 - t2
    return out


def agent_mix(sim) -> dict:
    """What the T cells did in the last step (fractions of the living ones)."""
    s = sim.cells.store
    xp = sim.backend.xp
    n = max(1, int(xp.count_nonzero(s.state != np.uint8(R.TDEAD))))
    f = s.flags
    return {
        "tcells": int(s.n),
        "engaged": int(xp.count_nonzero(s.state == np.uint8(R.ENGAGED))) / n,
        "engaged_this_step": int(xp.count_nonzero(f & R.FL_ENGAGED)) / n,
        "proposed": int(xp.count_nonzero(s.prop >= 0)) / n,
        "moved_voxel": int(xp.count_nonzero(f & R.FL_MOVED)) / n,
        "died": int(xp.count_nonzero(f & R.FL_DIED)) / n,
        "tumor_killed": int(sim.cells.last.get("killed", 0)),
    }


def one_step(sim, timer, sync) -> dict:
    """One instrumented cell step (standalone sort kernels first); seconds per phase."""
    parts = standalone_sort_parts(sim, sync)
    timer.take()
    sim.cells.apply(sim)
    st = sim.state
    st.step += 1
    st.time_min = st.step * sim.dt_min
    t = timer.take()
    out = {k: t.get(k, 0.0) for k in ("apply", "index", "compact", "permute", "sense", "tumor_fate",
                                       "tumor_propose", "tumor_claim", "respond", "accept", "recruit",
                                       "check_new")}
    out.update(parts)
    named = sum(out[k] for k in ("index", "sense", "tumor_fate", "tumor_propose", "tumor_claim", "respond",
                                 "accept"))
    out["rest"] = max(0.0, out["apply"] - named)
    out["sort_other"] = out["index"] - sum(out[k] for k in SORT_PARTS)  # Python overhead; ~0
    out["tcell_step"] = sum(out[k] for k in TCELL_STEP)
    return out


# --- floors -----------------------------------------------------------------------------------------


def array_bytes(sim, name: str) -> int:
    """Bytes per item of an agent column or a per-voxel array of this run."""
    if name in COLUMNS:
        dt, shape, _ = COLUMNS[name]
        return np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
    st, cs = sim.state, sim.cells
    voxel_arrays = {"tumor": st.tumor, "damage": st.damage, "last_hit": st.last_hit, "since": st.since,
                    "tumor_event": st.tumor_event, "div_dir": st.div_dir, "n_tumor": st.n_tumor,
                    "n_tcell": st.n_tcell, "vessel": st.vessel, "counts": cs.counts, "offsets": cs.offsets}
    voxel_arrays.update(st.fields)
    return int(voxel_arrays[name].dtype.itemsize)


def floor_parts(sim, phase: str) -> dict:
    """Per-agent and per-voxel bytes a phase must move: {"agent": B, "voxel": B, "lines": [...]}."""
    total = {"agent": 0, "voxel": 0}
    lines = []
    for name, per, access, nbytes, remark in FLOORS[phase]:
        b = array_bytes(sim, name) if nbytes is None else int(nbytes)
        total[per] += b
        lines.append({"array": name, "per": per, "access": access, "bytes": b, "remark": remark})
    return {**total, "lines": lines}


def floor_per_agent(parts: dict, voxels_per_agent: float) -> float:
    return parts["agent"] + parts["voxel"] * voxels_per_agent


def floor_per_voxel(parts: dict, voxels_per_agent: float) -> float:
    return parts["voxel"] + parts["agent"] / voxels_per_agent


# --- the benchmark of one size ------------------------------------------------------------------------


def _llc_bytes() -> int | None:
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)


def working_set_bytes(sim) -> int:
    """The T-cell store's live rows plus the per-voxel arrays the cell step reads."""
    st = sim.state
    per_voxel = sum(array_bytes(sim, k) for k in ("tumor", "damage", "last_hit", "since", "tumor_event", "div_dir",
                                                  "n_tumor", "n_tcell", "vessel", "counts", "offsets",
                                                  "mg", "o2", "chemokine"))
    return int(sim.cells.store.n * bytes_per_tcell() + per_voxel * st.n_voxels)


def measure_size(layout: Layout, backend, steps: int, warmup: int, retries: int, retry_wait: float):
    """Build the problem, warm up, time ``steps`` steps (again while disturbed); the samples and facts."""
    sync = make_sync(backend)
    common.log(f"T cells {count_label(layout.n_agents)}: building {layout.edge}³ grid ...")
    sim, setup_s = build(layout, backend.name)
    timer = common.PhaseTimer(sync)
    instrument(sim, timer)
    t0 = time.perf_counter()
    for _ in range(max(1, warmup)):  # JIT (or the cache load), the first full sort of the placement order
        one_step(sim, timer, sync)
    warm_s = time.perf_counter() - t0
    common.log(f"  warm-up {warm_s:.1f} s; timing {steps} steps ...")

    def measure():
        load = common.OtherLoad()
        samples, mixes = [], []
        for _ in range(max(1, steps)):
            samples.append(one_step(sim, timer, sync))
            mixes.append(agent_mix(sim))
        med = {k: float(np.median([s[k] for s in samples])) for k in samples[0]}
        return {"samples": samples, "median": med, "mix": mixes, "other_load_cores": load.cores()}

    res = common.measure_quietly(measure, lambda r: r["other_load_cores"], lambda r: r["median"]["tcell_step"],
                                 retries, retry_wait)
    res.update(setup_s=setup_s, warmup_s=warm_s, steps_done=int(sim.state.step),
               working_set_bytes=working_set_bytes(sim), n_agents_final=int(sim.cells.store.n))
    floors = {ph: floor_parts(sim, ph) for ph in FLOORS}
    return res, floors


def rows_for_size(layout: Layout, res: dict, floors: dict, backend, bandwidth: float) -> list[common.Row]:
    med = res["median"]
    n = layout.n_agents
    v = layout.n_voxels
    vpa = layout.voxels_per_agent
    size = f"{count_label(n)} T cells, {layout.edge}³ voxels"
    other = res["other_load_cores"]
    disturbed = common.load_note(other)
    reasons = REASONS_GPU if backend.is_gpu else REASONS_CPU
    llc = None if backend.is_gpu else _llc_bytes()
    cache = ""
    if llc and res["working_set_bytes"] <= llc:
        cache = (f"; working set {res['working_set_bytes'] / 2**20:.3g} MiB fits in the {llc / 2**20:.0f} MiB L3, "
                 "so this can exceed DRAM bandwidth")
    rows = []

    def add(phase, title, seconds, items, floor_b, per, parts=None, note=""):
        rate = items / seconds if seconds > 0 else None
        row = common.Row(operation=f"{title} — per {per}", size=size, n_items=items, s_per_call=seconds,
                         items_per_s=rate, floor_B_per_item=round(float(floor_b), 1), notes="",
                         extra={"phase": phase, "per": per, "samples_s": [s.get(phase) for s in res["samples"]],
                                "other_load_cores": other, "floor_parts": parts})
        frac = row.fraction_of(bandwidth)
        bits = [note] if note else []
        if frac is not None and frac < HALF_FLOOR and phase in reasons:
            bits.append(f"under 50 % of the floor: {reasons[phase]}")
        row.notes = "; ".join(bits) + cache + disturbed
        rows.append(row)
        return row

    sort_floor = 0.0
    for ph in SORT_PARTS:
        f = floor_per_agent(floors[ph], vpa)
        sort_floor += f
        src = "standalone, same input as the step's sort" if ph in ("voxels", "sort_order", "write_counts") else ""
        add(ph, PHASE_TITLE[ph], med[ph], n, f, "agent", floors[ph], src)
    sort_reasons = "; ".join(f"{PHASE_TITLE[p].split('· ')[1]}: {100 * r.fraction_of(bandwidth):.0f} %"
                             for p, r in zip(SORT_PARTS, rows) if r.fraction_of(bandwidth) is not None)
    add("index", PHASE_TITLE["index"], med["index"], n, sort_floor, "agent", None,
        f"sum of the five parts above (their floors add up); fraction of each part's floor: {sort_reasons}")
    for ph in ("sense",):
        add(ph, PHASE_TITLE[ph], med[ph], n, floor_per_agent(floors[ph], vpa), "agent", floors[ph])
    tumour_floor_agent = 0.0
    for ph in TUMOUR_PHASES:
        tumour_floor_agent += floor_per_agent(floors[ph], vpa)
        add(ph, PHASE_TITLE[ph], med[ph], v, floor_per_voxel(floors[ph], vpa), "voxel", floors[ph])
    for ph in ("respond", "accept"):
        add(ph, PHASE_TITLE[ph], med[ph], n, floor_per_agent(floors[ph], vpa), "agent", floors[ph])
    step_floor = sort_floor + sum(floor_per_agent(floors[p], vpa) for p in ("sense", "respond", "accept"))
    shares = ", ".join(f"{name} {common.fmt_time(med[k])}" for name, k in
                       sorted((("sort", "index"), ("sense", "sense"), ("respond", "respond"), ("accept", "accept")),
                              key=lambda t: -med[t[1]]))
    under = (f"under 50 % of the floor, for the reasons given at its phases above; by time: {shares}"
             if n * step_floor / med["tcell_step"] < HALF_FLOOR * bandwidth else f"by time: {shares}")
    rate = n / med["tcell_step"]
    verdict = "meets" if rate >= TARGET_AGENT_UPDATES_PER_S else "below"
    mix = res["mix"]
    mix_note = (f"engaged {100 * mix[0]['engaged']:.0f}→{100 * mix[-1]['engaged']:.0f} % of T cells over the timed "
                f"steps; per step {100 * np.median([m['proposed'] for m in mix]):.0f} % proposed a move into "
                f"another voxel, {100 * np.median([m['moved_voxel'] for m in mix]):.0f} % made one")
    step = add("tcell_step", "**T-cell step (sort + sense + respond + accept)**", med["tcell_step"], n, step_floor,
               "agent", None,
               f"{verdict} the target of {TARGET_AGENT_UPDATES_PER_S:.0e} agent-updates/s "
               f"({rate / TARGET_AGENT_UPDATES_PER_S:.2g}× it); {under}; {mix_note}")
    step.extra["target_agent_updates_per_s"] = TARGET_AGENT_UPDATES_PER_S
    add("apply", "cell operation, all phases (CellStep.apply: + tumour phases + bookkeeping)", med["apply"], n,
        step_floor + tumour_floor_agent, "agent", None,
        f"tumour phases {common.fmt_time(sum(med[p] for p in TUMOUR_PHASES))}, bookkeeping "
        f"{common.fmt_time(med['rest'])} (no floor counted): recruitment kernel {common.fmt_time(med['recruit'])}, "
        f"uid checks of the new T cells {common.fmt_time(med['check_new'])} (agents.cells.check_new: among "
        f"themselves; the whole store every {UID_CHECK_EVERY} steps), the rest "
        f"(event counts, appends) {common.fmt_time(max(0.0, med['rest'] - med['recruit'] - med['check_new']))}")
    return rows


# --- the baseline scenario -----------------------------------------------------------------------------


def bench_baseline(backend, n_steps: int) -> tuple[common.Row, dict]:
    """Mean and median wall time of ``Simulation.step()`` of the ``baseline`` scenario after one warm-up
    step, with the time per operation and per cell phase."""
    sync = make_sync(backend)
    cfg = gpusim.scenario_config("baseline").with_overrides({"backend": backend.name})
    t0 = time.perf_counter()
    sim = gpusim.Simulation(cfg)
    setup_s = time.perf_counter() - t0
    timer = common.PhaseTimer(sync)
    instrument(sim, timer)
    for op in sim.operations:
        name = getattr(op, "name", type(op).__name__)
        op.apply = timer.wrap(op.apply, f"op:{name}")
    sim.step()  # warm-up: JIT of anything not yet compiled
    timer.take()
    load = common.OtherLoad()
    per_step, shares = [], []
    for _ in range(max(1, n_steps)):
        sync()
        t0 = time.perf_counter()
        sim.step()
        sync()
        per_step.append(time.perf_counter() - t0)
        shares.append(timer.take())
    other = load.cores()
    mean = float(np.mean(per_step))
    median = float(np.median(per_step))
    keys = sorted({k for s in shares for k in s})
    share = {k: float(np.mean([s.get(k, 0.0) for s in shares])) for k in keys}
    n_tc = int(sim.cells.store.n)
    three_days_s = mean * THREE_DAYS_MIN / sim.dt_min
    row = common.Row(
        operation="baseline scenario, one Simulation.step() (dt = 1 min)",
        size=f"{'×'.join(map(str, cfg.grid.nzyx))} voxels, {cfg.tcells.initial_count} T cells at start",
        n_items=n_tc,
        s_per_call=mean,
        items_per_s=None,
        notes=(f"mean of {len(per_step)} steps after warm-up (median {common.fmt_time(median)}, min "
               f"{common.fmt_time(min(per_step))}, max {common.fmt_time(max(per_step))}); 3 simulated days "
               f"(4320 steps) ≈ {three_days_s / 60:.3g} min at this rate; cells "
               f"{common.fmt_time(share.get('op:cells', 0.0))}, fields {common.fmt_time(share.get('op:fields', 0.0))}, "
               f"record {common.fmt_time(share.get('op:record', 0.0))} per step" + common.load_note(other)),
        extra={"kind": "baseline_step", "per_step_s": per_step, "median_s": median, "mean_s": mean,
               "three_days_s": three_days_s, "setup_s_incl_steady_init": setup_s, "mean_s_by_part": share,
               "other_load_cores": other, "tcells_at_end": n_tc, "steps": len(per_step)},
    )
    return row, {"share": share, "setup_s": setup_s, "mean": mean, "median": median, "three_days_s": three_days_s,
                 "tcells": n_tc}


# --- report sections -------------------------------------------------------------------------------------


def target_section(results: list[dict], bandwidth: float) -> str:
    lines = ["## The T-cell step against the issue's target\n",
             f"Target: ≥ {TARGET_AGENT_UPDATES_PER_S:.0e} agent-updates/s for {TARGET_CONDITIONS}. "
             f"Floor limit: the measured bandwidth ({bandwidth / 1e9:.1f} GB/s) ÷ the step's floor.\n",
             "| T cells | grid | voxels/T cell | step time | agent-updates/s | × target | floor B/agent "
             "| floor-limited agent-updates/s | fraction of floor | other processes (cores) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        row = r["step_row"]
        lay = r["layout"]
        frac = row.fraction_of(bandwidth)
        lines.append(f"| {count_label(lay.n_agents)} | {lay.edge}³ | {lay.voxels_per_agent:.3g} | "
                     f"{common.fmt_time(row.s_per_call)} | {row.items_per_s:.3g} | "
                     f"{row.items_per_s / TARGET_AGENT_UPDATES_PER_S:.2g} | {row.floor_B_per_item:.0f} | "
                     f"{bandwidth / row.floor_B_per_item:.3g} | {100 * frac:.1f} % | "
                     f"{common._fmt(r['res']['other_load_cores'], '.2f')}"
                     f"{' (DISTURBED)' if (r['res']['other_load_cores'] or 0) > common.QUIET_CORES else ''} |")
    lines.append("\nThe floor-limited rate is the most any implementation of these phases, as separate passes "
                 "over memory, could reach on this device; DESIGN.md §6 estimates 150–250 B/agent for the step "
                 "unless sort and move are fused.\n")
    return "\n".join(lines)


def breakdown_section(results: list[dict]) -> str:
    keys = ("index", "sense", "tumor_fate", "tumor_propose", "tumor_claim", "respond", "accept", "rest")
    names = ("sort", "A1 sense", "T1 fate", "T2 propose", "T3 claim", "A2 respond", "A3 accept", "bookkeeping")
    lines = ["## Where a cell step goes (median ms per step, share of CellStep.apply)\n",
             "| T cells | " + " | ".join(names) + " | total |", "|---|" + "---|" * (len(keys) + 1)]
    for r in results:
        med = r["res"]["median"]
        tot = med["apply"]
        cells = " | ".join(f"{med[k] * 1e3:.3g} ({100 * med[k] / tot:.0f} %)"
                           + (f", uid checks {med['check_new'] * 1e3:.3g}" if k == "rest" else "") for k in keys)
        lines.append(f"| {count_label(r['layout'].n_agents)} | {cells} | {tot * 1e3:.3g} |")
    lines.append("\nSort parts (median ms): "
                 + "; ".join(f"{count_label(r['layout'].n_agents)}: "
                             + ", ".join(f"{PHASE_TITLE[p].split('· ')[1]} {r['res']['median'][p] * 1e3:.3g}"
                                         for p in SORT_PARTS) for r in results)
                 + ". Compact and permute are timed inside the step; the voxel, order and count kernels "
                   "standalone on the same input just before it (their sum matches the step's sort up to "
                   "Python overhead).\n")
    return "\n".join(lines)


def floors_section(floors: dict, layout: Layout) -> str:
    vpa = layout.voxels_per_agent
    lines = ["## Bytes each phase must move (the floors)\n",
             "Agent columns from `gpusim/agents/tcell_store.py` COLUMNS (uid 8, state 1, pos_um 12, dir 12, "
             "lfa1 4, target 8, timer_min 4, kills 2, function 4, div_timer 4, births 2, voxel 8, hit 1, flags 1, "
             "prop 8, prio 4, pos_new 12: 95 B per T cell, 61 B of step-to-step state); per-voxel arrays from "
             "the live state (tumor, damage, tumor_event, div_dir, vessel, n_tumor, n_tcell uint8; counts int32; "
             "offsets int64; fields float32). A column on any common path counts in full (agents of different "
             "kinds are interleaved, so nearly every cache line of it is touched); per-voxel arrays count once "
             "per voxel. Rare branches left out are named, so each floor is a lower bound.\n",
             f"| phase | reads | writes | B/agent | B/voxel | floor at {vpa:.3g} voxels/T cell | left out (rare) |",
             "|---|---|---|---|---|---|---|"]
    for ph, parts in floors.items():
        def fmt(access):
            items = [f"{x['array']} {x['bytes']}" + (" /vox" if x["per"] == "voxel" else "")
                     for x in parts["lines"] if x["access"] == access]
            return ", ".join(items) or "—"
        per_voxel_phase = ph in TUMOUR_PHASES
        at = (f"{floor_per_voxel(parts, vpa):.3g} B/voxel" if per_voxel_phase
              else f"{floor_per_agent(parts, vpa):.3g} B/agent")
        lines.append(f"| {PHASE_TITLE[ph]} | {fmt('r')} | {fmt('w')} | {parts['agent']} | {parts['voxel']} | {at} | "
                     f"{RARE.get(ph, '—')} |")
    lines.append("\nThe sort's permutation carries only the 61 B of state and the 8-B voxel (the scratch "
                 "columns are rewritten before they are read each step). "
                 "Remarks per column are in the JSON (`rows[].extra.floor_parts`).\n")
    return "\n".join(lines)


def baseline_section(detail: dict | None) -> str:
    if not detail:
        return ""
    share = detail["share"]
    lines = ["## The baseline scenario (64³, 1000 T cells, default substrates)\n",
             f"One `Simulation.step()`: mean **{common.fmt_time(detail['mean'])}** (median "
             f"{common.fmt_time(detail['median'])}); "
             f"three simulated days (4320 one-minute steps) ≈ **{detail['three_days_s'] / 60:.3g} min** of wall time. "
             f"Set-up (with the steady-state field initialisation) {detail['setup_s']:.3g} s; "
             f"{detail['tcells']} T cells after the timed steps.\n",
             "| part | mean per step |", "|---|---|"]
    phases = ("index", "sense", "tumor_fate", "tumor_propose", "tumor_claim", "respond", "accept", "recruit",
              "check_new")
    for k in sorted(k for k in share if k.startswith("op:")):
        lines.append(f"| {k} | {common.fmt_time(share[k])} |")
    for k in phases:
        if k in share:
            lines.append(f"| cells · {PHASE_TITLE.get(k, k)} | {common.fmt_time(share[k])} |")
    tumour = sum(share.get(k, 0.0) for k in TUMOUR_PHASES)
    tcell = sum(share.get(k, 0.0) for k in TCELL_STEP)
    cells = share.get("op:cells", 0.0)
    lines.append(f"\n`op:*` are the simulation's operations (mg's LOD sub-steps dominate `op:fields`; "
                 "`benchmarks/bench_fields.py` breaks it down); `cells · *` the phases inside `op:cells`. "
                 f"The tumour phases T1–T3 walk every voxel of the block (not only the tumour's bounding box), "
                 f"so they take {common.fmt_time(tumour)} of op:cells' {common.fmt_time(cells)}, against "
                 f"{common.fmt_time(tcell)} for the T-cell step of the ~1000 T cells. The 3-day figure is the "
                 "start-of-run rate; the tumour and the T-cell population change over a run.\n")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=parse_count, nargs="+", default=None,
                    help="T-cell counts, e.g. 1e5 1e6 1e7 (default: 1e5 1e6 on a CPU, 1e5 1e6 1e7 on a GPU)")
    ap.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--density", type=float, default=DEFAULT_DENSITY,
                    help="T cells per voxel (the grid is sized to hold them; default 0.25, as the stress scenario)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per size (the median is reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (JIT, first full sort)")
    ap.add_argument("--baseline-steps", type=int, default=10,
                    help="timed steps of the baseline scenario (0: skip it)")
    ap.add_argument("--out", default=str(common.REPO_ROOT / "benchmarks" / "results"))
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to this long for other processes to leave the CPU idle")
    ap.add_argument("--retries", type=int, default=1,
                    help="re-measure a result disturbed by other processes up to this many times")
    ap.add_argument("--retry-wait", type=float, default=30.0, metavar="SECONDS",
                    help="before a re-measurement, wait up to this long for an idle CPU")
    args = ap.parse_args(argv)
    if not 0 < args.density <= 64:
        ap.error("--density must be in (0, 64] T cells per voxel")

    t_start = time.perf_counter()
    if args.wait_quiet > 0:
        common.wait_for_quiet(args.wait_quiet)
    run_load = common.OtherLoad()
    backend = select_backend(args.backend)
    common.log(f"backend: {backend.describe()} ({backend.reason})")
    sizes = args.sizes or [parse_count(s) for s in (DEFAULT_GPU_SIZES if backend.is_gpu else DEFAULT_CPU_SIZES)]
    bw = common.measure_quietly(
        lambda: common.copy_bandwidth(backend),
        lambda b: max((m["other_load_cores"] or 0.0) for m in b["methods"].values()),
        lambda b: 1.0 / b["bytes_per_s"],
        args.retries, args.retry_wait,
    )
    bandwidth = bw["bytes_per_s"]
    common.log(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s ({bw['method']})")

    rows: list[common.Row] = []
    results: list[dict] = []
    skipped: list[str] = []
    failed: list[str] = []
    floors_any, layout_any = None, None
    for n in sizes:
        layout = Layout(n, args.density)
        need = layout.estimate_bytes(backend.name)
        if backend.free_bytes and need > 0.8 * backend.free_bytes:
            msg = (f"{count_label(n)} T cells ({layout.edge}³ grid): needs about {need / 2**30:.1f} GiB, more than "
                   f"80 % of the {backend.free_bytes / 2**30:.1f} GiB free")
            skipped.append(msg)
            common.log(f"skipped {msg}")
            continue
        try:
            res, floors = measure_size(layout, backend, args.steps, args.warmup, args.retries, args.retry_wait)
        except Exception as exc:  # report and go on: the other sizes still mean something
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            msg = f"{count_label(n)} T cells: FAILED with {exc.__class__.__name__}: {first}"
            failed.append(msg)
            common.log(msg)
            continue
        size_rows = rows_for_size(layout, res, floors, backend, bandwidth)
        rows.extend(size_rows)
        step_row = next(r for r in size_rows if r.extra["phase"] == "tcell_step")
        results.append({"layout": layout, "res": res, "step_row": step_row})
        floors_any, layout_any = floors, layout
        common.log(f"  T-cell step {common.fmt_time(step_row.s_per_call)}: {step_row.items_per_s:.3g} agent-updates/s")

    base_detail = None
    if args.baseline_steps > 0:
        common.log("baseline scenario step ...")
        try:
            def measure_base():
                return bench_baseline(backend, args.baseline_steps)
            brow, base_detail = common.measure_quietly(
                measure_base, lambda r: r[0].extra["other_load_cores"], lambda r: r[0].s_per_call,
                args.retries, args.retry_wait)
            rows.append(brow)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            failed.append(f"baseline step: FAILED with {exc.__class__.__name__}: {first}")
            common.log(failed[-1])

    info = common.device_info(backend)
    date = common.utc_now()
    steps_text = f"median of {args.steps} steps after {args.warmup} warm-up step{'s' if args.warmup != 1 else ''}"
    sizes_text = (", ".join(f"{count_label(r['layout'].n_agents)} T cells ({r['layout'].edge}³ voxels)" for r in results)
                  or "none measured")
    sizes_text += (f"; {args.density:g} T cells per voxel, tumour filling the block, vessels on 2 % of voxels; "
                   f"{steps_text}")
    meta = {
        "benchmark": "tcells",
        "date_utc": date,
        "git": common.git_provenance(),
        "gpusim_version": gpusim.__version__,
        "device": info,
        "sizes": [r["layout"].n_agents for r in results],
        "sizes_text": sizes_text,
        "grids": {count_label(r["layout"].n_agents): r["layout"].edge for r in results},
        "density_tcells_per_voxel": args.density,
        "repeat": args.steps,
        "warmup_steps": args.warmup,
        "bandwidth": bw,
        "target_agent_updates_per_s": TARGET_AGENT_UPDATES_PER_S,
        "target_conditions": TARGET_CONDITIONS,
        "floors": {ph: {"agent_B": f["agent"], "voxel_B": f["voxel"], "columns": f["lines"], "left_out": RARE.get(ph)}
                   for ph, f in (floors_any or {}).items()},
        "per_size": [{"n_agents": r["layout"].n_agents, "edge": r["layout"].edge, "n_voxels": r["layout"].n_voxels,
                      "setup_s": r["res"]["setup_s"], "warmup_s": r["res"]["warmup_s"],
                      "working_set_bytes": r["res"]["working_set_bytes"], "median_s": r["res"]["median"],
                      "samples_s": r["res"]["samples"], "agent_mix": r["res"]["mix"],
                      "other_load_cores": r["res"]["other_load_cores"]} for r in results],
        "baseline": base_detail,
        "skipped": skipped,
        "failed": failed,
        "wall_s": None,
        "other_load_cores_during_run": run_load.cores(),
        "disturbed_results": sorted({f"{r.operation.split(' — ')[0]} {r.size}" for r in rows
                                     if (r.extra.get("other_load_cores") or 0.0) > common.QUIET_CORES
                                     and r.extra.get("phase") in (None, "tcell_step")})
        + [f"copy bandwidth ({k})" for k, m in bw["methods"].items() if (m["other_load_cores"] or 0.0) > common.QUIET_CORES],
    }
    sections = []
    if results:
        sections += [target_section(results, bandwidth), breakdown_section(results),
                     floors_section(floors_any, layout_any)]
    sections.append(baseline_section(base_detail))
    if skipped or failed:
        sections.append("## Not measured\n\n" + "\n".join(f"- {s}" for s in failed + skipped) + "\n")
    sections = [s for s in sections if s]
    meta["wall_s"] = time.perf_counter() - t_start
    title = "gpusim T-cell step benchmark"
    labels = {"rate_label": "updates/s (agents or voxels)", "floor_label": "floor B/item"}
    stem = f"tcells_{backend.name}_{common.device_slug(info)}_{date[:10]}"
    jpath, mpath = common.write_results(args.out, stem, title, meta, rows, sections, **labels)
    print(common.header_markdown(title, meta))
    print(common.markdown_table(rows, bandwidth, **labels))
    for s in sections:
        print(s)
    common.log(f"wrote {jpath} and {mpath} ({meta['wall_s']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
