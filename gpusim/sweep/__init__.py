"""Ensembles, sweeps and reports: the sweep spec (``spec``), its execution on Dask (``execute``), the
one-row-per-member summary (``summary``), Sobol sensitivity (``sensitivity``), expected directions
between arms (``checks``), HTML reports (``report``) and the built-in studies (``builtin/*.toml``).

Dask, SALib, pyarrow and matplotlib are imported lazily where they are used (the ``sweep`` extra), so
``import gpusim`` does not need them.
"""


def open_sweep(path):
    """Open a sweep directory written by ``gpusim sweep``: its summary table (pandas), spec and member
    run stores (see :class:`gpusim.sweep.summary.Sweep`)."""
    from .summary import open_sweep as _open_sweep

    return _open_sweep(path)


__all__ = ["open_sweep"]
