"""gpusim.viewer: the napari plugin for gpusim run stores (sources in the repository's ``viewer/``).

Registered with napari through the ``napari.manifest`` entry point (``napari.yaml``):

- a reader: a run store opens as Image layers per field, a Labels layer of the tumour, Points of the
  T cells (and a density image above ``GPUSIM_VIEWER_MAX_POINTS``), Tracks and kill sites
  (:mod:`.reader`, :mod:`.layers`);
- the "Run a scenario" dock widget (:mod:`.run_widget`) and the "Populations" plot (:mod:`.populations`);
- sample data: a tiny run written in seconds (:mod:`.sample`);
- ``gpusim view run.zarr`` (:mod:`.app`).

Importing this package imports neither napari nor Qt; the submodules do, where they need them.
"""
