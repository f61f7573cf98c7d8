"""When a layout can never write a value another schema accepts: what lets a `oneOf` branch, a
`not` and an `else` be laid out with the guarantee kept. Over-approximates the other schema (its
`$ref`s followed, `anyOf` all branches, `allOf` any part), so "excluded" is always sound."""

from __future__ import annotations

import json
from typing import Any

from dgemma.structured.refs import pointer

COMBINATORS = ("anyOf", "oneOf")


def _target(root: dict, ref: str) -> dict | None:
    try:
        return pointer(root, ref, "$")
    except ValueError:
        return None


def excludes(chosen: dict, other: Any, root: dict, depth: int = 0) -> bool:
    """True when no value the layout of `chosen` (normalized) can write is valid against `other`."""
    if other is False:
        return True
    if not isinstance(other, dict) or depth > 8:
        return False
    if isinstance(other.get("$ref"), str) and other["$ref"].startswith("#"):
        target = _target(root, other["$ref"])
        if target is None:
            return False
        if excludes(chosen, target, root, depth + 1):
            return True
    if any(excludes(chosen, p, root, depth + 1) for p in other.get("allOf", []) if isinstance(p, dict)):
        return True
    for key in COMBINATORS:
        branches = other.get(key)
        if (
            isinstance(branches, list)
            and branches
            and all(excludes(chosen, b, root, depth + 1) for b in branches)
        ):
            return True
    return _excluded_by_keywords(chosen, other)


def _values(schema: dict) -> list | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return list(enum) if isinstance(enum, list) else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "integer" if float(value).is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def _compatible(a: str, b: str) -> bool:
    return a == b or {a, b} == {"integer", "number"}


def _excluded_by_keywords(chosen: dict, other: dict) -> bool:
    mine = _values(chosen)
    theirs = _values(other)
    kinds = [_json_type(v) for v in mine] if mine is not None else [chosen.get("type")]
    if None in kinds:
        return False  # a layout we cannot describe: assume it can match
    if theirs is not None:
        if mine is not None:
            return not any(
                json.dumps(a) == json.dumps(b) or a == b
                for a in mine
                for b in theirs
                if _json_type(a) == _json_type(b)
            )
        return not any(_compatible(kinds[0], _json_type(v)) for v in theirs)
    if "type" in other and not any(_compatible(k, t) for k in kinds for t in as_list(other["type"])):
        return True
    if kinds != ["object"] or mine is not None:
        return False
    props = chosen.get("properties", {})
    present = set(chosen.get("required", [])) & set(props)
    required = other.get("required")
    if isinstance(required, list) and any(r not in props for r in required):
        return True  # `other` needs a key this layout never writes
    their_props = other.get("properties") if isinstance(other.get("properties"), dict) else {}
    for key in present:
        if isinstance(their_props.get(key), dict) and isinstance(props[key], dict):
            if excludes(props[key], their_props[key], {}, 1):
                return True  # the value this layout writes at `key` is one `other` refuses there
        tags, allowed = (
            _values(props[key]),
            _values(their_props.get(key, {})) if isinstance(their_props.get(key), dict) else None,
        )
        if (
            tags is not None
            and allowed is not None
            and not any(json.dumps(t) == json.dumps(a) for t in tags for a in allowed)
        ):
            return True  # a discriminator: this layout's tag is not one `other` allows
    if other.get("additionalProperties") is False and not other.get("patternProperties"):
        return any(key not in their_props for key in present)
    return False


def as_list(kind: Any) -> list:
    return kind if isinstance(kind, list) else [kind]
