"""Swept parameters of a sweep spec: a list of values, an inclusive range, or a distribution.

    "substrates.mg.serum" = [0.24, 0.47]                                   # values
    "tcells.lfa1.K_half_mM" = {start = 0.2, stop = 0.5, steps = 4}         # range (scale = "log" too)
    "tcells.k_hit_per_min" = {distribution = "loguniform", low = 0.01, high = 0.2}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpusim.config_errors import NO_VALUE

__all__ = ["Parameter"]


@dataclass(frozen=True)
class Parameter:
    """One swept config path: ``kind`` "values" (a list), "range" (inclusive, linear or log steps) or a
    distribution ("uniform", "loguniform", "normal")."""

    path: str
    kind: str
    values: tuple = ()
    low: float = math.nan   # range start / uniform low / normal mean
    high: float = math.nan  # range stop / uniform high / normal sd
    steps: int = 0
    scale: str = "linear"

    @property
    def continuous(self) -> bool:
        return self.kind in ("uniform", "loguniform", "normal")

    def grid_values(self) -> list:
        if self.kind == "values":
            return list(self.values)
        if self.kind == "range":
            if self.scale == "log":
                a, b = math.log(self.low), math.log(self.high)
                return [math.exp(a + (b - a) * i / (self.steps - 1)) for i in range(self.steps)]
            return [self.low + (self.high - self.low) * i / (self.steps - 1) for i in range(self.steps)]
        raise AssertionError(self.kind)

    def from_unit(self, u: float):
        """The value at quantile ``u`` in [0, 1) (Latin hypercube)."""
        if self.kind == "values":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * u
        if self.kind == "loguniform":
            return math.exp(math.log(self.low) + (math.log(self.high) - math.log(self.low)) * u)
        from scipy.stats import norm

        return float(norm.ppf(u, loc=self.low, scale=self.high))

    def salib(self) -> tuple[list[float], str]:
        """(bounds, dist) for SALib; log-uniform is sampled uniformly in ln and mapped back."""
        if self.kind == "uniform":
            return [self.low, self.high], "unif"
        if self.kind == "loguniform":
            return [math.log(self.low), math.log(self.high)], "unif"
        return [self.low, self.high], "norm"

    def from_salib(self, x: float) -> float:
        return math.exp(x) if self.kind == "loguniform" else float(x)


class _ParamError(Exception):
    pass


_SPEC_KEYS = {"values", "start", "stop", "steps", "scale", "distribution", "low", "high", "mean", "sd"}


def _flatten_parameters(table: dict, prefix: str = "") -> dict:
    """``[parameters]`` with dotted keys written bare (nested tables in TOML) back to dotted paths; a
    table holding spec keys (values/start/distribution...) is a parameter, not a level of the path."""
    out = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not (_SPEC_KEYS & set(value)):
            out.update(_flatten_parameters(value, path + "."))
        else:
            out[path] = value
    return out


def _parameter(path: str, raw: Any) -> Parameter:
    where = f"parameters.{path}"
    if isinstance(raw, list):
        if not raw:
            raise _ParamError(where, raw, "an empty list: give at least one value")
        return Parameter(path, "values", tuple(raw))
    if not isinstance(raw, dict):
        raise _ParamError(where, raw, "give a list of values, {start, stop, steps} or {distribution, ...}")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise _ParamError(f"{where}.{sorted(unknown)[0]}", NO_VALUE, "unknown key; allowed: " + ", ".join(sorted(_SPEC_KEYS)))

    def num(key: str, positive: bool = False) -> float:
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _ParamError(f"{where}.{key}", NO_VALUE if v is None else v, "required: a finite number")
        if positive and v <= 0:
            raise _ParamError(f"{where}.{key}", v, "must be > 0")
        return float(v)

    if "values" in raw:
        if set(raw) != {"values"} or not isinstance(raw["values"], list) or not raw["values"]:
            raise _ParamError(f"{where}.values", raw.get("values"), "a non-empty list, alone")
        return Parameter(path, "values", tuple(raw["values"]))
    if "distribution" in raw:
        kind = raw["distribution"]
        if kind in ("uniform", "loguniform"):
            lo, hi = num("low", kind == "loguniform"), num("high", kind == "loguniform")
            if not lo < hi:
                raise _ParamError(f"{where}.high", hi, f"must be > low ({lo:g})")
            return Parameter(path, kind, low=lo, high=hi)
        if kind == "normal":
            return Parameter(path, kind, low=num("mean"), high=num("sd", True))
        raise _ParamError(f"{where}.distribution", kind, "allowed: uniform, loguniform, normal")
    scale = raw.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise _ParamError(f"{where}.scale", scale, "allowed: linear, log")
    lo, hi = num("start", scale == "log"), num("stop", scale == "log")
    steps = raw.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise _ParamError(f"{where}.steps", NO_VALUE if steps is None else steps, "required: an integer >= 2")
    return Parameter(path, "range", low=lo, high=hi, steps=steps, scale=scale)
