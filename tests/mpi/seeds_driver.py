"""Run under ``mpiexec -n N``: one config (TOML) for each of several seeds as ``gpusim run`` runs it on N
ranks (gpusim.parallel.run), one launch for all seeds; rank 0 saves every seed's timeseries (JSON:
seed -> column -> values). Used by tests/test_mpi.py for the population statistics of the partitioned
LOD mode over seeds.

    mpiexec -n 2 python seeds_driver.py CONFIG.toml OUT.json MINUTES SEED [SEED ...]
"""

import json
import sys

from rich.console import Console

from gpusim import Config
from gpusim.parallel import comm as mpi_comm
from gpusim.parallel.run import _drive, _mirror


def main(config_path, out, minutes, seeds):
    comm = mpi_comm.world()
    base = Config.from_toml(config_path)
    console = Console(quiet=True)
    results = {}
    for seed in seeds:
        cfg = base.with_overrides({"seed": seed, "backend": "cpu"})

        def body(mirror, box, seed=seed):
            mirror.run(minutes=minutes, progress=False)
            results[seed] = {k: [float(v) for v in vals] for k, vals in mirror.timeseries.items()}
            return 0

        _drive(cfg, comm, console, lambda box, cfg=cfg: _mirror(cfg, box), body)
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), [int(s) for s in sys.argv[4:]])
