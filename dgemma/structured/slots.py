"""Value slots at the token level: which tokens each position may hold, when a slot's text is valid,
and the valid text a slot falls back to when the model does not get there in the allowed rounds.

A slot has a fixed number of positions; a value shorter than that is padded with the filler, a
special token that decodes to nothing (the tokenizer's pad token), so it can sit anywhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from dgemma.structured import patterns
from dgemma.structured.bounds import multiples
from dgemma.structured.schema import Slot, SlotKind
from dgemma.structured.validate import number_ok
from dgemma.text import TextCodec

INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
DEFAULT_STRING_TOKENS = 12
DEFAULT_NUMBER_TOKENS = 8
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # characters `variants` writes (capacity.py counts them)


class Vocabulary:
    """Token classes of one tokenizer, computed once."""

    def __init__(self, codec: TextCodec, filler: int, exclude: set[int]):
        self.codec, self.filler = codec, filler
        special = codec.special_ids() | exclude
        self.texts = {
            i: codec.token_text(i) for i in range(codec.tokenizer.get_vocab_size()) if i not in special
        }

    @cached_property
    def string_safe(self) -> tuple[int, ...]:
        """Tokens that are valid inside a JSON string whatever surrounds them."""
        return tuple(
            i
            for i, t in self.texts.items()
            if t and '"' not in t and "\\" not in t and all(ord(c) >= 0x20 for c in t)
        )

    @cached_property
    def digits(self) -> tuple[int, ...]:
        return tuple(i for i, t in self.texts.items() if re.fullmatch(r"[0-9]+", t))

    @cached_property
    def longest_digits(self) -> int:
        """The most digits one token holds."""
        return max((len(self.texts[t]) for t in self.digits), default=1)

    def exact(self, text: str) -> tuple[int, ...]:
        return tuple(i for i, t in self.texts.items() if t == text)

    def encode(self, text: str) -> list[int]:
        return self.codec.encode_plain(text)


@dataclass
class SlotPlan:
    """One slot placed in the output: its positions and the token set of each."""

    slot: Slot
    start: int
    budget: int
    allowed: list[tuple[int, ...]]
    options: list[list[int]] | None = None  # choice: each option's tokens, padded with the filler

    def text(self, tokens: list[int], vocab: Vocabulary) -> str:
        return vocab.codec.decode(tokens[self.start : self.start + self.budget])

    def is_valid(self, text: str) -> bool:
        schema = self.slot.schema
        if self.slot.kind is SlotKind.CHOICE:
            return text in self.slot.options
        if self.slot.kind is SlotKind.STRING:
            if "\ufffd" in text:  # token bytes that do not form UTF-8 (byte-level BPE)
                return False
            if "pattern" in schema and not patterns.matches(schema["pattern"], text):
                return False
            return schema.get("minLength", 0) <= len(text) <= schema.get("maxLength", math.inf)
        pattern = INTEGER if self.slot.kind is SlotKind.INTEGER else NUMBER
        if not pattern.fullmatch(text):
            return False
        return number_ok(json.loads(text), schema)

    def repair(self, tokens: list[int], vocab: Vocabulary) -> list[int]:
        """Tokens of a valid value for this slot, as close to what the model wrote as this allows."""
        current = tokens[self.start : self.start + self.budget]
        if self.options is not None:  # the option agreeing with most positions
            return max(self.options, key=lambda o: sum(a == b for a, b in zip(o, current, strict=True)))
        for text in self._candidates(self.text(tokens, vocab)):
            ids = vocab.encode(text)
            if len(ids) <= self.budget and vocab.codec.decode(ids) == text and self.is_valid(text):
                return ids + [vocab.filler] * (self.budget - len(ids))
        raise ValueError(f"json_schema at {self.slot.path}: no valid value fits in {self.budget} tokens")

    def variants(self, tokens: list[int], vocab: Vocabulary, limit: int = 64) -> Iterator[list[int]]:
        """Tokens of up to `limit` other valid values than the slot holds, nearest first:
        the other options of a choice, numbers stepping away from the value, strings with one
        character changed or added (`uniqueItems` falls back to these, unique.py)."""
        current = self.text(tokens, vocab)
        if self.options is not None:
            yield from (o for o in self.options if vocab.codec.decode(o) != current)
            return
        if self.slot.kind is SlotKind.STRING:
            most = self.slot.schema.get("maxLength", len(current) + 1)
            cut = current.replace("\ufffd", "")
            texts = [(cut + c)[:most] if len(cut) < most else cut[: most - 1] + c for c in ALPHABET]
        else:
            wrote = _written_number(current)
            step = self.slot.schema.get("multipleOf")
            steps = [step] if step else [1] if self.slot.kind is SlotKind.INTEGER else [1, 0.1, 0.01]
            near = {round(wrote + k * j * st, 6) for st in steps for j in range(1, limit) for k in (1, -1)}
            near_first = sorted(near, key=lambda v: abs(v - wrote))
            texts = [json.dumps(int(v)) if v == int(v) else json.dumps(v) for v in near_first]
        found = 0
        for text in texts:
            ids = vocab.encode(text)
            if (
                text != current
                and len(ids) <= self.budget
                and vocab.codec.decode(ids) == text
                and self.is_valid(text)
            ):
                yield ids + [vocab.filler] * (self.budget - len(ids))
                found += 1
                if found == limit:
                    return

    def _candidates(self, text: str) -> list[str]:
        schema = self.slot.schema
        if self.slot.kind is SlotKind.STRING:
            lo, hi = schema.get("minLength", 0), schema.get("maxLength", len(text))
            cut = text.replace("\ufffd", "")[:hi]
            out = [cut + "a" * (lo - len(cut)), "a" * lo]
            if "pattern" in schema:
                found = patterns.example(schema["pattern"], lo, schema.get("maxLength"))
                out = [t for t in out if patterns.matches(schema["pattern"], t)] + ([found] if found else [])
            return out
        integer = self.slot.kind is SlotKind.INTEGER
        wrote = _written_number(text)
        bounds = [
            b
            for b in (schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
            if isinstance(b, int | float) and not isinstance(b, bool)
        ]
        lo, hi = min(bounds, default=-math.inf), max(bounds, default=math.inf)
        near = [min(max(wrote, lo), hi)]
        for b in bounds:
            near += [b, b + 1, b - 1, b + 0.5, b - 0.5]
        if len(bounds) >= 2:
            near.append((lo + hi) / 2)
        near.append(0)
        step = schema.get("multipleOf")
        if step and integer:
            near = [m for v in near for m in (math.floor(v / step) * step, math.ceil(v / step) * step)]
        elif step:  # the accepted multiples around each value (0.7 is no multiple of 0.1 for jsonschema)
            near = [m for v in near for m in multiples(schema, v - 20 * step, v + 20 * step, step, 4)]
        texts = []
        for v in sorted(dict.fromkeys(near), key=lambda v: abs(v - wrote)):
            if integer:
                if v != int(v):
                    continue
                texts.append(str(int(v)))
            else:
                texts.append(json.dumps(int(v) if v == int(v) and abs(v) < 2**53 else float(v)))
        return texts


def _written_number(text: str) -> float:
    """The first number in a slot's text (0 if none): what `repair` and `variants` start from."""
    match = re.search(r"-?[0-9]+(\.[0-9]+)?", text)
    return float(match.group()) if match else 0.0


