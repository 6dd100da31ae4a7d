"""Where the CUDA C sources live and how they are compiled (the same options for CI's check and for runs).

In the repository the sources are the top-level ``kernels/`` folder; in an installed wheel the same files
are the ``gpusim.kernels`` package. Both are found from here, so runs and tests need no path setup.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

# --fmad=false: no FMA contraction, so the GPU does the same IEEE operations as the numba CPU twin
# (DESIGN.md section 2). -std=c++17 for constexpr helpers; cuda/std headers come from CCCL.
NVRTC_OPTIONS = ("--fmad=false", "-std=c++17")


def kernel_dir() -> Path:
    """The folder holding ``*.cu``/``*.cuh``: the installed ``gpusim.kernels`` package or the repo's ``kernels/``."""
    # gpusim.kernels has no __init__.py (it is the repository's kernels/ folder), so it is a namespace
    # package: importlib.resources would hand back a MultiplexedPath, which is not a filesystem path.
    try:
        spec = importlib.util.find_spec("gpusim.kernels")
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location)
        if any(path.glob("*.cu")):
            return path
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


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


def expand_includes(text: str, folder: Path, _seen: set | None = None) -> str:
    """``text`` with each ``#include "x.cuh"`` found in ``folder`` replaced by that file, recursively.

    CuPy's compile cache is keyed by the source text and options, not by the headers it includes, so
    a changed header would otherwise leave a stale cached binary in use. Each header is inlined once
    in the whole expansion (a header two others include, like ``#pragma once``, which a single text
    cannot use).
    """
    seen = set() if _seen is None else _seen

    def inline(match: re.Match) -> str:
        path = Path(folder) / match.group(1)
        if not path.is_file():
            return match.group(0)  # a system or CCCL header: left to the compiler's -I path
        key = str(path.resolve())
        if key in seen:
            return f"// {match.group(0).strip()}: already inlined"
        seen.add(key)
        body = expand_includes(path.read_text(), path.parent, seen)
        return f"// begin {match.group(1)}\n{body}\n// end {match.group(1)}"

    return _LOCAL_INCLUDE.sub(inline, text)


def expanded_source(name: str) -> str:
    """``kernels/<name>`` with its local headers inlined: the exact text that is compiled."""
    return expand_includes(source(name), kernel_dir())


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
        code=expanded_source(name),
        options=compile_options(),
        name_expressions=tuple(name_expressions),
    )


def nvrtc_compile(code: str, name: str, arch: str) -> tuple[bool, str]:
    """Compile CUDA C ``code`` for ``arch`` (e.g. "sm_90") with NVRTC and the project's options; no GPU
    or driver needed. Returns (success, compiler log). Needs cuda-bindings and the NVRTC wheel
    (numba-cuda[cu13] or nvidia-cuda-nvrtc); CuPy's compile path would need a device.
    """
    from cuda.bindings import nvrtc

    def check(result, what):
        err = result[0]
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC {what} failed: {err!r}")
        return result[1:]

    (prog,) = check(nvrtc.nvrtcCreateProgram(code.encode(), name.encode(), 0, [], []), "create")
    try:
        opts = [o.encode() for o in compile_options(arch)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        (size,) = check(nvrtc.nvrtcGetProgramLogSize(prog), "log size")
        log = b" " * size
        check(nvrtc.nvrtcGetProgramLog(prog, log), "log")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace").rstrip("\x00 \n")
