"""gpusim: a GPU-accelerated spatial simulator of the tumour microenvironment.

3D substrate fields (ionised Mg2+, O2, chemokine) on a voxel grid, solved on the GPU (CuPy, CUDA C) or
the CPU (numba), with the same arithmetic on both. Start with::

    import gpusim
    cfg = gpusim.scenario_config("diffusion")
    sim = gpusim.Simulation(cfg)
    sim.run(minutes=60)
"""

from importlib.metadata import PackageNotFoundError, version

from .agents.rules import TumorState
from .agents.tcell_store import TCellState
from .config import Config, ConfigError
from .scenarios import scenario_config
from .simulation import FieldNotFiniteError, RunSummary, Simulation
from .sweep import open_sweep  # lazy: imports pandas/pyarrow only when called



def open_run(path):
    """Open a run store written by ``Simulation.run(out=...)`` / ``gpusim run --out`` (see
    :func:`gpusim.io.reader.open_run`): config, timeseries, lazy fields and tumour, T-cell frames."""
    from .io.reader import open_run as _open_run

    return _open_run(path)


try:
    __version__ = version("gpusim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Config", "ConfigError", "FieldNotFiniteError", "RunSummary", "Simulation", "TCellState", "TumorState",
           "open_run", "open_sweep", "scenario_config", "__version__"]
