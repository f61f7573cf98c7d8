"""The supported subset of JSON Schema: checked, compiled into a layout, and validated against.

A schema compiles into a layout: literal JSON text (braces, keys, quotes, separators, constants)
and value slots of a fixed number of token positions. Layout rules:

- object: every property normalize.py keeps, in the order given, `{"key": value, ...}` (optional
  properties are written too, up to `maxProperties`: present optional properties are valid); no
  other keys, so `additionalProperties` (false, true or a schema) and `patternProperties` hold as
  long as no written key matches a `patternProperties` pattern; `minProperties` must be reachable;
- array: `items` repeated n times, n = max(minItems, min(maxItems, 3)) (3 when neither is given;
  with `uniqueItems`, at most as many as an item's slots have distinct values, and the items'
  spans are recorded so the rounds keep them distinct, unique.py);
- string: quotes around a slot of up to `max_string_tokens` tokens (`minLength` / `maxLength` in
  characters, `pattern` as `re.search` finds it, patterns.py); integer / number: a slot
  (`minimum` / `maximum`, `exclusiveMinimum` / `exclusiveMaximum`, integer `multipleOf`);
  boolean: a choice of true / false; `enum`: a choice among its JSON values; `const` and `null`:
  literal text.

Keywords outside this subset raise ValueError naming them; annotations (title, description, ...)
are accepted and ignored since they do not constrain values.
"""

from __future__ import annotations

import json
from typing import Any

from dgemma.structured import patterns
from dgemma.structured.bounds import MAX_ABS_NUMBER, bounds, finite, number_bounds
from dgemma.structured.capacity import layout_values
from dgemma.structured.formats import FORMATS
from dgemma.structured.keywords import ANNOTATIONS, SUPPORTED
from dgemma.structured.layout import Layout, Mark, Slot, SlotKind, UniqueItems  # noqa: F401 (re-exported)
from dgemma.structured.normalize import normalize
from dgemma.structured.object_keys import check_dependencies, extra_keys, named_keys
from dgemma.structured.validate import inferred_type, is_type, json_type, validate

BY_TYPE = SUPPORTED
DEFAULT_ITEMS = 3
# Sizes are bounded before anything is expanded, so no schema a client sends can take long to
# compile or lay out more than a few canvases of structure.
MAX_DEPTH = 32  # nested objects / arrays
MAX_NODES = 2048  # schema nodes after array expansion
MAX_ITEMS = 128  # minItems of one array
MAX_ENUM = 1024  # values of one enum
MAX_PROPERTIES = 256  # properties of one object
MAX_STRING_LENGTH = 4096  # minLength / maxLength


def compile_schema(schema: Any, choices: dict[str, int] | None = None) -> Layout:
    """The layout of `schema` (normalized first: $ref, allOf, Optional, see normalize.py); an
    unsupported or malformed schema is a ValueError naming the keyword and its JSON path.
    `choices`: option k at those choice points instead of the rules' (0), for candidate layouts."""
    normalized = normalize(schema, check=_lays_out, choices=choices)
    layout = Layout(schema=normalized.schema, omitted=list(dict.fromkeys(normalized.omitted)))
    layout.points, layout.choices, layout.work = dict(normalized.points), dict(choices or {}), normalized.work
    _compile(normalized.schema, "$", layout)
    return layout


def _lays_out(schema: dict, path: str) -> int:
    """Compile a normalized sub-schema on its own (ValueError if it does not lay out); its nodes."""
    scratch = Layout()
    _compile(schema, path, scratch)
    return scratch.nodes


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
    kind = schema.get("type") or inferred_type(schema)
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
    unsupported = sorted(k for k in set(schema) - BY_TYPE[kind] - ANNOTATIONS if not _annotation(k))
    if unsupported:
        raise ValueError(f"json_schema at {path}: unsupported keyword {unsupported[0]!r} for type {kind}")
    if kind == "object":
        _object(schema, path, out, depth)
    elif kind == "array":
        _array(schema, path, out, depth)
    elif kind == "string" and "format" in schema:
        _format(schema, path, out)
    elif kind == "string":
        lo, hi = bounds(schema, path, "minLength", "maxLength", integer=True, limit=MAX_STRING_LENGTH)
        if lo is not None and lo < 0:
            raise ValueError(f"json_schema at {path}: `minLength` must be >= 0")
        if "pattern" in schema:
            try:
                found = patterns.example(schema["pattern"], lo or 0, hi)
            except ValueError as err:
                raise ValueError(f"json_schema at {path}.pattern: {err}") from None
            if found is None:
                raise ValueError(
                    f"json_schema at {path}.pattern: unsupported keyword 'pattern' {schema['pattern'][:60]!r}: "
                    "no matching string found (back-references and some look-arounds are not supported)"
                )
        out.text('"')
        out.parts.append(Slot(SlotKind.STRING, schema, path=path))
        out.text('"')
    elif kind in ("integer", "number"):
        schema = number_bounds(schema, path, kind)
        out.parts.append(Slot(SlotKind(kind), schema, path=path))
    elif kind == "boolean":
        out.parts.append(Slot(SlotKind.CHOICE, schema, ("true", "false"), path))
    else:
        out.text("null")


