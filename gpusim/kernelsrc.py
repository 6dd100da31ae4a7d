"""Where the CUDA C sources live and how they are compiled (the same options for CI's check and for runs).

In the repository the sources are the top-level ``kernels/`` folder; in an installed wheel the same files
are the ``gpusim.kernels`` package. Both are found from here, so runs and tests need no path setup.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

# --fmad=false: no FMA contraction, so the GPU does the same IEEE operations as the numba CPU twin
# (DESIGN.md section 2). -std=c++17 for constexpr helpers; cuda/std headers come from CCCL.
NVRTC_OPTIONS = ("--fmad=false", "-std=c++17")


def kernel_dir() -> Path:
    """The folder holding ``*.cu``/``*.cuh``: the installed ``gpusim.kernels`` package or the repo's ``kernels/``."""
    try:
        pkg = importlib.resources.files("gpusim.kernels")
        path = Path(os.fspath(pkg))
        if any(path.glob("*.cu")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    repo = Path(__file__).resolve().parent.parent / "kernels"
    if repo.is_dir():
        return repo
    raise FileNotFoundError(
        "gpusim's CUDA kernel sources were not found (neither the gpusim.kernels package nor the "
        "repository's kernels/ folder); reinstall with `pip install -e .` from the repository"
    )


def source(name: str) -> str:
    """The text of ``kernels/<name>``."""
    return (kernel_dir() / name).read_text()


def cccl_include() -> str | None:
    """The CCCL include folder shipped in NVIDIA's wheels (cuda/std headers for NVRTC), if installed."""
    try:
        import nvidia  # namespace package from the nvidia-* wheels
    except ImportError:
        return None
    for base in nvidia.__path__:
        for sub in ("cu13/include/cccl", "cuda_cccl/include"):
            path = Path(base) / sub
            if path.is_dir():
                return str(path)
    return None


def compile_options(arch: str | None = None) -> tuple[str, ...]:
    """NVRTC options: the fixed ones, the kernel folder (for ``#include "x.cuh"``), CCCL, and an arch."""
    opts = list(NVRTC_OPTIONS) + [f"-I{kernel_dir()}"]
    inc = cccl_include()
    if inc:
        opts.append(f"-I{inc}")
    if arch:
        opts.append(f"-arch={arch}")
    return tuple(opts)


def raw_module(name: str, name_expressions=()):
    """Compile ``kernels/<name>`` with CuPy (needs a GPU); cached by CuPy across processes."""
    import cupy  # only reached on the CUDA backend

    return cupy.RawModule(
        code=source(name),
        options=compile_options(),
        name_expressions=tuple(name_expressions),
    )