def plan_slot(slot: Slot, start: int, vocab: Vocabulary, max_string_tokens: int) -> SlotPlan:
    schema, filler = slot.schema, vocab.filler
    if slot.kind is SlotKind.CHOICE:
        encoded = [vocab.encode(o) for o in slot.options]
        budget = max(len(e) for e in encoded)
        options = [e + [filler] * (budget - len(e)) for e in encoded]
        allowed = [tuple(sorted({o[k] for o in options})) for k in range(budget)]
        return SlotPlan(slot, start, budget, allowed, options)
    if slot.kind is SlotKind.STRING:
        lo = schema.get("minLength", 0)
        budget = max(lo, min(schema.get("maxLength", max_string_tokens), max_string_tokens), 1)
        safe = vocab.string_safe
        allowed = [safe if k < lo else safe + (filler,) for k in range(budget)]
        return SlotPlan(slot, start, budget, allowed)
    digits = vocab.digits
    if not digits:
        raise ValueError("this tokenizer has no digit tokens; numbers cannot be generated")
    bounds = [b for b in (schema.get("minimum"), schema.get("maximum")) if b is not None]
    negative = not bounds or min(bounds) < 0 or schema.get("minimum") is None
    sign = vocab.exact("-") if negative else ()
    if slot.kind is SlotKind.INTEGER:
        width = max((len(str(int(b))) for b in bounds), default=6)
        budget = max(width, 2) + (1 if negative else 0)
        allowed = [tuple(digits) + sign + (filler,)] + [tuple(digits) + (filler,)] * (budget - 1)
        return SlotPlan(slot, start, budget, allowed)
    budget = DEFAULT_NUMBER_TOKENS
    dot = vocab.exact(".")
    allowed = [tuple(digits) + sign + (filler,)] + [tuple(digits) + dot + (filler,)] * (budget - 1)
    return SlotPlan(slot, start, budget, allowed)
