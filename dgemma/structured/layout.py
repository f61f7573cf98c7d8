"""What a schema compiles into: literal text and value slots in order (schema.py writes them;
generate.py tokenizes them), with the choice points met and the `uniqueItems` arrays recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class SlotKind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    CHOICE = "choice"  # enum / boolean: one of a fixed set of JSON texts


@dataclass(frozen=True)
class Slot:
    """A value the model writes."""

    kind: SlotKind
    schema: dict[str, Any]
    options: tuple[str, ...] = ()  # choice: the JSON text of each allowed value
    path: str = "$"


Mark = tuple[int, int]  # a place in a layout's text: (part index, character offset in that part)
MANY = 10**6  # slot_capacity of a slot with more distinct values than any array lays out


@dataclass(frozen=True)
class UniqueItems:
    """An array with `uniqueItems`: each item's text from one mark to another, and its slots
    (indices into the layout's slots)."""

    path: str
    items: tuple[tuple[Mark, Mark, range], ...]


@dataclass
class Layout:
    parts: list[str | Slot] = field(default_factory=list)
    schema: dict[str, Any] = field(
        default_factory=dict
    )  # the normalized schema laid out (validate against it)
    nodes: int = 0  # schema nodes compiled, checked against MAX_NODES
    omitted: list[str] = field(default_factory=list)  # optional properties left out, with why
    # choice points (choices.py): "$.a.anyOf" (branch), "$.a?" (optional key: 1 leaves it out),
    # "$.a[]" (array: the k-th of its lengths); met -> number of options, and the options to take
    points: dict[str, int] = field(default_factory=dict)
    choices: dict[str, int] = field(default_factory=dict)
    work: int = 0  # normalization work spent
    unique: list[UniqueItems] = field(default_factory=list)  # arrays whose items must differ, inner first

    def text(self, value: str) -> None:
        if self.parts and isinstance(self.parts[-1], str):
            self.parts[-1] += value
        else:
            self.parts.append(value)

    @property
    def slots(self) -> list[Slot]:
        return [p for p in self.parts if isinstance(p, Slot)]

    def mark(self) -> Mark:
        """Where the next text or slot goes."""
        if self.parts and isinstance(self.parts[-1], str):
            return len(self.parts) - 1, len(self.parts[-1])
        return len(self.parts), 0
