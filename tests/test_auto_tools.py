"""`tool_choice: "auto"` on Gemma 4's chat format: the call syntax read from the real template, calls
parsed from the model's own notation, and, with a random-weight model whose canvas is clamped to
what it "writes", every returned call names a declared function with arguments that validate (a
call written wrong is rewritten under the schema; an undeclared one stays text), through the API
and the `openai` client, streaming and not."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest
from openai import OpenAI

import dgemma
from dgemma.generation.prompts import RequestBuilder
from dgemma.generation.tool_format import ToolCallFormat, parse_call
from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.checkpoint import make_gemma4_checkpoint

NAME = "gemma4-tiny"
PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
}  # fmt: skip
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": PARAMS},
}
CLOCK = {"type": "function", "function": {"name": "now", "description": "Time", "parameters": {"type": "object", "properties": {}}}}  # fmt: skip
CHAT = [{"role": "user", "content": "Weather in Paris?"}]
Q = '<|"|>'
WRITTEN = {
    "a valid call": f"<|tool_call>call:get_weather{{city:{Q}Paris{Q},days:3}}<tool_call|><turn|>",
    "arguments against the schema": "<|tool_call>call:get_weather{city:42}<tool_call|><turn|>",
    "arguments that do not parse": f"<|tool_call>call:get_weather{{city:{Q}Par<tool_call|><turn|>",
    "an undeclared function": "<|tool_call>call:launch{x:1}<tool_call|><turn|>",
    "two calls": f"<|tool_call>call:get_weather{{city:{Q}Oslo{Q},days:1}}<tool_call|><|tool_call>call:now{{}}<tool_call|><turn|>",
    "plain text": "It is sunny.<turn|>",
}  # fmt: skip


@pytest.fixture(scope="module")
def gemma4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma4-tools")
    make_gemma4_checkpoint(directory)
    return dgemma.load(directory)


def clamp(monkeypatch, model, text):
    ids = model.codec.encode_plain(text)
    original = RequestBuilder.requests

    def clamped(self, *args, **kwargs):
        return [
            dataclasses.replace(r, fixed={p: t for p, t in enumerate(ids) if p < r.max_new_tokens})
            for r in original(self, *args, **kwargs)
        ]

    monkeypatch.setattr(RequestBuilder, "requests", clamped)


def test_the_call_syntax_is_read_from_the_template(gemma4, checkpoint):
    fmt = ToolCallFormat.of(gemma4.codec)
    assert (gemma4.codec.token_text(fmt.start), gemma4.codec.token_text(fmt.end)) == (
        "<|tool_call>",
        "<tool_call|>",
    )
    assert (fmt.prefix, fmt.quote) == ("call:", Q)
    assert ToolCallFormat.of(dgemma.load(checkpoint[0]).codec) is None  # a template without calls


@pytest.mark.parametrize(
    "body,expected",
    [
        (f"call:f{{a:{Q}x, y}}{Q},b:[1,2.5,-3],c:{{d:true,e:null}}}}", ("f", {"a": "x, y}", "b": [1, 2.5, -3], "c": {"d": True, "e": None}})),
        ("call:now{}", ("now", {})),
        ('{"name": "f", "arguments": {"a": 1}}', ("f", {"a": 1})),  # a JSON-style body
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', ("f", {"a": 1})),
        (f"call:f{{a:{Q}open", ("f", None)),  # the name reads, the arguments do not
        ("call:f{a:bare}", ("f", None)),
        ("call:f{a:1} trailing", ("f", None)),
        ("no call here", (None, None)),
        ("call:f{a:1e999}", ("f", None)),
        ("call:" + "f{a:" * 50 + "1" + "}" * 50, ("f", None)),  # nested past the limit
    ],
)  # fmt: skip
def test_the_notation_parses_and_bad_calls_are_reported(gemma4, body, expected):
    assert parse_call(body, ToolCallFormat.of(gemma4.codec)) == expected


@pytest.mark.parametrize("case", list(WRITTEN))
def test_the_api_returns_only_calls_that_validate(gemma4, monkeypatch, case):
    clamp(monkeypatch, gemma4, WRITTEN[case])
    out = gemma4.generate(CHAT, tools=[WEATHER, CLOCK], tool_choice="auto", max_new_tokens=48, seed=1)
    calls = out.tool_calls[0]
    for call in calls:
        schema = PARAMS if call.name == "get_weather" else CLOCK["function"]["parameters"]
        jsonschema.validate(json.loads(call.arguments), schema)
    names = [c.name for c in calls]
    if case == "a valid call":
        assert calls[0].arguments == '{"city": "Paris", "days": 3}' and out.texts == [""]
    elif case == "two calls":
        assert names == ["get_weather", "now"]
        one = gemma4.generate(CHAT, tools=[WEATHER, CLOCK], parallel_tool_calls=False, max_new_tokens=48)
        assert [c.name for c in one.tool_calls[0]] == ["get_weather"] and "call:now" in one.texts[0]
    elif case in ("arguments against the schema", "arguments that do not parse"):
        assert names == ["get_weather"] and out.stats[0].rounds >= 1  # rewritten under the schema
    elif case == "an undeclared function":
        assert names == [] and "call:launch" in out.texts[0]
    else:
        assert names == [] and out.texts == ["It is sunny."]


@pytest.mark.parametrize("case", ["a valid call", "arguments against the schema", "plain text"])
def test_the_server_answers_auto_through_the_openai_client(gemma4, monkeypatch, case):
    clamp(monkeypatch, gemma4, WRITTEN[case])
    with running_server(gemma4, ServerSettings(port=0, model_name=NAME)) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        args = dict(model=NAME, messages=CHAT, tools=[WEATHER, CLOCK], max_tokens=48, seed=1)
        whole = client.chat.completions.create(**args)
        stream = list(client.chat.completions.create(**args, stream=True))
        choice = whole.choices[0]
        streamed = [c for chunk in stream for ch in chunk.choices for c in ch.delta.tool_calls or []]
        finish = [ch.finish_reason for chunk in stream for ch in chunk.choices if ch.finish_reason]
        if case == "plain text":
            assert choice.message.tool_calls is None and choice.message.content == "It is sunny."
            assert streamed == [] and finish == ["stop"]
            return
        (call,) = choice.message.tool_calls
        assert choice.finish_reason == "tool_calls" and call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), PARAMS)
        (piece,) = streamed
        assert (piece.function.name, piece.function.arguments) == (
            call.function.name,
            call.function.arguments,
        )
        assert finish == ["tool_calls"]
        history = [
            *CHAT,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ]
        again = client.chat.completions.create(model=NAME, messages=history, tools=[WEATHER], max_tokens=48)
        assert again.choices[0].finish_reason in ("stop", "length", "tool_calls")
    rendered = gemma4.codec.render_chat(history, tools=[WEATHER])
    assert "<|tool_call>call:get_weather{" in rendered and "<|turn>tool\n" in rendered
