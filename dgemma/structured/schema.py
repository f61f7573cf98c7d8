"""The supported subset of JSON Schema: checked, compiled into a layout, and validated against.

A schema compiles into a layout: literal JSON text (braces, keys, quotes, separators, constants)
and value slots of a fixed number of token positions. Layout rules:

- object: every property in the order given, `{"key": value, ...}` (optional properties are
  generated too: present optional properties are valid); `additionalProperties` may be false;
- array: `items` repeated n times, n = max(minItems, min(maxItems, 3)) (3 when neither is given);
- string: quotes around a slot of up to `max_string_tokens` tokens (`minLength` / `maxLength` in
  characters); integer / number: a slot (`minimum` / `maximum` inclusive); boolean: a choice of
  true / false; `enum`: a choice among its JSON values; `const` and `null`: literal text.

Keywords outside this subset raise ValueError naming them; annotations (title, description, ...)
are accepted and ignored since they do not constrain values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dgemma.structured.formats import FORMATS
from dgemma.structured.normalize import normalize

ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    # editor hints that SchemaStore schemas carry, and OpenAPI's union tag (normalize.py checks the
    # branches are told apart before a oneOf is laid out)
    "markdownDescription",
    "deprecationMessage",
    "enumDescriptions",
    "markdownEnumDescriptions",
    "discriminator",
}
BY_TYPE = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
    "string": {"type", "minLength", "maxLength", "format"},
    "integer": {"type", "minimum", "maximum"},
    "number": {"type", "minimum", "maximum"},
    "boolean": {"type"},
    "null": {"type"},
}
DEFAULT_ITEMS = 3
# Sizes are bounded before anything is expanded, so no schema a client sends can take long to
# compile or lay out more than a few canvases of structure.
MAX_DEPTH = 32  # nested objects / arrays
MAX_NODES = 2048  # schema nodes after array expansion
MAX_ITEMS = 128  # minItems of one array
MAX_ENUM = 1024  # values of one enum
MAX_PROPERTIES = 256  # properties of one object
MAX_STRING_LENGTH = 4096  # minLength / maxLength
MAX_ABS_NUMBER = 2**53  # |minimum|, |maximum|: integers a float holds exactly


class SlotKind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    CHOICE = "choice"  # enum / boolean: one of a fixed set of JSON texts


@dataclass(frozen=True)
class Slot:
    """A value the model writes."""

    kind: SlotKind
    schema: dict[str, Any]
    options: tuple[str, ...] = ()  # choice: the JSON text of each allowed value
    path: str = "$"


@dataclass
class Layout:
    parts: list[str | Slot] = field(default_factory=list)
    schema: dict[str, Any] = field(
        default_factory=dict
    )  # the normalized schema laid out (validate against it)
    nodes: int = 0  # schema nodes compiled, checked against MAX_NODES

    def text(self, value: str) -> None:
        if self.parts and isinstance(self.parts[-1], str):
            self.parts[-1] += value
        else:
            self.parts.append(value)

    @property
    def slots(self) -> list[Slot]:
        return [p for p in self.parts if isinstance(p, Slot)]


def compile_schema(schema: Any) -> Layout:
    """The layout of `schema` (normalized first: $ref, allOf, Optional, see normalize.py); an
    unsupported or malformed schema is a ValueError naming the keyword and its JSON path."""
    normalized = normalize(schema)
    layout = Layout(schema=normalized)
    _compile(normalized, "$", layout)
    return layout


def _compile(schema: Any, path: str, out: Layout, depth: int = 0) -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"json_schema at {path}: a schema must be an object, got {type(schema).__name__}")
    out.nodes += 1
    if out.nodes > MAX_NODES:
        raise ValueError(
            f"json_schema at {path}: more than {MAX_NODES} values to lay out; send a smaller schema"
        )
    if depth > MAX_DEPTH:
        raise ValueError(f"json_schema at {path}: nested deeper than {MAX_DEPTH} levels")
    if "enum" in schema or "const" in schema:
        _choice(schema, path, out)
        return
    kind = schema.get("type")
    if isinstance(kind, list):
        raise ValueError(f"json_schema at {path}: a list of types is not supported; give one `type`")
    if kind is None:
        known = set().union(*BY_TYPE.values()) | ANNOTATIONS | {"enum", "const"}
        unsupported = sorted(set(schema) - known)
        if unsupported:
            raise ValueError(f"json_schema at {path}: unsupported keyword {unsupported[0]!r}")
        raise ValueError(
            f"json_schema at {path}: no `type` (or enum, const, $ref, anyOf); say what the value is"
        )
    if kind not in BY_TYPE:
        raise ValueError(f"json_schema at {path}: `type` must be one of {', '.join(BY_TYPE)}, got {kind!r}")
    unsupported = sorted(set(schema) - BY_TYPE[kind] - ANNOTATIONS)
    if unsupported:
        raise ValueError(f"json_schema at {path}: unsupported keyword {unsupported[0]!r} for type {kind}")
    if kind == "object":
        _object(schema, path, out, depth)
    elif kind == "array":
        _array(schema, path, out, depth)
    elif kind == "string" and "format" in schema:
        _format(schema, path, out)
    elif kind == "string":
        lo, hi = _bounds(schema, path, "minLength", "maxLength", integer=True, limit=MAX_STRING_LENGTH)
        if lo is not None and lo < 0:
            raise ValueError(f"json_schema at {path}: `minLength` must be >= 0")
        out.text('"')
        out.parts.append(Slot(SlotKind.STRING, schema, path=path))
        out.text('"')
    elif kind in ("integer", "number"):
        _bounds(schema, path, "minimum", "maximum", integer=kind == "integer", limit=MAX_ABS_NUMBER)
        out.parts.append(Slot(SlotKind(kind), schema, path=path))
    elif kind == "boolean":
        out.parts.append(Slot(SlotKind.CHOICE, schema, ("true", "false"), path))
    else:
        out.text("null")


def _format(schema: dict, path: str, out: Layout) -> None:
    """A string of a known format: literal separators and a choice slot per field (formats.py)."""
    fmt = schema["format"]
    if fmt not in FORMATS:
        raise ValueError(
            f"json_schema at {path}: unsupported keyword 'format' value {str(fmt)[:40]!r} "
            f"(supported: {', '.join(FORMATS)})"
        )
    if "minLength" in schema or "maxLength" in schema:
        raise ValueError(f"json_schema at {path}: `minLength`/`maxLength` next to `format` are not supported")
    out.text('"')
    for i, piece in enumerate(FORMATS[fmt]):
        if isinstance(piece, str):
            out.text(piece)
        else:
            out.parts.append(Slot(SlotKind.CHOICE, {"format": fmt}, piece, f"{path}<{fmt}:{i}>"))
    out.text('"')


def _object(schema: dict, path: str, out: Layout, depth: int) -> None:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise ValueError(f"json_schema at {path}: `properties` must be an object")
    if len(props) > MAX_PROPERTIES:
        raise ValueError(f"json_schema at {path}: more than {MAX_PROPERTIES} properties")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"json_schema at {path}: `required` must be a list of property names")
    missing = [r for r in required if r not in props]
    if missing:
        raise ValueError(
            f"json_schema at {path}: required property {missing[0]!r} has no schema in `properties`"
        )
    if schema.get("additionalProperties", False) not in (False, True):
        raise ValueError(f"json_schema at {path}: `additionalProperties` may only be true or false")
    out.text("{")
    for i, (key, sub) in enumerate(props.items()):
        out.text((", " if i else "") + json.dumps(key, ensure_ascii=False) + ": ")
        _compile(sub, f"{path}.{key}", out, depth + 1)
    out.text("}")


def _array(schema: dict, path: str, out: Layout, depth: int) -> None:
    if "items" not in schema:
        raise ValueError(f"json_schema at {path}: an array needs `items`")
    lo, hi = _bounds(schema, path, "minItems", "maxItems", integer=True)
    lo = lo or 0
    if lo < 0:
        raise ValueError(f"json_schema at {path}: `minItems` must be >= 0")
    if lo > MAX_ITEMS:
        raise ValueError(f"json_schema at {path}: `minItems` is {lo}; at most {MAX_ITEMS} items are laid out")
    n = max(lo, min(DEFAULT_ITEMS if hi is None else hi, DEFAULT_ITEMS))
    out.text("[")
    for i in range(n):
        if i:
            out.text(", ")
        _compile(schema["items"], f"{path}[{i}]", out, depth + 1)
    out.text("]")


def _choice(schema: dict, path: str, out: Layout) -> None:
    unsupported = sorted(set(schema) - {"enum", "const", "type"} - ANNOTATIONS)
    if unsupported:
        raise ValueError(f"json_schema at {path}: unsupported keyword {unsupported[0]!r} next to enum/const")
    values = [schema["const"]] if "const" in schema else schema["enum"]
    if not isinstance(values, list) or not values:
        raise ValueError(f"json_schema at {path}: `enum` must be a non-empty list")
    if len(values) > MAX_ENUM:
        raise ValueError(f"json_schema at {path}: `enum` has {len(values)} values; at most {MAX_ENUM}")
    for v in values:
        if isinstance(v, dict | list) or (isinstance(v, int | float) and not _finite(v, MAX_ABS_NUMBER)):
            raise ValueError(f"json_schema at {path}: enum values must be strings, numbers, booleans or null")
        if "type" in schema and not _is_type(v, schema["type"]):
            raise ValueError(f"json_schema at {path}: enum value {v!r} is not of type {schema['type']}")
    options = tuple(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in values))
    if len(options) == 1:
        out.text(options[0])
    else:
        out.parts.append(Slot(SlotKind.CHOICE, schema, options, path))


def _finite(v: Any, limit: float) -> bool:
    """A number whose magnitude is at most `limit` (huge integers and floats, inf and nan are not)."""
    try:
        return math.isfinite(float(v)) and abs(v) <= limit
    except OverflowError:
        return False


def _bounds(
    schema: dict, path: str, low: str, high: str, integer: bool, limit: float = MAX_ABS_NUMBER
) -> tuple[Any, Any]:
    values = []
    for key in (low, high):
        v = schema.get(key)
        ok = v is None or (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and _finite(v, limit)
            and (not integer or v == int(v))
        )
        if not ok:
            kind = "whole number" if integer else "number"
            raise ValueError(
                f"json_schema at {path}: `{key}` must be a {kind} of magnitude at most {limit:g}"
            )
        values.append(None if v is None else (int(v) if integer else v))
    if values[0] is not None and values[1] is not None and values[0] > values[1]:
        raise ValueError(f"json_schema at {path}: `{low}` is greater than `{high}`")
    return values[0], values[1]


def _is_type(value: Any, kind: str) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return kind in checks and checks[kind](value)


def validate(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Problems of `value` against a supported schema (empty: valid)."""
    if "const" in schema:
        return [] if _same(value, schema["const"]) else [f"{path}: must equal {schema['const']!r}"]
    if "enum" in schema:
        return [] if any(_same(value, v) for v in schema["enum"]) else [f"{path}: not one of the enum values"]
    kind = schema["type"]
    if not _is_type(value, kind) and not (kind == "object" and isinstance(value, dict)):
        if not (kind == "array" and isinstance(value, list)):
            return [f"{path}: expected {kind}"]
    problems: list[str] = []
    if kind == "object":
        props = schema.get("properties", {})
        problems += [f"{path}: missing {r!r}" for r in schema.get("required", []) if r not in value]
        if schema.get("additionalProperties", True) is False:
            problems += [f"{path}: unexpected {k!r}" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                problems += validate(v, props[k], f"{path}.{k}")
    elif kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", math.inf):
            problems.append(f"{path}: {len(value)} items outside the bounds")
        for i, v in enumerate(value):
            problems += validate(v, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
            problems.append(f"{path}: length {len(value)} outside the bounds")
    elif kind in ("integer", "number"):
        if not schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf):
            problems.append(f"{path}: {value} outside the bounds")
    return problems


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b
