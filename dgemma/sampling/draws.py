"""Categorical draws over the vocabulary, one per position, writing into a caller's scratch buffer.

Both take probabilities (..., V) float32 and a scratch tensor of the same shape and dtype whose
contents they overwrite, so a draw allocates nothing vocabulary-sized.

- `reference_draw`: torch.multinomial(probs, 1)'s own algorithm (q ~ Exp(1) for every entry,
  argmax of probs / q), with the same generator calls: bit-for-bit the reference's tokens. On a CPU
  the exponential draws cost ~25 ns per vocabulary entry, more than the lm_head at small widths.
- `inverse_cdf_draw`: one uniform per position, located in the running sum of the probabilities.
  The same distribution (a token of probability 0 is never drawn: its cumulative sum does not rise
  past the one before it) from a different random stream, at the cost of one cumulative sum.
"""

from __future__ import annotations

import torch


def reference_draw(
    probs: torch.Tensor, scratch: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    noise = scratch.exponential_(1.0, generator=generator)
    return torch.div(probs, noise, out=noise).argmax(dim=-1)


def inverse_cdf_draw(
    probs: torch.Tensor, scratch: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    cdf = torch.cumsum(probs, dim=-1, out=scratch)
    total = cdf[..., -1:].contiguous()  # 1 up to float32 rounding; the uniform is scaled to it
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=probs.dtype) * total
    index = torch.searchsorted(cdf, u, right=True)
    # u * total can round up to total: the last token of positive probability is the cap
    last = torch.searchsorted(cdf, total, right=False)
    return torch.minimum(index, last).squeeze(-1)
