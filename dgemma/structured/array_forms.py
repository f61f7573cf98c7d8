"""Array keywords rewritten into the tuple form the layout compiles (`prefixItems`, then `items`).

Both rewrites only narrow the schema: every array valid against the result is valid against the
original.
"""

from __future__ import annotations

from typing import Any


def tuple_form(node: dict) -> dict:
    """Drafts 4-2019's tuple arrays (`items` a list, `additionalItems` for the rest) in 2020-12's
    spelling (`prefixItems`, and `items` for the rest: a schema, or false for none)."""
    if not isinstance(node.get("items"), list):
        return {k: v for k, v in node.items() if k != "additionalItems"}
    out = {k: v for k, v in node.items() if k not in ("items", "additionalItems")}
    out["prefixItems"] = node["items"]
    rest = node.get("additionalItems", True)
    if rest is not True:
        out["items"] = rest
    return out


def contains_form(node: dict, path: str) -> dict:
    """`contains` with `minContains` (default 1) and `maxContains`: the first minContains items
    are laid out under both `items` and `contains` (an `allOf`), so that many match; `maxContains`
    caps the array's length, so no more than that many can match."""
    if "contains" not in node and "minContains" not in node and "maxContains" not in node:
        return node
    out = {k: v for k, v in node.items() if k not in ("contains", "minContains", "maxContains")}
    where = f"json_schema at {path}"
    least, most = node.get("minContains", 1), node.get("maxContains")
    for name, value in (("minContains", least), ("maxContains", most)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{where}.{name}: must be an integer >= 0, got {value!r}")
    if "contains" not in node:  # minContains / maxContains alone constrain nothing
        return out
    if most is not None and most < least:
        raise ValueError(f"{where}.maxContains: {most} is below minContains {least}")
    if least:
        if "prefixItems" in out:
            raise ValueError(f"{where}: unsupported keyword 'contains' next to a tuple (prefixItems)")
        rest: Any = out.get("items", True)
        if rest is False:
            raise ValueError(f"{where}.contains: `items` is false, so no item can match")
        part = {} if rest is True else rest
        out["prefixItems"] = [{"allOf": [part, node["contains"]]} for _ in range(least)]
        out["items"] = part
        low = out.get("minItems", 0)
        out["minItems"] = max(low if isinstance(low, int) and not isinstance(low, bool) else 0, least)
    if most is not None:
        high = out.get("maxItems")
        out["maxItems"] = most if not isinstance(high, int) or isinstance(high, bool) else min(high, most)
    return out
