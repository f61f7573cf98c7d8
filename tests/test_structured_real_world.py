"""Structured output on the development set (tests/schema_sources.py): schemas nobody on the project
wrote. At least 90% of the real-world ones and every pydantic one lay out; every refusal names its
keyword and JSON path; every output of an accepted schema, from a random-weight model with a
byte-level BPE tokenizer, validates with the `jsonschema` package (formats checked too)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from dgemma.structured.schema import compile_schema
from tests.schema_sources import REAL_WORLD, sources

SOURCES = sources()
REFUSAL = re.compile(r"^json_schema at \$\S*: .*('[^']+'|`[^`]+`)")
SMALL = 60  # layout tokens: the default run generates these; CI generates every accepted schema


def _accepted() -> list[tuple[str, dict]]:
    out = []
    for source, schemas in SOURCES.items():
        for name, schema in schemas:
            try:
                compile_schema(schema)
            except ValueError:
                continue
            out.append((f"{source}: {name}", schema))
    return out


ACCEPTED = _accepted()


def test_the_development_set_is_large_enough_and_mostly_accepted():
    real = [(n, s) for source in REAL_WORLD for n, s in SOURCES[source]]
    pydantic = SOURCES["pydantic models (tests/pydantic_models.py)"]
    assert len(real) >= 60 and len(pydantic) >= 15
    refused = {}
    for name, schema in real + pydantic:
        try:
            compile_schema(schema)
        except ValueError as err:
            refused[name] = str(err)
    assert not [n for n, _ in pydantic if n in refused], refused
    assert sum(n not in refused for n, _ in real) >= 0.9 * len(real), refused
    for name, message in refused.items():
        assert REFUSAL.match(message), (name, message)  # the keyword, quoted, and its path


def _check(model, schema: dict, seeds=(0,)) -> None:
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    for seed in seeds:
        out = model.generate(
            "Fill in a realistic example.", json_schema=schema, seed=seed, max_denoising_steps=2
        )
        text = out.texts[0]
        assert "\ufffd" not in text
        errors = list(validator.iter_errors(json.loads(text)))
        assert not errors, errors[0].message


def _layout_tokens(model, schema: dict) -> int:
    return len(model.builder.json_plan(schema).tokens)


@pytest.mark.parametrize("name,schema", ACCEPTED, ids=[n for n, _ in ACCEPTED])
def test_outputs_of_small_accepted_schemas_validate(model, name, schema):
    if _layout_tokens(model, schema) > SMALL:
        pytest.skip(f"lays out to more than {SMALL} tokens: generated in the slow run")
    _check(model, schema)


@pytest.mark.slow  # about 7 minutes on the 2-core machine; CI runs it (./scripts/test --all)
def test_outputs_of_every_accepted_schema_validate(model):
    for _, schema in ACCEPTED:
        if _layout_tokens(model, schema) > SMALL:
            _check(model, schema)
