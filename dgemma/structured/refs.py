"""Local references inside one schema document: JSON pointers (`#/$defs/X`) and plain-name
anchors (`#name`, from `$anchor` / `$dynamicAnchor`)."""

from __future__ import annotations

from typing import Any


def pointer(root: dict, ref: str, path: str) -> dict:
    if len(ref) > 1 and not ref.startswith("#/"):  # "#name": a plain-name anchor in this document
        found = anchor(root, ref[1:])
        if found is None:
            raise ValueError(f"json_schema at {path}: `$ref` {ref!r} points to nothing")
        return found
    target: Any = root
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise ValueError(f"json_schema at {path}: `$ref` {ref!r} points to nothing")
    if target is True:
        return {}
    if not isinstance(target, dict):
        raise ValueError(f"json_schema at {path}: `$ref` {ref!r} does not point to a schema")
    return target


def anchor(node: Any, name: str, depth: int = 0) -> dict | None:
    """The schema carrying `$anchor` / `$dynamicAnchor` `name` (searched depth-first, bounded)."""
    if depth > 64:
        return None
    if isinstance(node, dict):
        if name in (node.get("$anchor"), node.get("$dynamicAnchor")):
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = anchor(child, name, depth + 1)
        if found is not None:
            return found
    return None
