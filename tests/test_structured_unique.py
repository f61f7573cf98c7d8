"""`uniqueItems` with several items: laid out only as many as the slots can tell apart, repeats
renoised between rounds, and made distinct after the last one (structured/unique.py). Every output
validates with the `jsonschema` package, whose notion of equal values (1 == 1.0, true != 1) the
checks share."""

from __future__ import annotations

import json

import jsonschema
import pytest

from dgemma.structured import unique
from dgemma.structured.schema import compile_schema
from dgemma.structured.validate import canonical, validate

BOOLS = {"type": "boolean"}
CASES = {
    "strings": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 4},
    "one-character strings": {
        "type": "array",
        "items": {"type": "string", "maxLength": 1},
        "uniqueItems": True,
        "minItems": 30,
    },
    "every integer of a range": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 4},
        "uniqueItems": True,
        "minItems": 4,
    },
    "multiples": {
        "type": "array",
        "items": {"type": "number", "multipleOf": 0.5, "minimum": 0, "maximum": 2},
        "uniqueItems": True,
        "minItems": 4,
    },
    "objects of two choices": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"a": BOOLS, "b": {"enum": ["x", "y"]}},
            "required": ["a", "b"],
        },
        "uniqueItems": True,
        "minItems": 4,
    },
    "nested": {
        "type": "array",
        "items": {"type": "array", "items": BOOLS, "uniqueItems": True, "minItems": 2, "maxItems": 2},
        "uniqueItems": True,
        "minItems": 2,
    },
    "a literal item first": {
        "type": "array",
        "prefixItems": [{"const": 1}, {"type": "integer", "minimum": 0, "maximum": 2}],
        "items": False,
        "uniqueItems": True,
        "minItems": 2,
    },
    "pydantic set[str] with a minimum": {
        "type": "array",
        "items": {"type": "string"},
        "uniqueItems": True,
        "minItems": 2,
        "title": "Tags",
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_validate(model, name):
    schema = CASES[name]
    for seed in range(3):
        out = model.generate(
            ["x", "another"], json_schema=schema, seed=seed, max_denoising_steps=3, json_rounds=2
        )
        for text in out.texts:
            value = json.loads(text)
            jsonschema.validate(value, schema)
            assert len(value) >= schema["minItems"]


def test_repeats_are_made_distinct_whatever_the_model_wrote(model):
    """Every item written as the same value: the last round changes all but one, nearest first."""
    schema = CASES["every integer of a range"]
    plan = model.builder.json_plan(schema)
    tokens = list(plan.tokens)
    zero = model.codec.encode_plain("2")
    for slot in plan.slots:
        tokens[slot.start : slot.start + slot.budget] = zero + [plan.vocab.filler] * (slot.budget - len(zero))
    assert json.loads(model.codec.decode(tokens)) == [2, 2, 2, 2]
    settled = [True] * len(plan.slots)
    assert unique.repeats(plan.layout, plan.slots, tokens, plan.vocab, settled) == {1, 2, 3}
    assert unique.make_distinct(plan.layout, plan.slots, tokens, plan.vocab) == 3
    value = json.loads(model.codec.decode(tokens))
    jsonschema.validate(value, schema)
    assert value[0] == 2 and len(set(value)) == 4  # the first kept, the others the nearest free values


def test_capacity_bounds_the_items():
    assert len(compile_schema({"type": "array", "items": BOOLS, "uniqueItems": True}).slots) == 2
    assert (
        len(compile_schema(CASES["every integer of a range"]).slots) == 4
    )  # 0..4 counted as 4: a lower bound
    for schema in (
        {"type": "array", "items": BOOLS, "uniqueItems": True, "minItems": 3},
        {"type": "array", "items": {"const": 1}, "uniqueItems": True, "minItems": 2},
        {"type": "array", "items": {"type": "string", "pattern": "^a+$"}, "uniqueItems": True, "minItems": 2},
    ):
        with pytest.raises(ValueError, match="uniqueItems"):
            compile_schema(schema)


def test_equal_values_as_json_schema_has_them():
    assert canonical(1) == canonical(1.0) and canonical(True) != canonical(1)
    assert canonical({"a": [1, "x"], "b": None}) == canonical({"b": None, "a": [1.0, "x"]})
    schema = {"type": "array", "items": {"type": "number"}, "uniqueItems": True}
    assert validate([1, 1.0], schema) and not validate([1, True], {"type": "array", "uniqueItems": True})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([1, 1.0], schema)
