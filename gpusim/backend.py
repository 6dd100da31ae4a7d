"""CPU/GPU selection: the array module, device facts and kernel sets. The one place that imports CuPy.

A backend is a value passed down (STYLE.md 2): code asks it for ``xp`` (numpy or cupy) and for its
kernel modules, never checks for CuPy itself.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("gpusim")


class BackendError(RuntimeError):
    """The requested backend cannot be used (says why and what to do)."""


@dataclass
class Backend:
    """A compute device: ``name`` is "cpu" or "cuda"; ``xp`` is numpy or cupy."""

    name: str
    xp: object
    device_name: str
    total_bytes: int
    free_bytes: int
    reason: str = ""
    _modules: dict = field(default_factory=dict, repr=False)

    @property
    def is_gpu(self) -> bool:
        return self.name == "cuda"

    def kernels(self, family: str):
        """The kernel module of ``family`` ("fields", "mg", "reduce", "agents", "partitioned") for this device.

        CPU: ``gpusim.fields.cpu_kernels`` etc. (numba); CUDA: the CuPy twins with the same signatures.
        """
        if family not in self._modules:
            name = _KERNEL_MODULES[family][self.name]
            self._modules[family] = importlib.import_module(name)
        return self._modules[family]

    def asarray(self, a, dtype=None):
        """Copy a host array to this device (no copy on the CPU when already right)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a) -> np.ndarray:
        """A NumPy copy of a device array."""
        if self.is_gpu:
            return a.get()
        return np.array(a, copy=True)

    def synchronize(self) -> None:
        if self.is_gpu:
            self.xp.cuda.Stream.null.synchronize()

    def describe(self) -> str:
        gib = 1024**3
        return (
            f"{self.name}: {self.device_name}, {self.free_bytes / gib:.1f} GiB free of "
            f"{self.total_bytes / gib:.1f} GiB"
        )


_KERNEL_MODULES = {
    "fields": {"cpu": "gpusim.fields.cpu_kernels", "cuda": "gpusim.fields.cuda_kernels"},
    "mg": {"cpu": "gpusim.fields.mg_cpu", "cuda": "gpusim.fields.mg_cuda"},
    "reduce": {"cpu": "gpusim.reduce", "cuda": "gpusim.reduce_cuda"},
    "agents": {"cpu": "gpusim.agents.cpu_loops", "cuda": "gpusim.agents.cuda_loops"},
    "partitioned": {"cpu": "gpusim.parallel.partitioned_cpu", "cuda": "gpusim.parallel.partitioned_cuda"},
}


def _available_host_bytes() -> int:
    """MemAvailable (free memory plus reclaimable page cache) on Linux; 0 (unknown) elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_backend(reason: str) -> Backend:
    total = 0
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: no total
        pass
    # free pages alone would count the page cache as used and refuse runs that fit
    free = _available_host_bytes()
    import numba

    name = f"CPU ({os.cpu_count()} cores, {numba.get_num_threads()} numba threads)"
    return Backend("cpu", np, name, total, free, reason)


def cuda_status() -> tuple[bool, str]:
    """Whether a CUDA device is usable through CuPy, and why not when it is not."""
    try:
        import cupy
    except ImportError as exc:
        return False, f"CuPy is not installed ({exc.__class__.__name__}); install gpusim[cuda]"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver; kept broad: any failure means no GPU
        return False, f"no usable CUDA device ({str(exc).splitlines()[0]})"
    if n < 1:
        return False, "CuPy sees no CUDA device"
    return True, f"{n} CUDA device(s) visible"


def _cuda_backend(reason: str, device: int | None = None) -> Backend:
    import cupy

    if device is not None:
        cupy.cuda.Device(int(device)).use()
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    free, total = dev.mem_info
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    cc = f"sm_{props['major']}{props['minor']}"
    return Backend("cuda", cupy, f"{name} ({cc})", int(total), int(free), reason)


def select_backend(requested: str = "auto", device: int | None = None) -> Backend:
    """Return the backend for ``requested`` ("auto", "cpu" or "cuda"), logging the choice once.

    ``auto`` takes the GPU when CuPy imports and a device is usable, else the CPU; ``cuda`` without a
    usable GPU is a :class:`BackendError`. ``device``: the CUDA device to use (an MPI rank's, from its
    node-local rank; made current), else CuPy's current one.
    """
    if requested == "cpu":
        backend = _cpu_backend("requested")
    elif requested in ("cuda", "auto"):
        ok, why = cuda_status()
        if ok:
            backend = _cuda_backend("requested" if requested == "cuda" else f"auto: {why}", device)
        elif requested == "cuda":
            raise BackendError(
                f"backend 'cuda' was requested but {why}. Run on the CPU with `--backend cpu` "
                "(or backend = \"cpu\" in the config), or install gpusim[cuda] on a machine with an "
                "NVIDIA GPU and driver."
            )
        else:
            backend = _cpu_backend(f"auto: {why}")
    else:
        raise BackendError(f"backend = {requested!r}: must be one of 'auto', 'cpu', 'cuda'")
    log.info("gpusim backend %s (%s)", backend.describe(), backend.reason)
    return backend


def check_memory(backend: Backend, needed_bytes: int, what: str) -> None:
    """Refuse before allocating when ``needed_bytes`` exceeds the device's free memory."""
    if backend.free_bytes and needed_bytes > backend.free_bytes:
        gib = 1024**3
        hint = (
            "use a smaller grid.shape (memory grows with the voxel count), fewer substrates, "
            + ("or `--backend cpu`" if backend.is_gpu else "or a machine with more memory")
        )
        raise BackendError(
            f"{what} needs about {needed_bytes / gib:.2f} GiB but {backend.name} has "
            f"{backend.free_bytes / gib:.2f} GiB free ({backend.device_name}); {hint}"
        )
