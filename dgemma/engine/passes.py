"""Batched model passes over chosen cache rows: a ragged causal encode and a canvas decode (and
the ragged rows a padded batch holds).

Rows are cache row indices. When a pass covers every row of the cache in order, the attention plan
reads the store without gathering rows; otherwise only the rows in the pass are computed, so a
finished or stopped row costs no forward-pass work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def ragged_rows(
    input_ids: Any, attention_mask: torch.Tensor | None, as_list: Callable[[Any], list[Any]]
) -> tuple[list[list[int]], torch.Tensor]:
    """Rows of real token ids, and a (B, T) bool layout of where they sit in the input."""
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids if input_ids.ndim == 2 else input_ids[None]
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if mask.shape != ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(mask.shape)} differs from `input_ids` {tuple(ids.shape)}"
            )
        rows = [ids[i][mask[i]].tolist() for i in range(ids.shape[0])]
        layout = mask.cpu()
    else:
        rows = [list(r) for r in as_list(input_ids)]
        width = max(len(r) for r in rows)
        layout = torch.tensor([[j < len(r) for j in range(width)] for r in rows])
    if any(not r for r in rows):
        raise ValueError("`input_ids`: every row needs at least one token")
    return rows, layout
