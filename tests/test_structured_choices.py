"""Candidate layouts: where a schema leaves a choice, the model's scores decide it.

The choice is checked by steering the model: a bias added to its logits for one token makes a
layout that writes that token more likely, and the candidate holding it must win; the opposite
bias must make it lose. Every output still validates with the `jsonschema` package.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from dgemma.structured.choices import alternatives, best
from dgemma.structured.schema import compile_schema

I = {"type": "integer"}  # noqa: E741
OPTIONAL = {"type": "object", "properties": {"a": I, "zebra": I}, "required": ["a"]}
BRANCHES = {"type": "object", "properties": {"v": {"anyOf": [I, {"type": "null"}]}}, "required": ["v"]}
LENGTHS = {"type": "array", "items": {"const": "zebra"}, "minItems": 1, "maxItems": 4}


def _texts(schema, limit=8):
    base = compile_schema(schema)
    return [base] + [layout for _, layout in alternatives(schema, base, limit)]


def test_choice_points_and_their_layouts():
    schema = {
        "type": "object",
        "properties": {
            "a": I,
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "c": {"type": "array", "items": I},
        },
        "required": ["a"],
    }
    base = compile_schema(schema)
    assert base.points == {"$.b.anyOf": 2, "$.b?": 2, "$.c?": 2, "$.c[]": 6}
    literal = lambda layout: "".join(p if isinstance(p, str) else "#" for p in layout.parts)  # noqa: E731
    assert literal(base) == '{"a": #, "b": "#", "c": [#, #, #]}'  # the rules' layout
    assert literal(compile_schema(schema, {"$.b?": 1})) == '{"a": #, "c": [#, #, #]}'
    assert literal(compile_schema(schema, {"$.b.anyOf": 1})) == '{"a": #, "b": null, "c": [#, #, #]}'
    assert literal(compile_schema(schema, {"$.c[]": 1})) == '{"a": #, "b": "#", "c": []}'
    found = [literal(layout) for _, layout in alternatives(schema, base, 16)]
    assert len(found) == len(set(found)) and literal(base) not in found
    assert '{"a": #, "b": null, "c": [#, #, #]}' in found and '{"a": #, "b": "#", "c": [#, #, #, #]}' in found


def test_candidates_stay_within_the_schema():
    """Every candidate of schemas with bounds, a tuple, uniqueItems and minProperties validates once
    filled, so no choice can leave the schema: checked on each layout's own normalized schema and by
    generating below."""
    schema = {
        "type": "object",
        "properties": {
            "t": {"type": "array", "prefixItems": [I, {"type": "string"}], "items": False},
            "u": {"type": "array", "items": I, "uniqueItems": True},
            "w": {"type": "array", "items": I, "minItems": 2, "maxItems": 3},
            "o": {"type": "string"},
        },
        "minProperties": 3,
    }
    for layout in _texts(schema, 16):
        keys = [p for p in layout.parts if isinstance(p, str)]
        assert sum(k.count('": ') for k in keys) >= 3  # minProperties holds in every candidate


def test_best_prefers_the_highest_mean_and_the_rules_on_ties():
    assert best([(-4.0, 2), (-3.0, 2), (-9.0, 3)]) == 1
    assert best([(-2.0, 1), (-2.0, 1)]) == 0
    assert best([(0.0, 0), (-5.0, 1)]) == 1  # an unscored candidate never wins over a scored one


def _steer(model, monkeypatch, token: int, bias: float):
    """Add `bias` to token `token`'s logit everywhere (the model likes or dislikes that token)."""
    real = model.model.logits

    def logits(hidden, **options):
        out = real(hidden, **options)
        out[..., token] += bias
        return out

    monkeypatch.setattr(model.model, "logits", logits)


def _only_in(model, schema, choice: dict) -> tuple[int, list]:
    """A token the layout of `choice` writes and the rules' layout does not (or, for `{}`, the
    reverse of the first candidate), and the candidates' token lists (the rules' first)."""
    plan = model.builder.json_plan(schema, candidates=8)
    plans = [plan, *plan.alternatives]
    chosen = next(p for p in plans if p.choice == choice)
    other = plan if chosen is not plan else plans[1]
    return sorted(set(chosen.tokens) - set(other.tokens))[0], [p.tokens for p in plans]


@pytest.mark.parametrize("bias, present", [(30.0, True), (-30.0, False)])
def test_optional_key_follows_the_model(model, monkeypatch, bias, present):
    token, _ = _only_in(model, OPTIONAL, {})  # a token of the key "zebra"
    _steer(model, monkeypatch, token, bias)
    out = model.generate(["hi", "x"], json_schema=OPTIONAL, seed=1, max_denoising_steps=3)
    for text, stats in zip(out.texts, out.stats, strict=True):
        value = json.loads(text)
        jsonschema.validate(value, OPTIONAL)
        assert ("zebra" in value) is present and stats.candidates == 2


@pytest.mark.parametrize("bias, pick", [(1000.0, max), (-1000.0, min)])
def test_array_length_follows_the_model(model, monkeypatch, bias, pick):
    """Items of one literal: a layout with more of them holds a larger share of the steered token,
    so liking it makes the longest list win and disliking it the shortest."""
    # the candidates that fit the rules' layout's canvases (4 items need one more on this model)
    layouts = [p.tokens for p in model.json_jobs("hi", LENGTHS)[0].candidates]
    token = max(set(layouts[0]), key=layouts[0].count)  # the token the items repeat
    share = {len(json.loads(model.codec.decode(t))): t.count(token) / len(t) for t in layouts}
    assert sorted(share) == [1, 2, 3] and sorted(share, key=share.get) == [1, 2, 3]
    _steer(model, monkeypatch, token, bias)
    out = model.generate("hi", json_schema=LENGTHS, seed=2, max_denoising_steps=3)
    value = json.loads(out.texts[0])
    jsonschema.validate(value, LENGTHS)
    assert len(value) == pick(share) and out.stats[0].candidates == 3


@pytest.mark.parametrize("bias, null", [(30.0, True), (-30.0, False)])
def test_branch_follows_the_model(model, monkeypatch, bias, null):
    token, _ = _only_in(model, BRANCHES, {"$.v.anyOf": 1})  # a token of `null`
    _steer(model, monkeypatch, token, bias)
    out = model.generate("hi", json_schema=BRANCHES, seed=3, max_denoising_steps=3)
    value = json.loads(out.texts[0])
    jsonschema.validate(value, BRANCHES)
    assert (value["v"] is None) is null


def test_one_candidate_is_the_rules_layout(model):
    out = model.generate("hi", json_schema=OPTIONAL, seed=1, max_denoising_steps=3, json_candidates=1)
    assert "zebra" in json.loads(out.texts[0]) and out.stats[0].candidates == 0
    with pytest.raises(ValueError, match="json_candidates"):
        model.generate("hi", json_schema=OPTIONAL, json_candidates=0)


def test_candidates_never_pass_the_cap(model):
    """A cap between the shortest and the longest candidate keeps only those under it."""
    schema = {"type": "array", "items": I, "minItems": 1, "maxItems": 5}
    rules = len(model.builder.json_plan(schema).tokens)
    out = model.generate("hi", json_schema=schema, seed=0, max_denoising_steps=3, max_new_tokens=rules)
    assert len(out.token_ids[0]) <= rules
    jsonschema.validate(json.loads(out.texts[0]), schema)
