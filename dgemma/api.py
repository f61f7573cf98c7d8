"""The Python API: `dgemma.load(DIR)` and the `Model` it returns (text in, text out).

A facade over `dgemma.generation`: prompts become requests by its rules (`prompts`), run through
its one runner (`run`), infilling and structured output included; the logits methods expose the
encoder and decoder passes for parity checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dgemma.api_logits import LogitsMethods, as_prompt_list
from dgemma.config import GenerationDefaults, ModelConfig, SamplerConfig
from dgemma.config.files import inside, read_json
from dgemma.config.vision import VisionConfig
from dgemma.engine.events import Event
from dgemma.engine.logprobs import prompt_logprobs
from dgemma.engine.request import Request
from dgemma.engine.results import Completion, TokenLogprob
from dgemma.generation import infill as infilling
from dgemma.generation import run
from dgemma.generation.auto_tools import AutoTools, run_auto_tools
from dgemma.generation.prompts import RequestBuilder, check_top_logprobs
from dgemma.generation.reasoning import ReasoningFormat, thinking_kwargs
from dgemma.generation.run import GenerationOutput, Mode
from dgemma.generation.tools import auto_tools, check_stages, forced_tools, run_tool_calls
from dgemma.images.processor import ImageProcessor, image_processor_for
from dgemma.model import DiffusionGemma, load_model
from dgemma.quant import QuantScheme
from dgemma.structured.generate import JsonJob
from dgemma.structured.json_object import as_json_object
from dgemma.text import TextCodec
from dgemma.train.peft_format import merge_adapter

__all__ = ["GenerationOutput", "Mode", "Model", "load"]


def load(
    path: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    compile: bool = False,
    quantize: str | None = None,
    group_size: int | None = None,
    adapter: str | Path | None = None,
    quantize_components: tuple[str, ...] | list[str] | None = None,
) -> Model:
    """Load a DiffusionGemma checkpoint directory (Hugging Face layout).

    Args:
        path: directory with config.json, the weights (safetensors, plain or quantized with
            compressed-tensors, or one GGUF file), and optionally generation_config.json,
            tokenizer.json, tokenizer_config.json and chat_template.jinja; or a .gguf file in
            such a directory (docs/quantization.md).
        dtype: "float32", "bfloat16" or "float16"; default float32 on the CPU, bfloat16 elsewhere.
        device: where the weights live, e.g. "cpu" or "cuda".
        compile: run the encoder and decoder passes through torch.compile; the first generation
            then takes longer (compilation), later ones run faster.
        quantize: "int8" (per output channel) or "int4" (per `group_size` inputs, default 32)
            weight-only quantization of the experts, attention and dense MLP, applied tensor by
            tensor as the weights load (docs/quantization.md); None keeps full precision.
        quantize_components: what `quantize` applies to, from "experts", "attention", "mlp"
            (the default: all three) and "vision" (the vision tower's projections).
        adapter: a LoRA adapter directory in PEFT's format (adapter_config.json and
            adapter_model.safetensors, as `dgemma train --lora-rank` and `peft` write them),
            merged into the weights at load.
    """
    path = Path(path)
    scheme = QuantScheme.parse(quantize, group_size, quantize_components)
    if adapter is not None and scheme is not None:
        raise ValueError(
            "`adapter` with `quantize`: merge the adapter first (dgemma.load + export), then quantize"
        )
    model, _ = load_model(path, dtype=dtype, device=device, quantize=scheme)
    if path.is_file():  # a GGUF file: its config, tokenizer and chat template are beside it
        path = path.parent
    if adapter is not None:
        merge_adapter(model, adapter)
    if compile:
        model.compile()
    gen = read_json(inside(path, "generation_config.json"), required=False)
    try:
        sampler = SamplerConfig.from_generation_config(gen)
    except ValueError as err:
        raise ValueError(f"{path / 'generation_config.json'}: {err}") from None
    codec = TextCodec.from_dir(path) if inside(path, "tokenizer.json").is_file() else None
    images = image_processor_for(path, model.config.vision) if model.vision_tower is not None else None
    return Model(model, codec, sampler, GenerationDefaults.from_generation_config(gen, model.config), images)


class Model(LogitsMethods):
    """A loaded checkpoint: the network, its tokenizer and its generation defaults."""

    def __init__(
        self,
        model: DiffusionGemma,
        codec: TextCodec | None,
        sampler: SamplerConfig,
        defaults: GenerationDefaults,
        images: ImageProcessor | None = None,
    ):
        self.model = model
        self.codec = codec
        self.sampler_defaults = sampler
        self.defaults = defaults
        self.builder = RequestBuilder(
            codec,
            sampler,
            defaults,
            model.config.vocab_size,
            model.config.canvas_length,
            model.config.max_position_embeddings,
            vision=(vision := _usable_vision(model)),
            images=None if vision is None else images or ImageProcessor.for_model(vision),
        )
        # the reasoning channel of the checkpoint's chat format, None without a thinking switch
        self.reasoning = ReasoningFormat.of(codec)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def tokenize(
        self,
        prompts: Any,
        raw: bool = False,
        tools: list | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[list[int]]:
        """Prompts (text, chat messages, or token ids; one or many) as lists of token ids;
        `chat_template_kwargs` are extra chat-template variables (`enable_thinking`)."""
        return [
            self.builder.prompt_ids(p, raw, tools=tools, template_kwargs=chat_template_kwargs)
            for p in as_prompt_list(prompts)
        ]

    def requests(
        self,
        prompts: Any,
        max_new_tokens: int | None = None,
        seed: int | Sequence[int] | None = 0,
        raw: bool = False,
        temperature: float | None = None,
        eos_token_ids: Sequence[int] | None = None,
        logprobs: int | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        tools: list | None = None,
        **sampler_overrides: Any,
    ) -> list[Request]:
        """Engine requests for prompts, by the rules of `dgemma.generation.prompts` (the server's too)."""
        return self.builder.requests(
            self.tokenize(prompts, raw, tools, chat_template_kwargs),
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            eos_token_ids=eos_token_ids,
            sampler=sampler_overrides,
            logprobs=logprobs,
        )

    def stream(
        self, prompts: Any, mode: Mode | str = Mode.DIFFUSION, drafts: bool = True, **kwargs: Any
    ) -> Iterator[Event]:
        """Run generation and yield its events (drafts, commits, then a Done event with completions)."""
        return run.stream(self.model, self.requests(prompts, **kwargs), _mode(mode), drafts)

    def generate(
        self,
        prompts: Any,
        mode: Mode | str = Mode.DIFFUSION,
        json_schema: dict[str, Any] | None = None,
        json_rounds: int | None = None,
        max_string_tokens: int | None = None,
        json_object: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        enable_thinking: bool | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> GenerationOutput:
        """Generate for one prompt or a batch.

        Args:
            prompts: a string, a chat (list of {role, content}), a list of token ids, or a list of any of these.
                Strings are wrapped in the chat template as one user turn unless `raw=True`.
            mode: "diffusion" (block diffusion) or "ar" (next-token decoding on the same weights).
            max_new_tokens: tokens to generate at most (default from generation_config.json, cut to
                the context); with `json_schema`, a cap the schema's layout must fit under.
            seed: an int (prompt i uses seed + i), a list with one seed per prompt, or None for random.
            raw: tokenize strings as they are, without the chat template.
            temperature: the sampling temperature in both modes (docs/api.md): diffusion runs its
                schedule from T down to T / 2, AR samples every token at T; 0 is greedy. Default:
                the checkpoint's schedule (diffusion), greedy (AR).
            eos_token_ids: tokens that end generation (default from generation_config.json).
            json_schema: a JSON Schema (the subset in docs/structured.md); every text then parses and
                validates against it.
            json_rounds: generation rounds at most for a schema (invalid slots are renoised between
                rounds; after the last, they are set to the nearest valid value). Default 3.
            max_string_tokens: token positions of a string value without a smaller `maxLength`.
            json_candidates: with `json_schema`, layouts the model chooses among where the schema
                leaves a choice (a branch, an optional key, an array length): all run the first
                round as one batch and the one whose literal text the model agrees with most is
                kept (docs/structured.md). Default 4; 1 lays out by the rules alone.
            logprobs: report each generated token's log-probability and this many most likely
                alternatives (`out.logprobs[i][t].logprob`, `.top`): diffusion, under the last
                denoising step of its canvas (the distribution its argmax was read from,
                temperature-scaled); AR, under the softmax it was picked from.
            tools, tool_choice: OpenAI-style function tools and which to call: a named function,
                or "required" (the model picks one): `out.tool_calls[i]` is that one call (name,
                arguments valid against the function's parameters), `out.texts[i]` the arguments;
                "auto" (the default with tools): the model answers freely and may call any number
                of tools in its own syntax; each call to a declared function comes back with
                arguments that validate (renoised under the schema when written wrong),
                `out.texts[i]` is the text outside calls. `parallel_tool_calls=False`: one call at
                most.
            json_object: turn each answer into a JSON object (the object the model wrote, else one
                json-repair recovers, else {"text": answer}: docs/structured.md); `token_ids` stay
                the model's tokens.
            enable_thinking: the chat template's thinking switch (Gemma 4: on writes `<|think|>`
                into the system turn, off closes the prompt with an empty thought block; default:
                the template's own). The reasoning block the model writes is never part of
                `out.texts`: it is in `out.reasoning` (docs/thinking.md).
            chat_template_kwargs: extra variables for the chat template, as transformers'
                apply_chat_template takes them.
            **sampler_overrides: max_denoising_steps, entropy_bound, t_min, t_max, stability_threshold,
                confidence_threshold.
        """
        choice = {"tools": tools, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls}
        called = forced_tools(choice) if tools or tool_choice else None
        template = thinking_kwargs(self.reasoning, enable_thinking, chat_template_kwargs)
        if (free := auto_tools(choice)) is not None:
            if json_schema is not None or json_object or _mode(mode) is not Mode.DIFFUSION:
                raise ValueError(
                    "`tools` take neither `json_schema` nor `json_object`, and need diffusion mode"
                )
            auto = AutoTools.build(self.builder, free, parallel_tool_calls, max_string_tokens, tools)
            requests = self.requests(prompts, chat_template_kwargs=template, tools=tools, **kwargs)
            check_stages(self.builder, [r.prompt for r in requests], auto.plans, None)
            thinking = None if kwargs.get("raw") else self.reasoning
            return run_auto_tools(self.model, self.codec, auto, requests, json_rounds, thinking)
        if called is not None:
            if json_schema is not None or json_object or _mode(mode) is not Mode.DIFFUSION:
                raise ValueError(
                    "`tools` take neither `json_schema` nor `json_object`, and need diffusion mode"
                )
            prompt_ids = self.tokenize(prompts, kwargs.pop("raw", False), tools, template)
            return run_tool_calls(
                self.model,
                self.builder,
                prompt_ids,
                called,
                json_rounds,
                max_string_tokens,
                **_settings(kwargs),
            )
        if json_object and json_schema is not None:
            raise ValueError(
                "`json_object` and `json_schema` cannot be combined: a schema already gives an object"
            )
        if json_schema is not None:
            if _mode(mode) is not Mode.DIFFUSION:
                raise ValueError("`json_schema` needs diffusion mode: the layout is clamped into the canvas")
            jobs = self.json_jobs(
                prompts, json_schema, json_rounds, max_string_tokens, chat_template_kwargs=template, **kwargs
            )
            return run.run_json(self.model, jobs)
        requests = self.requests(prompts, chat_template_kwargs=template, tools=tools, **kwargs)
        out = run.texts(self.codec, run.complete(self.model, requests, _mode(mode)))
        if self.reasoning is not None and not kwargs.get("raw"):
            run.split_reasoning(out, self.codec, self.reasoning, [r.prompt for r in requests])
        if json_object:
            out.texts = [as_json_object(text)[0] for text in out.texts]
        return out

    def json_jobs(
        self,
        prompts: Any,
        json_schema: Any,
        json_rounds: int | None = None,
        max_string_tokens: int | None = None,
        raw: bool = False,
        max_new_tokens: int | None = None,
        json_candidates: int | None = None,
        seed: int | Sequence[int] | None = 0,
        temperature: float | None = None,
        eos_token_ids: Sequence[int] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        **sampler_overrides: Any,
    ) -> list[JsonJob]:
        """One structured-output job per prompt (`max_new_tokens` caps the schema's layout)."""
        plan = self.builder.json_plan(json_schema, max_string_tokens, candidates=json_candidates)
        return self.builder.json_jobs(
            self.tokenize(prompts, raw, chat_template_kwargs=chat_template_kwargs),
            plan,
            json_rounds,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            eos_token_ids=eos_token_ids,
            sampler=sampler_overrides,
        )

    def infill(self, prefix: str, suffix: str, length: int | str = "auto", **kwargs: Any):
        """Fill the gap between prefix and suffix (see `dgemma.generation.infill`); an InfillResult."""
        return infilling.infill(self.model, self.builder, prefix, suffix, length=length, **kwargs)

    def edit(self, text: str, start: int, end: int, length: int | str = "auto", **kwargs: Any):
        """Regenerate text[start:end] in place, keeping the rest byte for byte (`dgemma.generation.infill`)."""
        return infilling.edit(self.model, self.builder, text, start, end, length, **kwargs)

    def finish(
        self, completions: list[Completion], prompts: list[list[int]] | None = None
    ) -> GenerationOutput:
        """Completions (e.g. from the Done event of `stream`) as text; with their `prompts` (token
        ids, as `tokenize` gives them), any reasoning is split off into `out.reasoning`."""
        out = run.texts(self.codec, completions)
        if self.reasoning is not None and prompts is not None:
            run.split_reasoning(out, self.codec, self.reasoning, prompts)
        return out

    @torch.inference_mode()
    def score(self, texts: Any, top: int = 0, raw: bool = True) -> list[list[TokenLogprob | None]]:
        """Log-probability of each token of each text given the tokens before it, from the causal
        encoder (None for the first token); `top` most likely alternatives per token. Texts are
        tokenized as they are (raw=True: no chat template) or given as token ids."""
        check_top_logprobs(top, "top")
        out = []
        for ids in self.tokenize(texts, raw):
            if len(ids) > self.builder.capacity:
                raise ValueError(f"a text has {len(ids)} tokens; the context holds {self.builder.capacity}")
            out.append(prompt_logprobs(self.encoder_logits([ids])[0], ids, top))
        return out


def _usable_vision(model: DiffusionGemma) -> VisionConfig | None:
    """The vision config when the tower is loaded and its image tokens lie in the vocabulary."""
    v = model.config.vision
    if model.vision_tower is None or v is None:
        return None
    ids = (v.image_token_id, v.boi_token_id, v.eoi_token_id)
    return v if max(ids) < model.config.vocab_size else None


def _settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """generate()'s keyword arguments as RequestBuilder.json_jobs takes them."""
    named = ("max_new_tokens", "temperature", "eos_token_ids")
    out = {k: kwargs.pop(k) for k in named if k in kwargs}
    out["seed"] = kwargs.pop("seed", 0)
    return {**out, "sampler": kwargs}


def _mode(mode: Mode | str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise ValueError(f"`mode` must be 'diffusion' or 'ar', got {mode!r}") from None
