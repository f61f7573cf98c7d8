"""The OpenAI-compatible server, started on a loopback port and driven by the official `openai` client."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest

from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from tests.server_helpers import http, post_json, sse_events

NAME = "tiny"
CHAT = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def server(conditioned):
    with running_server(conditioned[2], ServerSettings(port=0, model_name=NAME, max_batch=32)) as (url, srv):
        yield url, srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def _stream_text(stream) -> tuple[str, str | None, object]:
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = getattr(choice, "delta", None)
            text += (delta.content if delta is not None else choice.text) or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


def test_models_health_and_metrics(server, client):
    url, _ = server
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    status, _, body = http(url, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    client.completions.create(model=NAME, prompt="hello", max_tokens=8, seed=0)
    status, headers, body = http(url, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        "dgemma_requests_total",
        "dgemma_queue_depth",
        "dgemma_active_rows",
        "dgemma_generated_tokens_total",
        "dgemma_denoising_steps_total",
        "dgemma_tokens_per_forward",
        "dgemma_request_latency_seconds_bucket",
    ):
        assert name in text
    assert 'dgemma_requests_total{endpoint="/v1/completions",status="200"}' in text


def test_chat_stream_equals_non_stream_and_reports_usage(client, conditioned):
    model = conditioned[2]
    full = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=20, seed=7)
    assert full.object == "chat.completion" and full.choices[0].message.role == "assistant"
    expected = model.generate(CHAT, max_new_tokens=20, seed=7)
    assert full.choices[0].message.content == expected.texts[0]
    assert full.choices[0].finish_reason == expected.finish_reasons[0].value
    usage = full.usage
    assert usage.prompt_tokens == len(model.tokenize(CHAT)[0])
    assert usage.completion_tokens == len(expected.token_ids[0])
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.canvases == expected.stats[0].canvases
    assert usage.denoising_steps == expected.stats[0].decoder_passes
    assert usage.tokens_per_forward == round(expected.stats[0].tokens_per_forward, 4)
    stream = client.chat.completions.create(
        model=NAME, messages=CHAT, max_tokens=20, seed=7, stream=True, stream_options={"include_usage": True}
    )
    text, finish, stream_usage = _stream_text(stream)
    assert text == full.choices[0].message.content and finish == full.choices[0].finish_reason
    assert stream_usage.completion_tokens == usage.completion_tokens


def test_completions_n_seed_and_max_tokens(client):
    a = client.completions.create(model=NAME, prompt="The quick brown", max_tokens=13, n=3, seed=11)
    b = client.completions.create(model=NAME, prompt="The quick brown", max_tokens=13, n=3, seed=11)
    c = client.completions.create(model=NAME, prompt="The quick brown", max_tokens=13, seed=12)
    assert [x.text for x in a.choices] == [x.text for x in b.choices]
    assert [x.index for x in a.choices] == [0, 1, 2]
    assert a.choices[1].text == c.choices[0].text  # choice i runs with seed + i
    assert len({x.text for x in a.choices}) > 1
    assert a.usage.completion_tokens <= 3 * 13
    stream = client.completions.create(
        model=NAME, prompt="The quick brown", max_tokens=13, seed=11, stream=True
    )
    assert _stream_text(stream)[0] == a.choices[0].text
    ids = client.completions.create(model=NAME, prompt=[[5, 6, 7], [8, 9]], max_tokens=8, n=2, seed=0)
    assert len(ids.choices) == 4


def test_max_completion_tokens_and_length_finish(client, conditioned):
    out = client.chat.completions.create(model=NAME, messages=CHAT, max_completion_tokens=5, seed=3)
    tokens = conditioned[2].generate(CHAT, max_new_tokens=5, seed=3)
    assert out.choices[0].message.content == tokens.texts[0]
    assert out.usage.completion_tokens == len(tokens.token_ids[0]) <= 5


def test_stop_sequences(client):
    base = client.completions.create(model=NAME, prompt="Diffusion", max_tokens=24, seed=21).choices[0].text
    stop = next(
        base[i : i + 2]
        for i in range(4, len(base) - 2)
        if base[i : i + 2].strip() and "\ufffd" not in base[i : i + 2]
    )
    cut = base[: base.index(stop)]
    out = client.completions.create(
        model=NAME, prompt="Diffusion", max_tokens=24, seed=21, stop=[stop, "zzzz"]
    )
    assert out.choices[0].text == cut and out.choices[0].finish_reason == "stop"
    stream = client.completions.create(
        model=NAME, prompt="Diffusion", max_tokens=24, seed=21, stop=stop, stream=True
    )
    text, finish, _ = _stream_text(stream)
    assert text == cut and finish == "stop"


def test_draft_streaming(server, client):
    url, _ = server
    payload = {
        "model": NAME,
        "messages": CHAT,
        "max_tokens": 16,
        "seed": 4,
        "stream": True,
        "stream_options": {"include_drafts": True},
    }
    status, headers, raw = http(url, "POST", "/v1/chat/completions", json.dumps(payload))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    drafts = [c["draft"] for e in events for c in e["choices"] if "draft" in c]
    assert drafts and {"canvas", "step", "accepted", "text", "token_ids", "pieces"} <= set(drafts[0])
    assert all(len(d["pieces"]) == len(d["token_ids"]) for d in drafts)
    assert [d["step"] for d in drafts if d["canvas"] == 0] == list(
        range(1, 1 + sum(d["canvas"] == 0 for d in drafts))
    )
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    plain = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=16, seed=4)
    assert {d["canvas"] for d in drafts} == set(range(plain.usage.canvases))
    assert len(drafts) == plain.usage.denoising_steps
    assert text == plain.choices[0].message.content
    # a plain OpenAI client reads the same stream and simply ignores the extra field
    stream = client.chat.completions.create(
        model=NAME, messages=CHAT, max_tokens=16, seed=4, stream=True, stream_options={"include_drafts": True}
    )
    assert _stream_text(stream)[0] == text


def test_32_concurrent_streams_equal_their_runs_alone(server, client):
    prompts = ["Why is the sky blue?", "def add(a, b):", "The quick brown fox", "Diffusion models"]
    jobs = [(prompts[i % 4], 100 + i) for i in range(32)]
    alone = {}
    for prompt, seed in jobs:
        out = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=24, seed=seed
        )
        alone[seed] = out.choices[0].message.content
    together: dict[int, str] = {}
    barrier = threading.Barrier(len(jobs))

    def run(prompt: str, seed: int) -> None:
        barrier.wait()
        stream = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=24, seed=seed, stream=True
        )
        together[seed] = _stream_text(stream)[0]

    peak = [0]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak[0] = max(peak[0], server[1].worker.engine.num_active)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    watching.set()
    watcher.join()
    assert together == alone
    assert peak[0] >= 16  # they really shared the engine's passes


def test_api_key(conditioned):
    settings = ServerSettings(port=0, model_name=NAME, api_key="s3cret", max_batch=2)
    with running_server(conditioned[2], settings) as (url, _):
        status, body = post_json(url, "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 4})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        wrong = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert right.completions.create(model=NAME, prompt="hi", max_tokens=4).choices[0].finish_reason
        assert http(url, "GET", "/health")[0] == 200  # health stays open for probes


SLOW = {"max_denoising_steps": 400, "confidence_threshold": 1e-12, "stability_threshold": 0}


def test_queue_limit_and_timeout(conditioned):
    """One row, one queue place: a third request gets 429 with Retry-After; a slow one times out (504)."""
    settings = ServerSettings(port=0, model_name=NAME, max_batch=1, max_queue=1, request_timeout=1.5)
    with running_server(conditioned[2], settings) as (url, srv):
        results = {}

        def call(key: str) -> None:
            results[key] = post_json(
                url, "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 64, **SLOW}
            )

        first = threading.Thread(target=call, args=("first",))
        first.start()
        _wait(lambda: srv.worker.engine.num_active == 1)
        second = threading.Thread(target=call, args=("second",))
        second.start()
        _wait(lambda: srv.worker.queue_depth == 1)
        status, headers, body = http(
            url, "POST", "/v1/completions", json.dumps({"model": NAME, "prompt": "x"})
        )
        assert status == 429 and headers["retry-after"] == "1" and json.loads(body)["error"]["message"]
        first.join(30)
        second.join(30)
        assert results["first"][0] == 504 and results["first"][1]["error"]["type"] == "timeout_error"
        _wait(lambda: srv.worker.engine.num_active == 0 and srv.worker.queue_depth == 0)
        assert post_json(url, "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 4})[0] == 200


def test_client_disconnect_cancels_its_rows(conditioned):
    import http.client

    with running_server(conditioned[2], ServerSettings(port=0, model_name=NAME, max_batch=2)) as (url, srv):
        for stream in (True, False):
            conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
            body = {"model": NAME, "prompt": "hi", "max_tokens": 64, "n": 2, "stream": stream, **SLOW}
            conn.request(
                "POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"}
            )
            _wait(lambda: srv.worker.engine.num_active == 2)
            conn.sock.close()
            conn.close()
            _wait(
                lambda: srv.worker.engine.num_active == 0, timeout=5.0
            )  # the request alone would run ~minutes
        assert post_json(url, "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 4})[0] == 200


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_tokenizer_endpoints_agree_with_the_api(server, conditioned):
    url, model = server[0], conditioned[2]
    status, _, raw = http(url, "GET", "/tokenizer_info")
    info = json.loads(raw)
    assert (
        status == 200 and info["eos_token"] == "<eos>" and info["chat_template"] == model.codec.chat_template
    )
    status, body = post_json(url, "/tokenize", {"prompt": "The fox", "add_special_tokens": False})
    assert (
        status == 200
        and body["tokens"] == model.codec.encode_plain("The fox")
        and body["count"] == len(body["tokens"])
    )
    status, body = post_json(url, "/tokenize", {"messages": CHAT})
    assert status == 200 and body["tokens"] == model.tokenize(CHAT)[0]
    status, body = post_json(url, "/detokenize", {"tokens": model.codec.encode_plain("The fox")})
    assert status == 200 and body["prompt"] == "The fox"


def test_response_format_json_object(client, conditioned):
    """Every answer parses as a JSON object, streamed or not, the same as the Python API's."""
    fmt = {"type": "json_object"}
    out = client.chat.completions.create(
        model=NAME, messages=CHAT, response_format=fmt, n=3, seed=4, max_tokens=24
    )
    texts = [c.message.content for c in out.choices]
    assert all(isinstance(json.loads(t), dict) for t in texts)
    assert out.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=NAME, messages=CHAT, response_format=fmt, seed=4, max_tokens=24, stream=True
    )
    assert _stream_text(stream)[0] == texts[0]  # held back, then sent whole
    api = conditioned[2].generate(CHAT, json_object=True, seed=4, max_new_tokens=24)
    assert api.texts[0] == texts[0]
    stopped = client.chat.completions.create(
        model=NAME, messages=CHAT, response_format=fmt, seed=4, max_tokens=24, stop=["e"]
    )
    assert isinstance(json.loads(stopped.choices[0].message.content), dict)


