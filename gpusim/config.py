"""Validated, typed configuration: TOML in, JSON into run stores; every error names its key.

``Config`` is the whole run's configuration (DESIGN §7). Sections live in ``config_schema`` (grid, time,
substrates, output, parallel), ``config_cells`` (vessels, tumour, T cells) and ``config_events``; the
error machinery in ``config_errors``. Any bad input raises :class:`ConfigError` and nothing else.

Paths are dotted keys that address list items by name (``substrates.mg.serum``,
``events.implant.rate_umol_per_min``, ``tcells.lfa1.K_half_mM``); an index also works
(``substrates.0.serum``), since names cannot start with a digit.
"""

import copy
import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, StrictInt, ValidationError, model_validator

from gpusim.config_cells import LFA1, TCells, Tumor, Vessels
from gpusim.config_errors import (
    NAMED_LISTS,
    NO_VALUE,
    ConfigError,
    UnknownSubstrateError,
    did_you_mean,
    format_line,
    from_validation_error,
    problems,
    union_member,
    unwrap,
)
from gpusim.config_events import (
    EVENT_TYPES,
    BolusEvent,
    Event,
    HoldEvent,
    ImplantEvent,
    SerumEvent,
    TCellInfusionEvent,
)
from gpusim.config_schema import (
    SUBSTRATE_DEFAULTS,
    Boundary,
    Grid,
    Output,
    Parallel,
    Secretion,
    Section,
    Substrate,
    Time,
    Uptake,
    UptakeRates,
    substrate_defaults,
)

__all__ = [
    "Config", "ConfigError", "UnknownSubstrateError", "parse_override", "apply_overlay",
    "Grid", "Time", "Substrate", "Boundary", "Uptake", "UptakeRates", "Secretion", "Vessels", "Tumor",
    "TCells", "LFA1", "Event", "SerumEvent", "BolusEvent", "ImplantEvent", "HoldEvent",
    "TCellInfusionEvent", "EVENT_TYPES", "Output", "Parallel", "SUBSTRATE_DEFAULTS", "substrate_defaults",
]


