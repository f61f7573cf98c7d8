"""One denoising step of one canvas, composed from the pure functions of this package.

The order of random draws matches the reference's `_denoising_step` for a single row: one
categorical sample per position, then one canvas of uniform noise, from the row's own generator
(the categorical sample as torch.multinomial makes it with `draw="reference"`; by inverse CDF, from
the same distribution, by default).
The full-vocabulary work is passes that read the logits (softmax, argmax), one that writes the
entropy's products over them, and one that writes the draw's noise there: no other
vocabulary-sized temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dgemma.config import SamplerConfig
from dgemma.sampling.constraints import CanvasConstraint
from dgemma.sampling.draws import inverse_cdf_draw, reference_draw
from dgemma.sampling.entropy_bound import accept_mask, entropy_from_probs_, renoise
from dgemma.sampling.schedule import linear_temperature
from dgemma.sampling.stopping import is_confident, is_stable, push_history


@dataclass
class StepOutput:
    canvas: torch.Tensor  # (C,) the next noisy canvas
    argmax: (
        torch.Tensor
    )  # (C,) the model's current best guess: the draft, and the committed canvas at the end
    probs: torch.Tensor  # (C, V) float32 softmax of the processed logits: the self-conditioning input
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
    probs_out: torch.Tensor | None = None,
) -> StepOutput:
    """Advance one canvas (C,) given the decoder's raw float32 logits (C, V) for it.

    `logits` is consumed: its buffer holds the temperature-scaled logits and then the draw's noise,
    so a row's step needs two full-vocabulary float32 tensors (that one and the probabilities).
    With `sampler.draw == "reference"` and no constraint every draw is the reference's (the same
    generator calls on the same probabilities); with a constraint, clamped positions keep their tokens and take no entropy budget, and
    allowed sets limit what a position can become. `probs_out`: a (C, V) float32 buffer the
    probabilities are written into (the returned `probs` is then that buffer).
    """
    temperature = linear_temperature(
        steps_remaining, sampler.max_denoising_steps, sampler.t_min, sampler.t_max
    )
    processed = logits.div_(temperature)
    if constraint is not None:
        constraint.mask_logits_(processed)
    probs = torch.softmax(processed, dim=-1, dtype=torch.float32, out=probs_out)
    top, argmax = processed.max(dim=-1)  # the first of equal maxima, as argmax
    entropy = entropy_from_probs_(processed, probs, top, argmax)  # `processed` is spent from here on
    if not bool(torch.isfinite(entropy).all()):  # NaN / inf anywhere in a row's logits reach it
        raise FloatingPointError("the model's logits are not finite (NaN or inf): check the weights")
    draw = reference_draw if sampler.draw == "reference" else inverse_cdf_draw
    proposal = draw(probs, processed, generator)  # its buffer holds the draw's noise
    accepted = accept_mask(entropy, sampler.entropy_bound)
    next_canvas = renoise(torch.where(accepted, proposal, canvas), accepted, logits.shape[-1], generator)
    if constraint is not None:
        next_canvas = constraint.clamp(next_canvas)
    stable = True
    if sampler.stability_threshold > 0:
        stable = is_stable(history, argmax)
        history = push_history(history, argmax)
    stop = stable and is_confident(entropy, sampler.confidence_threshold)
    return StepOutput(next_canvas, argmax, probs, accepted, history, entropy, float(temperature), stop)
