"""Malformed and out-of-range requests over raw HTTP: each a 4xx with an OpenAI-style error body, never a 500."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.server_helpers import http, post_json

NAME = "tiny"
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


def SCHEMA_FMT(schema):  # noqa: N802
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def chat(**fields):
    return json.dumps({"model": NAME, "messages": MSG, **fields})


def comp(**fields):
    return json.dumps({"model": NAME, "prompt": "hi", **fields})


# (method, path, body, expected status, expected `param` or None)
BAD = [
    ("POST", CHAT, "not json", 400, None),
    ("POST", CHAT, "", 400, None),
    ("POST", CHAT, "[1, 2]", 400, None),
    ("POST", CHAT, '{"model": "tiny", "messages": [', 400, None),
    ("POST", CHAT, b"\xff\xfe{}", 400, None),
    ("POST", CHAT, "[" * 100_000 + "]" * 100_000, 400, None),
    ("POST", CHAT, json.dumps({"messages": MSG}), 400, "model"),
    ("POST", CHAT, json.dumps({"model": "gpt-4o", "messages": MSG}), 404, "model"),
    ("POST", CHAT, json.dumps({"model": 7, "messages": MSG}), 400, "model"),
    ("POST", CHAT, json.dumps({"model": NAME}), 400, "messages"),
    ("POST", CHAT, json.dumps({"model": NAME, "messages": []}), 400, "messages"),
    ("POST", CHAT, json.dumps({"model": NAME, "messages": "hi"}), 400, "messages"),
    (
        "POST",
        CHAT,
        json.dumps({"model": NAME, "messages": [{"role": "wizard", "content": "hi"}]}),
        400,
        "messages",
    ),
    ("POST", CHAT, json.dumps({"model": NAME, "messages": [{"content": "hi"}]}), 400, "messages"),
    (
        "POST",
        CHAT,
        json.dumps({"model": NAME, "messages": [{"role": "user", "content": ""}]}),
        400,
        "messages",
    ),
    (
        "POST",
        CHAT,
        json.dumps({"model": NAME, "messages": [{"role": "user", "content": 5}]}),
        400,
        "messages",
    ),
    (
        "POST",
        CHAT,
        json.dumps({"model": NAME, "messages": [{"role": "user", "content": None}]}),
        400,
        "messages",
    ),
    (
        "POST",
        CHAT,
        json.dumps(
            {
                "model": NAME,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            }
        ),
        400,
        "messages",
    ),
    ("POST", CHAT, chat(max_tokens=-1), 400, "max_tokens"),
    ("POST", CHAT, chat(max_tokens="10"), 400, "max_tokens"),
    ("POST", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("POST", CHAT, chat(max_tokens=10**9), 400, "max_tokens"),
    ("POST", CHAT, chat(max_completion_tokens=0), 400, "max_completion_tokens"),
    ("POST", CHAT, chat(n=0), 400, "n"),
    ("POST", CHAT, chat(n=1000), 400, "n"),
    ("POST", CHAT, chat(seed="abc"), 400, "seed"),
    ("POST", CHAT, chat(seed=2**70), 400, "seed"),
    ("POST", CHAT, chat(stream="yes"), 400, "stream"),
    ("POST", CHAT, chat(stream_options={"include_usage": True}), 400, "stream_options"),
    ("POST", CHAT, chat(stream=True, stream_options={"colour": 1}), 400, "stream_options"),
    ("POST", CHAT, chat(stop=123), 400, "stop"),
    ("POST", CHAT, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("POST", CHAT, chat(stop=[""]), 400, "stop"),
    ("POST", CHAT, chat(temperature=-1), 400, "temperature"),
    ("POST", CHAT, chat(temperature="hot"), 400, "temperature"),
    (
        "POST",
        CHAT,
        '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        400,
        "temperature",
    ),
    ("POST", CHAT, chat(top_p=0.5), 400, "top_p"),
    ("POST", CHAT, chat(presence_penalty=1.0), 400, "presence_penalty"),
    ("POST", CHAT, chat(entropy_bound=-1), 400, "entropy_bound"),
    ("POST", CHAT, chat(max_denoising_steps=0), 400, "max_denoising_steps"),
    ("POST", CHAT, chat(max_denoising_steps=10**6), 400, "max_denoising_steps"),
    ("POST", CHAT, chat(t_min=2.0, t_max=1.0), 400, "t_max"),
    ("POST", CHAT, chat(stability_threshold=-3), 400, "stability_threshold"),
    ("POST", CHAT, chat(confidence_threshold="x"), 400, "confidence_threshold"),
    ("POST", CHAT, chat(foo=1), 400, "foo"),
    ("POST", CHAT, chat(logprobs=True, stream=True), 400, "logprobs"),
    ("POST", CHAT, chat(logprobs="yes"), 400, "logprobs"),
    ("POST", CHAT, chat(top_logprobs=3), 400, "top_logprobs"),
    ("POST", CHAT, chat(logprobs=True, top_logprobs=99), 400, "top_logprobs"),
    ("POST", CHAT, chat(logit_bias={"5": 10}), 400, "logit_bias"),
    (
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tool_choice",
    ),  # auto, and this template writes no call markers
    ("POST", CHAT, chat(response_format={"type": "xml"}), 400, "response_format"),
    ("POST", CHAT, chat(response_format={"type": "json_schema"}), 400, "response_format"),
    (
        "POST",
        CHAT,
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        400,
        "response_format",
    ),
    (
        "POST",
        CHAT,
        chat(response_format=SCHEMA_FMT({"type": "string", "pattern": "(a)\\1"})),
        400,
        "response_format",
    ),
    ("POST", CHAT, chat(response_format=SCHEMA_FMT({"type": "integer"}), stop="}"), 400, "stop"),
    ("POST", CHAT, chat(response_format=SCHEMA_FMT({"type": "integer"}), max_tokens=1), 400, "max_tokens"),
    ("POST", CHAT, chat(json_rounds=2), 400, "json_rounds"),
    ("POST", CHAT, chat(json_candidates=2), 400, "json_candidates"),
    (
        "POST",
        CHAT,
        chat(response_format=SCHEMA_FMT({"type": "integer"}), json_candidates=0),
        400,
        "json_candidates",
    ),
    (
        "POST",
        CHAT,
        chat(response_format=SCHEMA_FMT({"type": "integer"}), json_candidates="4"),
        400,
        "json_candidates",
    ),
    ("POST", COMP, json.dumps({"model": NAME}), 400, "prompt"),
    ("POST", COMP, comp(prompt=""), 400, "prompt"),
    ("POST", COMP, comp(prompt=[]), 400, "prompt"),
    ("POST", COMP, comp(prompt={"text": "hi"}), 400, "prompt"),
    ("POST", COMP, comp(prompt=[10**9]), 400, "prompt"),
    ("POST", COMP, comp(prompt=[[-1, 5]]), 400, "prompt"),
    ("POST", COMP, comp(prompt=[5] * 9000), 400, "prompt"),
    ("POST", COMP, comp(echo="yes"), 400, "echo"),
    ("POST", COMP, comp(logprobs=-1), 400, "logprobs"),
    ("POST", COMP, comp(logprobs=21), 400, "logprobs"),
    ("POST", COMP, comp(max_tokens=0), 400, "max_tokens"),
    ("POST", COMP, comp(echo=True, max_tokens=0, stream=True), 400, "max_tokens"),
    ("POST", COMP, comp(echo=True, max_tokens=0, n=2), 400, "max_tokens"),
    ("POST", COMP, comp(suffix=5), 400, "suffix"),
    ("POST", COMP, comp(best_of=3), 400, "best_of"),
    ("POST", "/tokenize", json.dumps({"prompt": 5}), 400, "prompt"),
    ("POST", "/tokenize", json.dumps({"prompt": "a", "messages": []}), 400, "prompt"),
    ("POST", "/tokenize", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), 400, "messages"),
    ("POST", "/tokenize", json.dumps({"prompt": "a", "extra": 1}), 400, "prompt"),
    ("POST", "/detokenize", json.dumps({"tokens": [-1]}), 400, "tokens"),
    ("POST", "/detokenize", json.dumps({"tokens": [10**9]}), 400, "tokens"),
    ("POST", "/detokenize", json.dumps({"tokens": "12"}), 400, "tokens"),
    ("POST", COMP, comp(messages=MSG), 400, "messages"),
    ("POST", COMP, json.dumps({"model": NAME, "prompt": "x" * 2_000_000}), 413, None),
    ("GET", CHAT, None, 405, None),
    ("POST", "/v1/embeddings", comp(), 404, None),
    ("GET", "/v1/models/gpt-4o", None, 404, "model"),
]


@pytest.fixture(scope="module")
def server(model):
    with running_server(model, ServerSettings(port=0, model_name=NAME, max_batch=4)) as (url, srv):
        yield url, srv


@pytest.mark.parametrize(
    "method,path,body,status,param", BAD, ids=[f"{i}-{case[3]}-{case[4]}" for i, case in enumerate(BAD)]
)
def test_bad_request_gets_a_4xx_with_an_openai_error_body(server, method, path, body, status, param):
    got, headers, raw = http(server[0], method, path, body)
    assert got == status, raw[:300]
    error = json.loads(raw)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    if param is not None:
        assert error["param"] == param, error


def test_server_is_healthy_after_the_bad_requests(server):
    url, srv = server
    for method, path, body, *_ in BAD:
        http(url, method, path, body)
    assert http(url, "GET", "/health")[0] == 200
    status, body = post_json(url, COMP, {"model": NAME, "prompt": "hi", "max_tokens": 8, "seed": 0})
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
    metrics = http(url, "GET", "/metrics")[2].decode()
    assert 'status="5' not in metrics
    assert len(BAD) >= 30


def test_dgemma_serve_command_runs_the_bundled_model():
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgemma.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving 'dgemma-sudoku' at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.strip().rsplit(" ", 1)[1]
        puzzle = "000300010039850006001020400000902300014705000690000000000500780050278060000490105"
        status, body = post_json(
            url,
            COMP,
            {"model": "dgemma-sudoku", "prompt": f"<bos>{puzzle}<sep>", "max_tokens": 82, "seed": 0},
        )
        assert status == 200
        solution = body["choices"][0]["text"]
        assert len(solution) == 81 and all(s == p for s, p in zip(solution, puzzle, strict=True) if p != "0")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_dgemma_serve_bad_flags_fail_in_one_line():
    env = {**os.environ}
    procs = [  # started together: three interpreter start-ups in parallel
        subprocess.Popen(
            [sys.executable, "-m", "dgemma.cli", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in (["--max-batch", "0"], ["--port", "70000"], ["--model", "/nonexistent/dir"])
    ]
    for popen in procs:
        stdout, stderr = popen.communicate(timeout=60)
        proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
        assert proc.returncode != 0
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("dgemma: error:"), proc.stderr
