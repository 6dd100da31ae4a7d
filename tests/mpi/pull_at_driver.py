"""Run under ``mpiexec -n N`` with an output file and a solver: the fields of tests/mpi/fields_driver.py
stepped on N ranks, and ``BoxFieldRun.pull_at`` gathering one field at a set of voxels into a rank-0
array that holds -1 elsewhere: after 2 steps (a new set), after 3 more (the same set, read again) and
with a second set. Rank 0 writes whether each pull equals the gathered field at those voxels and left
the others alone; used by tests/test_mpi.py."""

import json
import sys
from types import SimpleNamespace

import numpy as np

from fields_driver import config
from gpusim.parallel import comm as mpi_comm
from gpusim.parallel.fields import BoxFieldRun

out, solver = sys.argv[1], sys.argv[2]
comm = mpi_comm.world()
run = BoxFieldRun(config(solver), comm)
shape = run.decomp.shape
rng = np.random.default_rng(11)
first = np.unique(rng.integers(0, int(np.prod(shape)), 60))
second = np.unique(np.concatenate([first[:10], rng.integers(0, int(np.prod(shape)), 25)]))
results = []
for steps, voxels, new in ((2, first, True), (3, first, False), (1, second, True)):
    run.advance(steps * run.dt_min)
    mirror = np.full(shape, -1.0, np.float32) if comm.rank == 0 else None
    sim = SimpleNamespace(state=SimpleNamespace(fields={"chemokine": mirror})) if comm.rank == 0 else None
    run.pull_at("chemokine", new, voxels if comm.rank == 0 else None, sim)
    whole = run.gather("chemokine")
    if comm.rank == 0:
        flat, want = mirror.reshape(-1), whole.reshape(-1)
        others = np.setdiff1d(np.arange(flat.size), voxels)
        results.append(bool(np.array_equal(flat[voxels], want[voxels]) and np.all(flat[others] == -1.0)))
if comm.rank == 0:
    with open(out, "w") as f:
        json.dump({"pulls": results, "gathered_bytes": run.gathered_bytes}, f)
