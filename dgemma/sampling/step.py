"""One denoising step of one canvas, composed from the pure functions of this package.

The order of random draws matches the reference's `_denoising_step` for a single row: one
categorical sample per position, then one canvas of uniform noise, from the row's own generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dgemma.config import SamplerConfig
from dgemma.sampling.constraints import CanvasConstraint
from dgemma.sampling.entropy_bound import accept_mask, renoise, token_entropy
from dgemma.sampling.schedule import linear_temperature
from dgemma.sampling.stopping import is_confident, is_stable, push_history


@dataclass
class StepOutput:
    canvas: torch.Tensor  # (C,) the next noisy canvas
    argmax: (
        torch.Tensor
    )  # (C,) the model's current best guess: the draft, and the committed canvas at the end
    processed_logits: torch.Tensor  # (C, V) temperature-scaled logits: the self-conditioning input
    accepted: torch.Tensor  # (C,) bool
    history: torch.Tensor  # (S, C) argmax history after this step
    entropy: torch.Tensor  # (C,) entropy of each position's processed distribution
    temperature: float
    stop: bool


def denoise_step(
    logits: torch.Tensor,
    canvas: torch.Tensor,
    history: torch.Tensor,
    steps_remaining: int,
    sampler: SamplerConfig,
    generator: torch.Generator | None,
    constraint: CanvasConstraint | None = None,
) -> StepOutput:
    """Advance one canvas (C,) given the decoder's raw float32 logits (C, V) for it.

    Without a constraint every draw and decision is the reference's; with one, clamped positions
    keep their tokens and take no entropy budget, and allowed sets limit what a position can become.
    """
    temperature = linear_temperature(
        steps_remaining, sampler.max_denoising_steps, sampler.t_min, sampler.t_max
    )
    processed = logits / temperature
    if constraint is not None:
        processed = constraint.mask_logits(processed)
    probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
    proposal = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    argmax = processed.argmax(dim=-1)
    entropy = token_entropy(processed)
    accepted = accept_mask(entropy, sampler.entropy_bound)
    next_canvas = renoise(torch.where(accepted, proposal, canvas), accepted, logits.shape[-1], generator)
    if constraint is not None:
        next_canvas = constraint.clamp(next_canvas)
    stable = True
    if sampler.stability_threshold > 0:
        stable = is_stable(history, argmax)
        history = push_history(history, argmax)
    stop = stable and is_confident(entropy, sampler.confidence_threshold)
    return StepOutput(next_canvas, argmax, processed, accepted, history, entropy, float(temperature), stop)
