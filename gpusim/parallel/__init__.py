"""MPI domain decomposition (issue 6, in progress): ``decomposition`` (process grid and boxes),
``comm`` (MPI world or a one-rank stand-in), ``halo`` (ghost exchange, gather, scatter) and
``fields`` (substrate stepping on a rank's box, bitwise equal to one process)."""