class Config(Section):
    """The configuration of one run. Absent optional sections leave that part of the model out."""

    seed: StrictInt = Field(0, ge=0, lt=2**64, description="integer; Philox key of the run (0 <= seed < 2^64)")
    backend: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description=("'auto': the GPU if one is usable, else the CPU (with a log line saying why); "
                             "under mpiexec 'auto' runs CPU ranks and 'cuda' each rank's partitioned LOD sweeps on "
                             "its node's GPU")
    )
    solver: Literal["lod", "explicit"] = Field(
        "lod", description="time-stepped field solver: 'lod' (implicit LOD, default) or 'explicit' (reference)"
    )
    init: Literal["given", "steady"] = Field(
        "given", description="'given': fields start at each substrate's initial; 'steady': at the steady state "
        "of the initial layout (built-in scenarios use it)"
    )
    grid: Grid = Field(default_factory=Grid, description="voxel grid")
    time: Time = Field(default_factory=Time, description="time stepping")
    substrates: list[Substrate] = Field(default_factory=list, description="[[substrates]], by name")
    vessels: Vessels | None = Field(None, description="blood vessels; absent: none")
    tumor: Tumor | None = Field(None, description="tumour lattice; absent: no tumour")
    tcells: TCells | None = Field(None, description="CD8⁺ T cells; absent: none")
    events: list[Event] = Field(default_factory=list, description="[[events]] therapy schedule, by name")
    output: Output = Field(default_factory=Output, description="run-store schedules")
    parallel: Parallel = Field(default_factory=Parallel, description="MPI decomposition")

    # --- construction ---------------------------------------------------------------------------------

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "Config":
        """Validate a plain dict (or a Config); raises ConfigError naming each bad key."""
        return cls._validate(obj, "<dict>", **kwargs)

    @classmethod
    def _validate(cls, obj: Any, source: str, **kwargs: Any) -> "Config":
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise from_validation_error(exc, cls, obj, source) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, **kwargs: Any) -> "Config":
        """As :meth:`from_json`."""
        return cls.from_json(json_data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Config":
        """Validate a plain dict; ``source`` names it in error messages."""
        return cls._validate(data, source)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Config":
        """Read and validate a TOML file. A relative ``vessels.path`` is taken relative to the file."""
        path = os.fspath(path)
        data = read_toml(path, "config")
        vessels = data.get("vessels")
        if isinstance(vessels, dict) and isinstance(vessels.get("path"), str) and vessels["path"]:
            if not os.path.isabs(vessels["path"]):
                vessels["path"] = os.path.join(os.path.dirname(os.path.abspath(path)), vessels["path"])
        return cls._validate(data, path)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<json>") -> "Config":
        """Rebuild a Config from :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError.single("", NO_VALUE, f"invalid JSON: {exc}", source) from None
        return cls._validate(data, source)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able plain dict (tuples as lists, every key present) that validates back to ``self``."""
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = None) -> str:
        """JSON text; ``Config.from_json(cfg.to_json()) == cfg`` exactly (floats written with repr)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "<overrides>") -> "Config":
        """A new validated Config with dotted-path keys set (``self`` is unchanged).

        A dict value is merged into an existing table; any other value replaces. A path into an absent
        optional section creates it with its defaults first. Setting ``grid.shape`` drops ``grid.size_um``
        and vice versa. Unknown paths raise ConfigError with a did-you-mean.
        """
        data = self.to_dict()
        for path, value in overrides.items():
            _set_path(data, str(path), value, source)
        return type(self)._validate(data, source)

    def __hash__(self) -> int:
        # pydantic's frozen hash fails on the list fields; the canonical JSON identifies a config.
        return hash(self.to_json())

    # --- lookups ----------------------------------------------------------------------------------------

    @property
    def tumor_center_um(self) -> tuple[float, float, float] | None:
        """µm (z, y, x); the initial tumour's centre (``tumor.center_um`` or the grid centre); None without
        a tumour."""
        if self.tumor is None:
            return None
        if self.tumor.center_um is not None:
            return self.tumor.center_um
        z, y, x = (e / 2 for e in self.grid.extent_um)
        return (z, y, x)

    @property
    def substrate_names(self) -> tuple[str, ...]:
        """Names of the declared substrates, in order."""
        return tuple(s.name for s in self.substrates)

    def substrate(self, name: str) -> Substrate:
        """The substrate called ``name``; UnknownSubstrateError (a ConfigError and a KeyError) if absent."""
        for s in self.substrates:
            if s.name == name:
                return s
        names = list(self.substrate_names)
        raise UnknownSubstrateError(
            [format_line("<config>", f"substrates.{name}", NO_VALUE,
                         _with_hint(f"no such substrate; declared: {', '.join(names) or '(none)'}", name, names))],
            [(f"substrates.{name}", "no such substrate")], "<config>",
        )

    # --- checks across sections -------------------------------------------------------------------------

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        found: list[tuple[str, Any, str]] = []
        _item_paths("substrates", [s.name for s in self.substrates], found)
        ev_paths = _item_paths("events", [e.name for e in self.events], found)
        units = {s.name: s.unit for s in self.substrates}
        extent = self.grid.extent_um

        def inside(path: str, point: tuple[float, float, float] | None) -> None:
            if point is not None and any(p >= e for p, e in zip(point, extent)):
                found.append((path, list(point), f"must lie inside the grid, [0, {list(extent)}) µm (z, y, x)"))

        def needs_placement(path: str, placement: str) -> None:
            if placement in ("tumor", "shell") and self.tumor is None:
                found.append((path, placement, "needs a [tumor] section (or placement 'uniform')"))
            if placement == "vessels" and self.vessels is None:
                found.append((path, placement, "needs a [vessels] section"))

        for ev, p in zip(self.events, ev_paths):
            sub = getattr(ev, "substrate", None)
            if sub is not None and sub not in units:
                found.append((f"{p}.substrate", sub, _with_hint(
                    f"not a declared substrate; declared: {', '.join(units) or '(none)'}", sub, list(units))))
            elif isinstance(ev, (BolusEvent, ImplantEvent)) and not self.substrate(sub).is_molar:
                found.append((f"{p}.substrate", sub, f"a {ev.type} dose is in µmol, but {sub!r} is in "
                              f"{units[sub]}; use a hold or serum event"))
            inside(f"{p}.center_um", getattr(ev, "center_um", None))
            if isinstance(ev, HoldEvent) and ev.region == "tumor" and self.tumor is None:
                found.append((f"{p}.region", "tumor", "needs a [tumor] section"))
            if isinstance(ev, TCellInfusionEvent):
                if self.tcells is None:
                    found.append((f"{p}.type", ev.type, "needs a [tcells] section"))
                needs_placement(f"{p}.placement", ev.placement)
        if self.tumor is not None:
            inside("tumor.center_um", self.tumor.center_um)
            if self.tumor.mg_growth_km_mM > 0 and "mg" not in units:
                found.append(("tumor.mg_growth_km_mM", self.tumor.mg_growth_km_mM, "needs an 'mg' substrate"))
        if self.tcells is not None:
            needs_placement("tcells.placement", self.tcells.placement)
            step_um = self.tcells.speed_um_per_min * self.time.dt_min
            if step_um > self.grid.dx_um / 2:
                found.append(("tcells.speed_um_per_min", self.tcells.speed_um_per_min,
                              f"speed_um_per_min * time.dt_min = {step_um:g} µm per step exceeds grid.dx_um/2 = "
                              f"{self.grid.dx_um / 2:g} µm; lower tcells.speed_um_per_min or time.dt_min"))
        if self.parallel.ranks_zyx is not None:
            if any(r > n for r, n in zip(self.parallel.ranks_zyx, self.grid.nzyx)):
                found.append(("parallel.ranks_zyx", list(self.parallel.ranks_zyx),
                              f"each must be <= the grid's voxels on that axis {list(self.grid.nzyx)}"))
        if found:
            problems(*found)
        return self


def _with_hint(message: str, word: str, names: list[str]) -> str:
    """``message`` plus a did-you-mean when a name is close (the names are already listed)."""
    hint = did_you_mean(word, names, list_allowed=False)
    return f"{message}; {hint}" if hint else message


def read_toml(path: str, what: str) -> dict:
    """The TOML table of the ``what`` file (config, sweep) at ``path``; a missing, unreadable or invalid
    file is a ConfigError naming it (and the line, for invalid TOML)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError.single("", NO_VALUE, f"no such {what} file", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError.single("", NO_VALUE, f"line {_toml_error_line(path, exc)}: invalid TOML: {exc}",
                                 path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single("", NO_VALUE, f"cannot read the file: {exc}", path) from None


def _toml_error_line(path: str, exc: Exception) -> int:
    """The line of a TOML syntax error (tomllib gives it in the message, or says 'end of document')."""
    match = re.search(r"at line (\d+)", str(exc))
    if match:
        return int(match.group(1))
    with open(path, "rb") as f:
        return f.read().rstrip().count(b"\n") + 1


def _item_paths(key: str, names: list[str], found: list) -> list[str]:
    """Path of each named item; a repeated name is a problem (reported at its index)."""
    paths = []
    for i, name in enumerate(names):
        if names.index(name) != i:
            found.append((f"{key}.{i}.name", name, f"duplicate name; each item of {key} needs its own"))
            paths.append(f"{key}.{i}")
        else:
            paths.append(f"{key}.{name}" if names.count(name) == 1 else f"{key}.{i}")
    return paths


# --- overrides --------------------------------------------------------------------------------------------


def _find_item(items: list, label: str, by_index: bool = True) -> int | None:
    """Index of the item named ``label`` (or, with ``by_index``, at index ``label`` when it is digits)."""
    if by_index and label.isdigit():
        return int(label) if int(label) < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == label:
            return i
    return None


def _no_item(path: str, key: str, label: str, items: list, source: str) -> ConfigError:
    names = [it.get("name") for it in items if isinstance(it, dict) and isinstance(it.get("name"), str)]
    message = _with_hint(f"no item of {key} named {label!r}; have: {', '.join(names) or '(none)'}", label, names)
    return ConfigError.single(path, NO_VALUE, message, source)


def _set_path(data: dict, path: str, value: Any, source: str) -> None:
    """Set dotted ``path`` in ``data`` (a Config.to_dict()), checking each key against the schema."""
    parts = path.split(".")
    if not all(parts):
        raise ConfigError.single(path, value, "not a dotted key path (e.g. substrates.mg.serum)", source)
    node: Any = data
    kind: Any = Config
    for j, part in enumerate(parts):
        here = ".".join(parts[: j + 1])
        last = j == len(parts) - 1
        if isinstance(kind, type) and isinstance(node, dict):
            if part not in kind.model_fields:
                hint = did_you_mean(part, list(kind.model_fields))
                raise ConfigError.single(here, NO_VALUE, f"unknown key; {hint}", source)
            sub = unwrap(kind.model_fields[part].annotation)
            if last:
                _assign(node, part, value, kind, here, source)
                return
            if node.get(part) is None and isinstance(sub, type):
                node[part] = sub().model_dump(mode="json")  # an absent section, created with its defaults
            node, kind = node[part], sub
        elif isinstance(kind, tuple) and kind[0] == "list" and isinstance(node, list):
            key = parts[j - 1]
            idx = _find_item(node, part)
            if idx is None:
                raise _no_item(here, key, part, node, source)
            if last:
                _assign(node, idx, value, None, here, source)
                return
            node, kind = node[idx], kind[1]
            if isinstance(kind, tuple) and kind[0] == "union":
                kind = union_member(kind[1], node.get("type") if isinstance(node, dict) else None)
        else:
            prev = ".".join(parts[:j])
            raise ConfigError.single(prev, node, f"not a table, so {here!r} cannot be set", source)


def _assign(node: Any, key: Any, value: Any, owner: Any, path: str, source: str) -> None:
    value = copy.deepcopy(value)
    current = node[key] if isinstance(node, list) else node.get(key)
    if isinstance(value, dict) and isinstance(current, dict):
        node[key] = _merge(current, value, [key] if owner is Config else None, source)
    elif isinstance(value, dict) and isinstance(current, list) and owner is Config and key in NAMED_LISTS:
        node[key] = _merge_named(current, value, key, source)
    else:
        node[key] = value
    if owner is Grid and key in ("shape", "size_um") and value is not None:
        node["size_um" if key == "shape" else "shape"] = None  # the two are alternatives


# --- overlays -------------------------------------------------------------------------------------------


def _expand_dotted(table: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``, merging with nested keys already there."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        value = _expand_dotted(value) if isinstance(value, Mapping) else value
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = _merge(node[parts[-1]], value, None, "<overlay>")
        else:
            node[parts[-1]] = value
    return out


def _merge(base: dict, overlay: dict, top: list | None, source: str) -> dict:
    """Deep-merge ``overlay`` onto a copy of ``base``. At the top level (``top == []``) named lists are
    merged by name; under ``grid`` a new shape replaces size_um and vice versa."""
    out = dict(base)
    for key, value in overlay.items():
        if top == [] and key in NAMED_LISTS:
            out[key] = _merge_named(out.get(key, []), value, key, source)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, top + [key] if top is not None else None, source)
        else:
            out[key] = copy.deepcopy(value)
        if top == ["grid"] and key in ("shape", "size_um") and value is not None:
            out.pop("size_um" if key == "shape" else "shape", None)
    return out


def _merge_named(items: Any, overlay: Any, key: str, source: str) -> list:
    """Merge into a list of named tables: a list adds items (same name replaces), a dict updates by name."""
    if not isinstance(items, list):
        raise ConfigError.single(key, items, f"must be a list of tables ([[{key}]] in TOML)", source)
    out = copy.deepcopy(items)
    if isinstance(overlay, list):
        for item in overlay:
            name = item.get("name") if isinstance(item, dict) else None
            idx = _find_item(out, name, by_index=False) if isinstance(name, str) else None
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = copy.deepcopy(item)
        return out
    if isinstance(overlay, dict):
        for label, update in overlay.items():
            idx = _find_item(out, str(label))
            if idx is None:
                raise _no_item(f"{key}.{label}", key, str(label), out, source)
            if not isinstance(update, dict) or not isinstance(out[idx], dict):
                raise ConfigError.single(f"{key}.{label}", update, "must be a table of keys to update", source)
            out[idx] = _merge(out[idx], update, None, source)
        return out
    raise ConfigError.single(key, overlay, f"must be a list of tables or a table of updates by name", source)


def apply_overlay(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario overlay applied to a base config dict (both as parsed from TOML; neither is changed).

    The overlay's keys override the base's (dotted keys like ``substrates.mg.serum`` parse, in TOML,
    into nested tables; a table given for ``substrates``/``events`` updates items by name); its
    ``[[events]]``/``[[substrates]]`` are added, an item with the same name replacing the base's.
    """
    base_dict = _expand_dotted(copy.deepcopy(dict(base)))
    return _merge(base_dict, _expand_dotted(overlay), [], "<overlay>")


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` from the CLI's ``--set`` -> ``(path, value)``.

    The value is read as a TOML value when it parses (``0.3``, ``[48, 48, 48]``, ``true``, ``"lod"``,
    ``{z_lo = "serum"}``), else kept as the bare string (``lod``).
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not all(key.split(".")):
        raise ConfigError.single(key or text, NO_VALUE, "expected key=value, e.g. substrates.mg.serum=0.3",
                                 "--set")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value
