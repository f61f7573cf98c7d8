"""Schema-guaranteed JSON: with a random-weight model every output parses and validates, for every schema and seed.

Validity is checked with the independent `jsonschema` package, not with dgemma's own validator.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from dgemma.structured.schema import compile_schema

S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
N = {"type": "number"}
B = {"type": "boolean"}

SCHEMAS = [
    S,
    I,
    N,
    B,
    {"type": "null"},
    {"enum": ["red", "green", "blue"]},
    {"enum": [1, "two", 3.5, True, None]},
    {"const": "fixed"},
    {"type": "integer", "minimum": 0, "maximum": 9},
    {"type": "integer", "minimum": -50, "maximum": -10},
    {"type": "number", "minimum": 0, "maximum": 1},
    {"type": "string", "minLength": 3, "maxLength": 5},
    {"type": "string", "maxLength": 1},
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"name": S, "age": I}, "required": ["name", "age"]},
    {
        "type": "object",
        "properties": {"id": I, "tags": {"type": "array", "items": S, "maxItems": 2}},
        "required": ["id"],
        "additionalProperties": False,
    },
    {"type": "array", "items": I, "minItems": 4, "maxItems": 4},
    {"type": "array", "items": B, "maxItems": 0},
    {"type": "array", "items": {"type": "array", "items": N, "minItems": 2, "maxItems": 2}, "minItems": 2},
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1}, "admin": B},
                "required": ["name", "admin"],
            },
            "level": {"enum": ["low", "mid", "high"]},
        },
        "required": ["user", "level"],
    },
    {
        "type": "object",
        "title": "Sudoku answer",
        "description": "annotations are accepted",
        "properties": {
            "solved": B,
            "steps": {"type": "integer", "minimum": 1, "maximum": 48},
            "note": {"type": "null"},
        },
        "required": ["solved", "steps"],
    },
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"k": {"const": 1}, "v": {"type": "string", "maxLength": 4}},
        },
        "minItems": 1,
        "maxItems": 2,
    },
    {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "object", "properties": {"c": I}}}}
        },
    },
    {
        "type": "object",
        "properties": {"x": N, "y": N, "label": {"enum": ["p", "q"]}},
        "required": ["x", "y", "label"],
    },
]


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_every_output_parses_and_validates(conditioned, index):
    model = conditioned[2]
    schema = SCHEMAS[index]
    prompts = ["Give me JSON.", "Why is the sky blue?", "The quick brown fox", "a", "def add(a, b):", "{"]
    out = model.generate(prompts, json_schema=schema, seed=10 * index, max_denoising_steps=6)
    for text, stats in zip(out.texts, out.stats, strict=True):
        jsonschema.validate(json.loads(text), schema)
        assert stats.rounds <= 3 and (stats.rounds == 0) == (not compile_schema(schema).slots)


def test_many_seeds_one_schema(model):
    schema = SCHEMAS[15]
    for seed in range(12):
        out = model.generate("x", json_schema=schema, seed=seed, max_denoising_steps=4)
        jsonschema.validate(json.loads(out.texts[0]), schema)


def test_layout_text_is_clamped_and_settled_slots_survive_rounds(conditioned, monkeypatch):
    """Literal JSON is clamped in every round; a slot valid after a round is clamped in later rounds."""
    import dgemma.generation.run as gen

    model = conditioned[2]
    schema = SCHEMAS[14]
    seen = []
    real = gen.complete  # the rounds run through the generation layer's `complete`

    def spy(m, requests, *a, **k):
        seen.append([dict(r.fixed) for r in requests])
        return real(m, requests, *a, **k)

    monkeypatch.setattr(gen, "complete", spy)
    out = model.generate("hi", json_schema=schema, seed=3, max_denoising_steps=4, json_rounds=3)
    job_tokens = out.token_ids[0]
    first = seen[0][0]
    for later in seen[1:]:
        assert set(first) <= set(later[0])  # literal positions stay clamped
        for p, tok in first.items():
            assert later[0][p] == tok
    for p, tok in first.items():
        assert job_tokens[p] == tok
    assert out.texts[0].startswith('{"name": "') and '", "age": ' in out.texts[0]


def test_retries_are_counted(conditioned):
    model = conditioned[2]
    out = model.generate(
        ["a", "b"], json_schema={"type": "integer", "minimum": 3, "maximum": 4}, seed=0, json_rounds=2
    )
    for text, stats in zip(out.texts, out.stats, strict=True):
        assert json.loads(text) in (3, 4)
        assert stats.rounds in (1, 2)
        assert stats.decoder_passes >= stats.rounds


@pytest.mark.parametrize(
    "schema,word",
    [
        ({"type": "string", "pattern": "(a)\\1"}, "pattern"),
        ({"type": "string", "format": "json-pointer"}, "format"),
        ({"oneOf": [I, {"type": "number"}]}, "oneOf"),
        ({"type": "object", "properties": {"a": S}, "required": ["b"]}, "'b'"),
        ({"type": "object", "patternProperties": {"(": S}}, "patternProperties"),
        ({"type": "object", "additionalProperties": 3}, "additionalProperties"),
        ({"type": "array"}, "items"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum"),
        ({"type": "number", "multipleOf": 1e-9}, "multipleOf"),  # finer than a number slot writes
        ({"type": "number", "multipleOf": 0.7, "minimum": 0.1, "maximum": 0.6}, "no multiple"),
        ({"type": "integer", "multipleOf": 0.5}, "multipleOf"),
        ({"type": "integer", "minimum": 1, "maximum": 3, "multipleOf": 5}, "no integer"),
        ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "no number"),
        ({"enum": []}, "enum"),
        ({"enum": [[1]]}, "enum"),
        ({"$ref": "#/x"}, "points to nothing"),
        ("string", "object"),
    ],
)
def test_unsupported_schemas_are_errors_naming_the_keyword(schema, word):
    with pytest.raises(ValueError, match="json_schema") as err:
        compile_schema(schema)
    assert word in str(err.value)


def test_schemas_supported_since_normalization(model):
    """anyOf (first branch), Optional type lists and local $refs used to be refused; they lay out now."""
    for schema in (
        {"anyOf": [S, I]},
        {"type": ["string", "null"], "maxLength": 5},
        {"$defs": {"s": S}, "$ref": "#/$defs/s"},
        {"allOf": [{"type": "integer"}, {"minimum": 2, "maximum": 9}]},
    ):
        out = model.generate("x", json_schema=schema, seed=1, max_denoising_steps=4)
        jsonschema.validate(json.loads(out.texts[0]), schema)


def test_bad_json_arguments(model):
    with pytest.raises(ValueError, match="diffusion mode"):
        model.generate("x", mode="ar", json_schema=S)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate("x", json_schema=S, max_new_tokens=5)
    # one rule for length: max_new_tokens is a cap (as the server's max_tokens); a layout that fits runs
    out = model.generate("x", json_schema=S, max_new_tokens=500, seed=0, max_denoising_steps=2)
    jsonschema.validate(json.loads(out.texts[0]), S)
    with pytest.raises(ValueError, match="json_rounds|max_rounds"):
        model.generate("x", json_schema=S, json_rounds=0)
    with pytest.raises(ValueError, match="max_string_tokens"):
        model.generate("x", json_schema=S, max_string_tokens=0)


def test_generate_command_with_json_schema(checkpoint, model, tmp_path):
    from tests.cli import run

    schema = SCHEMAS[19]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    cmd = ["generate", "--model", str(checkpoint[0]), "--json-schema", str(path)]
    proc = run(*cmd, "Who is the user?", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    jsonschema.validate(json.loads(proc.stdout), schema)
    assert proc.stdout.strip() == model.generate("Who is the user?", json_schema=schema, seed=2).texts[0]
    path.write_text(json.dumps({"type": "string", "pattern": "(x)\\1"}))
    proc = run(*cmd, "x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pattern" in proc.stderr
    path.write_text("{not json")
    proc = run(*cmd, "x")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
