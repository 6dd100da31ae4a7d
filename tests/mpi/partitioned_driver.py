"""Run under ``mpiexec -n N``: the LOD fields of fields_driver's vessel-fed block with Dirichlet faces
(Mg on x_lo, y_hi, z_lo; chemokine, which has no per-voxel terms, on x_lo, x_hi, y_lo, z_hi), stepped
in ``parallel.lod_mode`` MODE on N ranks; saves the gathered fields (npz) and the bytes sent per step
(rank 0's and the sum over ranks); used by tests/test_mpi.py.

    mpiexec -n 2 python partitioned_driver.py OUT MINUTES RANKS_ZYX MODE [SHAPE]
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpusim  # noqa: E402
from fields_driver import config as fields_config  # noqa: E402
from gpusim.parallel import comm as mpi_comm  # noqa: E402
from gpusim.parallel.fields import BoxFieldRun  # noqa: E402

# Dirichlet values in the substrate's unit; the other faces zero-flux
FACES = {"mg": {"x_lo": "serum", "y_hi": 0.3, "z_lo": 0.2},
         "chemokine": {"x_lo": 2.0, "x_hi": 0.0, "y_lo": 0.0, "z_hi": 0.5}}


def config(mode="partitioned", shape=(14, 12, 10)):
    data = fields_config("lod", shape).to_dict()
    for sub in data["substrates"]:
        sub["boundary"] = dict(FACES[sub["name"]])
    data["parallel"] = {"lod_mode": mode}
    return gpusim.Config.model_validate(data)


def main(out, minutes, ranks_zyx, mode, shape):
    comm = mpi_comm.world()
    run = BoxFieldRun(config(mode, shape), comm, ranks_zyx=ranks_zyx)
    run.advance(minutes)
    fields = {name: run.gather(name) for name in run.plans}
    mine = run.message_bytes_per_step()
    total = {k: int(comm.allreduce_sum(np.int64(v))) for k, v in mine.items()}
    if comm.rank == 0:
        np.savez(out, **fields)
        with open(out + ".json", "w") as f:
            json.dump({"ranks_zyx": list(run.decomp.ranks_zyx), "n_sub": {n: p.n_sub for n, p in run.plans.items()},
                       "bytes_per_step_rank0": mine, "bytes_per_step_total": total}, f)


if __name__ == "__main__":
    shape = tuple(json.loads(sys.argv[5])) if len(sys.argv) > 5 else (14, 12, 10)
    main(sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], shape)
