"""The Python API: `dgemma.load(DIR)` and the `Model` it returns (text in, text out).

This is the one layer that joins tokenization and the engine: prompts become token ids here,
requests go to the diffusion or autoregressive loop, and completions come back as text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from dgemma import editing
from dgemma.config import GenerationDefaults, ModelConfig, SamplerConfig
from dgemma.config.files import inside, read_json
from dgemma.engine.autoregressive import run_autoregressive
from dgemma.engine.cache import KVCache
from dgemma.engine.diffusion import run_diffusion
from dgemma.engine.events import DoneEvent, Event
from dgemma.engine.passes import decode_rows, encode_rows
from dgemma.engine.request import Request
from dgemma.engine.results import Completion, FinishReason, RowStats
from dgemma.generation.prompts import seeds_for
from dgemma.model import DiffusionGemma, load_model
from dgemma.structured.generate import DEFAULT_ROUNDS, JsonJob, plan_json, run_json
from dgemma.structured.slots import DEFAULT_STRING_TOKENS
from dgemma.text import TextCodec


class Mode(StrEnum):
    DIFFUSION = "diffusion"
    AR = "ar"


@dataclass
class GenerationOutput:
    """One entry per prompt, in order."""

    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[FinishReason]
    stats: list[RowStats]

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "token_ids": self.token_ids,
            "finish_reasons": [f.value for f in self.finish_reasons],
            "stats": [s.to_dict() for s in self.stats],
        }


def load(
    path: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> Model:
    """Load a DiffusionGemma checkpoint directory (Hugging Face layout).

    Args:
        path: directory with config.json, safetensors weights, and optionally generation_config.json,
            tokenizer.json, tokenizer_config.json and chat_template.jinja.
        dtype: "float32", "bfloat16" or "float16"; default float32 on the CPU, bfloat16 elsewhere.
        device: where the weights live, e.g. "cpu" or "cuda".
        compile: run the encoder and decoder passes through torch.compile; the first generation
            then takes longer (compilation), later ones run faster.
    """
    path = Path(path)
    model, _ = load_model(path, dtype=dtype, device=device)
    if compile:
        model.compile()
    gen = read_json(inside(path, "generation_config.json"), required=False)
    try:
        sampler = SamplerConfig.from_generation_config(gen)
    except ValueError as err:
        raise ValueError(f"{path / 'generation_config.json'}: {err}") from None
    codec = TextCodec.from_dir(path) if inside(path, "tokenizer.json").is_file() else None
    return Model(model, codec, sampler, GenerationDefaults.from_generation_config(gen, model.config))


class Model:
    """A loaded checkpoint: the network, its tokenizer and its generation defaults."""

    def __init__(
        self,
        model: DiffusionGemma,
        codec: TextCodec | None,
        sampler: SamplerConfig,
        defaults: GenerationDefaults,
    ):
        self.model = model
        self.codec = codec
        self.sampler_defaults = sampler
        self.defaults = defaults

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def tokenize(self, prompts: Any, raw: bool = False) -> list[list[int]]:
        """Prompts (text, chat messages, or token ids; one or many) as lists of token ids."""
        return [self._tokenize_one(p, raw) for p in _as_prompt_list(prompts)]

    def requests(
        self,
        prompts: Any,
        max_new_tokens: int | None = None,
        seed: int | Sequence[int] | None = 0,
        raw: bool = False,
        temperature: float = 0.0,
        eos_token_ids: Sequence[int] | None = None,
        **sampler_overrides: Any,
    ) -> list[Request]:
        """Engine requests for prompts; sampler settings not given come from generation_config.json."""
        ids = self.tokenize(prompts, raw)
        sampler = self.sampler_defaults.replace(**sampler_overrides)
        seeds = seeds_for(seed, len(ids))
        max_new = self.defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
        eos = self.defaults.eos_token_ids if eos_token_ids is None else tuple(int(t) for t in eos_token_ids)
        return [Request(p, max_new, sampler, s, eos, temperature) for p, s in zip(ids, seeds, strict=True)]

    def stream(
        self, prompts: Any, mode: Mode | str = Mode.DIFFUSION, drafts: bool = True, **kwargs: Any
    ) -> Iterator[Event]:
        """Run generation and yield its events (drafts, commits, then a Done event with completions)."""
        requests = self.requests(prompts, **kwargs)
        if Mode(mode) is Mode.AR:
            return run_autoregressive(self.model, requests)
        return run_diffusion(self.model, requests, emit_drafts=drafts)

    def generate(
        self,
        prompts: Any,
        mode: Mode | str = Mode.DIFFUSION,
        json_schema: dict[str, Any] | None = None,
        json_rounds: int = DEFAULT_ROUNDS,
        max_string_tokens: int = DEFAULT_STRING_TOKENS,
        **kwargs: Any,
    ) -> GenerationOutput:
        """Generate for one prompt or a batch.

        Args:
            prompts: a string, a chat (list of {role, content}), a list of token ids, or a list of any of these.
                Strings are wrapped in the chat template as one user turn unless `raw=True`.
            mode: "diffusion" (block diffusion) or "ar" (next-token decoding on the same weights).
            max_new_tokens: tokens to generate at most (default from generation_config.json).
            seed: an int (prompt i uses seed + i), a list with one seed per prompt, or None for random.
            raw: tokenize strings as they are, without the chat template.
            temperature: autoregressive mode only; 0 is greedy.
            eos_token_ids: tokens that end generation (default from generation_config.json).
            json_schema: a JSON Schema (the subset in docs/structured.md); every text then parses and
                validates against it. `max_new_tokens` and `eos_token_ids` do not apply: the schema's
                layout sets the length.
            json_rounds: generation rounds at most for a schema (invalid slots are renoised between
                rounds; after the last, they are set to the nearest valid value).
            max_string_tokens: token positions of a string value without a smaller `maxLength`.
            **sampler_overrides: max_denoising_steps, entropy_bound, t_min, t_max, stability_threshold,
                confidence_threshold.
        """
        if json_schema is not None:
            return self._generate_json(prompts, mode, json_schema, json_rounds, max_string_tokens, kwargs)
        done = None
        for event in self.stream(prompts, mode=mode, drafts=False, **kwargs):
            if isinstance(event, DoneEvent):
                done = event
        return self.finish(done.completions)

    def json_jobs(
        self, prompts: Any, json_schema: Any, json_rounds: int, max_string_tokens: int, **kwargs: Any
    ) -> list[JsonJob]:
        """One structured-output job per prompt (the server runs these through its own engine)."""
        if self.codec is None:
            raise ValueError("`json_schema` needs the checkpoint's tokenizer.json")
        if kwargs.pop("eos_token_ids", None) is not None:
            raise ValueError("`eos_token_ids` does not apply with `json_schema`: the layout ends the output")
        cap = kwargs.pop("max_new_tokens", None)  # a cap, as the server's max_tokens: the layout must fit
        if (
            isinstance(max_string_tokens, bool)
            or not isinstance(max_string_tokens, int)
            or max_string_tokens < 1
        ):
            raise ValueError(f"`max_string_tokens` must be a positive integer, got {max_string_tokens!r}")
        plan = plan_json(
            json_schema,
            self.codec,
            self.defaults.pad_token_id,
            self.defaults.eos_token_ids,
            max_string_tokens,
        )
        if cap is not None and len(plan.tokens) > cap:
            raise ValueError(
                f"`json_schema` lays out to {len(plan.tokens)} tokens; `max_new_tokens` is {cap}"
            )
        if len(plan.tokens) > self.defaults.max_new_tokens * 64:
            raise ValueError(f"`json_schema` lays out to {len(plan.tokens)} tokens; that is too long")
        requests = self.requests(prompts, max_new_tokens=len(plan.tokens), eos_token_ids=[], **kwargs)
        return [JsonJob(plan, r, json_rounds) for r in requests]

    def _generate_json(self, prompts, mode, schema, rounds, max_string_tokens, kwargs) -> GenerationOutput:
        if Mode(mode) is not Mode.DIFFUSION:
            raise ValueError("`json_schema` needs diffusion mode: the layout is clamped into the canvas")
        jobs = self.json_jobs(prompts, schema, rounds, max_string_tokens, **kwargs)
        run_json(self.model, jobs)
        return GenerationOutput(
            [j.text() for j in jobs],
            [j.tokens for j in jobs],
            [FinishReason.STOP for _ in jobs],
            [j.stats for j in jobs],
        )

    def infill(self, prefix: str, suffix: str, length: int | str = "auto", **kwargs: Any):
        """Fill the gap between prefix and suffix (see `dgemma.editing.infill`); returns an InfillResult."""
        return editing.infill(self, prefix, suffix, length, **kwargs)

    def edit(self, text: str, start: int, end: int, length: int | str = "auto", **kwargs: Any):
        """Regenerate text[start:end] in place, keeping the rest byte for byte (see `dgemma.editing.edit`)."""
        return editing.edit(self, text, start, end, length, **kwargs)

    def finish(self, completions: list[Completion]) -> GenerationOutput:
        texts = [self.codec.decode(c.token_ids) if self.codec else "" for c in completions]
        return GenerationOutput(
            texts,
            [c.token_ids for c in completions],
            [c.finish_reason for c in completions],
            [c.stats for c in completions],
        )

    @torch.inference_mode()
    def encoder_logits(self, input_ids: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal LM logits (B, T, V) of the encoder; positions the mask excludes are zero."""
        rows, layout = _ragged(input_ids, attention_mask)
        cache = self._cache(rows, extra=0)
        hidden, _ = encode_rows(self.model, cache, list(range(len(rows))), rows)
        logits = self.model.logits(hidden)
        out = torch.zeros(*layout.shape, self.config.vocab_size, device=logits.device)
        for i, positions in enumerate(layout):
            where = positions.nonzero().squeeze(-1)
            out[i, where] = logits[i, : len(where)]
        return out

    @torch.inference_mode()
    def decoder_logits(
        self,
        input_ids: Any,
        canvas: torch.Tensor,
        self_conditioning_logits: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Canvas logits (B, C, V) of the decoder given each prompt as the cached prefix."""
        rows, _ = _ragged(input_ids, attention_mask)
        canvas = torch.as_tensor(canvas, dtype=torch.long, device=self.model.device)
        if canvas.ndim != 2 or canvas.shape[0] != len(rows):
            raise ValueError(f"`canvas` must have shape (batch={len(rows)}, C), got {tuple(canvas.shape)}")
        cache = self._cache(rows, extra=canvas.shape[1])
        encode_rows(self.model, cache, list(range(len(rows))), rows)
        soft = None
        if self_conditioning_logits is not None:
            soft = self.model.soft_embedding(self_conditioning_logits.to(self.model.device))
        hidden = decode_rows(self.model, cache, list(range(len(rows))), canvas, soft)
        return self.model.logits(hidden)

    def _cache(self, rows: list[list[int]], extra: int) -> KVCache:
        capacity = max(len(r) for r in rows) + extra
        return KVCache(self.config, len(rows), capacity, self.model.dtype, self.model.device)

    def _tokenize_one(self, prompt: Any, raw: bool) -> list[int]:
        if isinstance(prompt, str):
            if self.codec is None:
                raise ValueError("this checkpoint has no tokenizer.json; pass token ids instead of text")
            if raw:
                return self.codec.encode_raw(prompt)
            return self.codec.encode_chat([{"role": "user", "content": prompt}])
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            if self.codec is None:
                raise ValueError("this checkpoint has no tokenizer.json; chat messages need one")
            return self.codec.encode_chat(prompt)
        ids = list(prompt)
        if not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise ValueError("`prompts`: a token-id prompt must be a non-empty list of integers")
        return ids


def _as_prompt_list(prompts: Any) -> list[Any]:
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist() if prompts.ndim == 2 else [prompts.tolist()]
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(
            "`prompts` must be a string, a chat, a list of token ids, or a non-empty list of these"
        )
    first = prompts[0]
    if isinstance(first, int | dict):  # one token-id prompt, or one chat
        return [list(prompts)]
    return list(prompts)


def _ragged(input_ids: Any, attention_mask: torch.Tensor | None) -> tuple[list[list[int]], torch.Tensor]:
    """Rows of real token ids, and a (B, T) bool layout of where they sit in the input."""
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids if input_ids.ndim == 2 else input_ids[None]
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if mask.shape != ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(mask.shape)} differs from `input_ids` {tuple(ids.shape)}"
            )
        rows = [ids[i][mask[i]].tolist() for i in range(ids.shape[0])]
        layout = mask.cpu()
    else:
        rows = [list(r) for r in _as_prompt_list(input_ids)]
        width = max(len(r) for r in rows)
        layout = torch.tensor([[j < len(r) for j in range(width)] for r in rows])
    if any(not r for r in rows):
        raise ValueError("`input_ids`: every row needs at least one token")
    return rows, layout
