"""/v1/completions with `suffix` (OpenAI's insert mode): the text between `prompt` and `suffix`.

The gap requests of `dgemma/generation/infill.py` (the suffix clamped after a gap of free
positions, one request per candidate length up to `max_tokens`) go through the engine worker like
any request, so they batch, time out and cancel like the rest; when all are done the best gap is
returned: `text` is the fill alone (the prompt and suffix stay the client's), `infill` reports the
chosen length and every candidate's score.
"""

from __future__ import annotations

from typing import Any

from dgemma.generation.infill import AUTO_LENGTHS, plan_infill
from dgemma.generation.prompts import SAMPLER_FIELDS, SEED_RANGE, RequestBuilder
from dgemma.server.fields import ApiError, bool_field, int_field

MAX_SUFFIX_CHARS = 100_000


def parse_infill(body: dict, builder: RequestBuilder, name: str, checked) -> Any:
    from dgemma.server.protocol import Job, JobKind

    suffix, prompt = body.get("suffix"), body.get("prompt")
    if not isinstance(suffix, str) or len(suffix) > MAX_SUFFIX_CHARS:
        raise ApiError(400, f"`suffix` must be a string of at most {MAX_SUFFIX_CHARS} characters", "suffix")
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "`prompt` must be one non-empty string with `suffix`", "prompt")
    for field in ("stream", "echo"):
        if bool_field(body, field):
            raise ApiError(400, f"`{field}` does not apply with `suffix`", field)
    for field in ("logprobs", "stop"):
        if body.get(field) is not None:
            raise ApiError(400, f"`{field}` does not apply with `suffix`", field)
    if (body.get("n") or 1) != 1:
        raise ApiError(400, "`n` must be 1 with `suffix`", "n")
    cap = int_field(body, "max_tokens", 1)
    lengths = tuple(n for n in AUTO_LENGTHS if cap is None or n <= cap) or (cap,)
    seed = int_field(body, "seed", -SEED_RANGE, SEED_RANGE - 1)
    sampler = {k: body[k] for k in SAMPLER_FIELDS if body.get(k) is not None}
    plan = checked(
        lambda: plan_infill(
            builder, prompt, suffix, seed=0 if seed is None else seed, candidates=lengths,
            temperature=body.get("temperature"), **sampler,
        )
    )  # fmt: skip
    job = Job(JobKind.COMPLETION, name, plan.requests, [len(plan.requests[0].prompt)], len(plan.requests))
    job.infill = plan
    return job


def infill_response(job, rid: str, created: int, choices, codec, canvas_length: int) -> dict[str, Any]:
    result = job.infill.result(codec, [c.completion for c in choices], canvas_length)
    completion = sum(len(c.completion.token_ids) for c in choices)
    canvases, steps = sum(c.canvases for c in choices), sum(c.steps for c in choices)
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": job.model,
        "choices": [{"index": 0, "text": result.fill, "finish_reason": "stop", "logprobs": None}],
        "infill": {"length": result.length, "score": result.score, "candidates": result.candidates},
        "usage": {
            "prompt_tokens": job.prompt_tokens[0],
            "completion_tokens": completion,
            "total_tokens": job.prompt_tokens[0] + completion,
            "canvases": canvases,
            "denoising_steps": steps,
            "tokens_per_forward": round(completion / (steps + canvases), 4) if steps else 0.0,
        },
    }
