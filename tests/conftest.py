"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def viewer_tiny_store(tmp_path_factory):
    """The viewer's sample run (gpusim.viewer.sample: 20³ voxels, 150 T cells, 30 min; fields, tumour and
    T cells every 5 min, 20 tracks every minute, events), written once per session."""
    from gpusim.viewer.sample import write_tiny_run

    path = tmp_path_factory.mktemp("viewer") / "tiny.zarr"
    write_tiny_run(path)
    return path
