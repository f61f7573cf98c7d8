"""Forced tool calls on /v1/chat/completions through the official client: the named function is
called, its arguments always parse and validate against its parameters, stream and not; shapes
match the spec; `tool_choice: auto` where the template has no call markers is a 400 that says what to send."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai import OpenAI

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests import openai_spec as spec
from tests.server_helpers import http, post_json, sse_events

NAME = "tiny"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 20},
                "limit": {"type": "integer", "maximum": 9},
            },
            "required": ["query"],
        },
    },
}
MSG = [{"role": "user", "content": "weather in Paris?"}]
FORCE = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, ServerSettings(port=0, model_name=NAME, max_batch=4)) as (url, _):
        yield url


def test_a_named_tool_is_called_with_valid_arguments(server):
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    params = WEATHER["function"]["parameters"]
    for seed in range(3):
        out = client.chat.completions.create(
            model=NAME, messages=MSG, tools=[WEATHER, TIME], tool_choice=FORCE, seed=seed, n=2,
            extra_body={"max_denoising_steps": 4},
        )  # fmt: skip
        for choice in out.choices:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            assert call.type == "function" and call.function.name == "get_weather" and call.id
            jsonschema.validate(json.loads(call.function.arguments), params)
        jsonschema.validate(out.model_dump(), spec.CHAT_COMPLETION)


def test_required_with_one_tool_and_streaming(server):
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model=NAME, messages=MSG, tools=[WEATHER], tool_choice="required", seed=1, stream=True,
        extra_body={"max_denoising_steps": 4},
    )  # fmt: skip
    name, arguments, finish = None, "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    body = {
        "model": NAME,
        "messages": MSG,
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream": True,
        "seed": 1,
    }
    status, _, raw = http(server, "POST", "/v1/chat/completions", json.dumps(body))
    for chunk in sse_events(raw):  # the raw chunks against the spec's stream shape
        jsonschema.validate(chunk, spec.CHAT_CHUNK)


def test_required_with_several_tools_the_model_picks_one_and_its_arguments_validate(server):
    """Two stages per choice: the name (a choice among the declared ones), then its arguments."""
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    schemas = {t["function"]["name"]: t["function"].get("parameters") for t in (WEATHER, TIME, SEARCH)}
    names = set()
    for seed in range(4):
        out = client.chat.completions.create(
            model=NAME, messages=MSG, tools=[WEATHER, TIME, SEARCH], tool_choice="required", seed=seed, n=3,
            extra_body={"max_denoising_steps": 4},
        )  # fmt: skip
        jsonschema.validate(out.model_dump(), spec.CHAT_COMPLETION)
        for choice in out.choices:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            assert call.function.name in schemas
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
            names.add(call.function.name)
        assert out.usage.json_rounds >= 2 * len(out.choices)  # both stages counted
    assert len(names) >= 2  # the choice is the model's (seeds differ), not always the first tool
    stream = client.chat.completions.create(
        model=NAME, messages=MSG, tools=[WEATHER, TIME, SEARCH], tool_choice="required", seed=0, stream=True,
        extra_body={"max_denoising_steps": 4},
    )  # fmt: skip
    calls = [c for chunk in stream for choice in chunk.choices for c in choice.delta.tool_calls or []]
    (call,) = calls
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"tools": [WEATHER]}, "tool_choice"),  # auto: this template writes calls without markers
        ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER, {"type": "function", "function": {"name": "big", "parameters": {"type": "object", "properties": {"s": {"type": "string", "minLength": 3000}}, "required": ["s"]}}}], "tool_choice": "required", "max_tokens": 64}, "max_tokens"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": FORCE}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}], "tool_choice": "required"}, "tools"),
        ({"tools": [WEATHER, WEATHER], "tool_choice": FORCE}, "tools"),
        ({"tools": [WEATHER], "tool_choice": FORCE, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string", "pattern": "(a)\\1"}}}], "tool_choice": "required"}, "tools"),
        ({"tools": [WEATHER], "tool_choice": FORCE, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)  # fmt: skip
def test_tool_requests_that_cannot_be_served_are_400s_naming_the_field(server, fields, param):
    status, body = post_json(server, "/v1/chat/completions", {"model": NAME, "messages": MSG, **fields})
    assert status == 400, body
    assert body["error"]["param"] == param, body
    jsonschema.validate(body, spec.ERROR)


def test_tool_choice_none_answers_in_text(server):
    status, body = post_json(
        server, "/v1/chat/completions", {"model": NAME, "messages": MSG, "tools": [WEATHER], "tool_choice": "none", "max_tokens": 8}
    )  # fmt: skip
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
    assert "tool_calls" not in body["choices"][0]["message"]


def test_python_api_calls_tools_as_the_server_does(model):
    """`Model.generate(tools=..., tool_choice=...)`: the same calls as the server's for the same seed."""
    params = WEATHER["function"]["parameters"]
    out = model.generate(MSG, tools=[WEATHER, TIME], tool_choice=FORCE, seed=3, max_denoising_steps=4)
    ((call,),) = out.tool_calls
    assert call.name == "get_weather" and out.texts[0] == call.arguments
    jsonschema.validate(json.loads(out.texts[0]), params)
    tools = [WEATHER, TIME, SEARCH]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    out = model.generate([MSG, MSG], tools=tools, tool_choice="required", seed=[0, 1], max_denoising_steps=4)
    for (call,) in out.tool_calls:
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])
    with running_server(model, ServerSettings(port=0, model_name=NAME)) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        served = client.chat.completions.create(
            model=NAME, messages=MSG, tools=tools, tool_choice="required", seed=0,
            extra_body={"max_denoising_steps": 4},
        )  # fmt: skip
    (call,) = served.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == (
        out.tool_calls[0][0].name,
        out.tool_calls[0][0].arguments,
    )
    with pytest.raises(ValueError, match="tool_choice"):
        model.generate(MSG, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})


