"""Categorical draws over the vocabulary, one per position, writing into a caller's scratch buffer.

Both take probabilities (..., V) float32 and a scratch tensor of the same shape and dtype whose
contents they overwrite, so a draw allocates nothing vocabulary-sized.

- `reference_draw`: torch.multinomial(probs, 1)'s own algorithm (q ~ Exp(1) for every entry,
  argmax of probs / q), with the same generator calls: bit-for-bit the reference's tokens. On a CPU
  the exponential draws cost ~25 ns per vocabulary entry, more than the lm_head at small widths.
- `inverse_cdf_draw`: one uniform per position, located in the running sum of the probabilities.
  The same distribution (a token of probability 0 is never drawn: its cumulative sum does not rise
  past the one before it) from a different random stream. The running sum is taken in two levels:
  over blocks of about sqrt(V) entries, then inside the block the uniform falls in, since a
  cumulative sum along a row does not vectorize (on a CPU at 64 x 4096 it took 99 us, the softmax
  59 us; the two-level draw takes 66 us in all, one running sum with its searches 126 us).
"""

from __future__ import annotations

import torch


def reference_draw(
    probs: torch.Tensor, scratch: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    noise = scratch.exponential_(1.0, generator=generator)
    return torch.div(probs, noise, out=noise).argmax(dim=-1)


MIN_BLOCK = 16  # below this block size (V under 256) one running sum over the row is as cheap


def block_size(vocab: int) -> int:
    """The largest power of two at most sqrt(vocab) that divides it; 1: no blocks."""
    block = 1 << (max(vocab, 1).bit_length() - 1) // 2
    while block > 1 and vocab % block:
        block //= 2
    return block if block >= MIN_BLOCK else 1


def _locate(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """First index whose running sum passes u (..., 1), capped at the last entry that raises it:
    u scaled to the total can round up to it."""
    index = torch.searchsorted(cdf, u, right=True)
    return torch.minimum(index, torch.searchsorted(cdf, cdf[..., -1:].contiguous(), right=False))


def inverse_cdf_draw(
    probs: torch.Tensor, scratch: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    V = probs.shape[-1]
    block = block_size(V)
    if block == 1:
        cdf = torch.cumsum(probs, dim=-1, out=scratch)
        total = cdf[..., -1:]  # 1 up to float32 rounding; the uniform is scaled to it
        u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=probs.dtype) * total
        return _locate(cdf, u).squeeze(-1)
    blocks = probs.reshape(-1, V // block, block)  # (N, B, block)
    outer = blocks.sum(dim=-1).cumsum_(dim=-1)  # (N, B) running sum over whole blocks
    u = torch.rand(outer.shape[0], 1, generator=generator, device=probs.device, dtype=probs.dtype)
    u = u * outer[:, -1:]
    b = _locate(outer, u)  # (N, 1) the block u falls in: it has mass, as the running sum rises there
    before = torch.where(b > 0, outer.gather(-1, (b - 1).clamp_(min=0)), 0.0)  # mass ahead of it
    inner = blocks.gather(1, b[:, :, None].expand(-1, 1, block)).squeeze(1).cumsum_(dim=-1)
    # u - before >= 0; the inner sums may total a rounding less than the block's: then the cap holds
    index = b * block + _locate(inner, u - before)
    return index.view(probs.shape[:-1])
