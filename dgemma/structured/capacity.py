"""How many distinct values a slot, an item or an inner `uniqueItems` array can surely take: the
bound `uniqueItems` lays out items under (schema.py), and that unique.py's fallback relies on
(`SlotPlan.variants` writes at least this many)."""

from __future__ import annotations

import math

from dgemma.structured.layout import MANY, Layout, Slot, SlotKind, UniqueItems
from dgemma.structured.validate import closed_range


def slot_capacity(slot: Slot) -> int:
    """At least how many distinct valid values `slot` can hold (MANY: more than enough), for
    `uniqueItems`: the variants unique.py falls back to must exist."""
    schema = slot.schema
    if slot.kind is SlotKind.CHOICE:
        return len(slot.options)
    if slot.kind is SlotKind.STRING:
        return 1 if "pattern" in schema or schema.get("maxLength") == 0 else 36  # a-z0-9 in one character
    lo, hi = closed_range(schema)
    if math.isinf(hi - lo):
        return MANY
    step = schema.get("multipleOf") or (1 if slot.kind is SlotKind.INTEGER else None)
    if step is None:  # variants step by 0.01 nearest first: half that grid is surely reached
        return max(1, min(MANY, int((hi - lo) / 0.01) // 2))
    return max(1, min(MANY, int((hi - lo) // step)))


def layout_values(layout: Layout) -> int:
    """At least how many distinct values a laid-out item can take: its slots' capacities
    multiplied, an inner `uniqueItems` array counted by its distinct orderings (1 when it nests
    another one: a lower bound is all that is needed)."""
    slots = layout.slots
    grouped = {i for g in layout.unique for *_, item in g.items for i in item}
    values = 1
    for i in set(range(len(slots))) - grouped:
        values = min(MANY, values * slot_capacity(slots[i]))
    outer = [g for g in layout.unique if not any(_inside(g, h) for h in layout.unique if h is not g)]
    for g in outer:
        if any(_inside(h, g) for h in layout.unique if h is not g):
            continue  # nested twice: counted as 1
        caps = sorted(math.prod(slot_capacity(slots[i]) for i in item) for *_, item in g.items)
        values = min(MANY, values * max(1, math.prod(max(0, c - k) for k, c in enumerate(caps))))
    return values


def _inside(g: UniqueItems, h: UniqueItems) -> bool:
    """Whether array g lies within one item of array h."""
    held = {i for *_, item in g.items for i in item}
    return bool(held) and any(held <= set(item) for *_, item in h.items)
