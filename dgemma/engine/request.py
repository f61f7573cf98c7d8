"""A generation request as the engine sees it: token ids and settings, no text."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dgemma.config import ModelConfig, SamplerConfig
from dgemma.sampling.constraints import CanvasConstraint

MAX_TOP_LOGPROBS = 20


def top_logprobs_problem(value: object, field: str = "logprobs") -> str | None:
    """Why `value` is not None or an alternatives count in [0, MAX_TOP_LOGPROBS], else None."""
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOP_LOGPROBS
    ):
        return None
    return f"`{field}` must be an integer in [0, {MAX_TOP_LOGPROBS}], got {value!r}"[:200]


@dataclass(frozen=True, eq=False)
class ImageInput:
    """One preprocessed image: patches (P, 3 p^2) in [0, 1], their (x, y) positions (P, 2) with
    (-1, -1) for padding, and how many soft tokens (image-token positions) it fills in the prompt."""

    pixel_values: torch.Tensor
    positions: torch.Tensor
    num_soft_tokens: int


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_new_tokens: int
    sampler: SamplerConfig
    seed: int
    eos_token_ids: tuple[int, ...]
    temperature: float = 0.0  # autoregressive mode only: 0 is greedy
    # constraints on generated positions (0 = the first generated token), diffusion mode only
    fixed: dict[int, int] | None = None  # position -> token it is clamped to
    allowed: dict[int, tuple[int, ...]] | None = None  # position -> the tokens it may become
    banned: tuple[int, ...] = ()  # tokens no unclamped position may become
    # per generated token: its log-probability and this many top alternatives (None: none kept)
    logprobs: int | None = None
    # the prompt's images, in the order of their runs of image tokens
    images: tuple[ImageInput, ...] = ()
    # score each canvas by its clamped tokens' log-probability (RowStats.fixed_logprob; candidate layouts)
    score_fixed: bool = False

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("`prompt` must hold at least one token")
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or self.max_new_tokens < 1
        ):
            raise ValueError(f"`max_new_tokens` must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature < 0 or not math.isfinite(self.temperature):
            raise ValueError(f"`temperature` must be a finite number >= 0, got {self.temperature!r}")
        if (problem := top_logprobs_problem(self.logprobs)) is not None:
            raise ValueError(problem)
        for name, table in (("fixed", self.fixed or {}), ("allowed", self.allowed or {})):
            for pos in table:
                if not 0 <= pos < self.max_new_tokens:
                    raise ValueError(
                        f"`{name}` position {pos} is outside the {self.max_new_tokens} generated tokens"
                    )
        for pos, tokens in (self.allowed or {}).items():
            if not tokens:
                raise ValueError(f"`allowed` gives position {pos} no token")

    def constraint(self, canvas_index: int, canvas_length: int, vocab_size: int, device: torch.device):
        """The CanvasConstraint of canvas `canvas_index`, or None when the request has no constraints."""
        if not self.fixed and not self.allowed and not self.banned:
            return None
        start = canvas_index * canvas_length
        fixed = torch.zeros(canvas_length, dtype=torch.bool, device=device)
        tokens = torch.zeros(canvas_length, dtype=torch.long, device=device)
        for pos, tok in (self.fixed or {}).items():
            if start <= pos < start + canvas_length:
                fixed[pos - start], tokens[pos - start] = True, tok
        allowed = None
        local = {p - start: t for p, t in (self.allowed or {}).items() if start <= p < start + canvas_length}
        if local or self.banned:
            allowed = torch.ones(canvas_length, vocab_size, dtype=torch.bool, device=device)
            if self.banned:
                allowed[:, torch.as_tensor(self.banned, device=device)] = False
            for pos, toks in local.items():
                allowed[pos] = False
                allowed[pos, torch.as_tensor(toks, device=device)] = True
        return CanvasConstraint(fixed, tokens, allowed, min(canvas_length, self.max_new_tokens - start))

    def generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)


def check_fits(requests: list[Request], config: ModelConfig, slots_needed) -> int:
    """Slots per cache row for this batch; a request past the model's context limit is a ValueError."""
    capacity = 0
    for i, req in enumerate(requests):
        for tok in req.prompt:
            if not 0 <= tok < config.vocab_size:
                raise ValueError(
                    f"request {i}: prompt token id {tok} is outside the vocabulary (0..{config.vocab_size - 1})"
                )
        for tok in list((req.fixed or {}).values()) + [t for ts in (req.allowed or {}).values() for t in ts]:
            if not 0 <= tok < config.vocab_size:
                raise ValueError(f"request {i}: constrained token id {tok} is outside the vocabulary")
        if req.images:
            if config.vision is None:
                raise ValueError(
                    f"request {i}: this model's config declares no vision tower; it takes text only"
                )
            placed = req.prompt.count(config.vision.image_token_id)
            fills = sum(im.num_soft_tokens for im in req.images)
            if placed != fills:
                raise ValueError(
                    f"request {i}: the prompt has {placed} image-token positions; its images fill {fills}"
                )
        need = slots_needed(req)
        if need > config.max_position_embeddings:
            raise ValueError(
                f"request {i}: prompt ({len(req.prompt)} tokens) plus `max_new_tokens` ({req.max_new_tokens}) needs "
                f"{need} positions; the model allows {config.max_position_embeddings}"
            )
        capacity = max(capacity, need)
    return capacity
