"""Blood-vessel voxel masks: a boundary shell, a random capillary network, or a user's ``.npy`` array.

Vessel voxels supply substrates (``vessel_supply_per_min * (serum - c)``) and, with the T-cell model,
recruit T cells. The mask is built once on the host over the GLOBAL grid from the setup Philox stream,
so it is the same on every backend and for every domain decomposition.
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from . import rng


class VesselFileError(ValueError):
    """A ``vessels.path`` array that cannot be used (says what is wrong and what to give instead)."""


def shell_mask(shape) -> np.ndarray:
    """Vessels on every voxel of the six boundary faces (the block is fed from all sides)."""
    m = np.zeros(shape, np.uint8)
    m[0], m[-1] = 1, 1
    m[:, 0], m[:, -1] = 1, 1
    m[:, :, 0], m[:, :, -1] = 1, 1
    return m


@numba.njit(cache=True)
def _random_segments(nz, ny, nx, target, seg_len, k0, k1, purpose, out):
    """Lay axis-aligned segments of ``seg_len`` voxels at Philox-drawn starts until ``target`` voxels."""
    count = 0
    j = 0
    max_segments = 64 * (target // max(seg_len, 1) + 1) + 1024
    while count < target and j < max_segments:
        c0, c1, c2, c3 = rng.voxel_counter(j, 0, purpose, 0)
        r0, r1, r2, r3 = rng.philox4x32(c0, c1, c2, c3, k0, k1)
        axis = r0 % 3
        z = r1 % nz
        y = r2 % ny
        x = r3 % nx
        for _ in range(seg_len):
            if count >= target:
                break
            if out[z, y, x] == 0:
                out[z, y, x] = 1
                count += 1
            if axis == 0:
                z += 1
            elif axis == 1:
                y += 1
            else:
                x += 1
            if z >= nz or y >= ny or x >= nx:
                break
        j += 1
    return count


def random_mask(shape, voxel_fraction: float, segment_length_um: float, dx_um: float, seed: int) -> np.ndarray:
    """Random capillary segments along the axes covering ``voxel_fraction`` of the voxels."""
    nz, ny, nx = (int(v) for v in shape)
    target = int(round(voxel_fraction * nz * ny * nx))
    seg_len = max(1, int(round(segment_length_um / dx_um)))
    k0, k1 = rng.key(seed, rng.STREAM_SETUP)
    out = np.zeros((nz, ny, nx), np.uint8)
    _random_segments(nz, ny, nx, target, seg_len, k0, k1, rng.PURPOSE_VESSEL, out)
    return out


def load_mask(path: str | Path, shape) -> np.ndarray:
    """Read a vessel mask from ``.npy`` without pickle; shape must equal the grid, values 0/1."""
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise VesselFileError(f"vessels.path = {str(path)!r}: no such file; give a .npy array of shape {tuple(shape)}") from None
    except ValueError as exc:
        raise VesselFileError(
            f"vessels.path = {str(path)!r}: not a plain .npy array ({exc}); save it with numpy.save of a "
            f"bool or integer array of shape {tuple(shape)} (object arrays and pickles are refused)"
        ) from None
    if not isinstance(a, np.ndarray):
        raise VesselFileError(f"vessels.path = {str(path)!r}: holds several arrays; give a single .npy array")
    if a.shape != tuple(shape):
        raise VesselFileError(f"vessels.path = {str(path)!r}: shape {a.shape} does not match grid.shape {tuple(shape)} (z, y, x)")
    if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
        raise VesselFileError(f"vessels.path = {str(path)!r}: dtype {a.dtype}; give bool or integer 0/1 values")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise VesselFileError(f"vessels.path = {str(path)!r}: values must be 0 or 1 (found {a.min()}..{a.max()})")
    return np.ascontiguousarray(a, dtype=np.uint8)


def build_mask(vessels_cfg, shape, dx_um: float, seed: int, base_dir: Path | None = None) -> np.ndarray:
    """The vessel mask a ``[vessels]`` config section describes (uint8, 1 = vessel)."""
    if vessels_cfg.kind == "shell":
        return shell_mask(shape)
    if vessels_cfg.kind == "random":
        return random_mask(shape, vessels_cfg.voxel_fraction, vessels_cfg.segment_length_um, dx_um, seed)
    path = Path(vessels_cfg.path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return load_mask(path, shape)


def vessel_density_inside(mask: np.ndarray, inside: np.ndarray, vessels_cfg, seed: int) -> np.ndarray:
    """The mask with its density inside the initial tumour (``inside``) set to
    ``vessels.tumor_voxel_fraction``: vessel voxels there are kept, or empty ones added, by a Philox
    uniform per voxel (setup stream, so the result depends only on the seed)."""
    target = float(vessels_cfg.tumor_fraction)
    flat = mask.reshape(-1).copy()
    region = inside.reshape(-1)
    n_in = int(region.sum())
    if n_in == 0:
        return mask
    now = float(flat[region].sum()) / n_in
    u = rng.philox_uniform_voxels(seed, rng.STREAM_SETUP, 1, rng.PURPOSE_VESSEL, flat.size)
    if target < now:  # thin: keep each vessel voxel with probability target/now
        drop = region & (flat > 0) & (u >= np.float32(target / now))
        flat[drop] = 0
    elif target > now:  # add: each empty voxel becomes a vessel with probability (target-now)/(1-now)
        add = region & (flat == 0) & (u < np.float32((target - now) / (1.0 - now)))
        flat[add] = 1
    return flat.reshape(mask.shape)
