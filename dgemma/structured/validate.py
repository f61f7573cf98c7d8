"""Checking a value against a normalized schema (what the layout compiled): the final check of
every structured output, and the slot checks of numbers. Mirrors the keywords schema.py lays out."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from dgemma.structured import patterns
from dgemma.structured.keywords import TYPE_KEYWORDS


def inferred_type(schema: dict) -> str | None:
    """The type a schema without `type` describes when all its keywords belong to one type (e.g.
    only `properties` / `required`: an object); None when there is no such hint."""
    kinds = {k for k, words in TYPE_KEYWORDS.items() if words & set(schema)} - {"integer"}
    return kinds.pop() if len(kinds) == 1 else None


def is_type(value: Any, kind: str) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return kind in checks and checks[kind](value)


def json_type(value: Any) -> str:
    """The JSON type name of a scalar (bool before int: True is not an integer here)."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return kinds.get(type(value), "string")


def validate(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Problems of `value` against a supported (normalized) schema (empty: valid)."""
    if schema is True or schema is False:  # boolean schemas: anything, or nothing
        return [] if schema else [f"{path}: no value is allowed here"]
    if "const" in schema:
        return [] if _same(value, schema["const"]) else [f"{path}: must equal {schema['const']!r}"]
    if "enum" in schema:
        return [] if any(_same(value, v) for v in schema["enum"]) else [f"{path}: not one of the enum values"]
    kind = schema.get("type") or inferred_type(schema)
    if kind is None:
        return []
    if not is_type(value, kind) and not (kind == "object" and isinstance(value, dict)):
        if not (kind == "array" and isinstance(value, list)):
            return [f"{path}: expected {kind}"]
    if kind == "object":
        return _validate_object(value, schema, path)
    problems: list[str] = []
    if kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", math.inf):
            problems.append(f"{path}: {len(value)} items outside the bounds")
        if schema.get("uniqueItems") and len({canonical(v) for v in value}) < len(value):
            problems.append(f"{path}: items repeat")
        prefix, rest = schema.get("prefixItems", []), schema.get("items", {})
        for i, v in enumerate(value):
            item = prefix[i] if i < len(prefix) else rest
            if item is False:
                problems.append(f"{path}[{i}]: no item is allowed here")
            elif isinstance(item, dict):
                problems += validate(v, item, f"{path}[{i}]")
    elif kind == "string":
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
            problems.append(f"{path}: length {len(value)} outside the bounds")
        if "pattern" in schema and not patterns.matches(schema["pattern"], value):
            problems.append(f"{path}: does not match the pattern")
    elif kind in ("integer", "number"):
        if not number_ok(value, schema):
            problems.append(f"{path}: {value} outside the bounds")
    return problems


def bounds(schema: dict) -> tuple[float, float, float | None, float | None]:
    """(minimum, maximum, exclusiveMinimum, exclusiveMaximum), draft 4's boolean exclusive bounds
    turned into draft 6's numbers; absent ones are -inf / inf / None / None."""
    lo, hi = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlo is True:
        xlo, lo = lo, -math.inf
    if xhi is True:
        xhi, hi = hi, math.inf
    number = lambda b: b if isinstance(b, int | float) and not isinstance(b, bool) else None  # noqa: E731
    return lo, hi, number(xlo), number(xhi)


def closed_range(schema: dict) -> tuple[float, float]:
    """[lo, hi] holding every number the bounds allow (exclusive bounds taken as inclusive: for
    tests that only need to be conservative)."""
    lo, hi, xlo, xhi = bounds(schema)
    return max(lo, -math.inf if xlo is None else xlo), min(hi, math.inf if xhi is None else xhi)


def number_ok(value: float, schema: dict) -> bool:
    """`minimum`, `maximum`, exclusive bounds (draft 6 numbers or draft 4 booleans), `multipleOf`."""
    lo, hi, xlo, xhi = bounds(schema)
    if not lo <= value <= hi:
        return False
    if (xlo is not None and not value > xlo) or (xhi is not None and not value < xhi):
        return False
    step = schema.get("multipleOf")
    return step is None or is_multiple(value, step)


def is_multiple(value: float, step: float) -> bool:
    """`multipleOf` exactly as the `jsonschema` package decides it: for a float step, the float
    quotient must be a whole number (so 0.3 is not a multiple of 0.1: 0.3 / 0.1 = 2.9999999999999996),
    exactly in fractions if it overflows; for a whole-number step, no remainder."""
    if isinstance(step, float):
        quotient = value / step
        try:
            return int(quotient) == quotient
        except OverflowError:
            return (Fraction(value) / Fraction(step)).denominator == 1
    return not value % step


def _validate_object(value: dict, schema: dict, path: str) -> list[str]:
    props = schema.get("properties", {})
    keyed = schema.get("patternProperties", {})
    extra = schema.get("additionalProperties", schema.get("unevaluatedProperties", True))
    problems = [f"{path}: missing {r!r}" for r in schema.get("required", []) if r not in value]
    if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", math.inf):
        problems.append(f"{path}: {len(value)} properties outside the bounds")
    for word in ("dependentRequired", "dependencies"):
        for key, needs in schema.get(word, {}).items():
            needs = [needs] if isinstance(needs, str) else needs
            if key in value and isinstance(needs, list):
                problems += [f"{path}: {key!r} needs {n!r}" for n in needs if n not in value]
    names = schema.get("propertyNames", True)
    for k, v in value.items():
        if names is False or (isinstance(names, dict) and validate(k, names)):
            problems.append(f"{path}: key {k!r} fails propertyNames")
        matched = [p for p in keyed if patterns.matches(p, k)]
        if k in props:
            problems += validate(v, props[k], f"{path}.{k}")
        for p in matched:
            problems += validate(v, keyed[p], f"{path}.{k}") if isinstance(keyed[p], dict) else []
        if k not in props and not matched:
            if extra is False:
                problems.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                problems += validate(v, extra, f"{path}.{k}")
    return problems


def canonical(value: Any) -> Any:
    """A hashable form of a JSON value in which two values are equal exactly when JSON Schema
    (and the `jsonschema` package) calls them equal: 1 and 1.0 alike, true and 1 not, object keys
    in any order."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(canonical(v) for v in value))
    return ("object", frozenset((k, canonical(v)) for k, v in value.items()))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b
