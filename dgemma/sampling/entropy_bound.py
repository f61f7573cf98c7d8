"""Entropy-bound acceptance (arXiv:2505.24857) and uniform renoising, as the reference's EntropyBoundSampler.

Per canvas, positions are sorted by the entropy of their (temperature-scaled) distribution and the
k lowest are accepted, the largest k with  sum_{i<=k} H_i - max_{i<=k} H_i <= entropy_bound.
Everything not accepted is replaced by a fresh uniformly random token (no mask token exists).
"""

from __future__ import annotations

import torch


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis, computed as torch.distributions.Categorical does."""
    normalized = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(normalized, dim=-1)
    clamped = torch.clamp(normalized, min=torch.finfo(normalized.dtype).min)
    return -(clamped * probs).sum(-1)


def accept_mask(entropy: torch.Tensor, entropy_bound: float) -> torch.Tensor:
    """Boolean mask (..., C) of the positions accepted under the entropy bound."""
    sorted_entropy, order = torch.sort(entropy, dim=-1, descending=False)
    # sorted ascending, so the running maximum of the first k is the k-th entry
    selected = torch.cumsum(sorted_entropy, dim=-1) - sorted_entropy <= entropy_bound
    return torch.zeros_like(selected).scatter(-1, order, selected)


def renoise(
    canvas: torch.Tensor, keep: torch.Tensor, vocab_size: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Replace every position not in `keep` by a uniformly random token; draws a full canvas of noise."""
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator, device=canvas.device)
    return torch.where(keep, canvas, noise)
