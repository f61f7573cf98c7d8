"""Every response body and stream chunk of `dgemma serve` against the shapes of OpenAI's published
spec (tests/openai_spec.py), and through the official SDK's response types; chat on the bundled
Sudoku model."""

from __future__ import annotations

import json
import warnings

import jsonschema
import pytest
from openai import OpenAI
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests import openai_spec as spec
from tests.server_helpers import http, sse_events

NAME = "tiny"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, ServerSettings(port=0, model_name=NAME, max_batch=4)) as (url, _):
        yield url


def _post(url, path, payload):
    status, _, raw = http(url, "POST", path, json.dumps(payload))
    return status, raw


def _check(body, schema, sdk_type=None):
    jsonschema.validate(body, schema)
    if sdk_type is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return sdk_type.model_validate(body)
    return None


def test_chat_completion_matches_the_spec(server):
    status, raw = _post(
        server, "/v1/chat/completions", {"model": NAME, "messages": MSG, "max_tokens": 8, "n": 2}
    )
    assert status == 200
    parsed = _check(json.loads(raw), spec.CHAT_COMPLETION, ChatCompletion)
    assert parsed.choices[0].message.refusal is None and parsed.choices[1].index == 1


def test_chat_stream_chunks_match_the_spec(server):
    payload = {"model": NAME, "messages": MSG, "max_tokens": 16, "stream": True}
    for options in (None, {"include_usage": True}, {"include_usage": True, "include_drafts": True}):
        body = {**payload, **({"stream_options": options} if options else {})}
        status, raw = _post(server, "/v1/chat/completions", body)
        assert status == 200
        chunks = sse_events(raw)
        for chunk in chunks:
            _check(chunk, spec.CHAT_CHUNK, ChatCompletionChunk)
        if options:
            assert all(c["usage"] is None for c in chunks[:-1])
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        else:
            assert all("usage" not in c for c in chunks)


def test_completion_and_its_stream_match_the_spec(server):
    status, raw = _post(server, "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 8})
    assert status == 200
    _check(json.loads(raw), spec.COMPLETION, Completion)
    body = {
        "model": NAME,
        "prompt": ["a", "b"],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, raw = _post(server, "/v1/completions", body)
    for chunk in sse_events(raw):
        _check(chunk, spec.COMPLETION_CHUNK)


def test_models_and_errors_match_the_spec(server):
    _, _, raw = http(server, "GET", "/v1/models")
    _check(json.loads(raw), spec.MODELS)
    _, _, raw = http(server, "GET", f"/v1/models/{NAME}")
    _check(json.loads(raw), spec.MODEL, Model)
    for path, body in (
        ("/v1/chat/completions", "{"),
        ("/v1/completions", json.dumps({"model": "x", "prompt": "y"})),
        ("/v1/nothing", "{}"),
    ):
        status, _, raw = http(server, "POST", path, body)
        assert status >= 400
        _check(json.loads(raw), spec.ERROR)


def test_missing_refusal_would_fail_the_contract():
    """The contract test can fail: the old chat body, without `message.refusal`, is rejected."""
    old = {
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop", "logprobs": None}],
    }  # fmt: skip
    with pytest.raises(jsonschema.ValidationError, match="refusal"):
        jsonschema.validate(old, spec.CHAT_COMPLETION)


def test_chat_on_the_bundled_sudoku_model():
    """The most common OpenAI call works on the model that runs out of the box."""
    import dgemma
    from dgemma.apps.sudoku import bundled_model
    from dgemma.tasks import sudoku

    model = dgemma.load(bundled_model())
    puzzle = sudoku.heldout_puzzles(1, givens=(45, 50))[0]
    with running_server(model, ServerSettings(port=0, model_name="dgemma-sudoku")) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        out = client.chat.completions.create(
            model="dgemma-sudoku",
            messages=[{"role": "user", "content": puzzle.puzzle.replace("0", ".")}],
            seed=0,
        )
        grid = out.choices[0].message.content
        assert sudoku.is_valid_solution(puzzle.puzzle, grid), grid
        status, raw = _post(
            url,
            "/v1/chat/completions",
            {"model": "dgemma-sudoku", "messages": [{"role": "user", "content": "not a puzzle"}]},
        )
        assert status == 400 and "81 characters" in json.loads(raw)["error"]["message"]


def test_the_server_and_the_api_build_the_same_requests(model):
    """One front door: the same prompt, seed and settings give identical engine requests."""
    from dgemma.server.protocol import parse_chat, parse_completion

    settings = {"t_max": 0.6, "t_min": 0.2, "max_denoising_steps": 7}
    for prompt in ([5, 6, 7], "some text"):
        body = {"model": NAME, "prompt": prompt, "max_tokens": 8, "seed": 11, "n": 3, **settings}
        job = parse_completion(body, model, NAME, 4096)
        api = model.requests([prompt] * 3, max_new_tokens=8, seed=11, raw=True, **settings)
        assert job.requests == api
    body = {"model": NAME, "messages": MSG, "max_tokens": 8, "seed": 2**63 - 1, "n": 2}
    job = parse_chat(body, model, NAME, 4096)
    assert job.requests == model.requests([MSG, MSG], max_new_tokens=8, seed=2**63 - 1)
    assert [r.seed for r in job.requests] == [2**63 - 1, 0]  # one seed rule: modulo 2**63


def test_temperature_means_one_thing_in_the_server_and_the_api(model):
    """temperature T: the diffusion schedule from T to T / 2 and AR sampling at T, in both doors;
    0 is the schedule's floor (and greedy AR); explicit t_max / t_min win; none keeps the defaults."""
    from dgemma.generation.prompts import GREEDY_TEMPERATURE
    from dgemma.server.protocol import parse_completion

    for temperature, t_max, t_min in ((0.6, 0.6, 0.3), (0, GREEDY_TEMPERATURE, GREEDY_TEMPERATURE / 2)):
        body = {"model": NAME, "prompt": [5, 6], "seed": 1, "temperature": temperature}
        server = parse_completion(body, model, NAME, 4096).requests
        api = model.requests([[5, 6]], seed=1, temperature=temperature)
        assert server == api
        assert (api[0].sampler.t_max, api[0].sampler.t_min, api[0].temperature) == (t_max, t_min, temperature)
    body = {"model": NAME, "prompt": [5, 6], "seed": 1, "temperature": 1.0, "t_min": 0.1}
    (req,) = parse_completion(body, model, NAME, 4096).requests
    assert (req.sampler.t_max, req.sampler.t_min) == (1.0, 0.1)
    assert req == model.requests([[5, 6]], seed=1, temperature=1.0, t_min=0.1)[0]
    (req,) = model.requests([[5, 6]], seed=1)
    assert req.sampler == model.sampler_defaults and req.temperature == 0.0


def test_default_length_is_cut_to_the_context_the_same_way_in_both_doors(model):
    from dgemma.server.protocol import parse_completion

    C = model.config.canvas_length
    prompt = list(range(1, 10))
    capacity = len(prompt) + C  # one canvas of room
    (server,) = parse_completion({"model": NAME, "prompt": prompt, "seed": 0}, model, NAME, capacity).requests
    (api,) = model.builder.with_capacity(capacity).requests([prompt], seed=0)
    assert server == api and api.max_new_tokens == min(C, model.defaults.max_new_tokens)
