"""The cell rules, written once (DESIGN.md §1 rules 2-6, §2): plain Python functions compiled on demand
for numba's CPU target (``cpu_loops``) and for numba.cuda (``cuda_loops``), and runnable as Python.

Each ``*_one(i, ...)`` function is the whole work of one agent or one voxel in one phase; the loops
around them are a few lines per target. A phase reads only what no other item of the same phase
writes, so items may run in any order and on any number of threads (gather, never scatter):

======  ==========================================  =====================================================
phase   per                                          does
======  ==========================================  =====================================================
A1      T cell                                       apoptosis; LFA-1 relaxes to A*(Mg); engaged cells draw
                                                     a hit and mark their target
T1      voxel                                        a LIVE cell sums the hits aimed at it (from the T cells
                                                     binned in its 27 voxels), dies at hits_to_kill,
                                                     repairs a hit after hit_recovery_min, turns necrotic
                                                     or apoptotic; DEAD/NECROTIC cells are cleared
T2      voxel                                        a LIVE cell draws a division and picks a free
                                                     neighbour among 26, weight 1/distance
T3      voxel                                        an EMPTY voxel takes the proposal with the smallest
                                                     (hash, source voxel) among its neighbours'
A2      T cell                                       synapse end / kill credit / proliferation; free cells
                                                     engage a LIVE cell among 27 voxels or propose a move
A3      T cell                                       a proposal into voxel w is accepted when its rank by
                                                     (hash, uid) among all proposals into w is below the
                                                     free capacity of w
R       vessel voxel                                 recruitment where the voxel's capacity allows
======  ==========================================  =====================================================

**Modules.** ``rule_base`` holds the state codes, event and flag bits, the frame of a rank's arrays and
the small helpers; ``tumor_rules`` the phases T1-T3; ``tcell_rules`` A1-A3, R and the agents' voxels.
This module is their one namespace (``rules.X``), which the loops and the tests use.

**Exact arithmetic (DESIGN.md §2).** Decisions compare a Philox uniform with a probability built from
IEEE basic operations. numba.cuda contracts ``a*b + c`` into an FMA, the CPU does not, so every product
that feeds an addition here is a product of two float32 values taken in float64 (exact: 48 bits), and
the sum is rounded to float32 afterwards; products that feed only comparisons or conversions are safe
as they are. No libm call is made (``sqrt`` is IEEE-exact on both targets); powers use the project's
own exp/log from ``gpusim.rng``.
"""

from __future__ import annotations

# the rules in three modules (shared codes and helpers, the tumour lattice's, the T cells'), one namespace
from gpusim.agents.rule_base import (DEAD, EMPTY, ENGAGED, EV_APOPTOSIS, EV_BORN, EV_CLEARED, EV_HIT, EV_KILLED,
                                     EV_NECROSIS, EV_PRUNED, FL_BORN, FL_DIED, FL_DISENGAGED, FL_ENGAGED, FL_KILL,
                                     FL_MOVED, FREE, LIVE, NECROTIC, NO_DIV, TDEAD, TumorState, _CENTER, _DIR_TRIES,
                                     _EDGE, _HALF_RANGE, _ONE, _TWO, _W_CORNER, _W_EDGE, _W_FACE, _ZERO, _add_prod,
                                     _neighbour, _norm3, axis_cell, capacity, field_at, global_voxel, jitter,
                                     lfa1_relax, lfa1_target, random_direction, split_voxel, voxel_of_pos,
                                     whole_frame)  # noqa: F401
from gpusim.agents.tcell_rules import (_credit_hash, _gradient, _is_credited, _live_neighbours, occupancy_after_moves,
                                       recruit_one, tcell_accept_one, tcell_respond_one, tcell_sense_one, voxel_one)  # noqa: F401
from gpusim.agents.tumor_rules import (_free_for_daughter, _free_neighbours, _hits_on, _o2_fraction, _weight,
                                       tumor_claim_one, tumor_fate_one, tumor_propose_one)  # noqa: F401
