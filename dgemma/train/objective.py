"""The DiffusionGemma SFT objective: corrupted canvases denoised block-causally, plus an AR loss.

Per example a noise level t ~ U(eps, 1) is drawn and every supervised canvas position is replaced
by a uniformly random token with probability t (uniform-state diffusion: there is no mask token).
Positions an example marks clean (Sudoku givens, say, which the solver can clamp into the canvas)
stay uncorrupted and carry no loss. The decoder predicts the clean token at every supervised position, corrupted or not: with uniform
noise the model cannot tell which tokens are noise, exactly as at inference, where it reads a
canvas of accepted and renoised tokens. The cross-entropy is an unweighted mean over supervised
positions (no 1/t ELBO weight): the sampler runs the denoiser at every noise level, each level
matters equally to it, and the unweighted loss has far lower variance at small t.

With probability `self_conditioning_prob` per example, a first decoder pass without gradients
produces logits whose softmax-expected embedding conditions the second pass, as the previous
step's logits do at inference; other examples get no signal (a zero soft embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgemma.model import DiffusionGemma
from dgemma.model.blockwise import decode_canvases, encode_full
from dgemma.train.batch import Batch


@dataclass(frozen=True)
class ObjectiveConfig:
    ar_weight: float = 1.0
    self_conditioning_prob: float = 0.5
    min_noise: float = 1e-3  # eps of t ~ U(eps, 1)

    def __post_init__(self) -> None:
        if self.ar_weight < 0:
            raise ValueError(f"`ar_weight` must be >= 0, got {self.ar_weight}")
        if not 0 <= self.self_conditioning_prob <= 1:
            raise ValueError(f"`self_conditioning_prob` must be in [0, 1], got {self.self_conditioning_prob}")
        if not 0 < self.min_noise < 1:
            raise ValueError(f"`min_noise` must be in (0, 1), got {self.min_noise}")


@dataclass
class LossOutput:
    loss: torch.Tensor
    diffusion: torch.Tensor
    ar: torch.Tensor


def corrupt(
    targets: torch.Tensor,
    supervised: torch.Tensor,
    vocab_size: int,
    min_noise: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy canvases (B, n*C) and the per-example noise levels t (B,)."""
    B = targets.shape[0]
    device = targets.device
    t = min_noise + (1 - min_noise) * torch.rand(B, generator=generator, device=device)
    flip = (torch.rand(targets.shape, generator=generator, device=device) < t[:, None]) & supervised
    noise = torch.randint(0, vocab_size, targets.shape, generator=generator, device=device)
    return torch.where(flip, noise, targets), t


def compute_loss(
    model: DiffusionGemma,
    batch: Batch,
    config: ObjectiveConfig,
    generator: torch.Generator,
    encoder_only: bool = False,
) -> LossOutput:
    """The training loss of one batch; `encoder_only` trains the autoregressive baseline (AR loss alone)."""
    ids = batch.ids
    if config.ar_weight == 0 and not encoder_only:
        ids = ids[:, : int(batch.starts.max())]  # canvases read only what precedes them
    encoder_hidden, contexts = encode_full(model, ids)
    ar = torch.zeros((), device=ids.device)
    if config.ar_weight > 0 or encoder_only:
        logits = model.logits(encoder_hidden)
        ar = F.cross_entropy(logits.flatten(0, 1), batch.ar_targets.flatten(), ignore_index=-100)
    if encoder_only:
        return LossOutput(ar, torch.zeros_like(ar), ar)
    corruptible = batch.supervised & ~batch.clean
    noisy, _ = corrupt(batch.targets, corruptible, model.config.vocab_size, config.min_noise, generator)
    soft = None
    if config.self_conditioning_prob > 0:
        draw = torch.rand(noisy.shape[0], generator=generator, device=noisy.device)
        use = draw < config.self_conditioning_prob
        if bool(use.any()):
            soft = _self_conditioning(model, contexts, noisy, batch.starts, use)
    logits = model.logits(decode_canvases(model, contexts, noisy, batch.starts, soft))
    return _diffusion_loss(logits, batch, ar, config)


def _self_conditioning(model, contexts, noisy, starts, use: torch.Tensor) -> torch.Tensor:
    """Soft embeddings from a gradient-free first pass over the rows in `use`; zero for the others."""
    rows = use.nonzero().squeeze(-1)
    with torch.no_grad():
        sub = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in contexts]
        first = model.logits(decode_canvases(model, sub, noisy[rows], starts[rows]))
        soft = torch.zeros(*noisy.shape, model.config.hidden_size, dtype=model.dtype, device=noisy.device)
        soft[rows] = model.soft_embedding(first.to(model.dtype))
    return soft


def _diffusion_loss(
    logits: torch.Tensor, batch: Batch, ar: torch.Tensor, config: ObjectiveConfig
) -> LossOutput:
    per_position = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    mask = batch.supervised.flatten()
    diffusion = (per_position * mask).sum() / mask.sum().clamp(min=1)
    return LossOutput(diffusion + config.ar_weight * ar, diffusion, ar)
