"""Schemas as clients write them -> the subset the layout compiles (`schema.py`).

What this resolves, so that the schemas pydantic, the `openai` SDK and LangChain send work:

- local `$ref`s (`#/$defs/X`, `#/definitions/X`, any JSON pointer into the document) are inlined;
  a reference that leads back to itself more than `MAX_REF_DEPTH` times is refused, except where
  it is optional (`anyOf` with null): there the recursion ends with null;
- `allOf` is merged into one schema (a keyword given twice must agree);
- `anyOf` / `oneOf` / a `type` list with `null` among plain alternatives (`Optional[X]`): the
  non-null alternative is laid out (a present value is valid);
- `anyOf` with several non-null branches: the first branch is laid out (valid for `anyOf`);
  `oneOf` likewise when no value can match two branches (each branch its own `type`, or a
  discriminator property with a distinct `const` per branch); other `oneOf`s are refused.

The result only narrows the client's schema: every value valid against it is valid against the
original. Anything still unsupported is refused by `compile_schema`, naming the keyword and path.
"""

from __future__ import annotations

import json
from typing import Any

MAX_REF_DEPTH = 4  # nested expansions of one $ref (a recursive model unrolled this many levels)
MAX_NORMALIZED_NODES = 4096
_COMBINATORS = ("anyOf", "oneOf")


def normalize(schema: Any) -> Any:
    """The client's schema in the compiled subset; ValueError naming the keyword and its JSON path."""
    if not isinstance(schema, dict):
        raise ValueError(f"json_schema at $: a schema must be an object, got {type(schema).__name__}")
    budget = [MAX_NORMALIZED_NODES]
    return _walk(schema, schema, "$", (), budget)


def _walk(node: Any, root: dict, path: str, stack: tuple[str, ...], budget: list[int]) -> Any:
    """`stack`: the $refs being expanded above this node (for the recursion bound)."""
    if not isinstance(node, dict):
        return node
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"json_schema at {path}: the schema expands past {MAX_NORMALIZED_NODES} nodes")
    node = {k: v for k, v in node.items() if k not in ("$defs", "definitions")}
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(
                f"json_schema at {path}.$ref: {str(ref)[:80]!r} is not a local reference (#/...)"
            )
        if stack.count(ref) >= MAX_REF_DEPTH:
            raise ValueError(
                f"json_schema at {path}.$ref: {ref!r} recurses deeper than {MAX_REF_DEPTH} levels"
            )
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target = dict(_pointer(root, ref, path))
        merged = _merge(target, siblings, path) if siblings else target
        return _walk(merged, root, path, (*stack, ref), budget)
    if "allOf" in node:
        node = _merge_all_of(node, path)
        return _walk(node, root, path, stack, budget)
    for key in _COMBINATORS:
        if key in node:
            return _walk(_choose_branch(node, key, path, stack, root), root, path, stack, budget)
    if isinstance(node.get("type"), list):
        node = _collapse_type_list(node, path)
    if node.get("nullable") is True:  # OpenAPI style: a present value of the type is valid
        node = {k: v for k, v in node.items() if k != "nullable"}
    out = dict(node)
    if isinstance(node.get("properties"), dict):
        out["properties"] = {
            k: _walk(v, root, f"{path}.{k}", stack, budget) for k, v in node["properties"].items()
        }
    if isinstance(node.get("items"), dict):
        out["items"] = _walk(node["items"], root, f"{path}[]", stack, budget)
    return out


def _pointer(root: dict, ref: str, path: str) -> dict:
    target: Any = root
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise ValueError(f"json_schema at {path}: `$ref` {ref!r} points to nothing")
    if not isinstance(target, dict):
        raise ValueError(f"json_schema at {path}: `$ref` {ref!r} does not point to a schema")
    return target


def _merge_all_of(node: dict, path: str) -> dict:
    parts = node["allOf"]
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise ValueError(f"json_schema at {path}.allOf: `allOf` must be a non-empty list of schemas")
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        if any(k in part for k in ("allOf", "$ref", *_COMBINATORS)):
            raise ValueError(
                f"json_schema at {path}.allOf: nested combinators or $ref inside `allOf` are not merged"
            )
        merged = _merge(merged, part, f"{path}.allOf")
    return merged


def _merge(a: dict, b: dict, path: str) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key in ("title", "description", "default", "examples", "$comment"):
            out.setdefault(key, value)
        elif key == "properties" and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = list(dict.fromkeys(out[key] + value))
        elif key in out and out[key] != value:
            raise ValueError(f"json_schema at {path}: `{key}` is given twice with different values")
        else:
            out[key] = value
    return out


def _is_null(branch: Any) -> bool:
    return isinstance(branch, dict) and (branch.get("type") == "null" or branch.get("const", 0) is None)


def _choose_branch(node: dict, key: str, path: str, stack: tuple[str, ...], root: dict) -> dict:
    branches = node[key]
    if not isinstance(branches, list) or not branches or not all(isinstance(b, dict) for b in branches):
        raise ValueError(f"json_schema at {path}.{key}: `{key}` must be a non-empty list of schemas")
    nulls = [b for b in branches if _is_null(b)]
    real = [b for b in branches if not _is_null(b)] or branches[:1]
    exhausted = [b for b in real if stack.count(b.get("$ref", "")) >= MAX_REF_DEPTH - 1]
    if nulls and exhausted and len(real) == 1:  # Optional[Recursive]: end the recursion with null
        real = nulls
    if key == "oneOf" and len(real) > 1 and not _exclusive([_deref(b, root, path) for b in real]):
        raise ValueError(
            f"json_schema at {path}.oneOf: `oneOf` with {len(real)} alternatives that are not told apart "
            "by their `type` or by a `const` property is not supported yet; use anyOf"
        )
    rest = {k: v for k, v in node.items() if k != key}
    return _merge(rest, real[0], f"{path}.{key}") if rest else dict(real[0])


def _deref(branch: dict, root: dict, path: str) -> dict:
    """A branch with a top-level $ref followed (one level), to look at its type and properties."""
    return (
        _pointer(root, branch["$ref"], path)
        if isinstance(branch.get("$ref"), str) and branch["$ref"].startswith("#")
        else branch
    )


def _exclusive(branches: list[dict]) -> bool:
    """True when no value can match two branches, so laying out the first keeps `oneOf` valid: every
    branch has its own JSON `type`, or all are objects with one required property whose `const`
    (or single `enum` value) differs in each (a discriminated union)."""
    types = [b.get("type") for b in branches]
    if all(isinstance(t, str) for t in types) and len(set(types)) == len(types) and "number" not in types:
        return True  # ("integer" and "number" overlap, so a number branch is never counted distinct)
    if not all(
        t == "object" and isinstance(b.get("properties"), dict) for t, b in zip(types, branches, strict=True)
    ):
        return False
    common = set.intersection(*(set(b.get("required", [])) & set(b["properties"]) for b in branches))
    for key in sorted(common):
        tags = [_tag(b["properties"][key]) for b in branches]
        if all(t is not None for t in tags) and len(set(map(json.dumps, tags))) == len(tags):
            return True
    return False


def _tag(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    return enum[0] if isinstance(enum, list) and len(enum) == 1 else None


def _collapse_type_list(node: dict, path: str) -> dict:
    kinds = [k for k in node["type"] if k != "null"] or ["null"]
    if len(kinds) > 1:
        raise ValueError(
            f"json_schema at {path}.type: a list of several types {kinds} is not supported; give one"
        )
    return {**node, "type": kinds[0]}
