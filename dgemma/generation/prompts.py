"""Prompts -> engine requests, by the rules every entry point shares (the API, the server, the
apps, structured output, infilling and the harness):

    seeds        an int S gives S, S + 1, ... per request (modulo 2**63); a list, one per request;
                 None, a random base counted up the same way
    temperature  the softmax temperature tokens are drawn at, in both modes. Diffusion: the
                 schedule runs from t_max = T at the first denoising step to t_min = T / 2 at the
                 last (the reference's 0.8 -> 0.4 ratio); explicit t_max / t_min win. AR: every
                 token at T. T = 0 is greedy (AR: argmax; diffusion: the schedule at its floor,
                 GREEDY_TEMPERATURE). None keeps the checkpoint's schedule (diffusion), greedy (AR).
    length       max_new_tokens defaults to the checkpoint's, cut to the whole canvases that fit
                 the context; given, prompt plus its canvases must fit, or it is refused
    vocabulary   token-id prompts must lie in the model's vocabulary

A bad setting is a `FieldError` naming the field as the caller spells it (the server's
`max_tokens` is the API's `max_new_tokens`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dgemma.config import GenerationDefaults, SamplerConfig
from dgemma.config.vision import VisionConfig
from dgemma.engine.request import Request, top_logprobs_problem
from dgemma.images.load import open_image
from dgemma.images.processor import ImageProcessor
from dgemma.images.prompt import PromptIds, expand, has_images, take_images
from dgemma.structured.choices import DEFAULT_CANDIDATES, MAX_CANDIDATES
from dgemma.structured.generate import DEFAULT_ROUNDS, JsonJob, JsonPlan, plan_json
from dgemma.structured.slots import DEFAULT_STRING_TOKENS
from dgemma.text import TextCodec

SEED_RANGE = 2**63  # seeds are taken modulo this; a random seed is drawn from [0, SEED_RANGE)
MAX_TEMPERATURE = 2.0  # the OpenAI range of `temperature`
GREEDY_TEMPERATURE = 0.01  # the diffusion schedule's t_max for temperature 0 (t_min is half of it)
MAX_STRING_TOKENS = 256  # token positions of one string slot at most
MAX_JSON_ROUNDS = 16
SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerConfig))


class FieldError(ValueError):
    """A bad request setting: `field` is its name as the caller spells it, `code` an OpenAI error code."""

    def __init__(self, message: str, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.field, self.code = field, code


def check_top_logprobs(value: Any, field: str = "logprobs") -> None:
    """None (no log-probabilities) or how many alternatives to report per token."""
    if (problem := top_logprobs_problem(value, field)) is not None:
        raise FieldError(problem, field)


def seeds_for(seed: int | Sequence[int] | None, n: int) -> list[int]:
    """Per-request seeds: an int S gives S, S + 1, ... (modulo SEED_RANGE); a list gives one seed
    per request; None draws one random base and counts up from it."""
    if seed is None:
        base = secrets.randbits(63)
        return [(base + i) % SEED_RANGE for i in range(n)]
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [(seed + i) % SEED_RANGE for i in range(n)]
    if isinstance(seed, str | bytes) or not isinstance(seed, Sequence):
        raise FieldError(f"`seed` must be an int, a list of {n} ints, or None", "seed")
    seeds = list(seed)
    if len(seeds) != n or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise FieldError(f"`seed` must be an int or a list of {n} ints", "seed")
    return [s % SEED_RANGE for s in seeds]


def check_temperature(temperature: Any) -> float | None:
    if temperature is None:
        return None
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise FieldError(f"`temperature` must be a number in [0, {MAX_TEMPERATURE:g}]", "temperature")
    if (
        not 0 <= temperature <= MAX_TEMPERATURE
    ):  # before float(): a huge int must not overflow (NaN fails too)
        raise FieldError(f"`temperature` must be a number in [0, {MAX_TEMPERATURE:g}]", "temperature")
    return float(temperature)


def sampler_for(
    defaults: SamplerConfig, temperature: float | None = None, overrides: dict[str, Any] | None = None
) -> SamplerConfig:
    """The one parser of sampler settings: `defaults` with `temperature` (see the module docstring)
    and the named SamplerConfig fields applied; a bad one is a FieldError naming it."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(SAMPLER_FIELDS))
    if unknown:
        raise FieldError(f"unknown sampler setting(s) {unknown}; known: {sorted(SAMPLER_FIELDS)}", unknown[0])
    temperature = check_temperature(temperature)
    if temperature is not None:
        t_max = temperature if temperature > 0 else GREEDY_TEMPERATURE
        overrides.setdefault("t_max", t_max)
        overrides.setdefault("t_min", min(t_max / 2, overrides["t_max"]))
    try:
        return defaults.replace(**overrides)
    except (ValueError, TypeError) as err:
        field = next((k for k in SAMPLER_FIELDS if f"`{k}`" in str(err)), None)
        raise FieldError(str(err), field) from None


