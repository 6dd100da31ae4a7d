"""Sample data: a tiny run (20³ voxels of 15 µm, a 90 µm tumour, 150 T cells, 30 min) written in seconds.

``tiny_config()`` is the run (a dict for :class:`gpusim.Simulation`); ``write_tiny_run(path)`` writes its
store; ``make_sample_data()`` is napari's File → Open Sample → gpusim → "Tiny tumour run".
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

#: simulated minutes of the sample run
TINY_MINUTES = 30.0


def tiny_config(seed: int = 7) -> dict:
    """A run every rule of which fires within half an hour (raised rates, as tests/test_cells_determinism's
    busy config): fields, tumour and T cells every 5 min, 20 tracked T cells every minute, events on."""
    return {
        "grid": {"shape": [20, 20, 20], "dx_um": 15.0}, "time": {"dt_min": 1.0, "duration_min": TINY_MINUTES},
        "seed": seed, "backend": "cpu",
        "substrates": [{"name": "mg"}, {"name": "o2"}, {"name": "chemokine"}],
        "vessels": {"kind": "random", "voxel_fraction": 0.02},
        "tumor": {"initial_radius_um": 90.0, "cycle_rate_per_min": 0.005, "hits_to_kill": 2,
                  "hit_recovery_min": 20.0, "apoptotic_clear_min": 60.0},
        "tcells": {"initial_count": 150, "placement": "tumor", "k_on_per_min": 0.5, "k_hit_per_min": 0.1,
                   "synapse_min": 15.0, "prolif_prob_per_kill": 0.5, "division_delay_min": 30.0,
                   "recruit_per_vessel_per_min": 0.005, "apoptosis_per_min": 1e-3, "speed_um_per_min": 6.0},
        "output": {"fields_every_min": 5.0, "tumor_every_min": 5.0, "tcells_every_min": 5.0,
                   "tracks_every_min": 1.0, "tracks_count": 20, "events": True,
                   "checkpoint_every_wall_min": None},
    }


def write_tiny_run(path, minutes: float = TINY_MINUTES, overwrite: bool = True):
    """Run :func:`tiny_config` for ``minutes`` into the store at ``path``; returns the Simulation."""
    from gpusim import Simulation

    sim = Simulation(tiny_config())
    sim.run(minutes=minutes, out=path, overwrite=overwrite, progress=False)
    return sim


def make_sample_data():
    """napari sample data: the tiny run written to a temporary store (removed when Python exits)."""
    from .reader import read_store

    tmp = Path(tempfile.mkdtemp(prefix="gpusim-sample-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    path = tmp / "tiny.zarr"
    write_tiny_run(path)
    return read_store(path)
