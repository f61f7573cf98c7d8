"""/v1/completions with `suffix` (insert mode) through the engine worker: the same fill as
`Model.infill` for the same seed and lengths, through the `openai` client; what does not apply is
a 400 naming the field."""

from __future__ import annotations

import pytest
from openai import OpenAI

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.server_helpers import post_json

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"


def test_insert_mode_fills_the_gap_as_the_api_does(model):
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        out = client.completions.create(
            model="tiny",
            prompt=PREFIX,
            suffix=SUFFIX,
            max_tokens=8,
            seed=3,
            extra_body={"max_denoising_steps": 4},
        )
        status, raw = post_json(
            url, "/v1/completions",
            {"model": "tiny", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 8, "seed": 3, "max_denoising_steps": 4},
        )  # fmt: skip
    api = model.infill(PREFIX, SUFFIX, seed=3, candidates=(2, 4, 8), max_denoising_steps=4)
    assert out.choices[0].text == api.fill and out.choices[0].finish_reason == "stop"
    assert status == 200 and raw["infill"]["length"] == api.length
    assert {int(k) for k in raw["infill"]["candidates"]} == {2, 4, 8}
    assert raw["usage"]["completion_tokens"] > 0 and raw["usage"]["canvases"] >= 3


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"stream": True}, "stream"),
        ({"n": 2}, "n"),
        ({"echo": True}, "echo"),
        ({"logprobs": 1}, "logprobs"),
        ({"stop": ["x"]}, "stop"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"suffix": "x" * 200_000}, "suffix"),
    ],
)
def test_what_does_not_apply_to_insert_mode_is_refused(model, fields, param):
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        status, body = post_json(
            url, "/v1/completions", {"model": "tiny", "prompt": PREFIX, "suffix": SUFFIX, **fields}
        )
    assert status == 400 and body["error"]["param"] == param, body
