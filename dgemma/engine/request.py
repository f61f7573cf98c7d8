"""A generation request as the engine sees it: token ids and settings, no text."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dgemma.config import ModelConfig, SamplerConfig


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_new_tokens: int
    sampler: SamplerConfig
    seed: int
    eos_token_ids: tuple[int, ...]
    temperature: float = 0.0  # autoregressive mode only: 0 is greedy

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
        need = slots_needed(req)
        if need > config.max_position_embeddings:
            raise ValueError(
                f"request {i}: prompt ({len(req.prompt)} tokens) plus `max_new_tokens` ({req.max_new_tokens}) needs "
                f"{need} positions; the model allows {config.max_position_embeddings}"
            )
        capacity = max(capacity, need)
    return capacity
