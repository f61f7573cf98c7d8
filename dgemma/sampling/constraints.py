"""Canvas constraints: positions clamped to a token, and positions limited to a set of tokens.

A clamped position is never sampled and never renoised: it holds its token from the canvas's
first step (so the model reads it as clean context), its self-conditioning input is certain
(a one-hot distribution), and it takes no share of the entropy budget. An allowed-token set masks
the logits of its position to that set before anything is sampled, accepted or fed back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CanvasConstraint:
    """Constraints of one canvas of length C."""

    fixed: torch.Tensor  # (C,) bool: clamped positions
    tokens: torch.Tensor  # (C,) long: their tokens (ignored elsewhere)
    allowed: torch.Tensor | None = None  # (C, V) bool, or None for no vocabulary limits

    def clamp(self, canvas: torch.Tensor) -> torch.Tensor:
        return torch.where(self.fixed, self.tokens, canvas)

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (C, V) with disallowed tokens at -inf and clamped positions one-hot on their token."""
        if self.allowed is not None:
            logits = logits.masked_fill(~self.allowed, float("-inf"))
        if bool(self.fixed.any()):
            one_hot = torch.full_like(logits, float("-inf"))
            one_hot.scatter_(-1, self.tokens[:, None], 0.0)
            logits = torch.where(self.fixed[:, None], one_hot, logits)
        return logits