def _annotation(key: str) -> bool:
    """Vendor extensions (`x-...`) and custom annotations (`$$...`) constrain nothing."""
    return key.startswith(("x-", "$$"))


def _format(schema: dict, path: str, out: Layout) -> None:
    """A string of a known format: literal separators and a choice slot per field (formats.py)."""
    fmt = schema["format"]
    if fmt not in FORMATS:
        raise ValueError(
            f"json_schema at {path}: unsupported keyword 'format' value {str(fmt)[:40]!r} "
            f"(supported: {', '.join(FORMATS)})"
        )
    if "minLength" in schema or "maxLength" in schema or "pattern" in schema:
        raise ValueError(
            f"json_schema at {path}: `minLength`/`maxLength`/`pattern` next to `format` are not supported"
        )
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
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool | dict):
        raise ValueError(f"json_schema at {path}: `additionalProperties` must be a boolean or a schema")
    keyed = schema.get("patternProperties", {})
    if not isinstance(keyed, dict):
        raise ValueError(f"json_schema at {path}: `patternProperties` must be an object")
    lo, hi = bounds(schema, path, "minProperties", "maxProperties", integer=True, limit=MAX_PROPERTIES)
    keys = list(props)
    props = dict(props)
    if lo is not None and len(keys) < lo:  # extra keys, named by the key patterns, to reach the minimum
        for name, sub in extra_keys(schema, set(props), lo - len(keys), path):
            props[name] = sub
            keys.append(name)
    if hi is not None and len(keys) > hi:  # the required ones first, then optional ones in order
        keys = [k for k in keys if k in required] + [k for k in keys if k not in required]
        keys = sorted(keys[: max(hi, len(set(required)))], key=list(props).index)
    if lo is not None and len(keys) < lo:
        raise ValueError(
            f"json_schema at {path}: unsupported keyword 'minProperties': {lo} keys needed, "
            f"{len(keys)} properties can be laid out"
        )
    if hi is not None and len(keys) > hi:
        raise ValueError(f"json_schema at {path}: `maxProperties` {hi} is below the required properties")
    for key in [k for k in keys if k not in required]:  # optional keys: written unless a choice drops them
        out.points.setdefault(f"{path}.{key}?", 2)
        if out.choices.get(f"{path}.{key}?"):
            keys.remove(key)
    keys = check_dependencies(schema, named_keys(schema, keys, required, path), required, path)
    if lo is not None and len(keys) < lo:
        raise ValueError(f"json_schema at {path}: unsupported keyword 'minProperties': {lo} keys needed")
    out.text("{")
    for i, (key, sub) in enumerate((k, props[k]) for k in keys):
        out.text((", " if i else "") + json.dumps(key, ensure_ascii=False) + ": ")
        _compile(sub, f"{path}.{key}", out, depth + 1)
    out.text("}")


