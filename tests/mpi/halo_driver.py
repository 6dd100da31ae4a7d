"""Run under ``mpiexec -n N``: every rank fills its box of a 7 x 6 x 5 grid with the global voxel
index, exchanges halos, and checks its whole local array (ghosts, edges and corners included) against
the global array; gather and scatter round-trip it. Writes one JSON file per rank; used by
tests/test_mpi.py."""

import json
import sys

import numpy as np

from gpusim.parallel import comm as mpi_comm
from gpusim.parallel import halo as H
from gpusim.parallel.decomposition import Decomposition

c = mpi_comm.world()
shape = (7, 6, 5)
d = Decomposition(shape, n_ranks=c.size, ranks_zyx=json.loads(sys.argv[1]))
h = H.Halo(c, d, 1)
g = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
local = np.full(h.local_shape, -1.0)
local[h.interior] = g[h.box.slices]
h.exchange(local)
whole = H.gather(c, d, np.ascontiguousarray(local[h.interior]))
back = H.scatter(c, h, g if c.rank == 0 else None)
with open(f"{sys.argv[2]}/rank{c.rank}.json", "w") as f:
    json.dump({"rank": c.rank, "halo": bool(np.array_equal(local, h.local_from_global(g))),
               "gather": None if whole is None else bool(np.array_equal(whole, g)),
               "scatter": bool(np.array_equal(back, h.local_from_global(g))),
               "ghosts": [list(x) for x in h.ghosts]}, f)
