"""Batched model passes over chosen cache rows: a ragged causal encode and a canvas decode.

Rows are cache row indices. When a pass covers every row of the cache in order, the attention plan
reads the store without gathering rows; otherwise only the rows in the pass are computed, so a
finished or stopped row costs no forward-pass work.
"""

from __future__ import annotations

import torch

from dgemma.engine.cache import KVCache
from dgemma.model import DiffusionGemma, decoder_plan, encoder_plan


def _row_index(cache: KVCache, rows: list[int]) -> torch.Tensor | None:
    if rows == list(range(cache.num_rows)):
        return None
    return torch.tensor(rows, dtype=torch.long, device=cache.lengths.device)


def encode_rows(
    model: DiffusionGemma, cache: KVCache, rows: list[int], tokens: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append `tokens[i]` to cache row `rows[i]` through the causal encoder.

    Returns the final hidden states (b, T, H), right-padded, and the count of real tokens per row (b,).
    """
    device = cache.lengths.device
    counts = torch.tensor([len(t) for t in tokens], dtype=torch.long, device=device)
    width = int(counts.max())
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for i, t in enumerate(tokens):
        ids[i, : len(t)] = torch.as_tensor(t, dtype=torch.long, device=device)
    index = _row_index(cache, rows)
    lengths = cache.lengths if index is None else cache.lengths[index]
    plan = encoder_plan(lengths, counts, width, model.config.sliding_window, cache.capacity, index)
    hidden = model.encode(ids, cache.store, plan)
    if index is None:
        cache.lengths += counts
    else:
        cache.lengths[index] += counts
    return hidden, counts


def decode_rows(
    model: DiffusionGemma,
    cache: KVCache,
    rows: list[int],
    canvas: torch.Tensor,
    soft_embeds: torch.Tensor | None,
) -> torch.Tensor:
    """Run the bidirectional decoder on canvases (b, C) of cache rows `rows`; returns hidden (b, C, H)."""
    index = _row_index(cache, rows)
    lengths = cache.lengths if index is None else cache.lengths[index]
    plan = decoder_plan(lengths, canvas.shape[1], model.config.sliding_window, cache.capacity, index)
    return model.decode(canvas, cache.store, plan, soft_embeds)