def _array(schema: dict, path: str, out: Layout, depth: int) -> None:
    """Items laid out in order: `prefixItems` (a tuple) first, each position its own schema, then
    `items` for any further item (false: none). Without a maximum, DEFAULT_ITEMS items (or the
    tuple's length); `minItems` raises the count."""
    prefix = schema.get("prefixItems", [])
    rest = schema.get("items", {} if not prefix else None)  # a tuple without `items` writes no more
    if not isinstance(prefix, list) or not all(isinstance(p, dict) for p in prefix):
        raise ValueError(f"json_schema at {path}: `prefixItems` must be a list of schemas")
    if not prefix and "items" not in schema:
        raise ValueError(f"json_schema at {path}: an array needs `items`")
    lo, hi = bounds(schema, path, "minItems", "maxItems", integer=True)
    lo = lo or 0
    if lo < 0:
        raise ValueError(f"json_schema at {path}: `minItems` must be >= 0")
    if lo > MAX_ITEMS:
        raise ValueError(f"json_schema at {path}: `minItems` is {lo}; at most {MAX_ITEMS} items are laid out")
    wanted = len(prefix) if prefix or rest is False else DEFAULT_ITEMS
    n = max(lo, min(wanted if hi is None else hi, wanted))
    if n > len(prefix) and not isinstance(rest, dict):
        raise ValueError(
            f"json_schema at {path}: `minItems` {lo} needs items past `prefixItems`, and `items` allows none"
        )
    if n > MAX_ITEMS:
        raise ValueError(f"json_schema at {path}: `prefixItems` lays out {n} items; at most {MAX_ITEMS}")
    if schema.get("uniqueItems") not in (None, False, True):
        raise ValueError(f"json_schema at {path}: `uniqueItems` must be a boolean")
    unique = bool(schema.get("uniqueItems"))
    cap = _distinct_items(prefix, rest, path, depth) if unique else MAX_ITEMS
    if lo > cap:
        raise ValueError(
            f"json_schema at {path}: unsupported keyword 'uniqueItems' with minItems {lo}: "
            f"the items can be told apart {cap} ways"
        )
    n = _length_choice(min(n, cap), lo, hi, cap, path, out)
    if n > len(prefix) and not isinstance(rest, dict):
        n = len(prefix)
    out.text("[")
    spans = []
    for i in range(n):
        if i:
            out.text(", ")
        start, first = out.mark(), len(out.slots)
        _compile(prefix[i] if i < len(prefix) else rest, f"{path}[{i}]", out, depth + 1)
        spans.append((start, out.mark(), range(first, len(out.slots))))
    out.text("]")
    if unique and n > 1:
        out.unique.append(UniqueItems(path, tuple(spans)))


def _distinct_items(prefix: list, rest: Any, path: str, depth: int) -> int:
    """How many items of a `uniqueItems` array can surely differ: the most n such that, with the
    first n items' capacities sorted, the k-th holds at least k values (each item's slots together;
    1 for an item of literal text alone), so each can take a value no smaller one needs."""
    caps = []
    for item in [*prefix, *([rest] if isinstance(rest, dict) else [])]:
        scratch = Layout()
        _compile(item, path, scratch, depth + 1)
        caps.append(layout_values(scratch))
    if isinstance(rest, dict):
        caps[len(prefix) :] = [caps[-1]] * (MAX_ITEMS - len(prefix))
    best = 0
    for n in range(1, len(caps) + 1):
        if all(c > k for k, c in enumerate(sorted(caps[:n]))):
            best = n
    return best


def _length_choice(n: int, lo: int, hi: int | None, cap: int, path: str, out: Layout) -> int:
    """An array's item count: the rule's `n`, or a candidate's other length within the bounds."""
    top = min(cap, n + 2 if hi is None else hi)
    options = [n] + sorted({m for m in (lo, lo + 1, n - 1, n + 1, n + 2) if lo <= m <= top} - {n})
    if len(options) > 1:
        out.points.setdefault(f"{path}[]", len(options))
    pick = out.choices.get(f"{path}[]", 0)
    if pick >= len(options):
        raise ValueError(f"json_schema at {path}: no such array length")
    return options[pick]


def _choice(schema: dict, path: str, out: Layout) -> None:
    checked = set().union(*BY_TYPE.values()) - {"format"}  # keywords validate() decides (an allOf's merge)
    unsupported = sorted(set(schema) - {"enum", "const"} - checked - ANNOTATIONS)
    if unsupported:
        raise ValueError(f"json_schema at {path}: unsupported keyword {unsupported[0]!r} next to enum/const")
    values = [schema["const"]] if "const" in schema else schema["enum"]
    if not isinstance(values, list) or not values:
        raise ValueError(f"json_schema at {path}: `enum` must be a non-empty list")
    rest = {k: v for k, v in schema.items() if k in checked and k != "type"}
    if rest:  # the values the other keywords also allow
        values = [
            v
            for v in values
            if not isinstance(v, dict | list) and not validate(v, {**rest, "type": json_type(v)})
        ]
        if not values:
            raise ValueError(f"json_schema at {path}: no enum/const value meets the keywords beside it")
    if len(values) > MAX_ENUM:
        raise ValueError(f"json_schema at {path}: `enum` has {len(values)} values; at most {MAX_ENUM}")
    for v in values:
        if isinstance(v, dict | list) or (isinstance(v, int | float) and not finite(v, MAX_ABS_NUMBER)):
            raise ValueError(f"json_schema at {path}: enum values must be strings, numbers, booleans or null")
        if "type" in schema and not is_type(v, schema["type"]):
            raise ValueError(f"json_schema at {path}: enum value {v!r} is not of type {schema['type']}")
    options = tuple(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in values))
    if len(options) == 1:
        out.text(options[0])
    else:
        out.parts.append(Slot(SlotKind.CHOICE, schema, options, path))
