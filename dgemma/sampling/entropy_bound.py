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


def entropy_from_probs_(
    logits: torch.Tensor, probs: torch.Tensor, top: torch.Tensor, argmax: torch.Tensor
) -> torch.Tensor:
    """token_entropy(logits) (C,) from probs = softmax(logits) and the logits' maxima `top` at
    `argmax`, without another vocabulary-sized tensor; `logits` is spent (it holds p_v z_v afterwards).

    H = lse - sum_v p_v z_v, where lse = z_a - log p_a at the argmax a (exact: p_a = exp(z_a - lse)).
    The products are written over the logits and summed: on a CPU a batched dot product of one
    row per position runs ~4x slower. Masked entries must be finite (see mask_logits_): their p_v
    is exactly 0, and 0 * finite adds nothing. Agrees with token_entropy to float32 rounding.
    """
    lse = top - probs.gather(-1, argmax.unsqueeze(-1)).squeeze(-1).log()
    dot = logits.mul_(probs).sum(dim=-1)
    return (lse - dot).clamp_(min=0.0)


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
