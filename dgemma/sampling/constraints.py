"""Canvas constraints: positions clamped to a token, and positions limited to a set of tokens.

A clamped position is never sampled and never renoised: it holds its token from the canvas's
first step (so the model reads it as clean context), its self-conditioning input is certain
(a one-hot distribution), and it takes no share of the entropy budget. An allowed-token set masks
the logits of its position to that set before anything is sampled, accepted or fed back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

HEAD_SHARE = (
    0.5  # head_ids: at most this share of the vocabulary (gathering their rows is cheap beside the GEMM)
)


@dataclass(frozen=True)
class CanvasConstraint:
    """Constraints of one canvas of length C."""

    fixed: torch.Tensor  # (C,) bool: clamped positions
    tokens: torch.Tensor  # (C,) long: their tokens (ignored elsewhere)
    allowed: torch.Tensor | None = None  # (C, V) bool, or None for no vocabulary limits
    kept: int | None = (
        None  # positions kept from this canvas (the rest are past the request's end); None: all
    )

    def clamp(self, canvas: torch.Tensor) -> torch.Tensor:
        return torch.where(self.fixed, self.tokens, canvas)

    @functools.cached_property
    def head_ids(self) -> torch.Tensor | None:
        """The vocabulary ids the free kept positions may become, when they are at most HEAD_SHARE
        of the vocabulary (None otherwise, or when every kept position is clamped): the LM head then
        needs only their rows, as every other logit of such a position is masked and a clamped
        position's distribution ignores its logits (`mask_logits_`). Positions past the request's
        end, cut after the canvas, then choose among the same ids."""
        free = ~self.fixed[: self.kept]
        if self.allowed is None or not bool(free.any()):
            return None
        union = self.allowed[: self.kept][free].any(0)
        ids = union.nonzero().squeeze(-1)
        return ids if ids.numel() <= HEAD_SHARE * union.numel() else None

    def widen(self, logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Logits (C, len(head_ids)) as (C, V). The other entries are far below the rest (10^4
        under the least; `mask_logits_` then sets a kept free position's to the lowest float, as
        with the full head). They stay finite through the temperature's division, so positions
        past the request's end, which have no allowed set, still get a finite entropy."""
        far = logits.amin() - 1e4  # a 0-d tensor: fill_ reads it on the device, no host sync
        full = logits.new_empty((logits.shape[0], vocab_size)).fill_(far)
        return full.index_copy_(1, self.head_ids, logits)

    @functools.cached_property
    def disallowed(self) -> torch.Tensor | None:
        return None if self.allowed is None else ~self.allowed

    def mask_logits_(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (C, V), in place: disallowed tokens and clamped positions' other tokens set to the
        lowest float (the entropy's dot product needs them finite; softmax gives them exactly 0).
        No host sync and no vocabulary-sized temporary."""
        lowest = torch.finfo(logits.dtype).min
        if self.disallowed is not None:
            logits.masked_fill_(self.disallowed, lowest)
        index = self.tokens.unsqueeze(-1)
        kept = torch.where(self.fixed.unsqueeze(-1), 0.0, logits.gather(-1, index))
        logits.masked_fill_(self.fixed.unsqueeze(-1), lowest).scatter_(-1, index, kept)
        return logits

    def fixed_logprob(self, logits: torch.Tensor, chunk: int = 64) -> tuple[float, int]:
        """The summed log-probability of the clamped tokens under `logits` (C, V) as the model gave
        them (before any masking), and how many there are: how well the model agrees with the
        clamped text (choices.py scores candidate layouts by it). Rows go `chunk` at a time, so no
        full-size temporary is made."""
        where = self.fixed.nonzero().squeeze(-1)
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for rows in where.split(chunk):
            part = logits.index_select(0, rows)
            picked = part.gather(-1, self.tokens.index_select(0, rows).unsqueeze(-1)).squeeze(-1)
            total += (picked - torch.logsumexp(part, dim=-1)).sum()
        return float(total), int(where.numel())
