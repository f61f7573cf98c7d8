"""The keywords real-world schemas use, one schema each: every output validates with the `jsonschema`
package (formats checked), and the layout writes what the docstring of schema.py promises."""

from __future__ import annotations

import json

import jsonschema
import pytest

from dgemma.structured import patterns
from dgemma.structured.schema import compile_schema

S = {"type": "string", "maxLength": 6}
OBJ = {"type": "object"}
CASES = {
    "pattern": {"type": "string", "pattern": r"^[A-Z]{3}-\d{2,4}$"},
    "pattern unanchored with lengths": {"type": "string", "pattern": "ab", "minLength": 4, "maxLength": 6},
    "formats": {
        "type": "object",
        "properties": {
            f: {"type": "string", "format": f}
            for f in ("email", "hostname", "uri", "ipv4", "ipv6", "date", "date-time", "uuid", "duration")
        },
        "required": ["email", "ipv4"],
    },
    "type list": {"type": ["integer", "string"], "minimum": 3, "maximum": 7, "maxLength": 2},
    "exclusive bounds and multipleOf": {
        "type": "object",
        "properties": {
            "i": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 20, "multipleOf": 3},
            "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        },
        "required": ["i", "x"],
    },
    # draft 4's boolean exclusive bounds, validated as draft 4 (a 2020-12 validator reads `true` as
    # the number 1, since bool is an int in Python: 1 would fail it while draft 4 accepts it)
    "draft 4 exclusive bounds": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 2},
            "b": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True},
        },
        "required": ["a", "b"],
    },
    "uniqueItems": {"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True},
    "number multipleOf": {
        "type": "object",
        "properties": {
            "tenth": {"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 3},
            "quarter": {"type": "number", "multipleOf": 0.25},
            "five": {"type": "number", "multipleOf": 5, "exclusiveMinimum": 0},
            "cents": {"type": "number", "multipleOf": 0.01, "minimum": 0, "maximum": 100},
        },
        "required": ["tenth", "quarter", "five", "cents"],
    },
    "prefixItems (a tuple)": {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": 5}, {"enum": ["a", "b"]}],
        "items": False,
    },
    "prefixItems then items to reach minItems": {
        "type": "array",
        "prefixItems": [{"type": "boolean"}],
        "items": {"type": "integer", "maximum": 3},
        "minItems": 3,
    },
    "draft 4 tuple items and additionalItems": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "array",
        "items": [{"type": "string", "maxLength": 3}, {"type": "null"}],
        "additionalItems": False,
    },
    "oneOf told apart by required keys": {
        "oneOf": [
            {**OBJ, "properties": {"using": {"const": "node"}, "main": S}, "required": ["using", "main"]},
            {**OBJ, "properties": {"using": {"const": "docker"}, "image": S}, "required": ["using", "image"]},
        ]
    },
    "oneOf told apart by type of a const": {"oneOf": [{"const": False}, {**OBJ, "properties": {"a": S}}]},
    "not": {
        **OBJ,
        "properties": {"kind": {"enum": ["a", "b"]}},
        "required": ["kind"],
        "not": {"properties": {"kind": {"const": "c"}}, "required": ["kind"]},
    },
    "if then else": {
        **OBJ,
        "properties": {"kind": {"enum": ["pin", "range"]}, "value": {"type": "integer"}},
        "required": ["kind", "value"],
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": "pin"}}},
                "then": {"properties": {"value": {"minimum": 1000, "maximum": 9999}}},
            },
            {
                "if": {"properties": {"kind": {"const": "range"}}},
                "then": {"properties": {"value": {"maximum": 5}}},
                "else": {"properties": {"value": {"minimum": 0}}},
            },
        ],
    },
    "patternProperties and minProperties": {
        **OBJ,
        "patternProperties": {
            "^[a-z][a-z0-9_-]*$": {**OBJ, "properties": {"runs-on": S}, "required": ["runs-on"]}
        },
        "additionalProperties": False,
        "minProperties": 1,
    },
    "patternProperties matching a declared key": {
        **OBJ,
        "properties": {"name": {"type": "string"}},
        "patternProperties": {"^n": {"maxLength": 3}},
        "required": ["name"],
    },
    "additionalProperties schema and unevaluatedProperties": {
        **OBJ,
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "integer"},
        "unevaluatedProperties": False,
    },
    "dependencies": {
        **OBJ,
        "properties": {"a": S, "b": {"type": "boolean"}, "c": {"type": "integer"}},
        "required": ["a"],
        "dependentRequired": {"b": ["a"]},
        "dependencies": {"c": ["d"]},  # d is never written, so optional c is left out
    },
    "maxProperties": {**OBJ, "properties": {k: S for k in "abcd"}, "required": ["c"], "maxProperties": 2},
    "anchors and dynamic refs": {
        "$defs": {"n": {"$anchor": "num", "type": "integer", "maximum": 9}},
        **OBJ,
        "properties": {"x": {"$ref": "#num"}, "self": {"$dynamicRef": "#top"}},
        "$dynamicAnchor": "top",
        "required": ["x"],
    },
    "typeless object keywords": {"properties": {"a": {"type": "boolean"}}, "required": ["a"]},
    "contains": {"type": "array", "items": {"type": "integer", "maximum": 99}, "contains": {"const": 7}},
    "minContains and maxContains": {
        "type": "array",
        "items": {"type": "string", "maxLength": 8},
        "contains": {"const": "version"},
        "minContains": 2,
        "maxContains": 3,
    },
    "contains without items": {"type": "array", "contains": {"type": "boolean"}, "maxItems": 2},
    "contains inside if": {  # validate-pyproject's shape: `dynamic` must hold "version" when asked
        **OBJ,
        "properties": {"dynamic": {"type": "array", "items": {"enum": ["version", "readme"]}}},
        "required": ["dynamic"],
        "if": {"properties": {"dynamic": {"contains": {"const": "version"}}}},
        "then": {"properties": {"dynamic": {"minItems": 1}}},
    },
    "propertyNames": {
        **OBJ,
        "properties": {"Ab": {"type": "integer"}, "cd": {"type": "integer"}},
        "propertyNames": {"pattern": "^[a-z]+$"},
    },
    "propertyNames and minProperties": {**OBJ, "minProperties": 2, "propertyNames": {"maxLength": 4}},
    "allOf with refs and nested combinators": {
        "$defs": {
            "base": {**OBJ, "properties": {"id": {"type": "integer", "minimum": 1}}, "required": ["id"]}
        },
        "allOf": [
            {"$ref": "#/$defs/base"},
            {"anyOf": [{"properties": {"tag": {"enum": ["x", "y"]}}, "required": ["tag"]}, OBJ]},
            {"properties": {"id": {"maximum": 50}}},
        ],
    },
}