TOOL_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<start_of_turn>system\n{% for t in tools %}{{ t.function.name }};{% endfor %}"
    "<end_of_turn>\n{% endif %}{% for m in messages %}<start_of_turn>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}call {{ c.function.name }}({{ c.function.arguments }}){% endfor %}"
    "{% elif m.role == 'tool' %}result[{{ m.tool_call_id }}] {{ m.content }}{% else %}{{ m.content }}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_a_multi_turn_tool_exchange_renders_calls_results_and_tools(checkpoint, tmp_path):
    """The SDK's history of a call and its result reaches the chat template whole: the declared
    tools, the assistant's call, the tool's result with its call id."""
    import shutil

    import dgemma

    directory = tmp_path / "tools"
    shutil.copytree(checkpoint[0], directory)
    (directory / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    model = dgemma.load(directory)
    first = [{"role": "user", "content": "weather in Paris?"}]
    with running_server(model, ServerSettings(port=0, model_name=NAME)) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        out = client.chat.completions.create(
            model=NAME, messages=first, tools=[WEATHER, TIME], tool_choice=FORCE, seed=0,
            extra_body={"max_denoising_steps": 4},
        )  # fmt: skip
        message = out.choices[0].message
        (call,) = message.tool_calls
        history = [
            *first,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ]
        again = client.chat.completions.create(
            model=NAME, messages=history, tools=[WEATHER, TIME], tool_choice="none", seed=0, max_tokens=4
        )
        assert again.choices[0].finish_reason in ("stop", "length")
    rendered = model.codec.render_chat(
        [{"role": "user", "content": "weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
         {"role": "tool", "content": '{"temp": 21}', "tool_call_id": call.id}],
        tools=[WEATHER, TIME],
    )  # fmt: skip
    assert "get_weather;get_time;" in rendered and f"call get_weather({call.function.arguments})" in rendered
    assert f"result[{call.id}] " in rendered
    assert again.usage.prompt_tokens == len(
        model.codec.tokenizer.encode(rendered, add_special_tokens=False).ids
    )
