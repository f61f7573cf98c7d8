"""Schemas as clients write them -> the subset the layout compiles (`schema.py`).

What this resolves, so that the schemas pydantic, the `openai` SDK, LangChain and real-world
config schemas (SchemaStore, meta-schemas, OpenAPI) send work:

- local `$ref`s (`#/$defs/X`, `#/definitions/X`, any JSON pointer into the document) are inlined;
  a reference that leads back to itself more than `MAX_REF_DEPTH` times is refused where it is
  required, and left out where it is optional (an absent optional property is valid; `Optional`
  recursion ends with null);
- `allOf` is merged into one schema: each part resolved first, properties merged recursively,
  annotations kept once, any other keyword given twice must agree;
- `anyOf`, a `type` list, and `null` among plain alternatives (`Optional[X]`): the first branch
  that lays out is laid out (a value valid for one branch is valid for `anyOf`);
- `oneOf`: the first branch that lays out and whose every value fails all the other branches (by
  `type`, `const`/`enum`, a `required` key it never writes, a discriminator `const`); a `oneOf`
  where no branch can be told apart that way is refused;
- optional properties whose schema cannot be laid out (an unsupported keyword, a recursion past
  the bound, or past `OPTIONAL_NODES` schema nodes of optional structure) are left out, and an
  array whose items cannot be laid out is empty where `minItems` allows; both are listed in
  `Normalized.omitted`; a recursive list (items a `$ref` being expanded) holds at most one item
  below its first level, none below the second, beyond `minItems`.

The result only narrows the client's schema: every value valid against it is valid against the
original. Anything still unsupported is refused, naming the keyword and its JSON path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dgemma.structured import patterns
from dgemma.structured.array_forms import contains_form, tuple_form
from dgemma.structured.exclusion import as_list, excludes
from dgemma.structured.keywords import ANNOTATIONS, TYPE_KEYWORDS
from dgemma.structured.refs import pointer

MAX_REF_DEPTH = 4  # nested expansions of one $ref (a recursive model unrolled this many levels)
MAX_NORMALIZED_NODES = 4096
# schema nodes visited and compiled, trial branches and optional properties included: bounds the
# work of any schema however its combinators nest (budget restores after a failed trial; this does not)
MAX_WORK = 200_000
OPTIONAL_NODES = 384  # schema nodes of optional properties laid out, at most (the rest are left out)
_COMBINATORS = ("anyOf", "oneOf")


class TooComplex(ValueError):
    """The work bound ran out: never caught by a trial, so the whole schema is refused."""


class OverBudget(ValueError):
    """An optional property grew past what is left of the optional-structure budget."""


@dataclass
class _Context:
    root: dict
    check: Callable[[dict, str], int]  # nodes of a normalized schema's layout; ValueError if none
    budget: int = MAX_NORMALIZED_NODES
    work: int = MAX_WORK
    floor: int = -(10**9)  # `budget` may not fall below this while an optional property is walked
    optional: int = OPTIONAL_NODES
    omitted: list[str] = field(default_factory=list)
    choices: dict[str, int] = field(default_factory=dict)  # branch point -> the branch to take
    points: dict[str, int] = field(default_factory=dict)  # branch points met -> their branches


@dataclass
class Normalized:
    schema: Any
    omitted: list[str]  # "path: reason" of each optional property left out
    points: dict[str, int]  # `anyOf` / `oneOf` / type-list points ("$.a.anyOf") -> number of branches
    work: int  # work units spent (of MAX_WORK)


def normalize(
    schema: Any, check: Callable[[dict, str], int] | None = None, choices: dict[str, int] | None = None
) -> Normalized:
    """The client's schema in the compiled subset; ValueError naming the keyword and its JSON path.
    `check(node, path)` tells whether a normalized sub-schema lays out (schema.py passes its compiler);
    `choices` takes branch k of a point instead of the first that lays out (choices.py)."""
    if not isinstance(schema, dict):
        raise ValueError(f"json_schema at $: a schema must be an object, got {type(schema).__name__}")
    ctx = _Context(schema, check or (lambda node, path: 0), choices=choices or {})
    return Normalized(_walk(schema, ctx, "$", ()), ctx.omitted, ctx.points, MAX_WORK - ctx.work)


def _walk(node: Any, ctx: _Context, path: str, stack: tuple[str, ...]) -> Any:
    """`stack`: the $refs being expanded above this node (for the recursion bound)."""
    if node is True:
        return {}
    if not isinstance(node, dict):
        return node
    ctx.budget -= 1
    ctx.work -= 1
    if ctx.work < 0:
        raise TooComplex(
            f"json_schema at {path}: the schema takes too much work to lay out; send a smaller one"
        )
    if ctx.budget < 0:
        raise ValueError(f"json_schema at {path}: the schema expands past {MAX_NORMALIZED_NODES} nodes")
    if ctx.budget < ctx.floor:
        raise OverBudget(f"json_schema at {path}: past the budget of {OPTIONAL_NODES} optional schema nodes")
    node = {k: v for k, v in node.items() if k not in ("$defs", "definitions")}
    for dynamic in ("$recursiveRef", "$dynamicRef"):  # one document: the dynamic scope is its root
        if dynamic in node and "$ref" not in node:
            node = {**{k: v for k, v in node.items() if k != dynamic}, "$ref": node[dynamic]}
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
        target = dict(pointer(ctx.root, ref, path))
        merged = _merge(target, siblings, path) if siblings else target
        return _walk(merged, ctx, path, (*stack, ref))
    if "allOf" in node:
        return _walk(_merge_all_of(node, ctx, path, stack), ctx, path, stack)
    if "if" in node or "$rules" in node:
        return _walk(_apply_rules(node, ctx, path, stack), ctx, path, stack)
    if "not" in node:
        rest = {k: v for k, v in node.items() if k != "not"}
        out = _walk(rest, ctx, path, stack)
        if not excludes(out, node["not"], ctx.root):
            raise ValueError(
                f"json_schema at {path}.not: unsupported keyword 'not': the layout could write a value it forbids"
            )
        return out
    for key in _COMBINATORS:
        if key in node:
            return _choose_branch(node, key, ctx, path, stack)
    if isinstance(node.get("type"), list):
        return _choose_branch(_type_branches(node, path), "anyOf", ctx, path, stack)
    if node.get("nullable") is True:  # OpenAPI style: a present value of the type is valid
        node = {k: v for k, v in node.items() if k != "nullable"}
    keyed = node.get("patternProperties")
    for pattern in keyed if isinstance(keyed, dict) else {}:  # every key pattern is a regular expression
        try:
            patterns.compiled(pattern)
        except ValueError as err:
            raise ValueError(f"json_schema at {path}.patternProperties: {err}") from None
    node = contains_form(tuple_form(node), path)
    out = dict(node)
    if isinstance(node.get("propertyNames"), dict):  # the keys written are checked against it
        out["propertyNames"] = _walk(node["propertyNames"], ctx, f"{path}.propertyNames", stack)
    if isinstance(node.get("properties"), dict):
        out["properties"] = _properties(node, ctx, path, stack)
    if isinstance(node.get("prefixItems"), list):  # a tuple: each position its own schema
        out["prefixItems"] = [
            _walk(sub, ctx, f"{path}[{i}]", stack) for i, sub in enumerate(node["prefixItems"])
        ]
    if isinstance(node.get("items"), dict):
        ref = node["items"].get("$ref")
        if isinstance(ref, str) and ref in stack:  # a recursive list: short below the first level
            low = node.get("minItems", 0) if isinstance(node.get("minItems"), int) else 0
            cap = max(low, 1 if stack.count(ref) == 1 else 0)
            out["maxItems"] = min(cap, node["maxItems"]) if isinstance(node.get("maxItems"), int) else cap
        before = ctx.budget
        try:
            out["items"] = _walk(node["items"], ctx, f"{path}[]", stack)
        except TooComplex:
            raise
        except ValueError as err:  # items that cannot be laid out: an empty array, where allowed
            if node.get("minItems", 0) not in (0, None):
                raise
            ctx.budget = before
            out["maxItems"] = 0
            ctx.omitted.append(f"{path}[]: {_reason(err)}")
    needs = node.get("minProperties", 0)
    if isinstance(needs, int) and needs > len(out.get("properties", {})):  # extra keys get written
        if isinstance(node.get("patternProperties"), dict):
            out["patternProperties"] = {
                k: _walk(v, ctx, f"{path}[{k!r}]", stack) for k, v in node["patternProperties"].items()
            }
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _walk(node["additionalProperties"], ctx, f"{path}.*", stack)
    return out


def _properties(node: dict, ctx: _Context, path: str, stack: tuple[str, ...]) -> dict:
    """Required properties must lay out; an optional one that does not (or that would pass the
    optional-structure budget) is left out of the layout, and recorded."""
    required = node.get("required", [])
    required = set(required) if isinstance(required, list) else set()
    keyed = node.get("patternProperties") if isinstance(node.get("patternProperties"), dict) else {}
    out = {}
    for key, sub in node["properties"].items():
        where = f"{path}.{key}"
        for pattern, also in keyed.items():  # a declared key a pattern matches must satisfy both
            if isinstance(sub, dict) and isinstance(also, dict) and patterns.matches(pattern, key):
                sub = _merge(sub, also, where)
        if key in required:
            out[key] = _walk(sub, ctx, where, stack)
            continue
        if ctx.optional <= 0:
            ctx.omitted.append(f"{where}: past the budget of {OPTIONAL_NODES} optional schema nodes")
            continue
        before, floor = ctx.budget, ctx.floor
        ctx.floor = max(floor, before - ctx.optional)
        try:
            value = _walk(sub, ctx, where, stack)
            if isinstance(value, dict):
                ctx.work -= ctx.check(value, where)
        except TooComplex:
            raise
        except ValueError as err:
            ctx.budget = before
            ctx.omitted.append(f"{where}: {_reason(err)}")
            continue
        finally:
            ctx.floor = floor
        used = before - ctx.budget
        ctx.optional -= used
        out[key] = value
    return out


def _reason(err: ValueError) -> str:
    text = str(err)
    return text.split(": ", 1)[1] if text.startswith("json_schema at ") and ": " in text else text


def _merge_all_of(node: dict, ctx: _Context, path: str, stack: tuple[str, ...]) -> dict:
    parts = node["allOf"]
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) or p is True for p in parts):
        raise ValueError(f"json_schema at {path}.allOf: `allOf` must be a non-empty list of schemas")
    merged = {k: v for k, v in node.items() if k != "allOf"}
    rules = []
    for i, part in enumerate(parts):
        if isinstance(part, dict) and "if" in part:  # conditions apply to the merged node, not the part
            rules += _rules(part)
            part = {k: v for k, v in part.items() if k not in ("if", "then", "else")}
        resolved = _walk(part, ctx, f"{path}.allOf[{i}]", stack)  # refs, nested allOf, chosen branches
        merged = _merge(merged, resolved, f"{path}.allOf")
    if rules:
        merged["$rules"] = merged.get("$rules", []) + rules
    return merged


def _rules(node: dict) -> list[dict]:
    return [{k: node[k] for k in ("if", "then", "else") if k in node}] if "if" in node else []


def _apply_rules(node: dict, ctx: _Context, path: str, stack: tuple[str, ...]) -> dict:
    """`if` / `then` / `else`, each rule in turn: the value is made to match `if` and `then` (merged
    in) when that lays out, else to take `else` where the layout can never match `if`."""
    rules = node.get("$rules", []) + _rules(node)
    base = {k: v for k, v in node.items() if k not in ("if", "then", "else", "$rules")}
    for rule in rules:
        cond = rule["if"] if isinstance(rule["if"], dict) else {}
        before = ctx.budget
        try:
            candidate = _merge(_merge(base, cond, f"{path}.if"), rule.get("then", {}) or {}, f"{path}.then")
            ctx.work -= ctx.check(_walk(candidate, ctx, path, stack), path)
            base = candidate
            continue
        except TooComplex:
            raise
        except ValueError:
            ctx.budget = before
        candidate = _merge(base, rule.get("else", {}) or {}, f"{path}.else")
        laid = _walk(candidate, ctx, path, stack)
        ctx.budget = before
        if not excludes(laid, rule["if"], ctx.root):
            raise ValueError(
                f"json_schema at {path}.if: unsupported keyword 'if': neither `if` with `then` lays out "
                "nor does the `else` layout rule out `if`"
            )
        base = candidate
    return base


def _merge(a: dict, b: dict, path: str) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key in ANNOTATIONS:
            out.setdefault(key, value)
        elif key not in out:
            out[key] = value
        elif key == "$rules":
            out[key] = out[key] + value
        elif (
            key in ("items", "additionalProperties")
            and isinstance(out[key], dict)
            and isinstance(value, dict)
        ):
            out[key] = _merge(out[key], value, f"{path}.{key}")
        elif key == "not" and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = {"anyOf": [out[key], value]}  # not A and not B: not (A or B)
        elif (
            key in ("properties", "patternProperties")
            and isinstance(out[key], dict)
            and isinstance(value, dict)
        ):
            props = dict(out[key])
            for name, sub in value.items():
                both = isinstance(props.get(name), dict) and isinstance(sub, dict)
                props[name] = _merge(props[name], sub, f"{path}.{name}") if both else sub
            out[key] = props
        elif key == "required" and isinstance(out[key], list) and isinstance(value, list):
            out[key] = list(dict.fromkeys(out[key] + value))
        elif key in ("minimum", "minLength", "minItems", "minProperties") and _numbers(out[key], value):
            out[key] = max(out[key], value)  # both bounds hold: the tighter one
        elif key in ("maximum", "maxLength", "maxItems", "maxProperties") and _numbers(out[key], value):
            out[key] = min(out[key], value)
        elif key == "type" and isinstance(out[key], list | str) and isinstance(value, list | str):
            common = [t for t in as_list(out[key]) if t in as_list(value)]
            if not common:
                raise ValueError(
                    f"json_schema at {path}: `type` is given twice with different values "
                    f"({out[key]!r}, {value!r}) and no value in common"
                )
            out[key] = common[0] if len(common) == 1 else common
        elif out[key] != value:
            raise ValueError(f"json_schema at {path}: `{key}` is given twice with different values")
    if "const" in out and isinstance(out.get("enum"), list):
        if not any(json.dumps(out["const"]) == json.dumps(v) for v in out["enum"]):
            raise ValueError(
                f"json_schema at {path}: `const` {out['const']!r} is not one of the `enum` values"
            )
        out.pop("enum")
    return out


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _is_null(branch: Any) -> bool:
    return isinstance(branch, dict) and (branch.get("type") == "null" or branch.get("const", 0) is None)


def _type_branches(node: dict, path: str) -> dict:
    """`{"type": [a, b], ...}` as `anyOf` of one branch per type, each keeping its own keywords."""
    kinds = node["type"]
    if not kinds or not all(isinstance(k, str) for k in kinds):
        raise ValueError(f"json_schema at {path}.type: a `type` list must hold type names")
    others = set().union(*TYPE_KEYWORDS.values())
    branches = []
    for kind in kinds:
        keep = TYPE_KEYWORDS.get(kind, set())
        branches.append({**{k: v for k, v in node.items() if k not in others or k in keep}, "type": kind})
    return {"anyOf": branches}


def _choose_branch(node: dict, key: str, ctx: _Context, path: str, stack: tuple[str, ...]) -> dict:
    branches = node[key]
    if not isinstance(branches, list) or not branches or not all(isinstance(b, dict) for b in branches):
        raise ValueError(f"json_schema at {path}.{key}: `{key}` must be a non-empty list of schemas")
    rest = {k: v for k, v in node.items() if k != key}
    real = [b for b in branches if not _is_null(b)]
    order = real + [b for b in branches if _is_null(b)]  # null last: Optional[X] lays out X
    point = f"{path}.{key}"
    ctx.points.setdefault(point, len(order))
    if ctx.choices.get(point, 0):  # a candidate layout: this branch or nothing
        order = order[ctx.choices[point] :][:1]
    reasons = []
    for branch in order:
        before = ctx.budget
        try:
            merged = _merge(rest, branch, f"{path}.{key}") if rest else dict(branch)
            chosen = _walk(merged, ctx, path, stack)
            ctx.work -= ctx.check(chosen, path)
            if key == "oneOf":
                others = [b for b in branches if b is not branch]
                if not all(excludes(chosen, b, ctx.root) for b in others):
                    raise ValueError(f"json_schema at {path}.oneOf: values of this branch can match another")
            return chosen
        except TooComplex:
            raise
        except ValueError as err:
            ctx.budget = before
            reasons.append(_reason(err))
    reasons = reasons or ["no such branch"]
    if key == "oneOf":
        raise ValueError(
            f"json_schema at {path}.oneOf: no branch of the `oneOf` lays out with values that match no "
            f"other branch (told apart by type, const, enum or a required key); first: {reasons[0]}"
        )
    raise ValueError(f"json_schema at {path}.{key}: no branch lays out; first: {reasons[0]}")