@pytest.mark.parametrize(
    "seeds", [(0,), pytest.param((1, 2), marks=pytest.mark.slow)], ids=["seed0", "seeds1-2"]
)
@pytest.mark.parametrize("name", list(CASES))
def test_keyword_outputs_validate(model, name, seeds):
    schema = CASES[name]
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    for seed in seeds:
        out = model.generate("x", json_schema=schema, seed=seed, max_denoising_steps=3)
        value = json.loads(out.texts[0])
        errors = list(validator.iter_errors(value))
        assert not errors, (out.texts[0], errors[0].message)


def test_what_the_layouts_write():
    def keys(schema) -> list[str]:
        return [p for p in compile_schema(schema).parts if isinstance(p, str)]

    assert (
        '"c"' in "".join(keys(CASES["maxProperties"]))
        and "".join(keys(CASES["maxProperties"])).count(":") == 2
    )
    assert '"c"' not in "".join(keys(CASES["dependencies"]))  # c depends on d, which no layout writes
    layout = compile_schema({**OBJ, "properties": {"deep": {"not": {}}}})  # optional and impossible
    assert layout.parts == ["{}"] and layout.omitted and layout.omitted[0].startswith("$.deep")
    assert "runs-on" in "".join(keys(CASES["patternProperties and minProperties"]))
    assert '"Ab"' not in "".join(keys(CASES["propertyNames"]))  # optional, and its name fails
    assert "".join(keys(CASES["minContains and maxContains"])).count('"version"') >= 2
    with pytest.raises(ValueError, match=r"\$\.propertyNames: required key 'Ab'"):
        compile_schema({**CASES["propertyNames"], "required": ["Ab"]})
    with pytest.raises(ValueError, match="maxContains"):
        compile_schema({"type": "array", "items": S, "contains": S, "minContains": 3, "maxContains": 2})
    with pytest.raises(ValueError, match="contains"):
        compile_schema({"type": "array", "prefixItems": [S], "contains": S})


def test_pattern_examples_match_and_byte_fragments_are_never_valid(model):
    for pattern in (r"^\d{3}-\d{4}$", "^(foo|bar)+$", r"^v?[0-9]+(\.[0-9]+)*$", "[^a-z]", r"^\$\{\{.*\}\}$"):
        text = patterns.example(pattern)
        assert text is not None and patterns.matches(pattern, text), pattern
    assert patterns.example("(a)\\1") is None
    plan = model.builder.json_plan({"type": "string", "maxLength": 5})
    (slot,) = plan.slots
    assert not slot.is_valid("ab\ufffd") and slot.is_valid("abc")
