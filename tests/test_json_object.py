"""response_format json_object's conversion: whatever the model wrote becomes a JSON object."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dgemma.structured.json_object import ObjectMethod, as_json_object

CASES = [
    ('{"a": 1, "b": [true, null]}', ObjectMethod.AS_GENERATED, {"a": 1, "b": [True, None]}),
    (
        'Sure! Here it is:\n```json\n{"name": "Ada"}\n```\nAnything else?',
        ObjectMethod.AS_GENERATED,
        {"name": "Ada"},
    ),
    ('{"a": 1} {"b": 2}', ObjectMethod.AS_GENERATED, {"a": 1}),  # the first object
    ('{"city": "Paris", "rank": 3', ObjectMethod.REPAIRED, {"city": "Paris", "rank": 3}),  # cut off
    ("{name: 'x', tags: ['a' 'b']}", ObjectMethod.REPAIRED, {"name": "x", "tags": ["a", "b"]}),
    ('{"a": [1, 2,, 3]}', ObjectMethod.REPAIRED, None),
    ("I cannot answer that.", ObjectMethod.WRAPPED, {"text": "I cannot answer that."}),
    ("", ObjectMethod.WRAPPED, {"text": ""}),
    ("[1, 2, 3]", ObjectMethod.WRAPPED, {"text": "[1, 2, 3]"}),  # JSON, but not an object
    ("{" * 5000, ObjectMethod.WRAPPED, None),  # past Python's recursion limit
]


@pytest.mark.parametrize(("text", "method", "value"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_answers_become_objects(text, method, value):
    out, got = as_json_object(text)
    assert got is method
    parsed = json.loads(out)
    assert isinstance(parsed, dict)
    if value is not None:
        assert parsed == value


def test_an_object_the_model_wrote_is_kept_byte_for_byte():
    text = 'Answer: {"z":1,   "a" : "\\u00e9"} done'
    assert as_json_object(text) == ('{"z":1,   "a" : "\\u00e9"}', ObjectMethod.AS_GENERATED)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[]":,\\ abc01.-tn\n')) | st.characters(), max_size=300))
def test_any_text_gives_a_json_object(text):
    out, _ = as_json_object(text)
    assert isinstance(json.loads(out), dict)
