"""LoRA adapters as weight parametrizations: W -> W + (alpha / r) B A, merged into W on export.

A parametrization (rather than a wrapper module) keeps the model code untouched: every read of
`module.weight` sees the adapted weight. B starts at zero, so training starts from the base model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRADelta(nn.Module):
    def __init__(
        self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator
    ):
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.scale * (self.B @ self.A)).to(weight.dtype)


def apply_lora(
    model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = DEFAULT_TARGETS, seed: int = 0
) -> list[str]:
    """Freeze the model and add adapters to every nn.Linear whose name ends in one of `targets`."""
    if rank < 1:
        raise ValueError(f"`lora_rank` must be >= 1, got {rank}")
    unknown = set(targets) - set(DEFAULT_TARGETS)
    if unknown:
        raise ValueError(
            f"unknown LoRA target(s) {sorted(unknown)}; choose from {', '.join(DEFAULT_TARGETS)}"
        )
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    adapted = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            out_f, in_f = module.weight.shape
            delta = LoRADelta(out_f, in_f, rank, alpha, g).to(module.weight.device)
            parametrize.register_parametrization(module, "weight", delta)
            adapted.append(name)
    if not adapted:
        raise ValueError(f"no module matches the LoRA targets {targets}")
    return adapted


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its weight and drop the parametrization; returns how many were merged."""
    merged = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            merged += 1
    return merged
