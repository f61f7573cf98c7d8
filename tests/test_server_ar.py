"""`mode: "ar"` on the server (next-token decoding beside the diffusion engine, the playground's
side-by-side comparison) and the per-position marks of streamed drafts."""

from __future__ import annotations

import json
import threading

import pytest
from openai import OpenAI

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.server_helpers import http, post_json, sse_events

CHAT = [{"role": "user", "content": "Why is the sky blue?"}]


def test_ar_mode_answers_as_the_api_does_streamed_or_not(model):
    api = model.generate(CHAT, mode="ar", max_new_tokens=12, seed=5, temperature=0.7)
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        kwargs = dict(model="tiny", messages=CHAT, max_tokens=12, seed=5, temperature=0.7)
        out = client.chat.completions.create(**kwargs, extra_body={"mode": "ar"})
        chunks = client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}, extra_body={"mode": "ar"}
        )
        streamed, usage = "", None
        for chunk in chunks:
            streamed += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
    assert out.choices[0].message.content == api.texts[0] == streamed
    assert out.usage.completion_tokens == len(api.token_ids[0]) == usage.completion_tokens
    extra = out.usage.model_extra
    assert extra["canvases"] == 0 and extra["denoising_steps"] == 0 and extra["tokens_per_forward"] == 1.0


def test_ar_and_diffusion_requests_run_side_by_side(model):
    """An AR request and a diffusion request at once: each gets its own mode's answer."""
    ar = model.generate(["a b c"], mode="ar", max_new_tokens=24, seed=1, raw=True).texts[0]
    dif = model.generate(["a b c"], max_new_tokens=24, seed=1, raw=True, max_denoising_steps=4).texts[0]
    got = {}
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        base = {"model": "tiny", "prompt": "a b c", "max_tokens": 24, "seed": 1}

        def send(name, extra):
            got[name] = post_json(url, "/v1/completions", {**base, **extra})

        threads = [
            threading.Thread(target=send, args=("ar", {"mode": "ar"})),
            threading.Thread(target=send, args=("diffusion", {"max_denoising_steps": 4})),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert http(url, "GET", "/health")[0] == 200
    assert got["ar"][0] == 200 and got["ar"][1]["choices"][0]["text"] == ar
    assert got["diffusion"][0] == 200 and got["diffusion"][1]["choices"][0]["text"] == dif


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"mode": "fast"}, "mode"),
        ({"mode": "ar", "max_denoising_steps": 4}, "max_denoising_steps"),
        ({"mode": "ar", "entropy_bound": 0.5}, "entropy_bound"),
        ({"mode": "ar", "stream": True, "stream_options": {"include_drafts": True}}, "stream_options"),
        (
            {
                "mode": "ar",
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "integer"}}},
            },
            "mode",
        ),
        ({"mode": "ar", "tools": [{"type": "function", "function": {"name": "f"}}]}, "mode"),
    ],
)
def test_what_ar_mode_cannot_do_is_a_400_naming_the_field(model, fields, param):
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        status, body = post_json(url, "/v1/chat/completions", {"model": "tiny", "messages": CHAT, **fields})
        infill = post_json(
            url, "/v1/completions", {"model": "tiny", "prompt": "a", "suffix": "b", "mode": "ar"}
        )
    assert status == 400 and body["error"]["param"] == param, body
    assert infill[0] == 400 and infill[1]["error"]["param"] == "mode"


def test_draft_marks_say_which_positions_were_accepted_renoised_or_clamped(model):
    """Each draft's `marks` has a letter per position; 'a' count equals `accepted`; with a suffix
    clamped after the gap (insert mode's canvas), the engine marks those positions 'c'."""
    from dgemma.engine.events import DraftEvent
    from dgemma.generation.infill import plan_infill
    from dgemma.generation.run import stream

    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        body = {
            "model": "tiny", "prompt": "a b", "max_tokens": 16, "seed": 2, "max_denoising_steps": 4,
            "stream": True, "stream_options": {"include_drafts": True},
        }  # fmt: skip
        status, _, raw = http(url, "POST", "/v1/completions", json.dumps(body))
    drafts = [
        c["choices"][0]["draft"] for c in sse_events(raw) if c.get("choices") and "draft" in c["choices"][0]
    ]
    assert status == 200 and drafts
    for d in drafts:
        assert len(d["marks"]) == len(d["token_ids"]) and set(d["marks"]) <= {"a", "r"}
        assert d["marks"].count("a") == d["accepted"]
    assert any("r" in d["marks"] for d in drafts)
    plan = plan_infill(model.builder, "x = ", " + 1", length=4, seed=0, max_denoising_steps=3)
    events = stream(model.model, plan.requests[:1])
    marks = [e.marks for e in events if isinstance(e, DraftEvent) and e.canvas_index == 0]
    fixed = plan.requests[0].fixed
    assert marks and all(all(m[i] == "c" for i in fixed if i < len(m)) for m in marks)
    assert all(m.count("c") == sum(1 for i in fixed if i < len(m)) for m in marks)
