"""MODEL.md's parameter tables, generated from the config schema (the one home of every default).

``python -m gpusim.docs`` rewrites the generated part of MODEL.md (between the markers); a test checks
that MODEL.md is current, so a changed default or description cannot leave the documentation behind.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import config as C

BEGIN = "<!-- BEGIN GENERATED PARAMETER TABLES (python -m gpusim.docs) -->"
END = "<!-- END GENERATED PARAMETER TABLES -->"


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _model_of(annotation):
    """The BaseModel class inside an annotation like ``X | None`` or ``list[X]``, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _rows(model: type[BaseModel], prefix: str, skip=()) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        sub = _model_of(info.annotation)
        if sub is not None and name not in ("boundary",):
            rows += _rows(sub, f"{prefix}{name}.")
            continue
        if info.default is not PydanticUndefined:
            default = info.default
        elif info.default_factory is not None:
            default = info.default_factory()
        else:
            default = "required"
        desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{prefix}{name}` | {_fmt(default)} | {desc} |")
    return rows


def _table(title: str, rows: list[str]) -> str:
    head = f"### {title}\n\n| key | default | unit; meaning; source |\n|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


def _substrate_defaults() -> str:
    out = ["### Named substrates: defaults by name\n",
           "A `[[substrates]]` entry named `mg`, `o2` or `chemokine` takes these defaults for every key it "
           "does not give (values in the substrate's unit).\n"]
    for sub, table in C.SUBSTRATE_DEFAULTS.items():
        out.append(f"\n**`{sub}`**\n\n| key | default | source |\n|---|---|---|")
        for key, (value, source) in table.items():
            out.append(f"| `substrates.{sub}.{key}` | {_fmt(value)} | {source.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def parameter_tables() -> str:
    """The generated Markdown: every key with default and description."""
    parts = [
        _table("Run", _rows(C.Config, "", skip=("grid", "time", "substrates", "vessels", "tumor", "tcells",
                                                "events", "output", "parallel"))),
        _table("[grid] and [time]", _rows(C.Grid, "grid.") + _rows(C.Time, "time.")),
        _table("[[substrates]] (any name)", _rows(C.Substrate, "substrates.<name>.")),
        _substrate_defaults(),
        _table("[vessels]", _rows(C.Vessels, "vessels.")),
        _table("[tumor]", _rows(C.Tumor, "tumor.")),
        _table("[tcells] and [tcells.lfa1]", _rows(C.TCells, "tcells.")),
    ]
    for ev in typing.get_args(typing.get_args(C.Event)[0]):
        kind = ev.model_fields["type"].default
        parts.append(_table(f"[[events]] type = \"{kind}\"", _rows(ev, "events.<name>.", skip=("type",))))
    parts.append(_table("[output] and [parallel]", _rows(C.Output, "output.") + _rows(C.Parallel, "parallel.")))
    return "\n".join(parts)


def render(text: str) -> str:
    """``text`` (MODEL.md) with its generated part replaced by the current tables."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{parameter_tables()}\n{END}{tail}"


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "MODEL.md"
    path.write_text(render(path.read_text()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
