"""OpenAI request bodies -> engine work: every field checked, every problem an ApiError naming it.

Accepted besides the OpenAI fields: the diffusion sampler settings (`max_denoising_steps`,
`entropy_bound`, `t_min`, `t_max`, `stability_threshold`, `confidence_threshold`) as extra body
fields, and `stream_options.include_drafts`. OpenAI fields this server cannot honour are refused
with a 400 naming them, never ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from dgemma.api import Model
from dgemma.engine.request import MAX_TOP_LOGPROBS, Request
from dgemma.generation.auto_tools import AutoTools
from dgemma.generation.prompts import SAMPLER_FIELDS, SEED_RANGE, FieldError, RequestBuilder
from dgemma.generation.reasoning import ReasoningFormat
from dgemma.generation.run import Mode
from dgemma.generation.tools import auto_tools, call_schema, check_stages, choice_schema, forced_tools
from dgemma.server.fields import ApiError, bool_field, dict_field, int_field, is_ids, is_number
from dgemma.server.infill import parse_infill
from dgemma.server.messages import flatten
from dgemma.structured.generate import JsonJob, JsonPlan
from dgemma.text import check_messages

MAX_N = 16
MAX_STOP = 4
T = TypeVar("T")
_COMMON = {
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "seed",
    "n",
    "stop",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "logit_bias",
    "user",
    "metadata",
    "store",
    "service_tier",
    "mode",
    *SAMPLER_FIELDS,
}
CHAT_FIELDS = _COMMON | {
    "messages",
    "max_completion_tokens",
    "response_format",
    "json_rounds",
    "json_candidates",
    "max_string_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "chat_template_kwargs",
}
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "suffix", "best_of"}


class JobKind(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"


@dataclass
class Job:
    """One HTTP request's work: a request per (prompt, choice), prompt-major, plus how to answer."""

    kind: JobKind
    model: str
    requests: list[Request]
    prompt_tokens: list[int]  # per prompt
    n: int
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    include_drafts: bool = False
    json_jobs: list[JsonJob] | None = None  # response_format json_schema: one job per request
    tool_name: str | None = None  # the function every choice calls (its arguments are the JSON)
    tool_plans: dict[str, JsonPlan] | None = None  # tool_choice required, several tools: per name
    auto_tools: AutoTools | None = None  # tool_choice auto: the model's own calls, resolved at the end
    json_object: bool = False  # response_format json_object: each answer turned into an object
    logprobs: int | None = None  # alternatives per token to report, None for no log-probabilities
    echo: bool = False  # completions: the prompt (and its log-probabilities) ahead of the answer
    prompts: list[list[int]] = field(default_factory=list)  # token ids, per prompt
    reasoning: ReasoningFormat | None = None  # chat: split the reasoning block off each answer
    reasoning_inside: bool = False  # the prompt leaves a reasoning block open for the model
    infill: Any = None  # completions with `suffix`: the InfillPlan whose gap requests these are
    sudoku: str | None = None  # /v1/sudoku: the puzzle (81 characters) the one request solves
    mode: Mode = Mode.DIFFUSION  # `mode: "ar"`: next-token decoding, run beside the diffusion engine

    @property
    def calls_tool(self) -> bool:  # every choice is a forced call
        return self.tool_name is not None or self.tool_plans is not None


