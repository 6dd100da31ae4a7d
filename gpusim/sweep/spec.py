"""The sweep spec: ``sweep.toml`` read with tomllib, validated with pydantic; every error names its key.

    base = "baseline"                   # a built-in scenario, or a config TOML (relative to this file)
    days = 0.1                          # or minutes = ...
    seeds = [1, 2]                      # or a count: seeds = 8 -> 1..8
    design = "grid"                     # "grid" | "lhs" | "sobol"
    [set]                               # fixed overrides of every member (dotted config paths)
    "grid.shape" = [32, 32, 32]
    [parameters]                        # swept config paths, each a list, a range or a distribution
    "substrates.mg.serum" = [0.24, 0.47]
    "tcells.lfa1.K_half_mM" = {start = 0.2, stop = 0.5, steps = 4}
    "tcells.k_hit_per_min" = {distribution = "uniform", low = 0.02, high = 0.1}   # lhs / sobol

Members are arms x design points x seeds. An arm (``[arms.<name>]``, optional) is a base scenario with
its own overrides; without arms there is one. Overrides go through ``Config.with_overrides`` (the
implementation behind ``gpusim run --set``), so a member's config is validated like any config, in the
order base -> ``set`` -> the arm's ``set`` -> the point's parameters -> seed/backend/kept outputs.
"""

from __future__ import annotations

import importlib.resources
import itertools
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt, ValidationError, model_validator

from gpusim import scenarios
from gpusim.config import Config, ConfigError, read_toml
from gpusim.config_errors import NO_VALUE, from_validation_error, problems
from gpusim.config_schema import Section

from .params import Parameter, _flatten_parameters, _parameter, _ParamError

__all__ = ["SweepSpec", "Member", "Parameter", "load_spec", "spec_from_dict", "builtin_spec", "builtin_names"]

#: an output interval longer than any run: only the initial frame of an output that is not kept
_NOT_KEPT_EVERY_MIN = 1.0e12
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Arm(Section):
    """One arm of a comparison: a base scenario (or config file) and its own overrides."""

    base: str | None = Field(None, description="built-in scenario or config TOML; None: the sweep's base")
    label: str | None = Field(None, description="text for plots and tables; None: the arm's name")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config overrides of this arm")


class Cluster(Section):
    """Where members run: a local Dask cluster, or SLURM/PBS jobs through dask-jobqueue."""

    kind: Literal["local", "slurm", "pbs"] = Field("local", description="cluster type")
    workers: StrictInt | None = Field(None, ge=1, description="local workers; None: one per core (per GPU)")
    jobs: StrictInt = Field(1, ge=1, description="batch jobs to start (slurm/pbs)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the "
                                    "dask-jobqueue cluster (queue, account, cores, memory, walltime, ...)")


class Sensitivity(Section):
    """Sobol indices (design = "sobol")."""

    outcomes: list[str] = Field(default_factory=lambda: ["tumor_live_final", "kills_per_tcell"],
                                description="summary columns to analyse")
    resamples: StrictInt = Field(1000, ge=10, description="bootstrap resamples for the confidence intervals")
    conf_level: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")


class Check(Section):
    """An expected direction: ``outcome`` of ``arm`` is ``expect`` ("less"/"greater") than in ``reference``,
    tested one-sided on seed-paired values."""

    name: str
    claim: str = Field("", description="the statement being checked, in words")
    outcome: str
    arm: str
    reference: str
    expect: Literal["less", "greater"]
    alpha: float = Field(0.05, gt=0, lt=1, description="one-sided significance level")


