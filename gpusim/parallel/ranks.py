"""What runs on several MPI ranks, and where: ``unsupported`` lists what a config cannot do across
ranks yet (``gpusim run`` under mpiexec refuses it with the list), ``rank_device`` gives a rank its GPU
for the partitioned LOD sweeps (``backend = "cuda"``), ``make_plans`` the substrates' field plans."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("gpusim")

__all__ = ["make_plans", "rank_device", "unsupported"]


def make_plans(cfg) -> dict:
    from ..fields.coefficients import make_plan

    return {s.name: make_plan(s, cfg) for s in cfg.substrates}


def unsupported(cfg, coordinated: bool = True) -> list:
    """What in ``cfg`` a run on several ranks cannot do yet (empty: it can). ``coordinated``: a
    ``gpusim run`` under mpiexec (rank 0 holds a whole-grid mirror, gpusim.parallel.run), which runs
    steady substrates, the lattice, T cells and events; else fields stepped alone (``advance``)."""
    out = []
    methods = {name: plan.method for name, plan in make_plans(cfg).items()}
    allowed = ("explicit", "lod", "steady") if coordinated else ("explicit", "lod")
    for name, method in methods.items():
        if method not in allowed:
            out.append(f"substrates.{name}: method {method!r} (only 'explicit' and 'lod' step on their own across "
                       "ranks; set method = \"lod\" or run on one rank)")
    if cfg.backend == "cuda" and cfg.parallel.lod_mode == "bitwise" and "lod" in methods.values():
        out.append("backend = 'cuda' with parallel.lod_mode = 'bitwise': the bitwise LOD's transposes run on CPU "
                   "ranks only; set parallel.lod_mode = \"partitioned\" (its sweeps run on each rank's GPU) or "
                   "backend = \"cpu\"")
    if not coordinated:
        if cfg.tumor is not None:
            out.append("[tumor]: the lattice runs across ranks only in a coordinated run (gpusim run)")
        if cfg.tcells is not None:
            out.append("[tcells]: T cells run across ranks only in a coordinated run (gpusim run)")
        if cfg.events:
            out.append("[[events]]: events run across ranks only in a coordinated run (gpusim run)")
    return out


def rank_device(cfg, comm):
    """The GPU backend of this rank's partitioned LOD sweeps: with ``backend = "cuda"`` on several ranks,
    the device of the rank's node-local number (modulo the devices the node shows); None (CPU ranks)
    otherwise. The other parts of a rank run on its CPU. Collective: when a rank has no usable GPU,
    every rank raises a BackendError (none is left waiting for the others)."""
    if cfg.backend != "cuda" or comm.size == 1:
        return None
    from ..backend import BackendError, cuda_status, select_backend

    ok, _ = cuda_status()
    missing = int(comm.allreduce_sum(np.int64(0 if ok else 1)))
    if not ok:
        select_backend("cuda")  # raises, saying why and what to do
    if missing:
        raise BackendError(f"backend 'cuda': {missing} of the {comm.size} MPI ranks have no usable CUDA device; "
                           "give every rank a GPU, or run with backend = \"cpu\"")
    import cupy

    n_gpus = cupy.cuda.runtime.getDeviceCount()
    local_rank, local_size = comm.local_rank, comm.local_size
    if local_rank == 0 and local_size > n_gpus:
        log.warning("gpusim: %d MPI ranks on this node share its %d GPU(s) (rank k takes GPU k mod %d); for one "
                    "GPU per rank start %d ranks per node", local_size, n_gpus, n_gpus, n_gpus)
    return select_backend("cuda", device=local_rank % n_gpus)