def parse_chat(body: Any, model: Model, name: str, capacity: int) -> Job:
    body = _object(body, CHAT_FIELDS)
    _check_model(body, name)
    _refuse_unsupported(body, chat=True)
    messages = body.get("messages")
    try:
        check_messages(messages)
    except ValueError as err:
        raise ApiError(400, str(err), "messages") from None
    if model.codec is None or not model.codec.has_chat_template:
        raise ApiError(400, f"model {name!r} has no chat template; use /v1/completions", "messages")
    builder = model.builder.with_capacity(capacity)
    flat = [flatten(i, m) for i, m in enumerate(messages)]
    tools = _checked(lambda: forced_tools(body))
    declared = body.get("tools") or None  # rendered by templates that know tools
    template = body.get("chat_template_kwargs")  # as vLLM and SGLang take them: `enable_thinking`
    prompt = _checked(
        lambda: builder.prompt_ids(flat, field="messages", tools=declared, template_kwargs=template)
    )
    length_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = int_field(body, "max_completion_tokens", 1) or int_field(body, "max_tokens", 1)
    free = _checked(lambda: auto_tools(body))
    if (tools is not None or free is not None) and body.get("response_format") is not None:
        raise ApiError(400, "`response_format` and `tools` cannot be combined", "response_format")
    stages = None
    if tools is None:
        plan = _json_plan(body, builder)
    elif len(tools) == 1:
        plan = _plan(tools[0].parameters, body, builder, "tools")
    else:  # the model picks the function, then writes its arguments
        plan = _plan(choice_schema(tools), body, builder, "tools")
        stages = {t.name: _plan(call_schema(t), body, builder, "tools") for t in tools}
    top = None
    if bool_field(body, "logprobs") and free is not None:
        raise ApiError(400, "log-probabilities are not reported with `tools`", "logprobs")
    if bool_field(body, "logprobs"):
        top = int_field(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    elif body.get("top_logprobs") is not None:
        raise ApiError(400, "`top_logprobs` needs `logprobs: true`", "top_logprobs")
    job = _job(JobKind.CHAT, body, builder, name, [prompt], limit, "messages", plan, length_field, top)
    job.tool_name = tools[0].name if tools is not None and len(tools) == 1 else None
    job.tool_plans = stages
    if stages is not None:
        _checked(lambda: check_stages(builder, [prompt], stages, limit, length_field))
    if free is not None:  # a call written wrong is rewritten under its schema: each must fit
        if body.get("stop") is not None:
            raise ApiError(
                400, "`stop` does not apply with `tools`: calls are read when the answer ends", "stop"
            )
        parallel = body.get("parallel_tool_calls")
        job.auto_tools = _checked(
            lambda: AutoTools.build(builder, free, parallel, body.get("max_string_tokens"), declared)
        )
        _checked(lambda: check_stages(builder, [prompt], job.auto_tools.plans, None))
    fmt = body.get("response_format")
    job.json_object = isinstance(fmt, dict) and fmt.get("type") == "json_object"
    if model.reasoning is not None and job.json_jobs is None:  # a schema's canvas holds no reasoning
        job.reasoning, job.reasoning_inside = model.reasoning, model.reasoning.opens_inside(prompt)
    return job


def parse_completion(body: Any, model: Model, name: str, capacity: int) -> Job:
    body = _object(body, COMPLETION_FIELDS)
    _check_model(body, name)
    _refuse_unsupported(body, chat=False)
    if body.get("best_of") not in (None, 1):
        raise ApiError(400, "`best_of` is not supported", "best_of")
    builder = model.builder.with_capacity(capacity)
    if body.get("suffix") is not None:  # insert mode: the gap between prompt and suffix
        if body.get("mode", "diffusion") != "diffusion":
            raise ApiError(400, "insert mode (`suffix`) fills a diffusion canvas: drop `mode`", "mode")
        return parse_infill(body, builder, name, _checked)
    prompts = _completion_prompts(body.get("prompt"), builder)
    top = int_field(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    echo = bool_field(body, "echo")
    max_tokens = int_field(body, "max_tokens", 0 if echo else 1)
    if max_tokens == 0:  # echo alone: the prompts scored by the encoder, nothing generated
        if body.get("stream") or (body.get("n") or 1) != 1:
            raise ApiError(400, "`max_tokens: 0` (echo only) takes neither `stream` nor `n`", "max_tokens")
        return Job(
            JobKind.COMPLETION,
            name,
            [],
            [len(p) for p in prompts],
            1,
            logprobs=top,
            echo=True,
            prompts=prompts,
        )
    job = _job(JobKind.COMPLETION, body, builder, name, prompts, max_tokens, "prompt", logprobs=top)
    job.echo = echo
    return job


def _job(
    kind: JobKind,
    body: dict,
    builder: RequestBuilder,
    name: str,
    prompts: list[list[int]],
    max_tokens: int | None,
    prompt_param: str,
    json_plan: JsonPlan | None = None,
    length_field: str = "max_tokens",
    logprobs: int | None = None,
) -> Job:
    n = int_field(body, "n", 1, MAX_N) or 1
    mode = _mode(body, json_plan is not None or bool(body.get("tools")))
    if logprobs is not None and (json_plan is not None or bool_field(body, "stream")):
        raise ApiError(
            400,
            "log-probabilities are reported without `stream` and without a schema or tool call",
            "logprobs",
        )
    if json_plan is not None:
        if body.get("stop") is not None:
            raise ApiError(400, "`stop` does not apply to response_format json_schema", "stop")
        if dict_field(body, "stream_options").get("include_drafts"):
            raise ApiError(400, "drafts are not streamed for response_format json_schema", "stream_options")
    stream = bool_field(body, "stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise ApiError(400, "`stream_options` is only allowed with `stream: true`", "stream_options")
    options = options or {}
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_drafts"}:
        raise ApiError(
            400, "`stream_options` takes only `include_usage` and `include_drafts`", "stream_options"
        )
    settings = dict(
        n=n,
        seed=int_field(body, "seed", -SEED_RANGE, SEED_RANGE - 1),
        temperature=body.get("temperature"),
        sampler={k: body[k] for k in SAMPLER_FIELDS if body.get(k) is not None},
        length_field=length_field,
    )
    jobs = None
    if json_plan is not None:
        jobs = _checked(
            lambda: builder.json_jobs(
                prompts, json_plan, int_field(body, "json_rounds", 1), max_new_tokens=max_tokens, **settings
            )
        )
        requests = [j.base for j in jobs]
    else:
        requests = _checked(
            lambda: builder.requests(
                prompts, max_new_tokens=max_tokens, prompt_field=prompt_param, logprobs=logprobs, **settings
            )
        )
    return Job(
        kind,
        name,
        requests,
        [len(p) for p in prompts],
        n,
        _stop(body.get("stop")),
        stream,
        bool_field(options, "include_usage"),
        bool_field(options, "include_drafts"),
        jobs,
        logprobs=logprobs,
        prompts=prompts,
        mode=mode,
    )


def _mode(body: dict, constrained: bool) -> Mode:
    """`mode`: "diffusion" (the default) or "ar", next-token decoding by the causal encoder (to
    compare the two on one server); "ar" takes `temperature` but no diffusion sampler setting."""
    if (mode := body.get("mode", "diffusion")) not in ("diffusion", "ar"):
        raise ApiError(400, '`mode` must be "diffusion" or "ar"', "mode")
    if mode == "diffusion":
        return Mode.DIFFUSION
    if constrained:
        raise ApiError(400, "schemas and tools need the diffusion canvas, not `mode: ar`", "mode")
    if dict_field(body, "stream_options").get("include_drafts"):
        raise ApiError(400, "drafts are diffusion canvases: `mode: ar` has none", "stream_options")
    for key in SAMPLER_FIELDS:
        if body.get(key) is not None:
            raise ApiError(400, f"`{key}` is a diffusion sampler setting; `mode: ar` does not use it", key)
    return Mode.AR


def _checked(build: Callable[[], T]) -> T:
    """Run a request-building step; its FieldError becomes a 400 naming the field."""
    try:
        return build()
    except FieldError as err:
        raise ApiError(400, str(err), err.field, code=err.code) from None


def _object(body: Any, known: set[str]) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unrecognized request argument(s): {', '.join(unknown)}", unknown[0])
    return body


def _check_model(body: dict, name: str) -> None:
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise ApiError(400, "`model` is required (a string)", "model")
    if requested != name:
        raise ApiError(
            404,
            f"the model {requested!r} does not exist; this server has {name!r}",
            "model",
            code="model_not_found",
        )


def _refuse_unsupported(body: dict, chat: bool) -> None:
    neutral = {"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}
    for key, value in neutral.items():
        got = body.get(key)
        if got is not None and (not is_number(got) or got != value):
            raise ApiError(400, f"`{key}` is not supported by the diffusion sampler (only {value})", key)
    if body.get("logit_bias"):
        raise ApiError(400, "`logit_bias` is not supported", "logit_bias")
    if chat:
        for key in ("functions", "function_call"):  # tools: see tools.py
            if body.get(key) not in (None, [], "none"):
                raise ApiError(400, f"`{key}` is not supported", key)
        fmt = body.get("response_format")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
                raise ApiError(
                    400, "`response_format.json_schema` must be an object with a `schema`", "response_format"
                )
            if kind not in ("text", "json_object", "json_schema"):
                raise ApiError(
                    400, "`response_format.type` must be text, json_object or json_schema", "response_format"
                )


def _json_plan(body: dict, builder: RequestBuilder) -> JsonPlan | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        for name in ("json_rounds", "json_candidates", "max_string_tokens"):
            if body.get(name) is not None:
                raise ApiError(400, f"`{name}` needs response_format json_schema", name)
        return None
    spec = fmt["json_schema"]
    unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if unknown:
        raise ApiError(
            400, f"`response_format.json_schema` has unknown field {unknown[0]!r}", "response_format"
        )
    if "schema" not in spec:
        raise ApiError(400, "`response_format.json_schema.schema` is required", "response_format")
    return _plan(spec["schema"], body, builder, "response_format", body.get("json_candidates"))


def _plan(schema: Any, body: dict, builder: RequestBuilder, param: str, candidates: Any = 1) -> JsonPlan:
    """The structured-output plan of a schema (a response format's; a forced tool's: one layout)."""
    return _checked(lambda: builder.json_plan(schema, body.get("max_string_tokens"), param, candidates))


def _completion_prompts(prompt: Any, builder: RequestBuilder) -> list[list[int]]:
    if prompt is None:
        raise ApiError(400, "`prompt` is required", "prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and is_ids(prompt)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt or len(prompt) > MAX_N:
        raise ApiError(
            400, f"`prompt` must be a string, token ids, or a list of 1-{MAX_N} of these", "prompt"
        )
    out = []
    for item in prompt:
        if not (isinstance(item, str) or (isinstance(item, list) and item and is_ids(item))):
            raise ApiError(
                400, "`prompt` items must be non-empty strings or non-empty lists of token ids", "prompt"
            )
        out.append(_checked(lambda item=item: builder.prompt_ids(item, raw=True, field="prompt")))
    return out


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise ApiError(
            400, f"`stop` must be a non-empty string or a list of up to {MAX_STOP} of them", "stop"
        )
    return stops
