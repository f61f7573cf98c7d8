"""Thinking mode end to end on a random-weight model with Gemma 4's template: the generated tokens
are clamped to a reasoning block then an answer (the block runs across a canvas boundary), and the
API, the CLI and the server through the `openai` client return the reasoning apart from a clean
answer, streaming and not; an earlier turn's reasoning is not rendered again."""

from __future__ import annotations

import dataclasses
import json

import pytest
from openai import OpenAI

import dgemma
from dgemma.generation.prompts import RequestBuilder
from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests import cli
from tests.checkpoint import make_gemma4_checkpoint

GENERATED = "<|channel>thought\nTwo plus two makes four.<channel|>It is 4.<turn|>"
REASONING, ANSWER = "Two plus two makes four.", "It is 4."
CHAT = [{"role": "user", "content": "What is 2+2?"}]
THINK = {"chat_template_kwargs": {"enable_thinking": True}}
NAME = "gemma4-tiny"


@pytest.fixture(scope="module")
def gemma4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma4-model")
    make_gemma4_checkpoint(directory)
    return directory, dgemma.load(directory)


@pytest.fixture
def forced(gemma4, monkeypatch):
    """Every request's generated positions clamped to GENERATED's tokens; returns the token ids."""
    _, model = gemma4
    ids = model.codec.encode_plain(GENERATED)
    canvas = model.config.canvas_length
    closer = ids.index(model.reasoning.end)
    assert closer > canvas, "the reasoning block must cross a canvas boundary"
    original = RequestBuilder.requests

    def clamped(self, *args, **kwargs):
        requests = original(self, *args, **kwargs)
        return [
            dataclasses.replace(r, fixed={p: t for p, t in enumerate(ids) if p < r.max_new_tokens})
            for r in requests
        ]

    monkeypatch.setattr(RequestBuilder, "requests", clamped)
    return ids


def test_the_api_returns_reasoning_apart_from_the_answer(gemma4, forced):
    _, model = gemma4
    out = model.generate(CHAT, enable_thinking=True, max_new_tokens=40)
    assert out.reasoning == [REASONING] and out.texts == [ANSWER]
    assert out.token_ids[0][: len(forced) - 1] == forced[:-1]  # the markers stay in the token ids
    string = model.generate("What is 2+2?", enable_thinking=True, max_new_tokens=40)
    assert (string.reasoning, string.texts) == ([REASONING], [ANSWER])
    raw = model.generate("What is 2+2?", raw=True, max_new_tokens=40)  # no template: no split
    assert raw.reasoning is None


def test_enable_thinking_is_refused_where_the_template_has_no_switch(model):
    with pytest.raises(ValueError, match="no thinking switch"):
        model.generate("hi", enable_thinking=True, max_new_tokens=8)
    with pytest.raises(ValueError, match="`enable_thinking` must be true or false"):
        model.generate("hi", enable_thinking="yes", max_new_tokens=8)


def test_the_cli_prints_reasoning_dimmed_on_stderr_and_the_answer_on_stdout(gemma4, forced):
    directory, _ = gemma4
    base = ("generate", "What is 2+2?", "--model", str(directory), "--think", "--max-new-tokens", "40")
    shown = cli.run(*base)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ANSWER + "\n" and REASONING in shown.stderr
    hidden = cli.run(*base, "--hide-reasoning")
    assert hidden.stdout == ANSWER + "\n" and REASONING not in hidden.stderr
    as_json = json.loads(cli.run(*base, "--json").stdout)
    assert (as_json["reasoning"], as_json["text"]) == (REASONING, ANSWER)


def test_the_cli_refuses_think_without_a_switch(checkpoint):
    out = cli.run("generate", "hi", "--model", str(checkpoint[0]), "--think")
    assert out.returncode != 0 and "no thinking switch" in out.stderr


def test_the_server_returns_reasoning_content_streaming_and_not(gemma4, forced):
    _, model = gemma4
    with running_server(model, ServerSettings(port=0, model_name=NAME)) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        whole = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=40, extra_body=THINK)
        message = whole.choices[0].message
        assert (message.reasoning_content, message.content) == (REASONING, ANSWER)
        assert whole.choices[0].finish_reason == "stop"
        chunks = list(
            client.chat.completions.create(
                model=NAME, messages=CHAT, max_tokens=40, stream=True, extra_body=THINK
            )
        )
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        content = "".join(d.content or "" for d in deltas)
        assert (reasoning, content) == (REASONING, ANSWER)
        assert sum(bool(getattr(d, "reasoning_content", None)) for d in deltas) >= 2  # one per canvas
        # the reply goes back into the history as the SDK gives it: its reasoning is not rendered
        history = [*CHAT, message.model_dump(exclude_none=True), {"role": "user", "content": "And 3+3?"}]
        again = client.chat.completions.create(model=NAME, messages=history, max_tokens=40, extra_body=THINK)
    rendered = model.codec.render_chat(history, template_kwargs={"enable_thinking": True})
    assert REASONING not in rendered and f"<|turn>model\n{ANSWER}<turn|>" in rendered
    assert again.usage.prompt_tokens == len(
        model.codec.encode_chat(history, template_kwargs={"enable_thinking": True})
    )


def test_bad_template_variables_are_a_400_naming_the_field(gemma4):
    _, model = gemma4
    with running_server(model, ServerSettings(port=0, model_name=NAME)) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for bad in ({"messages": []}, ["enable_thinking"]):
            with pytest.raises(Exception) as caught:
                client.chat.completions.create(
                    model=NAME, messages=CHAT, max_tokens=8, extra_body={"chat_template_kwargs": bad}
                )
            assert caught.value.status_code == 400
            assert caught.value.body["param"] == "chat_template_kwargs"
