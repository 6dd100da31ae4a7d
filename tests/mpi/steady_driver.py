"""Run under ``mpiexec -n N``: the steady O2 solve (tests/test_steady.py's problem: vessels, tumour and
T-cell uptake, Dirichlet faces) distributed over N ranks (gpusim.parallel.steady), gathered on rank 0
and saved (npz), with each rank's bytes sent and the solve's info (JSON per rank); used by
tests/test_mpi_steady.py.

    steady_driver.py OUT SHAPE RANKS_ZYX RUNS COLOUR_EXCHANGE
    (SHAPE, RANKS_ZYX as JSON lists; RUNS: JSON per-axis (start, length) runs or null; COLOUR_EXCHANGE 1/0)
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_steady import ALL, DUMMY_F32, o2_problem  # noqa: E402

from gpusim.fields import mg_cpu  # noqa: E402
from gpusim.parallel import comm as mpi_comm  # noqa: E402
from gpusim.parallel.decomposition import Decomposition  # noqa: E402
from gpusim.parallel.halo import gather  # noqa: E402
from gpusim.parallel.steady import DistributedSteady  # noqa: E402


def problem(shape):
    """(initial field, coef, bc_type, bc_value, vessel, tumour, tcell): O2 from 38 mmHg, a tumour of
    0.35 of the z extent in radius."""
    coef, bc_type, bc_value, vessel, tumor, tcell = o2_problem(tuple(shape), radius_um=0.35 * 15.0 * shape[0])
    return np.full(tuple(shape), 38.0, np.float32), coef, bc_type, bc_value, vessel, tumor, tcell


def main(out, shape, ranks_zyx, runs, colour_exchange):
    comm = mpi_comm.world()
    d = Decomposition.from_runs(shape, runs) if runs is not None else Decomposition(shape, ranks_zyx=ranks_zyx)
    solver = DistributedSteady(comm, d)
    solver.colour_exchange = colour_exchange
    c0, coef, bc_type, bc_value, *ops = problem(shape)
    box = d.box(comm.rank).slices
    c = solver.local(c0[box])
    info = solver.solve(mg_cpu, c, coef, bc_type, bc_value, *(solver.local(a[box]) for a in ops), DUMMY_F32, ALL)
    whole = gather(comm, d, np.ascontiguousarray(c[solver.halo.interior]))
    if comm.rank == 0:
        np.savez(out, field=whole)
    with open(f"{out}.rank{comm.rank}.json", "w") as f:
        json.dump({"rank": comm.rank, "ranks_zyx": list(d.ranks_zyx), "box": [list(d.box(comm.rank).offset),
                   list(d.box(comm.rank).shape)], "cycles": info.cycles, "converged": info.converged,
                   "max_residual": info.max_residual, "handoff_level": solver.handoff_level,
                   "bytes_sent": solver.bytes_sent, "bytes_received": solver.bytes_received}, f)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5] == "1")
