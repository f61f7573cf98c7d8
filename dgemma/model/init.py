"""Fresh random weights, for training a DiffusionGemma from scratch."""

from __future__ import annotations

import torch

from dgemma.config import ModelConfig
from dgemma.model.transformer import DiffusionGemma


def init_model(
    config: ModelConfig, seed: int, std: float = 0.02, device: str | torch.device = "cpu"
) -> DiffusionGemma:
    """A model with normal(0, std) matrices and embeddings, unit norms and scales, unit layer scalars."""
    g = torch.Generator().manual_seed(seed)
    with torch.device(device):
        model = DiffusionGemma(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
            else:  # norm weights, router scales, per-expert scales
                p.fill_(1.0)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.fill_(1.0)
    return model.eval().requires_grad_(False)
