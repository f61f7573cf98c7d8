"""A slot's value read jointly from its positions' last-step alternatives (structured/resolve.py).

Against a brute-force oracle: over every combination of the offered alternatives, the most likely
valid value. And on the random-weight model: slots whose argmaxes form no valid value are resolved
in the first round instead of being renoised, and every output still validates.
"""

from __future__ import annotations

import itertools
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgemma.engine.results import TokenLogprob
from dgemma.structured.resolve import resolve


def _slot(model, schema):
    plan = model.builder.json_plan({"type": "object", "properties": {"v": schema}, "required": ["v"]})
    (slot,) = plan.slots
    return slot, plan.vocab


def _tops(rows):
    return [TokenLogprob(max(lp for _, lp in row), tuple(sorted(row, key=lambda r: -r[1]))) for row in rows]


def _oracle(slot, vocab, rows):
    """The highest score of a valid value over every combination of the rows' tokens (None if none)."""
    found = None
    for combo in itertools.product(*rows):
        score = sum(lp for _, lp in combo)
        if slot.is_valid(vocab.codec.decode([t for t, _ in combo])) and (found is None or score > found):
            found = score
    return found


def _score(rows, tokens):
    return sum(dict(row)[t] for row, t in zip(rows, tokens, strict=True))


def test_a_choice_takes_the_option_its_positions_favour_together(model):
    slot, vocab = _slot(model, {"enum": ["zebra crossing", "yellow submarine"]})
    a, b = slot.options
    i, j = [k for k in range(slot.budget) if a[k] != b[k]][:2]
    # each of positions i and j alone prefers a different option; together b is more likely
    rows = [[(a[k], -0.5), (b[k], -0.5)] if a[k] != b[k] else [(a[k], -0.1)] for k in range(slot.budget)]
    rows[i], rows[j] = [(a[i], -0.1), (b[i], -0.2)], [(b[j], -0.1), (a[j], -3.0)]
    assert [max(r, key=lambda x: x[1])[0] for r in rows] not in (a, b)  # the argmaxes mix the two
    assert resolve(slot, _tops(rows), vocab) == b


def test_a_byte_fragment_is_completed_or_dropped(model):
    """Byte-level BPE: the argmaxes hold the first byte of `é` followed by `b` (no UTF-8); the most
    likely valid text pairs the byte with its continuation."""
    slot, vocab = _slot(model, {"type": "string", "maxLength": 2})
    lead, tail = (vocab.codec.tokenizer.token_to_id(c) for c in ("Ã", "©"))  # the bytes C3 A9
    letter_a, letter_b = (vocab.encode(c)[0] for c in "ab")
    assert vocab.codec.decode([lead, tail]) == "é" and "\ufffd" in vocab.codec.decode([lead, letter_b])
    rows = [[(lead, -0.1), (letter_a, -1.0)], [(letter_b, -0.1), (tail, -0.5)]]
    found = resolve(slot, _tops(rows), vocab)
    assert vocab.codec.decode(found) == "é" and _score(rows, found) == _oracle(slot, vocab, rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), bounds=st.sampled_from([(0, 100), (5, 9), (-20, -3), (10, 99), (None, 50)]))
def test_integers_match_the_oracle(model, data, bounds):
    lo, hi = bounds
    schema = {"type": "integer", "maximum": hi, **({} if lo is None else {"minimum": lo})}
    slot, vocab = _slot(model, schema)
    rows = []
    for allowed in slot.allowed:  # two alternatives per position (the filler where allowed): exact beam
        digits = [t for t in allowed if t != vocab.filler]
        first = data.draw(st.sampled_from(digits))
        second = vocab.filler if vocab.filler in allowed else data.draw(st.sampled_from(digits))
        rows.append([(t, data.draw(st.floats(-8, 0))) for t in dict.fromkeys([first, second])])
    found = resolve(slot, _tops(rows), vocab)
    best = _oracle(slot, vocab, rows)
    assert (found is None) == (best is None)
    if found is not None:
        assert slot.is_valid(vocab.codec.decode(found)) and _score(rows, found) == pytest.approx(best)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    schema=st.sampled_from(
        [
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            {"type": "number", "minimum": -5.5, "maximum": 12},
            {"type": "string", "minLength": 2, "maxLength": 4},
            {"type": "string", "pattern": "^[ab]+$", "maxLength": 6},
        ]
    ),
)
def test_whatever_it_returns_is_valid(model, data, schema):
    """Any alternatives at all: a value the slot's own check accepts, or None."""
    slot, vocab = _slot(model, schema)
    rows = [
        [
            (t, data.draw(st.floats(-8, 0)))
            for t in data.draw(st.lists(st.sampled_from(a), min_size=1, max_size=6, unique=True))
        ]
        for a in slot.allowed
    ]
    found = resolve(slot, _tops(rows), vocab)
    assert found is None or slot.is_valid(vocab.codec.decode(found))


def test_the_first_round_settles_what_the_argmax_got_wrong(model):
    """On the random-weight model the argmaxes of an enum, a bounded integer and strings are
    rarely valid together; resolved from their alternatives they settle in one round."""
    schema = {
        "type": "object",
        "properties": {
            "colour": {"enum": ["zebra crossing", "yellow submarine", "blue"]},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "name": {"type": "string"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        },
        "required": ["colour", "age", "name", "ratio"],
    }
    out = model.generate(["hi", "a longer prompt", "x"], json_schema=schema, seed=4, max_denoising_steps=3)
    for text, stats in zip(out.texts, out.stats, strict=True):
        jsonschema.validate(json.loads(text), schema)
        assert stats.rounds == 1 and stats.repaired_slots == 0
    assert sum(s.resolved_slots for s in out.stats) > 0


def test_the_search_stops_when_the_rounds_budget_is_spent(model):
    """A search that would decode past its round's budget gives up (the slot then goes to the next
    round as before); a choice needs no decoding and is always read."""
    from dgemma.structured.resolve import Budget

    slot, vocab = _slot(model, {"type": "integer", "maximum": 100, "minimum": 0})
    digit = {t: vocab.codec.decode([t]) for t in slot.allowed[0] if t != vocab.filler}
    four = next(t for t, text in digit.items() if text == "4")
    rows = [[(four, -0.1), (vocab.filler, -0.5)] for _ in range(slot.budget)]  # 444 argmax; 44 valid
    assert resolve(slot, _tops(rows), vocab, Budget()) is not None
    assert resolve(slot, _tops(rows), vocab, Budget(3)) is None
    choice, vocab = _slot(model, {"enum": ["zebra crossing", "blue"]})
    rows = [[(o[k], -0.1) for o in choice.options] for k in range(choice.budget)]
    assert resolve(choice, _tops(rows), vocab, Budget(0)) in choice.options
