"""Substrate fields stepped on one rank's box: explicit sub-steps with a halo exchange before each,
LOD steps through transposes; both bitwise equal to the single-process run (the first slice of issue 6).

    from gpusim.parallel import comm, fields
    run = fields.BoxFieldRun(cfg, comm.world())          # under mpiexec -n N
    run.advance(minutes=60)
    whole = run.gather("mg")                            # the whole grid on rank 0, None elsewhere

Why bitwise: the explicit sub-step is a gather over the 7-point stencil, so a voxel's new value depends
only on its own and its six neighbours' old values and the same constants, whoever computes it. Each
rank runs the same kernel (``explicit_step``) on its box plus one ghost layer on every face that has a
neighbour: the box's voxels read their neighbours from the ghosts, filled by the exchange with copied
(never recombined) values; the ghosts' own new values are wrong (the kernel sees them as a grid face)
and are overwritten by the next exchange. At a face of the global grid there is no ghost and the
kernel applies the boundary condition exactly as on one process.

LOD (``parallel.lod_mode = "bitwise"``): a Thomas sweep needs its whole line, so the field moves
between layouts (``regions.Regions``) instead of cutting lines: to z-slabs (ranks (P, 1, 1): whole x and y
lines) for the x and y sweeps (``lod_xy_pass``), to z-pencils (ranks (1, a, b): whole z lines) for the
z sweep (``lod_z_pass``), and back to the boxes after the substrate's ``n_sub`` steps. Every line is
solved whole by one rank with the single-process arithmetic, so the bits are the same; the price is two
all-to-all moves of the whole field per LOD step (``message_bytes``).

LOD (``parallel.lod_mode = "partitioned"``): the field and its operands stay on the process-grid boxes
(no ghosts) and a line that crosses ranks is solved where it lies (``partitioned.PartitionedLOD``:
each rank eliminates its segment, the ranks on the line exchange and solve a reduced system of two
unknowns per rank, a few float64 per line, then back-substitute). Not bitwise: within ~1e-7 of the
single-process run per step (tests/test_mpi.py states the tolerances). With ``backend = "cuda"`` these
sweeps run on each rank's GPU (``ranks.rank_device``: the device of the rank's node-local number): the box and
its operands are copied up once per step, the ``n_sub`` LOD steps run there (kernels/partitioned.cu on
the cut axes, fields.cu on the others, bit for bit the CPU rank's), and the box comes back; the rest of
the rank (explicit and steady substrates, the lattice, the T cells) runs on its CPU.

Steady substrates (the multigrid method, O₂'s default): in a coordinated run (gpusim.parallel.run)
``solve_steady`` sends each rank its box of the field and operands, the ranks solve on the boxes with
``gpusim.parallel.steady`` (bitwise the one-process solve) and rank 0 gathers the solution.

In a coordinated run the fields stay on the ranks between steps (``held``: the stepped ones, and the
steady ones on the boxes from one solve to the next): rank 0 sends the operands it holds
(``load``: the serum values; the lattice operands come from the ranks' cell boxes, and the implant
sources, boluses and holds are the ranks' own, ``parallel.events``), a field only when its mirror
changed it (``push``), and gathers one only when it reads it whole (``pull``); the timeseries
statistics are combined over the ranks (``census``).

Scope of a run stepped here alone (``advance``; each refused with a clear message on more than one
rank): ``explicit`` and ``lod`` (either mode) substrates; not the ``steady`` method, the tumour, T
cells or events (a coordinated run has them). The initial state (uniform or steady fields, vessels) is set up by the
single-process code on every rank and cut to the box, so a run's memory per rank is still the whole
grid at set-up.
"""

from __future__ import annotations

import math

import numpy as np

from .decomposition import Box, Decomposition, choose_process_grid
from .events import BoxEvents
from .halo import Halo, gather, scatter, scatter_box
from .partitioned import PartitionedLOD
from .ranks import make_plans, rank_device, unsupported
from .regions import Regions
from .steady import DistributedSteady

__all__ = ["BoxFieldRun"]


