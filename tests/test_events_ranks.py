"""Therapy events applied by the ranks over their boxes (gpusim.parallel.events): in-process ranks
(tests/threadcomm.py) of several process grids make exactly the single-process event regions,
bolus doses and implant source arrays over their boxes and over boxes grown by a ghost layer, for
spheres inside the grid, across its faces, and too small to hold a voxel centre (the centre's voxel).
Under ``mpiexec`` whole runs with boluses, holds and an implant are compared with one process's store
in tests/test_mpi.py."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gpusim
from gpusim.events import ApplyEvents
from gpusim.parallel.decomposition import Box, Decomposition
from gpusim.parallel.events import BoxEvents
from gpusim.parallel.regions import intersect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threadcomm import run_ranks  # noqa: E402

SHAPE = (11, 9, 13)
SPHERES = [([80.0, 70.0, 100.0], 40.0), ([0.0, 0.0, 190.0], 55.0), ([101.0, 52.0, 61.0], 1.0),
           ([160.0, 130.0, 194.0], 3.0)]  # inside, across a corner, two holding no voxel centre


def _cfg():
    events = []
    for k, (c, r) in enumerate(SPHERES):
        events.append({"name": f"bolus{k}", "type": "bolus", "time_min": 0.0, "substrate": "mg", "center_um": c,
                       "radius_um": r, "amount_umol": 1e-7 * (k + 1)})
        events.append({"name": f"implant{k}", "type": "implant", "time_min": 0.0, "substrate": "mg",
                       "center_um": c, "radius_um": r, "rate_umol_per_min": 3e-8 * (k + 1)})
    return gpusim.Config.model_validate({"grid": {"shape": list(SHAPE), "dx_um": 15.0}, "substrates": [{"name": "mg"}],
                                         "backend": "cpu", "seed": 2, "events": events})


def _grown(box, shape):
    return intersect(Box(tuple(o - 1 for o in box.offset), tuple(n + 2 for n in box.shape)), Box((0, 0, 0), shape))


@pytest.mark.parametrize("size,ranks_zyx", [(1, None), (2, (2, 1, 1)), (3, (1, 3, 1)), (4, (2, 1, 2))])
def test_the_ranks_make_the_single_process_regions_doses_and_sources(size, ranks_zyx):
    cfg = _cfg()
    sim = gpusim.Simulation(cfg)
    whole_masks = [sim.schedule.mask(ev) for ev in cfg.events]
    sources = sim.schedule.sources(0.0)["mg"]
    before = np.array(sim.state.fields["mg"], copy=True)
    op = ApplyEvents()
    for ev in sim.schedule.boluses_due(0):
        op.dose(sim, ev)
    dosed = sim.state.fields["mg"]
    assert not np.array_equal(dosed, before)
    d = Decomposition(SHAPE, n_ranks=size, ranks_zyx=ranks_zyx)
    bolus_indices = [i for i, ev in enumerate(cfg.events) if ev.type == "bolus"]

    def work(comm):
        box = d.box(comm.rank)
        field = np.array(before[box.slices], copy=True)
        run = SimpleNamespace(comm=comm, decomp=d, holder=lambda name: d, interior=lambda name: field)
        ev = BoxEvents(cfg, run)
        masks = [(ev.mask(i, box), ev.mask(i, _grown(box, SHAPE))) for i in range(len(cfg.events))]
        src = (ev.source("mg", 0.0, box), ev.source("mg", 0.0, _grown(box, SHAPE)))
        ev.bolus(bolus_indices)
        return masks, src, field

    for r, (masks, src, field) in enumerate(run_ranks(size, work)):
        box = d.box(r)
        grown = _grown(box, SHAPE)
        for whole, (own, more) in zip(whole_masks, masks):
            assert np.array_equal(own, whole[box.slices]) and np.array_equal(more, whole[grown.slices])
        assert np.array_equal(src[0], sources[box.slices]) and np.array_equal(src[1], sources[grown.slices])
        assert np.array_equal(field, dosed[box.slices])  # bit for bit


def test_a_sphere_holding_no_voxel_centre_is_its_centres_voxel_on_exactly_one_rank():
    cfg = _cfg()
    d = Decomposition(SHAPE, n_ranks=4, ranks_zyx=(2, 2, 1))
    tiny = [i for i, ev in enumerate(cfg.events) if ev.radius_um < 5]

    def work(comm):
        run = SimpleNamespace(comm=comm, decomp=d, holder=lambda name: d, interior=lambda name: None)
        ev = BoxEvents(cfg, run)
        return [int(ev.mask(i, d.box(comm.rank)).sum()) for i in tiny]

    counts = np.array(run_ranks(4, work))
    assert (counts.sum(axis=0) == 1).all()  # one voxel over the whole grid, held by one rank