def test_response_format_json_schema(server, client, conditioned):
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "rank": {"type": "integer", "minimum": 1},
        },
        "required": ["city", "rank"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    out = client.chat.completions.create(model=NAME, messages=CHAT, response_format=fmt, n=3, seed=5)
    texts = [c.message.content for c in out.choices]
    for text in texts:
        jsonschema.validate(json.loads(text), schema)
    assert {c.finish_reason for c in out.choices} == {"stop"}
    assert 3 <= out.usage.json_rounds <= 9 and out.usage.json_repaired_slots >= 0
    stream = client.chat.completions.create(
        model=NAME,
        messages=CHAT,
        response_format=fmt,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert _stream_text(stream)[0] == texts[0]  # same seed, same JSON
    assert conditioned[2].generate(CHAT, json_schema=schema, seed=5).texts[0] == texts[0]  # as the Python API


def test_response_format_candidate_layouts(server, client, conditioned):
    """A schema with choices (Optional, an optional key, a list): candidates run beside each other
    on the server as in the Python API, with the same choice for the same seed, streamed or not."""
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "name": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
            "note": {"type": "boolean"},
        },
        "required": ["name"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    out = client.chat.completions.create(
        model=NAME, messages=CHAT, response_format=fmt, n=2, seed=6, extra_body={"json_candidates": 5}
    )
    texts = [c.message.content for c in out.choices]
    for text in texts:
        jsonschema.validate(json.loads(text), schema)
    assert out.usage.json_candidates == 10  # five layouts per choice
    api = conditioned[2].generate(CHAT, json_schema=schema, seed=6, json_candidates=5)
    assert api.texts[0] == texts[0] and api.stats[0].candidates == 5
    stream = client.chat.completions.create(
        model=NAME, messages=CHAT, response_format=fmt, seed=6, stream=True, extra_body={"json_candidates": 5}
    )
    assert _stream_text(stream)[0] == texts[0]


def test_a_slow_structured_round_does_not_hold_up_other_clients(server, monkeypatch):
    """A round's bookkeeping (joint reads, uniqueItems, repairs) runs off the event loop: while one
    takes a second, the server still answers others at once."""
    from dgemma.structured.generate import JsonJob

    url, _ = server
    real = JsonJob.update

    def slow(self, *args, **kwargs):
        time.sleep(1.5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(JsonJob, "update", slow)
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {"type": "integer"}},
        },
        "json_candidates": 1,
    }
    done = {}
    worker = threading.Thread(target=lambda: done.update(out=post_json(url, "/v1/chat/completions", body)))
    worker.start()
    time.sleep(0.8)  # the request's first round is in its slow update by now
    start = time.perf_counter()
    assert http(url, "GET", "/health")[0] == 200
    assert time.perf_counter() - start < 0.5
    worker.join(timeout=60)
    status, out = done["out"]
    assert status == 200 and isinstance(json.loads(out["choices"][0]["message"]["content"]), int)
