"""Run under ``mpiexec -n N``: the explicit or LOD fields of a small vessel-fed block on N ranks, gathered on
rank 0 and saved (npz) with each rank's box and halo bytes; used by tests/test_mpi.py."""

import json
import sys

import numpy as np

import gpusim
from gpusim.parallel import comm as mpi_comm
from gpusim.parallel.fields import BoxFieldRun


def config(solver="explicit", shape=(14, 12, 10)):
    return gpusim.Config.model_validate({
        "seed": 4, "init": "given", "solver": solver, "grid": {"shape": list(shape), "dx_um": 15.0},
        "substrates": [{"name": "mg", "initial": 0.1, "serum": 0.47},
                       {"name": "chemokine", "initial": 1.0, "serum": 0.0, "decay_per_min": 0.05}],
        "vessels": {"kind": "random", "voxel_fraction": 0.05}, "parallel": {"lod_mode": "bitwise"}})


def main(out, minutes, ranks_zyx, solver):
    comm = mpi_comm.world()
    run = BoxFieldRun(config(solver), comm, ranks_zyx=ranks_zyx)
    run.advance(minutes)
    fields = {name: run.gather(name) for name in run.plans}
    boxes = [[list(b.offset), list(b.shape)] for b in run.decomp.boxes()]
    if comm.rank == 0:
        np.savez(out, **fields)
        with open(out + ".json", "w") as f:
            json.dump({"ranks_zyx": list(run.decomp.ranks_zyx), "boxes": boxes,
                       "bytes_per_step_rank0": run.message_bytes_per_step()}, f)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4])
