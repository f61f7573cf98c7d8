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

Every random draw of an example (its t, which positions flip, their noise tokens, its
self-conditioning coin) comes from that example's own generator, over the example's own canvases:
the draws do not depend on which other examples share its batch, so splitting a batch across
processes (`distributed.py`) changes nothing. The means are over the counts the caller passes
(the global batch's), or this batch's own.
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
    generators: list[torch.Generator],
    spans: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy canvases (B, n*C) and the per-example noise levels t (B,): example b draws from
    `generators[b]` over its own `spans[b]` positions (default: the whole row)."""
    B, width = targets.shape
    device = targets.device
    t = torch.empty(B, device=device)
    flip = torch.zeros_like(supervised)
    noise = torch.zeros_like(targets)
    for b, g in enumerate(generators):
        span = width if spans is None else spans[b]
        t[b] = min_noise + (1 - min_noise) * torch.rand(1, generator=g, device=device)
        flip[b, :span] = torch.rand(span, generator=g, device=device) < t[b]
        noise[b, :span] = torch.randint(0, vocab_size, (span,), generator=g, device=device)
    return torch.where(flip & supervised, noise, targets), t


def compute_loss(
    model: DiffusionGemma,
    batch: Batch,
    config: ObjectiveConfig,
    generators: list[torch.Generator],
    encoder_only: bool = False,
    counts: tuple[torch.Tensor, torch.Tensor] | None = None,
    collective: bool = False,
) -> LossOutput:
    """The training loss of one batch (one generator per example); `encoder_only` trains the
    autoregressive baseline (AR loss alone). `counts`: the (diffusion, AR) supervised positions the
    means are over (a global batch's, when this batch is one process's share); default this batch's.
    `collective`: the layers are sharded over processes, so every process runs the same passes
    (the self-conditioning pass too, even when none of its examples draws it)."""
    if counts is None:
        counts = batch_counts(batch)
    ids = batch.ids
    if config.ar_weight == 0 and not encoder_only:
        ids = ids[:, : int(batch.starts.max())]  # canvases read only what precedes them
    encoder_hidden, contexts = encode_full(model, ids)
    ar = torch.zeros((), device=ids.device)
    if config.ar_weight > 0 or encoder_only:
        logits = model.logits(encoder_hidden)
        summed = F.cross_entropy(
            logits.flatten(0, 1), batch.ar_targets.flatten(), ignore_index=-100, reduction="sum"
        )
        ar = (summed / counts[1].clamp(min=1)).float()
    if encoder_only:
        return LossOutput(ar, torch.zeros_like(ar), ar)
    corruptible = batch.supervised & ~batch.clean
    spans = (batch.supervised | batch.clean).sum(dim=1).tolist()  # each example's own canvases
    noisy, _ = corrupt(
        batch.targets, corruptible, model.config.vocab_size, config.min_noise, generators, spans
    )
    soft = None
    if config.self_conditioning_prob > 0:
        draw = torch.cat([torch.rand(1, generator=g, device=noisy.device) for g in generators])
        use = draw < config.self_conditioning_prob
        if collective or bool(use.any()):
            soft = _self_conditioning(model, contexts, noisy, batch.starts, use)
    logits = model.logits(decode_canvases(model, contexts, noisy, batch.starts, soft))
    return _diffusion_loss(logits, batch, ar, config, counts[0])


def batch_counts(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised positions of the diffusion loss and of the AR loss in `batch`."""
    return batch.supervised.sum().double(), (batch.ar_targets != -100).sum().double()


def _self_conditioning(model, contexts, noisy, starts, use: torch.Tensor) -> torch.Tensor:
    """Soft embeddings from a gradient-free first pass over the rows in `use`; zero for the others."""
    rows = use.nonzero().squeeze(-1)
    # no row drew it (a sharded run's pass all the same): one row's pass, fed back as zeros,
    # which self-conditioning reads exactly as no feedback
    chosen = rows if len(rows) else torch.zeros(1, dtype=torch.long, device=use.device)
    with torch.no_grad():
        sub = [(k.index_select(0, chosen), v.index_select(0, chosen)) for k, v in contexts]
        first = model.logits(decode_canvases(model, sub, noisy[chosen], starts[chosen]))
        soft = torch.zeros(*noisy.shape, model.config.hidden_size, dtype=model.dtype, device=noisy.device)
        if len(rows):
            soft[rows] = model.soft_embedding(first.to(model.dtype))
    return soft


def _diffusion_loss(
    logits: torch.Tensor, batch: Batch, ar: torch.Tensor, config: ObjectiveConfig, count: torch.Tensor
) -> LossOutput:
    per_position = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    mask = batch.supervised.flatten()
    diffusion = ((per_position * mask).sum() / count.clamp(min=1)).float()
    return LossOutput(diffusion + config.ar_weight * ar, diffusion, ar)