class BoxFieldRun:
    """The fields of ``cfg`` on rank ``comm.rank`` of ``comm.size`` (see the module docstring)."""

    def __init__(self, cfg, comm, ranks_zyx=None, setup=None, coordinated=False, device=None):
        from ..fields.solver import FieldUpdate
        from ..backend import select_backend
        from ..simulation import Simulation

        problems = unsupported(cfg, coordinated) if comm.size > 1 else []
        if problems:
            raise ValueError("this config cannot run on several MPI ranks yet:\n  " + "\n  ".join(problems))
        self.comm = comm
        self.coordinated = coordinated
        ranks = ranks_zyx if ranks_zyx is not None else cfg.parallel.ranks_zyx
        shape = tuple(int(n) for n in cfg.grid.nzyx)
        self.decomp = Decomposition(shape, n_ranks=comm.size, ranks_zyx=ranks)
        self.halo = Halo(comm, self.decomp, width=1)
        self.dt_min = float(cfg.time.dt_min)
        self.redistributed_bytes = 0
        self._moves = {}  # (source, target) layouts -> Regions
        self.scattered_bytes = 0
        self.gathered_bytes = 0  # rank 0: fields gathered into the mirror (pull)
        self.lod_mode = cfg.parallel.lod_mode
        #: the GPU this rank's partitioned LOD sweeps run on (``rank_device``; a test hands one in), or None
        self.device = device if device is not None else rank_device(cfg, comm)
        self.device_bytes = 0  # copied between this rank's host and its GPU (fields and operands)
        self.partitioned = PartitionedLOD(comm, self.decomp, self.device)
        if self.lod_mode == "bitwise" and any(p.method == "lod" for p in make_plans(cfg).values()):
            # (z-slabs need nz >= ranks: bitwise LOD only)
            self.slabs = Decomposition(shape, ranks_zyx=(comm.size, 1, 1))
            self.pencils = Decomposition(shape, ranks_zyx=choose_process_grid(comm.size, (1,) + shape[1:]))
        if coordinated:
            # rank 0 sends the operands every step and a field when its mirror changed it (load, push),
            # and the steady substrates' when a solve is due (solve_steady)
            fu = FieldUpdate(cfg, select_backend("cpu"))
            self.plans = {n: p for n, p in fu.plans.items() if p.method != "steady"}
            self.steady_plans = {n: p for n, p in fu.plans.items() if p.method == "steady"}
            self._solve_plans = fu.plans  # what solve_steady may solve: init = "steady" solves every substrate
            self.kernels = fu._fk
            self.steady = None  # grids of one multigrid level are solved on rank 0 alone
            self.steady_bytes = 0  # rank 0: steady boxes sent and gathered, the solves' own messages
            if (self.steady_plans or cfg.init == "steady") and DistributedSteady.supported(shape):
                self.steady = DistributedSteady(comm, self.decomp)
            self.fields, self._operands, self._spare = {}, {}, {}
            # implant sources change only when the set of active implants does (events.ApplyEvents makes
            # new arrays then): rank 0 numbers each substrate's source array, and the ranks keep their cut
            # of it until the number changes, instead of a scatter of the whole grid every step
            self._src_ref, self._src_version, self._src_cut = {}, {}, {}
            self.step_count = 0
            self._start_step = 0
            #: the ranks' lattice once they hold it (a CellWorker: the lattice operands ``vessel`` and
            #: ``n_tumor`` then come from its boxes, not from rank 0's mirror)
            self.lattice = None
            #: boluses, holds and implant sources over this rank's boxes (gpusim.parallel.events)
            self.events = BoxEvents(cfg, self)
            return
        # the single-process set-up (initial fields, vessels), cut to the box below; ``setup``: one built already
        self.setup = setup if setup is not None else Simulation(cfg.with_overrides({"backend": "cpu"}))
        st = self.setup.state
        fu = self.setup.field_update
        self.plans = fu.plans
        self.kernels = fu._fk
        # with ghosts (explicit; bitwise LOD moves its interior), or the box alone (partitioned LOD)
        self.fields = {name: (self._cut("box") if self._layout(name) == "box" else self.halo.local_from_global)(
            np.asarray(a)) for name, a in st.fields.items()}
        self.step_count = int(st.step)
        self._start_step = self.step_count
        # each substrate's (flags, vessel, n_tumor, n_tcell, src) where its kernels read them: explicit
        # steps on this rank's box with ghosts, bitwise LOD's x/y sweeps on its z-slab, partitioned LOD on
        # its box (dummies stay dummies)
        self._operands, self._spare = {}, {}
        for name, plan in self.plans.items():
            flags, *arrays = fu._operands(st, name)
            cut = self._cut(self._layout(name))
            self._operands[name] = (flags, *(a if a.shape == (1, 1, 1) else cut(np.asarray(a)) for a in arrays))
            if plan.method == "explicit":
                self._spare[name] = np.empty_like(self.fields[name])  # the explicit step's second buffer

    @property
    def held(self) -> tuple:
        """The substrates whose fields a coordinated run's ranks keep between steps: the stepped ones
        and the steady ones (those on their boxes, kept from one solve to the next)."""
        return tuple(self.plans) + tuple(self.steady_plans if self.steady is not None else ())

    def _layout(self, name) -> str:
        """Where substrate ``name``'s kernels read their operands: ``halo`` (explicit: the box plus
        ghosts), ``slab`` (bitwise LOD's x/y sweeps) or ``box`` (partitioned LOD, and a coordinated
        run's steady fields between solves: the box alone)."""
        if name not in self.plans:
            return "box"
        if self.plans[name].method != "lod":
            return "halo"
        return "box" if self.lod_mode == "partitioned" else "slab"

    def _cut(self, layout):
        """How a whole-grid array every rank holds is cut for ``layout``."""
        if layout == "halo":
            return self.halo.local_from_global
        decomp = self.slabs if layout == "slab" else self.decomp
        return lambda a: np.ascontiguousarray(a[decomp.box(self.comm.rank).slices])

    # -- coordinated runs (gpusim.parallel.run): rank 0's mirror sends the operands every step -----------
    def header(self, sim) -> dict:
        """Rank 0: what the other ranks need to know of this step before ``load``: each stepped
        substrate's serum value (events change it) and operand flags (sources come and go)."""
        fu = sim.field_update
        out = {}
        for name in self.plans:
            flags = fu._operands(sim.state, name)[0]
            src = sim.state.sources.get(name)
            if name not in self._src_ref or src is not self._src_ref[name]:  # a new array: the ranks need it
                self._src_ref[name] = src
                self._src_version[name] = self._src_version.get(name, 0) + 1
            out[name] = {"serum": fu.plans[name].serum, "flags": int(flags), "src_version": self._src_version[name]}
        return {"op": "fields", "substrates": out, "time_min": float(sim.state.time_min)}

    def load(self, header: dict, sim=None) -> None:
        """Every rank: this step's operands from rank 0 (``sim``, its mirror; None elsewhere), cut to the
        layout each substrate's kernels read, and the fields named in ``header["push"]`` (those the
        mirror changed, or all at the first step; the others stay where the last step left them)."""
        from ..fields import layout as L

        st = None if sim is None else sim.state
        fu = None if sim is None else sim.field_update
        cache = {}
        dummy_u8, dummy_f32 = np.zeros((1, 1, 1), np.uint8), np.zeros((1, 1, 1), np.float32)
        for name, plan in self.plans.items():
            h = header["substrates"][name]
            if plan.serum != h["serum"]:
                plan.set_serum(h["serum"])  # the same call rank 0's events made: the same coefficients
            flags = int(h["flags"])
            ops = fu._operands(st, name)[1:] if fu is not None else (None,) * 4
            arrays = []
            for bit, key, whole, dtype, dummy in ((L.HAS_VESSEL, "vessel", ops[0], np.uint8, dummy_u8),
                                                  (L.HAS_TUMOR, "n_tumor", ops[1], np.uint8, dummy_u8),
                                                  (L.HAS_TCELL, "n_tcell", ops[2], np.uint8, dummy_u8)):
                arrays.append(self._part(cache, key, self._layout(name), whole, dtype) if flags & bit else dummy)
            src = dummy_f32
            if flags & L.HAS_SRC:
                version, cut = self._src_cut.get(name, (None, None))
                if version != h["src_version"]:  # the active implants changed: this rank's cut, made here
                    box = self.layout_boxes(self._layout(name))[self.comm.rank]
                    cut = self.events.source(name, header["time_min"], box)
                    self._src_cut[name] = (h["src_version"], cut)
                src = cut
            self._operands[name] = (flags, *arrays, src)
        self.push(header["push"], sim)

    def layout_boxes(self, layout) -> list:
        """Every rank's box of the arrays of ``layout`` (:meth:`_layout`; a halo array's box includes
        its ghosts)."""
        if layout == "halo":
            d, w = self.decomp, self.halo.width
            return [Box(tuple(o - lo for o, (lo, _) in zip(d.box(r).offset, d.ghosts(r, w))),
                        tuple(n + lo + hi for n, (lo, hi) in zip(d.box(r).shape, d.ghosts(r, w))))
                    for r in range(self.comm.size)]
        return (self.slabs if layout == "slab" else self.decomp).boxes()

    def _part(self, cache, key, layout, whole, dtype):
        """This rank's cut for ``layout`` of rank 0's whole-grid array ``whole``, or of the ranks'
        lattice array ``key`` when they hold the lattice (:attr:`lattice`; once per key and layout)."""
        if (key, layout) not in cache and self.lattice is not None and key in self.lattice.OPERANDS:
            cache[key, layout] = self.lattice.operand(key, self.layout_boxes(layout))
        if (key, layout) not in cache:
            if layout == "halo":
                cache[key, layout] = scatter(self.comm, self.halo, whole)
            else:
                cache[key, layout] = scatter_box(self.comm, self.slabs if layout == "slab" else self.decomp,
                                                 whole, dtype)
            self.scattered_bytes += cache[key, layout].nbytes
        return cache[key, layout]

    def hold(self, msg: dict, sim=None) -> None:
        """Every rank: the active holds ``msg["events"]`` on held field ``msg["name"]`` clamped over its
        box (gpusim.parallel.events); a hold over the tumour reads ``n_tumor`` over the box, from the
        ranks' lattice (or rank 0's mirror, ``sim``, before they hold it)."""
        name = msg["name"]
        n_tumor = None
        if msg["tumor"]:
            layout = "slab" if self.holder(name) is not self.decomp else "box"
            whole = None if sim is None else sim.state.n_tumor
            n_tumor = self._part({}, "n_tumor", layout, whole, np.uint8)
        self.events.hold(name, msg["events"], n_tumor)

    def push(self, names, sim=None) -> None:
        """Every rank: the fields ``names`` from rank 0's mirror ``sim`` (None elsewhere) into the ranks'
        layouts, replacing what they held."""
        for name in names:
            whole = None if sim is None else sim.state.fields[name]
            self.fields[name] = self._part({}, "field:" + name, self._layout(name), whole, np.float32)
            if name in self.plans and self.plans[name].method == "explicit" and self._spare.get(name) is None:
                self._spare[name] = np.empty_like(self.fields[name])

    def pull(self, names, sim=None) -> None:
        """Every rank: the fields ``names`` gathered from the ranks into rank 0's mirror ``sim``."""
        for name in names:
            whole = self.gather(name)
            if sim is not None:
                sim.state.fields[name][...] = whole
                self.gathered_bytes += whole.nbytes - self.interior(name).nbytes


    def census(self, header: dict, n_tumor=None):
        """Every rank: the timeseries statistics of the held fields ``header["names"]`` combined over
        the ranks (gpusim.census, bitwise the single-process row), and with ``header["mg_live"]`` (the
        live tumour count) Mg's (mean, min) over the live tumour. ``n_tumor``: rank 0's whole-grid
        array, cut to Mg's layout when Mg's operands do not hold it. Returns ({name: stats}, mg pair)."""
        from .. import census as C
        from .. import reduce as red  # the CPU ranks' reduce kernels
        from ..fields import layout as L

        n_voxels = int(np.prod(self.decomp.shape))
        stats = {name: C.field_stats(red, np.ascontiguousarray(self.interior(name)), n_voxels, comm=self.comm)
                 for name in header["names"]}
        mg = None
        if header.get("mg_live") == 0:
            mg = (math.nan, math.nan)  # no live tumour: what census.mg_tumor gives, without moving n_tumor
        elif header.get("mg_live") is not None:
            flags, _, nt, _, _ = self._operands.get("mg", (0, None, None, None, None))  # none for steady Mg
            if not flags & L.HAS_TUMOR:
                nt = self._part({}, "n_tumor", self._layout("mg"), n_tumor, np.uint8)
            if self._layout("mg") == "halo":
                nt = nt[self.halo.interior]
            mg = C.mg_tumor(red, np, np.ascontiguousarray(self.interior("mg")), np.ascontiguousarray(nt), n_voxels,
                            int(header["mg_live"]), comm=self.comm)
        return stats, mg

    def steady_header(self, state, fu, name: str, tol: float) -> dict:
        """Rank 0: the broadcast that starts a steady solve of ``name`` on all ranks (``solve_steady``)."""
        return {"op": "steady", "name": name, "serum": fu.plans[name].serum,
                "flags": int(fu._operands(state, name)[0]), "tol": float(tol), "time_min": float(state.time_min)}

    def solve_steady(self, header: dict, state=None, fu=None):
        """Every rank: the steady solve of ``header``'s substrate on the boxes (gpusim.parallel.steady),
        its operands sent from rank 0's mirror (``state``, ``fu``; None elsewhere). With
        ``header["keep"]`` the ranks hold the field (:attr:`held`): the solve starts from their copy and
        the solution stays on their boxes (the mirror's copy is then stale); without it (set-up) the
        field is sent from the mirror and the solution gathered back into it. Returns (SteadyInfo,
        seconds of this rank's solve)."""
        import time

        from ..fields import layout as L
        from ..fields import mg_cpu

        name = header["name"]
        keep = bool(header.get("keep"))
        plan = self._solve_plans[name]
        if plan.serum != header["serum"]:
            plan.set_serum(header["serum"])  # the call rank 0's events made: the same coefficients
        flags = int(header["flags"])
        ops = fu._operands(state, name)[1:] if fu is not None else (None,) * 4
        own = self.decomp.box(self.comm.rank).n_voxels
        total = int(np.prod(self.decomp.shape))
        arrays = []
        for bit, whole, dtype in ((L.HAS_VESSEL, ops[0], np.uint8), (L.HAS_TUMOR, ops[1], np.uint8),
                                  (L.HAS_TCELL, ops[2], np.uint8), (L.HAS_SRC, ops[3], np.float32),
                                  (-1, None if state is None else state.fields[name], np.float32)):
            if bit != -1 and not flags & bit:
                arrays.append(np.zeros((1, 1, 1), dtype))
                continue
            if bit == -1 and keep:
                arrays.append(self.steady.local(self.fields[name]))  # the ranks' own copy
                continue
            if bit == L.HAS_SRC:  # the implants' source over this rank's box, made here
                arrays.append(self.steady.local(self.events.source(name, header["time_min"],
                                                                   self.decomp.box(self.comm.rank))))
                continue
            key = {L.HAS_VESSEL: "vessel", L.HAS_TUMOR: "n_tumor", L.HAS_TCELL: "n_tcell"}.get(bit)
            if self.lattice is not None and key is not None:  # the ranks hold the lattice
                arrays.append(self.steady.local(self.lattice.operand(key, self.decomp.boxes())))
                continue
            arrays.append(self.steady.local(scatter_box(self.comm, self.decomp, whole, dtype)))
            if self.comm.rank == 0:
                self.steady_bytes += (total - own) * np.dtype(dtype).itemsize
        *operands, c = arrays
        sent, received = self.steady.bytes_sent, self.steady.bytes_received
        t0 = time.perf_counter()
        info = self.steady.solve(mg_cpu, c, plan.coef, plan.bc_type, plan.bc_value, *operands, flags,
                                 tol=header["tol"])
        seconds = time.perf_counter() - t0
        solution = np.ascontiguousarray(c[self.steady.halo.interior])
        if self.comm.rank == 0:
            self.steady_bytes += (self.steady.bytes_sent - sent) + (self.steady.bytes_received - received)
        if keep:
            self.fields[name] = solution
            return info, seconds
        whole = gather(self.comm, self.decomp, solution)
        if self.comm.rank == 0:
            state.fields[name][...] = whole
            self.steady_bytes += (total - own) * 4  # the gathered solution
        return info, seconds

    def step(self) -> None:
        """One step of every substrate: ``n_sub`` explicit sub-steps (each after a halo exchange) or LOD
        steps (through the slab and pencil layouts, or partitioned on the boxes)."""
        for name, plan in self.plans.items():
            if plan.method == "lod" and self.lod_mode == "partitioned":
                flags, *ops = self._operands[name]
                c = self.fields[name]
                if self.device is not None:  # a GPU rank: the box and its operands up once, n_sub steps there
                    c, ops = self.device.asarray(c), [self.device.asarray(a) for a in ops]
                    self.device_bytes += 2 * c.nbytes + sum(a.nbytes for a in ops)
                for _ in range(plan.n_sub):
                    self.partitioned.step(c, plan.coef, plan.bc_type, plan.bc_value, *ops, flags)
                if self.device is not None:
                    self.fields[name][...] = self.device.to_host(c)
                continue
            if plan.method == "lod":
                self._lod(name, plan)
                continue
            flags, vessel, nt, nc, src = self._operands[name]
            a, b = self.fields[name], self._spare[name]
            for _ in range(plan.n_sub):
                self.halo.exchange(a)
                self.kernels.explicit_step(a, b, plan.coef, plan.bc_type, plan.bc_value, vessel, nt, nc, src, flags)
                a, b = b, a
            self.fields[name], self._spare[name] = a, b
        self.step_count += 1

    def _move(self, src, dst, a):
        key = (id(src), id(dst))
        if key not in self._moves:  # the plan between two layouts is computed once
            self._moves[key] = Regions.between(self.comm, src, dst)
        moved = self._moves[key]
        before = moved.bytes_sent
        out = moved.fill(a)
        self.redistributed_bytes += moved.bytes_sent - before
        return out

    def _lod(self, name, plan) -> None:
        flags, vessel, nt, nc, src = self._operands[name]
        k = self.kernels
        # coordinated: the field lives on the slabs between steps; standalone: on the boxes
        c = self.fields[name] if self.coordinated else self._move(self.decomp, self.slabs,
                                                                  np.ascontiguousarray(self.interior(name)))
        for _ in range(plan.n_sub):
            k.lod_xy_pass(c, plan.coef, plan.bc_type, plan.bc_value, vessel, nt, nc, src, flags)
            c = self._move(self.slabs, self.pencils, c)
            k.lod_z_pass(c, plan.coef, plan.bc_type, plan.bc_value)
            c = self._move(self.pencils, self.slabs, c)
        if self.coordinated:
            self.fields[name] = c
        else:
            self.fields[name][self.halo.interior] = self._move(self.slabs, self.decomp, c)

    def advance(self, minutes: float) -> int:
        n = int(round(float(minutes) / self.dt_min))
        for _ in range(n):
            self.step()
        return n

    def interior(self, name: str) -> np.ndarray:
        """This rank's own voxels of field ``name`` (a view; its z-slab for bitwise LOD in a coordinated
        run, its box for partitioned LOD)."""
        layout = self._layout(name)
        if layout == "box" or (self.coordinated and layout == "slab"):
            return self.fields[name]
        return self.fields[name][self.halo.interior]

    def holder(self, name: str) -> Decomposition:
        """The decomposition whose boxes hold the ranks' :meth:`interior` of field ``name``."""
        return self.slabs if self.coordinated and self._layout(name) == "slab" else self.decomp

    def gather(self, name: str, root: int = 0):
        """Field ``name`` over the whole grid on ``root`` (None on the other ranks)."""
        return gather(self.comm, self.holder(name), np.ascontiguousarray(self.interior(name)), root)

    @property
    def partitioned_bytes(self) -> int:
        """Bytes this rank sent in the partitioned LOD sweeps' reduced-row exchanges so far."""
        return self.partitioned.bytes_sent

    def message_bytes_per_step(self) -> dict:
        """Bytes this rank sent per step so far: ``halo`` (explicit sub-steps), ``transpose`` (bitwise
        LOD), ``partitioned`` (partitioned LOD's reduced rows) and ``scatter`` (a coordinated run's load)."""
        steps = max(1, self.step_count - self._start_step)
        return {"halo": self.halo.bytes_sent // steps, "transpose": self.redistributed_bytes // steps,
                "partitioned": self.partitioned_bytes // steps, "scatter": self.scattered_bytes // steps}
