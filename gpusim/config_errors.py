"""Configuration errors for people: one line per problem, naming the key, the value and the range.

Every way a configuration can be wrong ends in :class:`ConfigError`. pydantic's ``ValidationError`` is
translated here: its ``loc`` tuples become dotted key paths that name list items by their ``name``
(``substrates.mg.serum``, ``events.implant.rate_umol_per_min``; the index when the name is missing or
ambiguous), and its messages become the allowed range read from the field's own constraints.

Checks that span several keys raise :func:`problems` from a validator: a pydantic custom error that
carries ``(relative path, value, message)`` triples, so that the error still names the exact key.
"""

import difflib
import math
import re
import types
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

#: Marks a problem that has no value to show (a missing key, a check on a whole section).
NO_VALUE = type("_NoValue", (), {"__repr__": lambda self: "<no value>"})()

#: Top-level keys whose items are addressed by their ``name`` in paths and overrides.
NAMED_LISTS = ("substrates", "events")

_PROBLEMS_TYPE = "config_problems"
_REPR_MAX = 80


class ConfigError(ValueError):
    """A configuration that cannot be used; ``str()`` gives one line per problem.

    Each line reads ``<source>: <dotted.key.path> = <value!r>: <what is wrong, the allowed range>``
    (``<source>`` is the file name or ``'<dict>'``). ``path`` is the first problem's key path ('' for
    a file-level problem such as a TOML syntax error); ``problems`` lists ``(path, message)`` pairs,
    the message being the text after the value.
    """

    def __init__(self, lines: list[str], problems: list[tuple[str, str]], source: str = "<dict>"):
        super().__init__("\n".join(lines))
        self.lines = list(lines)
        self.problems = list(problems)
        self.path = problems[0][0] if problems else ""
        self.source = source

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def __reduce__(self) -> tuple:
        # rebuild from the parts, so the error survives copying and transport to other processes
        return (type(self), (self.lines, self.problems, self.source))

    @classmethod
    def single(cls, path: str, value: Any, message: str, source: str = "<dict>") -> "ConfigError":
        """One problem at ``path`` (``value`` may be :data:`NO_VALUE`)."""
        return cls([format_line(source, path, value, message)], [(path, message)], source)


class UnknownSubstrateError(ConfigError, KeyError):
    """``Config.substrate(name)`` for a name the configuration does not declare (also a KeyError)."""

    __str__ = ConfigError.__str__


def format_line(source: str, path: str, value: Any, message: str) -> str:
    """``<source>: <path> = <value!r>: <message>``, leaving out the parts that are absent."""
    head = source
    if isinstance(value, tuple):
        value = list(value)  # the user wrote a list
    if path:
        head += f": {path}"
        if value is not NO_VALUE:
            head += f" = {short_repr(value)}"
    return f"{head}: {message}"


def short_repr(value: Any) -> str:
    """``repr`` cut to a readable length (long tables and lists end in ``...``)."""
    text = repr(value)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def did_you_mean(word: Any, allowed: list[str], list_allowed: bool = True) -> str:
    """``did you mean 'x'?`` for the closest allowed word (case-insensitive), else the allowed words
    (or '' when ``list_allowed`` is false)."""
    lowered = {str(a).lower(): a for a in allowed}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f"did you mean {lowered[close[0]]!r}?"
    if not list_allowed:
        return ""
    return "allowed: " + (", ".join(allowed) if allowed else "(none)")


def problems(*items: tuple[str, Any, str]) -> NoReturn:
    """Raise, from inside a validator, problems at key paths relative to the model being validated.

    Each item is ``(relative dotted path, value or NO_VALUE, message)``; '' means the model itself.
    """
    summary = "; ".join(f"{p}: {m}" if p else m for p, _, m in items)
    raise PydanticCustomError(_PROBLEMS_TYPE, "{summary}", {"summary": summary, "problems": list(items)})


