"""Log-probabilities: of generated tokens (the last denoising step's distribution), of prompts (the
causal encoder), in the API and in both OpenAI shapes on the server."""

from __future__ import annotations

import math

import pytest
import torch

from dgemma.engine import diffusion
from tests.server_helpers import post_json

SAMPLER = dict(max_denoising_steps=4, stability_threshold=0)  # every canvas runs its 4 steps


def test_generated_logprobs_are_the_last_steps_log_softmax(model, monkeypatch):
    """Checked against the logits the sampler received at each canvas's last step."""
    calls = []
    real = diffusion.denoise_step

    def recording(logits, *args, **kwargs):
        seen = logits.clone()
        out = real(logits, *args, **kwargs)
        calls.append((seen, out.temperature, out.argmax.clone()))
        return out

    monkeypatch.setattr(diffusion, "denoise_step", recording)
    C = model.config.canvas_length
    out = model.generate("hi", max_new_tokens=2 * C, seed=3, logprobs=3, eos_token_ids=[], **SAMPLER)
    lps = out.logprobs[0]
    assert len(calls) == 8 and len(lps) == len(out.token_ids[0]) == 2 * C
    for canvas in range(2):
        logits, temperature, argmax = calls[4 * canvas + 3]  # the canvas's last step
        expected = torch.log_softmax(logits / temperature, dim=-1)
        tokens = out.token_ids[0][canvas * C : (canvas + 1) * C]
        assert tokens == argmax.tolist()
        for pos, (token, lp) in enumerate(zip(tokens, lps[canvas * C : (canvas + 1) * C], strict=True)):
            assert lp.logprob == pytest.approx(float(expected[pos, token]), abs=1e-5)
            values, ids = expected[pos].topk(3)
            assert [t for t, _ in lp.top] == ids.tolist()
            assert [v for _, v in lp.top] == pytest.approx(values.tolist(), abs=1e-5)
            assert lp.top[0][0] == token  # the committed token is the argmax


def test_score_is_the_encoders_causal_log_softmax(model):
    ids = model.tokenize("The quick brown fox", raw=True)[0]
    scored = model.score(["The quick brown fox"], top=2)[0]
    expected = torch.log_softmax(model.encoder_logits([ids])[0], dim=-1)
    assert scored[0] is None and len(scored) == len(ids)
    for t in range(1, len(ids)):
        assert scored[t].logprob == pytest.approx(float(expected[t - 1, ids[t]]), abs=1e-5)
        assert [i for i, _ in scored[t].top] == expected[t - 1].topk(2).indices.tolist()
    with pytest.raises(ValueError, match="`top`"):
        model.score(["x"], top=99)


def test_ar_logprobs_are_the_encoders_next_token_log_softmax(model):
    out = model.generate("hi", mode="ar", max_new_tokens=5, logprobs=2)
    prompt = model.tokenize("hi")[0]
    ids = prompt + out.token_ids[0]
    expected = torch.log_softmax(model.encoder_logits([ids])[0], dim=-1)  # greedy: raw logits
    for t, lp in enumerate(out.logprobs[0]):
        pos = len(prompt) - 1 + t
        assert lp.logprob == pytest.approx(float(expected[pos, ids[pos + 1]]), abs=1e-4)
        assert lp.top[0][0] == ids[pos + 1]  # greedy picks the most likely token


@pytest.fixture(scope="module")
def server(model):
    from dgemma.server.app import ServerSettings
    from dgemma.server.launch import running_server

    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (url, _):
        yield url


def test_completions_echo_scores_the_prompt(server, model):
    """lm-eval's loglikelihood request: echo, max_tokens 0 (or 1), logprobs 1, token ids as prompt."""
    ids = model.tokenize("The quick brown fox", raw=True)[0]
    status, body = post_json(
        server,
        "/v1/completions",
        {"model": "tiny", "prompt": [ids], "echo": True, "max_tokens": 0, "logprobs": 1},
    )
    assert status == 200, body
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"] == model.codec.decode(ids) and len(logprobs["tokens"]) == len(ids)
    expected = model.score([ids], top=1)[0]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:] == pytest.approx([lp.logprob for lp in expected[1:]], abs=1e-6)
    assert all(
        len(top) == 1 and max(top.values()) >= lp
        for top, lp in zip(logprobs["top_logprobs"][1:], logprobs["token_logprobs"][1:], strict=True)
    )
    assert logprobs["text_offset"][0] == 0 and logprobs["text_offset"] == sorted(logprobs["text_offset"])
    # with one generated token, as lm-eval sends it: the prompt's entries, then the token's
    status, body = post_json(
        server,
        "/v1/completions",
        {
            "model": "tiny",
            "prompt": [ids],
            "echo": True,
            "max_tokens": 1,
            "logprobs": 1,
            "temperature": 0,
            "seed": 1,
        },
    )
    assert status == 200, body
    entries = body["choices"][0]["logprobs"]["token_logprobs"]
    assert entries[0] is None
    assert entries[1 : len(ids)] == pytest.approx(logprobs["token_logprobs"][1:], abs=1e-6)
    assert len(entries) == len(ids) + 1 and entries[-1] <= 0


def test_completion_and_chat_logprobs_equal_the_apis(server, model):
    request = {"model": "tiny", "prompt": "hi", "max_tokens": 8, "seed": 2, "logprobs": 2}
    status, body = post_json(server, "/v1/completions", request)
    assert status == 200, body
    api = model.generate("hi", raw=True, max_new_tokens=8, seed=2, logprobs=2)  # completions: raw
    got = body["choices"][0]["logprobs"]
    n = len(got["tokens"])
    assert got["token_logprobs"] == pytest.approx([lp.logprob for lp in api.logprobs[0][:n]], abs=1e-6)
    assert all(math.isfinite(v) and v <= 0 for v in got["token_logprobs"])

    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        seed=2,
        logprobs=True,
        top_logprobs=2,
    )
    content = out.choices[0].logprobs.content
    api = model.generate([{"role": "user", "content": "hi"}], max_new_tokens=8, seed=2, logprobs=2)
    assert [c.logprob for c in content] == pytest.approx(
        [lp.logprob for lp in api.logprobs[0][: len(content)]], abs=1e-6
    )
    assert all(len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.logprob - 1e-6 for c in content)
    assert len(content) == out.usage.completion_tokens  # every generated token, in order


def test_a_clamped_canvas_reports_its_tokens_as_certain(model):
    """A canvas whose positions are all clamped is committed without a decoder pass; its tokens
    still get log-probabilities (0: the constrained distribution holds only them), so the list lines
    up with the tokens, and the next canvas's are its own."""
    from dgemma.engine.request import Request
    from dgemma.generation.run import complete

    C = model.config.canvas_length
    base = model.builder.requests([model.tokenize(["hi"])[0]], max_new_tokens=2 * C, seed=0)[0]
    clamped = {p: 7 + p for p in range(C)}
    request = Request(base.prompt, 2 * C, base.sampler, 0, (), fixed=clamped, logprobs=2)
    (done,) = complete(model.model, [request])
    assert done.token_ids[:C] == [7 + p for p in range(C)]
    assert len(done.logprobs) == 2 * C
    assert all(lp.logprob == 0.0 and lp.top == ((7 + p, 0.0),) for p, lp in enumerate(done.logprobs[:C]))
    assert all(
        lp.logprob < 0.0 and lp.top[0][0] == t
        for lp, t in zip(done.logprobs[C:], done.token_ids[C:], strict=True)
    )
