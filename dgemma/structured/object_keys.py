"""Which keys an object's layout writes: extra keys for `minProperties`, keys `propertyNames`
rejects, and keys whose dependencies are not all written."""

from __future__ import annotations

from typing import Any

from dgemma.structured import patterns
from dgemma.structured.validate import validate


def named_keys(schema: dict, keys: list[str], required: list[str], path: str) -> list[str]:
    """`propertyNames`: an optional key that fails it is left out; a required one is refused."""
    names = schema.get("propertyNames", True)
    if names is True:
        return keys
    if not isinstance(names, bool | dict):
        raise ValueError(f"json_schema at {path}: `propertyNames` must be a schema")
    bad = [k for k in keys if names is False or validate(k, names)]
    if any(k in required for k in bad):
        first = next(k for k in bad if k in required)
        raise ValueError(f"json_schema at {path}.propertyNames: required key {first!r} fails it")
    return [k for k in keys if k not in bad]


def extra_keys(schema: dict, taken: set[str], count: int, path: str) -> list[tuple[str, Any]]:
    """`count` keys beyond `properties` with their value schemas: an example of each
    `patternProperties` pattern (matching no other pattern), else `key1`, `key2`, ... under
    `additionalProperties` (a value of any type is a string)."""
    keyed = schema.get("patternProperties", {})
    extra = schema.get("additionalProperties", True)
    out: list[tuple[str, Any]] = []
    for pattern, sub in keyed.items():
        name = patterns.example(pattern, 1, 64)
        others = [p for p in keyed if p != pattern]
        if name and name not in taken and not any(patterns.matches(p, name) for p in others):
            out.append((name, sub if sub is not True else {"type": "string"}))
            taken.add(name)
        if len(out) == count:
            return out
    i = 1
    while extra is not False and len(out) < count:
        name = f"key{i}"
        i += 1
        if name in taken or any(patterns.matches(p, name) for p in keyed):
            continue
        out.append((name, extra if isinstance(extra, dict) and extra else {"type": "string"}))
        taken.add(name)
    if len(out) < count:
        raise ValueError(
            f"json_schema at {path}: unsupported keyword 'minProperties': {count} more keys needed "
            "and no key pattern or additionalProperties allows them"
        )
    return out


def check_dependencies(schema: dict, keys: list[str], required: list[str], path: str) -> list[str]:
    """`dependentRequired` / `dependencies` (lists, or draft 3's single names): an optional key whose
    needs are not all written is left out, a required one is refused; likewise a key with a
    schema-valued dependency (`dependentSchemas`), which is not laid out. Returns the keys kept."""
    keys = list(keys)
    changed = True
    while changed:
        changed = False
        for word in ("dependentRequired", "dependencies", "dependentSchemas"):
            table = schema.get(word, {})
            if not isinstance(table, dict):
                raise ValueError(f"json_schema at {path}: `{word}` must be an object")
            for key, needs in table.items():
                if key not in keys:
                    continue
                needs = [needs] if isinstance(needs, str) else needs
                ok = isinstance(needs, list) and word != "dependentSchemas" and all(n in keys for n in needs)
                if ok:
                    continue
                if key in required:
                    raise ValueError(
                        f"json_schema at {path}.{word}: unsupported keyword {word!r}: required {key!r} "
                        "depends on what is not laid out"
                    )
                keys.remove(key)
                changed = True
    return keys