# --- walking the schema along a pydantic ``loc`` -----------------------------------------------------


def unwrap(annotation: Any) -> Any:
    """The structure behind an annotation: a model class, ``("list", item)``, ``("union", [..])`` or None.

    ``Optional[X]`` unwraps to X; ``Annotated`` metadata is dropped; anything else is a leaf (None).
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner = [unwrap(a) for a in args]
        if len(inner) == 1:
            return inner[0]
        models = [t for t in inner if isinstance(t, type)]
        return ("union", models) if models and len(models) == len(inner) else None
    if origin is list:
        return ("list", unwrap(get_args(annotation)[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def union_member(members: list[type], tag: Any) -> type | None:
    """The member of a ``type``-discriminated union whose tag is ``tag``."""
    for member in members:
        field = member.model_fields.get("type")
        if field is not None and field.default == tag:
            return member
    return None


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]+")


def key_label(key: Any) -> str:
    """A key as it appears in a path: plain keys as they are, others quoted (``'a.b'``, ``''``)."""
    text = str(key)
    return text if _PLAIN_KEY.fullmatch(text) else repr(text)


def item_label(items: Any, index: int) -> str:
    """How list item ``index`` appears in a path: its ``name`` when valid and unique, else the index."""
    try:
        name = items[index].get("name") if isinstance(items[index], dict) else None
        if isinstance(name, str) and name.isidentifier():
            names = [it.get("name") for it in items if isinstance(it, dict)]
            if names.count(name) == 1:
                return name
    except (IndexError, TypeError, AttributeError):
        pass
    return str(index)


def range_text(field: Any) -> str:
    """The allowed range of a field from its constraints: ``'>= 0'``, ``'in (0, 1)'`` or ''."""
    lo = hi = None
    lo_open = hi_open = False
    for meta in getattr(field, "metadata", ()):
        if isinstance(meta, annotated_types.Gt):
            lo, lo_open = meta.gt, True
        elif isinstance(meta, annotated_types.Ge):
            lo, lo_open = meta.ge, False
        elif isinstance(meta, annotated_types.Lt):
            hi, hi_open = meta.lt, True
        elif isinstance(meta, annotated_types.Le):
            hi, hi_open = meta.le, False
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return ""


def _num(x: Any) -> str:
    if isinstance(x, int) and x >= 2**32 and x & (x - 1) == 0:
        return f"2^{x.bit_length() - 1}"
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


class _Missing:
    pass


_MISSING = _Missing()


def _walk(root: type, data: Any, loc: tuple) -> tuple[list[str], Any, Any, Any, tuple, list[str]]:
    """Follow ``loc`` through the schema and the raw data.

    Returns (path parts, raw value at the path, the model holding the last key, its FieldInfo, the
    part of ``loc`` left over (e.g. an element index inside a vector value), the tags of the last
    ``type``-discriminated union passed).
    """
    parts: list[str] = []
    node, kind, owner, field = data, root, root, None
    tags: list[str] = []
    i = 0
    while i < len(loc):
        key = loc[i]
        if isinstance(kind, type) and isinstance(key, str):
            owner, field = kind, kind.model_fields.get(key)
            parts.append(key_label(key))
            node = node.get(key, _MISSING) if isinstance(node, dict) else _MISSING
            kind = unwrap(field.annotation) if field is not None else None
        elif isinstance(kind, tuple) and kind[0] == "list" and isinstance(key, int):
            parts.append(item_label(node, key))
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else _MISSING
            kind, field = kind[1], None
            if isinstance(kind, tuple) and kind[0] == "union":
                tags = [m.model_fields["type"].default for m in kind[1] if "type" in m.model_fields]
                tag = node.get("type") if isinstance(node, dict) else None
                member = union_member(kind[1], tag)
                if i + 1 < len(loc) and member is not None and loc[i + 1] == tag:
                    i += 1  # pydantic names the union member by its tag; the path does not
                kind = member
        else:
            break
        i += 1
    return parts, node, owner, field, tuple(loc[i:]), tags


# --- pydantic error -> one problem -------------------------------------------------------------------

_SIMPLE = {
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "model_type": "must be a table (key = value pairs)",
    "model_attributes_type": "must be a table (key = value pairs)",
    "dict_type": "must be a table (key = value pairs)",
}


def _describe(err: dict, root: type, data: Any) -> list[tuple[str, Any, str]]:
    """(path, value, message) triples for one pydantic error."""
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    parts, node, owner, field, rest, tags = _walk(root, data, tuple(err.get("loc", ())))
    value = err.get("input", NO_VALUE) if not rest else (NO_VALUE if node is _MISSING else node)
    prefix = f"element {'.'.join(str(r) for r in rest)}: " if rest else ""

    if etype == _PROBLEMS_TYPE:
        out = []
        for rel, val, msg in ctx.get("problems", []):
            out.append((".".join(parts + ([rel] if rel else [])), val, msg))
        return out
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        allowed = ", ".join(repr(t) for t in tags)
        path = ".".join(parts + ["type"])
        if etype == "union_tag_not_found":
            return [(path, NO_VALUE, f"required key is missing; one of {allowed}")]
        return [(path, ctx.get("tag", NO_VALUE), f"must be one of {allowed}")]
    if etype == "missing":
        expected = "" if rest else _expected(field)
        text = "required key is missing" + (f" ({expected})" if expected else "")
        return [(".".join(parts), NO_VALUE, prefix + text)]
    if etype == "extra_forbidden":
        allowed = list(owner.model_fields) if isinstance(owner, type) else []
        key = err["loc"][-1] if err.get("loc") else ""
        return [(".".join(parts), value, f"unknown key; {did_you_mean(key, allowed)}")]

    rng = "" if rest else range_text(field)
    if etype in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        message = f"must be {rng}" if rng else _pydantic_text(err)
    elif etype in ("float_type", "float_parsing", "finite_number"):
        message = "must be a finite number" + (f" {rng}" if rng else "")
    elif etype in ("int_type", "int_parsing", "int_from_float"):
        message = "must be an integer" + (f" {rng}" if rng else "")
    elif etype == "literal_error":
        message = f"must be {ctx.get('expected', '')}"
    elif etype == "value_error":
        message = str(ctx.get("error", err.get("msg", "")))
    elif etype in _SIMPLE:
        message = _SIMPLE[etype]
        if etype == "list_type" and len(parts) == 1 and parts[0] in NAMED_LISTS:
            message = f"must be a list of tables ([[{parts[0]}]] in TOML)"
    else:
        message = _pydantic_text(err)
    return [(".".join(parts) or "(config)", value, prefix + message)]


def _expected(field: Any) -> str:
    """What a required field takes: its Literal choices or its range."""
    literal = [a for a in get_args(unwrap_literal(getattr(field, "annotation", None)))]
    if literal:
        return "one of " + ", ".join(repr(a) for a in literal)
    rng = range_text(field)
    return f"a number {rng}" if rng else ""


def unwrap_literal(annotation: Any) -> Any:
    """The Literal inside an (Annotated) annotation, or None."""
    if get_origin(annotation) is Annotated:
        return unwrap_literal(get_args(annotation)[0])
    return annotation if get_origin(annotation) is Literal else None


def _pydantic_text(err: dict) -> str:
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def from_validation_error(exc: ValidationError, root: type, data: Any, source: str) -> ConfigError:
    """Translate pydantic's error for model ``root`` validated from ``data`` into a ConfigError."""
    lines: list[str] = []
    found: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        for path, value, message in _describe(err, root, data):
            path = path or "(config)"
            lines.append(format_line(source, path, value, message))
            found.append((path, message))
    return ConfigError(lines, found, source)


def is_number(value: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