@dataclass(frozen=True)
class RequestBuilder:
    """One checkpoint's rules for turning prompts into requests, within a context of `capacity`
    tokens (the model's position limit for the API, the server's cache rows for the server)."""

    codec: TextCodec | None
    sampler: SamplerConfig
    defaults: GenerationDefaults
    vocab_size: int
    canvas_length: int
    capacity: int
    context: str = "the model"  # whose limit `capacity` is, for messages
    vision: VisionConfig | None = None  # image-token ids, when the model has a vision tower
    images: ImageProcessor | None = None  # its image processor (None: image parts are refused)

    def with_capacity(self, capacity: int, context: str = "this server's context") -> RequestBuilder:
        return dataclasses.replace(self, capacity=capacity, context=context)

    def prompt_ids(
        self,
        prompt: Any,
        raw: bool = False,
        field: str = "prompts",
        tools: list | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]:
        """One prompt as token ids: a string (through the chat template as one user turn unless
        `raw`), a chat (a list of {role, content}), or token ids (checked against the vocabulary).
        `template_kwargs`: extra chat-template variables (`enable_thinking`)."""
        if isinstance(prompt, str):
            if self.codec is None:
                raise FieldError(
                    "this checkpoint has no tokenizer.json; send token ids instead of text", field
                )
            if raw and not prompt:
                raise FieldError(f"`{field}` must not be empty", field)
            if raw:
                return self.codec.encode_raw(prompt)
            if not self.codec.has_chat_template:
                raise FieldError(
                    "this checkpoint has no chat template; send the text as is "
                    "(Python: raw=True; CLI: --raw; server: /v1/completions)",
                    field,
                )
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, list | tuple) and prompt and isinstance(prompt[0], dict):
            if self.codec is None or not self.codec.has_chat_template:
                raise FieldError("this checkpoint has no chat template; chat messages need one", field)
            if has_images(prompt):
                return self._image_prompt(list(prompt), field, tools, template_kwargs)
            try:
                return self.codec.encode_chat(list(prompt), tools=tools, template_kwargs=template_kwargs)
            except ValueError as err:
                where = "chat_template_kwargs" if "`chat_template_kwargs`" in str(err) else field
                raise FieldError(str(err), where) from None
        ids = list(prompt) if isinstance(prompt, list | tuple) else None
        if not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise FieldError(f"`{field}`: a token-id prompt must be a non-empty list of integers", field)
        if not all(0 <= t < self.vocab_size for t in ids):
            raise FieldError(
                f"`{field}`: token ids must lie in the vocabulary, 0..{self.vocab_size - 1}", field
            )
        return ids

    def _image_prompt(
        self, messages: list[dict], field: str, tools: list | None, template_kwargs: dict | None
    ) -> PromptIds:
        """A chat with image parts: its ids with each image's soft-token positions, and its images."""
        try:
            rendered, sources = take_images(messages, field)
            if self.images is None or self.vision is None:
                raise ValueError("this checkpoint has no vision tower: it takes text only, not images")
            images = [self.images(open_image(src, f"`{field}` image {k}")) for k, src in enumerate(sources)]
            ids = self.codec.encode_chat(rendered, tools=tools, template_kwargs=template_kwargs)
            ids = expand(ids, self.vision, [im.num_soft_tokens for im in images])
        except ValueError as err:
            where = "chat_template_kwargs" if "`chat_template_kwargs`" in str(err) else field
            raise FieldError(str(err), where) from None
        return PromptIds(ids, tuple(images))

    def requests(
        self,
        prompts: list[list[int]],
        n: int = 1,
        max_new_tokens: int | None = None,
        seed: int | Sequence[int] | None = None,
        temperature: float | None = None,
        eos_token_ids: Sequence[int] | None = None,
        sampler: dict[str, Any] | None = None,
        length_field: str = "max_new_tokens",
        prompt_field: str = "prompts",
        logprobs: int | None = None,
        logprobs_field: str = "logprobs",
    ) -> list[Request]:
        """`n` requests per prompt, prompt-major (request k = p * n + i takes the k-th seed)."""
        settings = sampler_for(self.sampler, temperature, sampler)
        check_top_logprobs(logprobs, logprobs_field)
        ar_temperature = 0.0 if temperature is None else float(temperature)  # checked by sampler_for
        if max_new_tokens is not None and (
            isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1
        ):
            raise FieldError(
                f"`{length_field}` must be a positive integer, got {max_new_tokens!r}", length_field
            )
        eos = self.defaults.eos_token_ids if eos_token_ids is None else tuple(int(t) for t in eos_token_ids)
        seeds = iter(seeds_for(seed, len(prompts) * n))
        C = self.canvas_length
        out = []
        for prompt in prompts:
            room = (self.capacity - len(prompt)) // C * C
            if room < 1:
                raise FieldError(
                    f"the prompt has {len(prompt)} tokens; {self.context} holds {self.capacity} and needs room "
                    f"for at least one canvas of {C}",
                    prompt_field,
                    "context_length_exceeded",
                )
            need = None if max_new_tokens is None else len(prompt) + -(-max_new_tokens // C) * C
            if need is not None and need > self.capacity:
                raise FieldError(
                    f"prompt ({len(prompt)} tokens) plus `{length_field}` ({max_new_tokens}) needs {need} positions "
                    f"(whole canvases of {C}); {self.context} allows {self.capacity}",
                    length_field,
                    "context_length_exceeded",
                )
            limit = max_new_tokens if max_new_tokens is not None else min(self.defaults.max_new_tokens, room)
            out += [
                Request(
                    prompt,
                    limit,
                    settings,
                    next(seeds),
                    eos,
                    ar_temperature,
                    logprobs=logprobs,
                    images=getattr(prompt, "images", ()),
                )
                for _ in range(n)
            ]
        return out

    def json_plan(
        self,
        schema: Any,
        max_string_tokens: int | None = None,
        field: str = "json_schema",
        candidates: int | None = 1,
    ) -> JsonPlan:
        """The structured-output layout of `schema` and up to `candidates - 1` others the model may
        choose instead (None: DEFAULT_CANDIDATES); a schema we cannot lay out is a FieldError."""
        candidates = _count(candidates, DEFAULT_CANDIDATES, MAX_CANDIDATES, "json_candidates")
        if self.codec is None:
            raise FieldError("structured output needs the checkpoint's tokenizer.json", field)
        strings = _count(max_string_tokens, DEFAULT_STRING_TOKENS, MAX_STRING_TOKENS, "max_string_tokens")
        try:
            return plan_json(
                schema,
                self.codec,
                self.defaults.pad_token_id,
                self.defaults.eos_token_ids,
                strings,
                candidates,
            )
        except ValueError as err:
            raise FieldError(str(err), field) from None

    def json_jobs(
        self,
        prompts: list[list[int]],
        plan: JsonPlan,
        rounds: int | None = None,
        max_new_tokens: int | None = None,
        length_field: str = "max_new_tokens",
        **kwargs: Any,
    ) -> list[JsonJob]:
        """One structured job per request; `max_new_tokens` is a cap the layout must fit under."""
        rounds = _count(rounds, DEFAULT_ROUNDS, MAX_JSON_ROUNDS, "json_rounds")
        layout = len(plan.tokens)
        if max_new_tokens is not None and max_new_tokens < layout:
            raise FieldError(
                f"the schema lays out to {layout} tokens; `{length_field}` is {max_new_tokens}", length_field
            )
        if kwargs.pop("eos_token_ids", None) is not None:
            raise FieldError(
                "`eos_token_ids` does not apply to structured output: the layout ends it", "eos_token_ids"
            )
        requests = self.requests(
            prompts, max_new_tokens=layout, eos_token_ids=(), length_field=length_field, **kwargs
        )
        # candidates may be longer than the rules' layout, within its canvases and the cap: the
        # request then takes no more cache room than that layout's
        room = -(-layout // self.canvas_length) * self.canvas_length
        cap = room if max_new_tokens is None else min(room, max_new_tokens)
        others = [alt for alt in plan.alternatives if len(alt.tokens) <= cap]
        return [JsonJob(plan, r, rounds, others) for r in requests]


def _count(value: Any, default: int, most: int, name: str) -> int:
    """A structured-output count setting: `default` for None, else an integer in [1, most]."""
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise FieldError(f"`{name}` must be an integer in [1, {most}], got {value!r}", name)
    return value
