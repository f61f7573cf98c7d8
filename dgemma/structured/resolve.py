"""A slot's value read jointly from its positions' last-step alternatives, before any renoise round.

The canvas commits each position's own argmax, so a slot whose positions disagree comes out
invalid even when the model's distributions hold a valid value: the halves of two enum options,
a byte-level BPE fragment that forms no UTF-8 character, a second `.` in a number, `446` under
`maximum: 100`. For such a slot this module looks for the most likely valid value under the last
denoising step's per-position distributions (their product, as the sampler treats positions
independently at a step): the best-scoring option of a choice, else a left-to-right beam search
over each position's most likely tokens, pruned by whether the text so far can still become valid
and checked in full with the slot's own `is_valid`. Nothing invalid is ever returned; when the
search finds nothing the slot is renoised as before.
"""

from __future__ import annotations

import functools
import heapq
import math
import re

import regex

from dgemma.engine.results import TokenLogprob
from dgemma.structured.schema import SlotKind
from dgemma.structured.slots import SlotPlan, Vocabulary
from dgemma.structured.validate import bounds, closed_range

BEAM = 8  # prefixes kept per position
WIDTH = 8  # most likely tokens tried per position (and the filler where it is allowed)
# tokens decoded by the searches of one round of one request, at most: a round of a large layout
# whose every slot fails (a random model, long strings) stays within about a second
ROUND_BUDGET = 2_000_000


class Budget:
    """Tokens the searches of one round may still decode; a search that would pass it gives up."""

    def __init__(self, tokens: int = ROUND_BUDGET):
        self.left = tokens

    def spend(self, tokens: int) -> bool:
        self.left -= tokens
        return self.left >= 0


INTEGER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?")
NUMBER_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]*)?)?")


def resolve(
    plan: SlotPlan, tops: list[TokenLogprob], vocab: Vocabulary, budget: Budget | None = None
) -> list[int] | None:
    """The slot's tokens of the most likely valid value found, or None (also when `budget` runs
    out); `tops`: the last step's alternatives at each of the slot's positions, in order."""
    if len(tops) != plan.budget:
        return None
    table = [{t: lp for t, lp in top.top if lp != float("-inf")} for top in tops]
    if plan.options is not None:
        return _best_option(plan.options, table)
    return _beam(plan, table, vocab, budget or Budget())


def _floor(row: dict[int, float]) -> float:
    """The score of a token not among a position's alternatives: at most the least likely one's."""
    return min(row.values(), default=0.0)


def _best_option(options: list[list[int]], table: list[dict[int, float]]) -> list[int]:
    def score(option: list[int]) -> float:
        return sum(row.get(t, _floor(row)) for t, row in zip(option, table, strict=True))

    return max(options, key=score)


def _beam(
    plan: SlotPlan, table: list[dict[int, float]], vocab: Vocabulary, budget: Budget
) -> list[int] | None:
    viable = _prefix_check(plan, vocab)
    width = WIDTH if plan.slot.kind is SlotKind.STRING else len(max(table, key=len))
    beams: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for k, row in enumerate(table):
        tried = heapq.nlargest(width, row.items(), key=lambda item: item[1])
        if vocab.filler in plan.allowed[k] and vocab.filler not in row:
            tried.append((vocab.filler, _floor(row)))
        grown = sorted(
            ((score + lp, ids + (t,)) for score, ids in beams for t, lp in tried), key=lambda b: -b[0]
        )
        left = len(table) - 1 - k
        clean, open_ = [], []  # prefixes that end a whole character / in the middle of one: each
        for score, ids in grown:  # kind keeps its own BEAM places, so fragments cannot crowd out the rest
            if not budget.spend(len(ids)):
                return None
            text = vocab.codec.decode(list(ids))
            if not left and plan.is_valid(text):
                return list(ids)
            kept = open_ if text.endswith("\ufffd") else clean
            if left and len(kept) < BEAM and viable(text, left):
                kept.append((score, ids))
                if len(clean) == len(open_) == BEAM:
                    break
        beams = clean + open_
        if not beams:
            return None
    return None


def _prefix_check(plan: SlotPlan, vocab: Vocabulary):
    """A test of whether a slot's text so far, with `left` positions to come, can still end valid
    (False only when it cannot)."""
    schema = plan.slot.schema
    longest = vocab.longest_digits  # digits one token adds
    if plan.slot.kind is SlotKind.INTEGER:
        lo, hi = _integer_range(schema)
        return lambda text, left: (
            INTEGER_PREFIX.fullmatch(text) is not None and _reachable(text, left * longest, lo, hi)
        )
    if plan.slot.kind is SlotKind.NUMBER:
        lo, hi = closed_range(schema)  # the full check is exact
        return lambda text, left: (
            NUMBER_PREFIX.fullmatch(text) is not None and _number_reachable(text, left * longest, lo, hi)
        )
    most = schema.get("maxLength")
    pattern = _partial(schema["pattern"]) if isinstance(schema.get("pattern"), str) else None

    def string_ok(text: str, left: int) -> bool:
        # a fragment at the end may still be completed by the next token's bytes; one inside is final
        body = text[:-1] if text.endswith("\ufffd") else text
        if "\ufffd" in body or (most is not None and len(body) > most):
            return False
        return pattern is None or text.endswith("\ufffd") or pattern.search(text, partial=True) is not None

    return string_ok


def _integer_range(schema: dict) -> tuple[float, float]:
    """The integers the bounds allow, as [lo, hi]."""
    lo, hi, xlo, xhi = bounds(schema)
    if xlo is not None:
        lo = max(lo, math.floor(xlo) + 1)
    if xhi is not None:
        hi = min(hi, math.ceil(xhi) - 1)
    return lo, hi


def _number_reachable(text: str, digits: int, lo: float, hi: float) -> bool:
    """Whether a number written as `text` and up to `digits` more characters can lie in [lo, hi]."""
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text)
    if not body:
        return True
    whole, dot, fraction = body.partition(".")
    if dot:  # the value lies in [x, x + 10^-len(fraction)]
        a = float(f"{whole}.{fraction or 0}")
        spans = [(a, a + 10.0 ** -len(fraction))]
    elif int(whole) == 0:
        spans = [(0.0, 1.0)]  # 0 or 0.xxx
    else:  # more whole digits, then any fraction
        spans = [(int(whole) * 10.0**e, (int(whole) + 1) * 10.0**e) for e in range(digits + 1)]
    return any((-b if sign < 0 else a) <= hi and (-a if sign < 0 else b) >= lo for a, b in spans)


def _reachable(text: str, digits: int, lo: float, hi: float) -> bool:
    """Whether an integer written as `text` and up to `digits` more digits can lie in [lo, hi]."""
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text)
    if not body:
        return True
    value = int(body)
    if value == 0:  # a leading zero takes no more digits
        return lo <= 0 <= hi
    for extra in range(digits + 1):
        a = value * 10**extra
        b = a + 10**extra - 1
        if sign < 0:
            a, b = -b, -a
        if a <= hi and b >= lo:
            return True
    return False


@functools.lru_cache(maxsize=256)
def _partial(pattern: str) -> regex.Pattern | None:
    """`pattern` for partial matching (the `regex` package: can this text still be extended into
    a match), or None where `regex` reads the pattern differently from `re` or not at all."""
    try:
        return regex.compile(pattern, flags=regex.VERSION0)
    except (regex.error, ValueError, TypeError):
        return None
