"""Built-in scenarios: TOML files in this package. A scenario may name a ``base`` scenario; it is then an
overlay of that base (dotted keys override, its ``[[events]]`` are added or replace same-named ones)."""

from __future__ import annotations

import importlib.resources
import tomllib

from ..config import Config, ConfigError, apply_overlay


def names() -> list[str]:
    """Names of the built-in scenarios."""
    files = importlib.resources.files(__name__).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def description(name: str) -> str:
    """The first comment line of the scenario's TOML."""
    text = _text(name)
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _text(name: str) -> str:
    if name not in names():
        import difflib

        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        raise ConfigError.single("scenario", name, f"no such built-in scenario ({', '.join(names())});{hint}", "<command line>")
    return importlib.resources.files(__name__).joinpath(f"{name}.toml").read_text()


def scenario_dict(name: str) -> dict:
    """The scenario as a plain dict, overlays applied."""
    data = tomllib.loads(_text(name))
    base = data.pop("base", None)
    if base is not None:
        data = apply_overlay(scenario_dict(base), data)
    return data


def scenario_config(name: str) -> Config:
    """The validated :class:`Config` of built-in scenario ``name``."""
    return Config.from_dict(scenario_dict(name), source=f"scenario {name}")
