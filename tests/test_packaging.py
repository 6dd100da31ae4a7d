"""The wheel ships the CUDA kernels and the scenarios, and an installed copy finds them without the repo."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (whl,) = out.glob("gpusim-*.whl")
    return whl


def test_wheel_contains_every_kernel_source_and_scenario(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for cu in sorted((REPO / "kernels").glob("*.cu*")):
        assert f"gpusim/kernels/{cu.name}" in names
    for toml in sorted((REPO / "gpusim" / "scenarios").glob("*.toml")):
        assert f"gpusim/scenarios/{toml.name}" in names


def test_installed_wheel_loads_its_own_kernels(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True,
    )
    code = (
        "import gpusim.kernelsrc as k, gpusim.scenarios as s;"
        "print(k.kernel_dir()); print(len(k.source('reduce.cu'))); print(','.join(s.names()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    kdir, nchars, names = res.stdout.split()
    assert Path(kdir).resolve().is_relative_to(target.resolve())
    assert int(nchars) == len((REPO / "kernels" / "reduce.cu").read_text())
    assert "diffusion" in names.split(",")
