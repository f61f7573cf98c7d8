"""`uniqueItems` across the rounds: which items of a layout repeat, and making them differ.

The layout records each `uniqueItems` array's items as text spans with their slots
(layout.UniqueItems). After a round, an item whose slots are all settled and whose value equals an
earlier item's (JSON Schema's equality: validate.canonical) has its slots renoised, so the model
writes another value. After the last round a repeating item takes, in one of its slots, the
nearest other valid value (SlotPlan.variants) that leaves every such array without repeats; the
compiler only lays out as many items as the slots can tell apart (capacity.py).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from dgemma.structured.schema import MAX_ITEMS, Layout, UniqueItems
from dgemma.structured.slots import SlotPlan, Vocabulary
from dgemma.structured.validate import canonical

# other values tried per slot: more than an array has items (schema.MAX_ITEMS), so the nearest
# values others do not hold always include one when the slot holds enough (capacity.slot_capacity)
VARIANTS = MAX_ITEMS + 8
MAX_TRIES = 4096  # value combinations tried per repeating item


def repeats(
    layout: Layout, slots: list[SlotPlan], tokens: list[int], vocab: Vocabulary, settled: list[bool]
) -> set[int]:
    """The slots of items that repeat an earlier item of their array (those with all slots settled;
    an item of literal text alone gives the slots of the earlier one)."""
    items = _Items(layout, slots, tokens, vocab)
    out: set[int] = set()
    for group in layout.unique:
        for k, first in items.repeating(group, settled):
            out.update(group.items[k][2] if group.items[k][2] else group.items[first][2])
    return out


def make_distinct(layout: Layout, slots: list[SlotPlan], tokens: list[int], vocab: Vocabulary) -> int:
    """Give each repeating item another value, in place in `tokens`; the slots changed."""
    items = _Items(layout, slots, tokens, vocab)
    changed = 0
    for group in layout.unique:  # inner arrays first
        for _ in group.items:  # each pass gives one item a value no other item of the array has
            found = items.repeating(group)
            if not found:
                break
            k, first = found[0]
            changed += items.vary(group, k if group.items[k][2] else first)
    return changed


class _Items:
    """The layout's text part by part, kept current as slots change."""

    def __init__(self, layout: Layout, slots: list[SlotPlan], tokens: list[int], vocab: Vocabulary):
        self.layout, self.slots, self.tokens, self.vocab = layout, slots, tokens, vocab
        self.part_of = [i for i, p in enumerate(layout.parts) if not isinstance(p, str)]
        found = iter(slots)
        self.texts = [p if isinstance(p, str) else next(found).text(tokens, vocab) for p in layout.parts]

    def set(self, i: int, ids: list[int]) -> None:
        plan = self.slots[i]
        self.tokens[plan.start : plan.start + plan.budget] = ids
        self.texts[self.part_of[i]] = plan.text(self.tokens, self.vocab)

    def value(self, group: UniqueItems, k: int) -> Any:
        (a, i), (b, j), _ = group.items[k]
        texts = self.texts
        text = (
            texts[a][i:j]
            if a == b
            else texts[a][i:] + "".join(texts[a + 1 : b]) + (texts[b][:j] if b < len(texts) else "")
        )
        return canonical(json.loads(text))

    def repeating(self, group: UniqueItems, settled: list[bool] | None = None) -> list[tuple[int, int]]:
        """(index, index of the earlier equal item) of each of the group's items equal to an
        earlier one (`settled`: counting only items whose slots are all settled)."""
        seen: dict[Any, int] = {}
        out = []
        for k, (*_, item) in enumerate(group.items):
            if settled is not None and not all(settled[i] for i in item):
                continue
            value = self.value(group, k)
            if value in seen:
                out.append((k, seen[value]))
            seen.setdefault(value, k)
        return out

    def vary(self, group: UniqueItems, k: int) -> int:
        """Change the fewest of item k's slots (one, then pairs, ...) so that it equals no other
        item of `group` and no array inside it holding those slots gains a repeat (arrays are
        handled inner first); the number changed."""
        item = group.items[k][2]
        taken = {self.value(group, j) for j in range(len(group.items)) if j != k}
        options = {i: list(self.slots[i].variants(self.tokens, self.vocab, VARIANTS)) for i in item}
        original = {
            i: self.tokens[self.slots[i].start : self.slots[i].start + self.slots[i].budget] for i in item
        }
        done = self.layout.unique[: self.layout.unique.index(group)]  # inner arrays, already distinct
        inner = [g for g in done if any(i in it for *_, it in g.items for i in item)]
        before = {id(g): len(self.repeating(g)) for g in inner}
        last: tuple[int, ...] = ()
        for chosen, combo in itertools.islice(_attempts([i for i in item if options[i]], options), MAX_TRIES):
            for i in last:
                self.set(i, original[i])
            for i, ids in zip(chosen, combo, strict=True):
                self.set(i, ids)
            last = chosen
            touched = [g for g in inner if any(i in it for *_, it in g.items for i in chosen)]
            if self.value(group, k) not in taken and all(
                len(self.repeating(g)) <= before[id(g)] for g in touched
            ):
                return len(chosen)
        for i in last:
            self.set(i, original[i])
        raise RuntimeError(f"uniqueItems: no other value found for the item at {group.path}[{k}]")


def _attempts(slots: list[int], options: dict[int, list[list[int]]]):
    """(slots changed, their new tokens): one slot at a time, then pairs, and so on."""
    for count in range(1, len(slots) + 1):
        for chosen in itertools.combinations(slots, count):
            for combo in itertools.product(*(options[i] for i in chosen)):
                yield chosen, combo
