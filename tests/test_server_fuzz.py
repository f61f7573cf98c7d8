"""Property-based fuzzing of the HTTP API (hypothesis, bounded): whatever body a client sends to the
generation routes, the answer is never a 5xx, and the server is healthy and correct afterwards."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.server_helpers import http, post_json

NAME = "tiny"
FIELDS = [
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
    "stream", "stream_options", "temperature", "top_p", "response_format", "max_denoising_steps",
    "entropy_bound", "t_min", "t_max", "stability_threshold", "confidence_threshold", "logprobs",
    "tools", "tool_choice", "json_rounds", "max_string_tokens", "echo", "suffix", "best_of", "user",
]  # fmt: skip

numbers = st.one_of(
    st.integers(-3, 40),
    st.integers(),
    st.integers(10**18, 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 0.5, 1e-300, 1e308, -1, 2**63, 10**6]),
)
text = st.one_of(st.text(max_size=40), st.sampled_from(["\ud800", "hi", "", "tiny", "<bos>", "a\udfffb"]))
leaves = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), inner, max_size=4),
    ),
    max_leaves=12,
)
schemas = st.recursive(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["string", "integer", "number", "boolean", "null", "object", "array", "date"]
            )
        },
        optional={
            "minimum": numbers,
            "maximum": numbers,
            "minLength": numbers,
            "maxLength": numbers,
            "enum": st.lists(leaves, max_size=5),
            "const": leaves,
            "format": text,
            "$ref": text,
        },
    ),  # fmt: skip
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(text, inner, max_size=3)},
            optional={"required": st.lists(text, max_size=3), "additionalProperties": leaves},
        ),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner}, optional={"minItems": numbers, "maxItems": numbers}
        ),
        st.fixed_dictionaries({"anyOf": st.lists(inner, max_size=3)}),
    ),
    max_leaves=6,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "wizard"]), "content": json_values}
    ),
    max_size=3,
)
bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just(NAME), json_values)},
    optional={
        "messages": st.one_of(messages, json_values),
        "prompt": st.one_of(text, st.lists(st.integers(-5, 400), max_size=20), json_values),
        "max_tokens": numbers,
        "n": numbers,
        "seed": numbers,
        "stop": st.one_of(text, st.lists(text, max_size=6), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": json_values,
        "temperature": numbers,
        "response_format": st.one_of(
            st.builds(lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}, schemas),
            json_values,
        ),
        "max_denoising_steps": st.one_of(st.integers(1, 6), numbers),
        "entropy_bound": numbers,
        "t_min": numbers,
        "t_max": numbers,
        "stability_threshold": st.one_of(st.integers(0, 4), numbers),
        "confidence_threshold": numbers,
        "logprobs": json_values,
        "tools": json_values,
        "junk": json_values,
    },
)


@pytest.fixture(scope="module")
def server(model):
    settings_ = ServerSettings(port=0, model_name=NAME, max_batch=4, request_timeout=20)
    with running_server(model, settings_) as (url, srv):
        yield url, srv


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_no_body_gets_a_5xx(server, body, path):
    url, _ = server
    raw = json.dumps(body)  # NaN / Infinity become JSON's non-standard literals, which clients do send
    status, _, reply = http(url, "POST", path, raw)
    assert status < 500, (status, reply[:300], raw[:300])
    if status >= 400:
        assert json.loads(reply)["error"]["message"]


def test_healthy_and_correct_after_fuzzing(server, model):
    url, _ = server
    assert http(url, "GET", "/health")[0] == 200
    status, body = post_json(
        url, "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 8, "seed": 1}
    )
    assert status == 200
    assert body["choices"][0]["text"] == model.generate("hi", raw=True, max_new_tokens=8, seed=1).texts[0]
    assert 'status="5' not in http(url, "GET", "/metrics")[2].decode()