class SweepSpec(Section):
    """A validated sweep (see the module docstring). ``source`` and ``base_dir`` are not keys."""

    name: str = Field("sweep", description="name of the study")
    description: str = ""
    base: str | None = Field(None, description="built-in scenario name or config TOML path")
    days: float | None = Field(None, gt=0, description="simulated days per member")
    minutes: float | None = Field(None, gt=0, description="simulated minutes per member")
    seeds: list[StrictInt] | StrictInt = Field(..., description="seeds per point: a list, or a count n (1..n)")
    design: Literal["grid", "lhs", "sobol"] = "grid"
    samples: StrictInt | None = Field(None, ge=1, description="lhs: points; sobol: base samples N (a power of 2)")
    design_seed: StrictInt = Field(0, ge=0, description="seed of the lhs/sobol sample")
    backend: Literal["auto", "cpu", "cuda"] | None = Field(None, description="members' backend; None: the config's")
    threads_per_member: StrictInt = Field(1, ge=1, description="numba/OpenMP threads of each member")
    keep: list[Literal["fields", "tumor", "tcells"]] = Field(
        default_factory=lambda: ["fields", "tumor", "tcells"],
        description="outputs each member store keeps on the config's schedule (the others: initial frame only)")
    csv: StrictBool = Field(False, description="also write summary.csv")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config overrides of every member")
    parameters: dict[str, Any] = Field(default_factory=dict, description="swept dotted config paths")
    arms: dict[str, Arm] = Field(default_factory=dict, description="arms compared side by side")
    cluster: Cluster = Field(default_factory=Cluster)
    sensitivity: Sensitivity = Field(default_factory=Sensitivity)
    checks: list[Check] = Field(default_factory=list, description="expected directions between arms")
    assumptions: list[str] = Field(default_factory=list, description="unverified inputs, listed in reports")

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        found = []
        if (self.days is None) == (self.minutes is None):
            found.append(("days", NO_VALUE, "give exactly one of days or minutes"))
        seeds = self.seed_list
        if not seeds:
            found.append(("seeds", self.seeds, "need at least one seed"))
        elif len(set(seeds)) != len(seeds) or min(seeds) < 0:
            found.append(("seeds", self.seeds, "seeds must be distinct integers >= 0"))
        if self.base is None and not self.arms:
            found.append(("base", NO_VALUE, "required (a built-in scenario such as 'baseline', or a config "
                          "TOML), unless every [arms.<name>] gives its own base"))
        for name, arm in self.arms.items():
            if not _NAME.match(name):
                found.append((f"arms.{name}", NO_VALUE, "arm names are letters, digits and _ (a letter first)"))
            if arm.base is None and self.base is None:
                found.append((f"arms.{name}.base", NO_VALUE, "required: the sweep has no base"))
        try:
            params = self.parameter_list
        except _ParamError as exc:
            found.append(exc.args)
            params = []
        if self.design == "grid":
            for p in params:
                if p.continuous:
                    found.append((f"parameters.{p.path}", NO_VALUE, f"a {p.kind} distribution needs design "
                                  "'lhs' or 'sobol'; a grid takes a list or {start, stop, steps}"))
        else:
            if self.samples is None:
                found.append(("samples", NO_VALUE, f"required for design {self.design!r}"))
            if not params:
                found.append(("parameters", NO_VALUE, f"design {self.design!r} needs at least one parameter"))
            for p in params:
                if p.kind == "range":
                    found.append((f"parameters.{p.path}", NO_VALUE, f"design {self.design!r} samples: give a "
                                  "distribution, e.g. {distribution = \"uniform\", low = ..., high = ...}"))
                if self.design == "sobol" and p.kind == "values":
                    found.append((f"parameters.{p.path}", NO_VALUE, "Sobol indices need a continuous "
                                  "distribution, not a list"))
        if self.design == "sobol" and self.samples is not None and self.samples & (self.samples - 1):
            found.append(("samples", self.samples, "must be a power of 2 for the Sobol sequence (e.g. 64, 128)"))
        arm_names = set(self.arm_names)
        for i, c in enumerate(self.checks):
            for key in ("arm", "reference"):
                if getattr(c, key) not in arm_names:
                    found.append((f"checks.{i}.{key}", getattr(c, key), f"no such arm; have: {', '.join(sorted(arm_names))}"))
        if found:
            problems(*found)
        return self

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def seed_list(self) -> list[int]:
        return list(range(1, self.seeds + 1)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def total_minutes(self) -> float:
        return float(self.minutes if self.minutes is not None else self.days * 1440.0)

    @property
    def parameter_list(self) -> list[Parameter]:
        return [_parameter(path, raw) for path, raw in _flatten_parameters(self.parameters).items()]

    @property
    def arm_names(self) -> list[str]:
        return list(self.arms) if self.arms else ["main"]

    def arm_label(self, name: str) -> str:
        arm = self.arms.get(name)
        return (arm.label if arm is not None and arm.label else None) or name

    def design_points(self) -> list[dict[str, Any]]:
        """The design's parameter points, in order (a Sobol design in SALib's Saltelli order)."""
        params = self.parameter_list
        if not params:
            return [{}]
        if self.design == "grid":
            return [dict(zip((p.path for p in params), combo))
                    for combo in itertools.product(*(p.grid_values() for p in params))]
        if self.design == "lhs":
            from scipy.stats import qmc

            u = qmc.LatinHypercube(d=len(params), seed=self.design_seed).random(self.samples)
            return [{p.path: p.from_unit(float(row[j])) for j, p in enumerate(params)} for row in u]
        from SALib.sample import sobol

        x = sobol.sample(self.salib_problem(), self.samples, calc_second_order=False, seed=self.design_seed)
        return [{p.path: p.from_salib(row[j]) for j, p in enumerate(params)} for row in x]

    def salib_problem(self) -> dict:
        params = self.parameter_list
        bounds, dists = zip(*(p.salib() for p in params)) if params else ((), ())
        return {"num_vars": len(params), "names": [p.path for p in params], "bounds": list(bounds),
                "dists": list(dists)}

    # -- members ---------------------------------------------------------------------------------------
    def arm_config(self, name: str) -> Config:
        """The validated config of arm ``name`` before the design's parameters (base, set, arm set)."""
        arm = self.arms.get(name)
        base = arm.base if arm is not None and arm.base is not None else self.base
        cfg = _base_config(base, self.base_dir, f"arms.{name}.base" if arm is not None and arm.base else "base",
                           self.source)
        if self.set:
            cfg = cfg.with_overrides(self.set, source=f"{self.source}: set")
        if arm is not None and arm.set:
            cfg = cfg.with_overrides(arm.set, source=f"{self.source}: arms.{name}.set")
        extra: dict[str, Any] = {}
        if self.backend is not None:
            extra["backend"] = self.backend
        for out in ("fields", "tumor", "tcells"):
            if out not in self.keep:
                extra[f"output.{out}_every_min"] = _NOT_KEPT_EVERY_MIN
        return cfg.with_overrides(extra, source=f"{self.source}: backend/keep") if extra else cfg

    def members(self) -> list["Member"]:
        """Every member (arms x points x seeds), each with its validated config; ConfigError names the
        key (and the point) that is wrong."""
        points = self.design_points()
        seeds = self.seed_list
        width = max(4, len(str(len(points) - 1)))
        out = []
        for arm in self.arm_names:
            base = self.arm_config(arm)
            for i, point in enumerate(points):
                where = f"{self.source}: parameters (point {i}: {_short(point)})"
                cfg_point = base.with_overrides(point, source=where) if point else base
                for s in seeds:
                    mid = (f"{arm}-" if self.arms else "") + f"p{i:0{width}d}-s{s}"
                    out.append(Member(mid, arm, i, int(s), dict(point),
                                      cfg_point.with_overrides({"seed": int(s)}, source=where)))
        return out

    source: str = Field("<dict>", exclude=True)
    base_dir: str | None = Field(None, exclude=True)


@dataclass
class Member:
    """One run of a sweep: its id (the store name), arm, design-point index, seed, the point's
    parameter values and the validated config."""

    id: str
    arm: str
    point: int
    seed: int
    params: dict = field(default_factory=dict)
    config: Config | None = None


def _short(point: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in point.items())
    return text if len(text) < 120 else text[:117] + "..."


def _base_config(base: str, base_dir: str | None, key: str, source: str) -> Config:
    if base in scenarios.names():
        return scenarios.scenario_config(base)
    path = base if os.path.isabs(base) or base_dir is None else os.path.join(base_dir, base)
    if base.endswith(".toml") and os.path.exists(path):
        return Config.from_toml(path)
    raise ConfigError.single(key, base, "neither a built-in scenario (" + ", ".join(scenarios.names())
                             + ") nor an existing config .toml", source)


def spec_from_dict(data: dict, source: str = "<dict>", base_dir: str | None = None) -> SweepSpec:
    """Validate a parsed sweep table; ConfigError names each bad key."""
    if not isinstance(data, dict):
        raise ConfigError.single("", NO_VALUE, "a sweep spec is a table of keys", source)
    try:
        return SweepSpec.model_validate({**data, "source": source, "base_dir": base_dir})
    except ValidationError as exc:
        raise from_validation_error(exc, SweepSpec, data, source) from None


def load_spec(path: str | os.PathLike, overrides: dict | None = None) -> SweepSpec:
    """Read and validate ``sweep.toml``; ``overrides`` replace top-level keys (the CLI's --days, --seeds)."""
    path = os.fspath(path)
    data = read_toml(path, "sweep")
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return spec_from_dict(_override(data, overrides), path, os.path.dirname(os.path.abspath(path)))


def _override(data: dict, overrides: dict | None) -> dict:
    data = dict(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            if key in ("days", "minutes"):
                data.pop("days", None)
                data.pop("minutes", None)
            data[key] = value
    return data


def builtin_names() -> list[str]:
    files = importlib.resources.files("gpusim.sweep").joinpath("builtin").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def builtin_spec(name: str, overrides: dict | None = None) -> SweepSpec:
    """A built-in study (``gpusim sweep --builtin paper``)."""
    if name not in builtin_names():
        raise ConfigError.single("--builtin", name, "no such built-in study; have: " + ", ".join(builtin_names()),
                                 "<command line>")
    text = importlib.resources.files("gpusim.sweep").joinpath("builtin", f"{name}.toml").read_text()
    return spec_from_dict(_override(tomllib.loads(text), overrides), f"builtin {name}")
