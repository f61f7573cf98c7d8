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
from dgemma.engine.request import ImageInput
from dgemma.model import DiffusionGemma, decoder_plan, encoder_plan


def _row_index(cache: KVCache, rows: list[int]) -> torch.Tensor | None:
    if rows == list(range(cache.num_rows)):
        return None
    return torch.tensor(rows, dtype=torch.long, device=cache.lengths.device)


def encode_rows(
    model: DiffusionGemma,
    cache: KVCache,
    rows: list[int],
    tokens: list[list[int]],
    images: list[tuple[ImageInput, ...]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append `tokens[i]` to cache row `rows[i]` through the causal encoder; `images[i]`: the
    images whose soft tokens fill the image-token positions of `tokens[i]` (a prompt's).

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
    spliced = image_splice(model, ids, images) if images and any(images) else None
    blocks = None
    if spliced is not None and model.config.vision.bidirectional:
        blocks = image_blocks(spliced[0])
    plan = encoder_plan(lengths, counts, width, model.config.sliding_window, cache.capacity, index, blocks)
    hidden = model.encode(ids, cache.store, plan, spliced)
    if index is None:
        cache.lengths += counts
    else:
        cache.lengths[index] += counts
    return hidden, counts


def image_splice(
    model: DiffusionGemma, ids: torch.Tensor, images: list[tuple[ImageInput, ...]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the soft tokens go (b, T) and the soft tokens (N, H) of every row's images, row by row."""
    token = model.config.vision.image_token_id if model.config.vision is not None else -1
    where = torch.zeros_like(ids, dtype=torch.bool)
    for i, row_images in enumerate(images):
        if not row_images:
            continue
        where[i] = ids[i] == token
        expected = sum(im.num_soft_tokens for im in row_images)
        if int(where[i].sum()) != expected:
            raise ValueError(
                f"the prompt has {int(where[i].sum())} image-token positions; its images fill {expected}"
            )
    flat = [im for row_images in images for im in row_images]
    width = max(im.pixel_values.shape[0] for im in flat)
    pixels = torch.zeros(len(flat), width, flat[0].pixel_values.shape[1])
    positions = torch.full((len(flat), width, 2), -1, dtype=torch.long)
    for j, im in enumerate(flat):  # one batch for the tower: shorter images padded as their own padding is
        pixels[j, : im.pixel_values.shape[0]] = im.pixel_values
        positions[j, : im.positions.shape[0]] = im.positions
    soft = model.image_features(pixels, positions)
    return where, soft  # DiffusionGemma.encode checks the two counts agree


def image_blocks(where: torch.Tensor) -> torch.Tensor:
    """(b, T) group ids: each run of image positions is one group (numbered per row), text -1."""
    starts = where & ~torch.nn.functional.pad(where[:, :-1], (1, 0), value=False)
    groups = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(where, groups, -1)


def decode_rows(
    model: DiffusionGemma,
    cache: KVCache,
    rows: list[int],
    canvas: torch.Tensor,
    soft_embeds: torch.Tensor | None,
) -> torch.Tensor:
    """Run the bidirectional decoder on canvases (b, C) of cache rows `rows`; returns hidden (b, C, H).

    Consecutive passes over the same rows at the same lengths (a canvas's denoising steps) reuse one
    plan, and with it its rotary tables."""
    index = _row_index(cache, rows)
    lengths = cache.lengths if index is None else cache.lengths[index]
    key = (tuple(rows), canvas.shape[1], tuple(lengths.tolist()))
    if cache.decoder_plan is not None and cache.decoder_plan[0] == key:
        plan = cache.decoder_plan[1]
    else:
        plan = decoder_plan(lengths, canvas.shape[1], model.config.sliding_window, cache.capacity, index)
        cache.decoder_plan = (key, plan)
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


def split_images(
    rows: list[list[int]], pixel_values: Any, positions: Any, image_token_id: int, kernel: int
) -> list[tuple[ImageInput, ...]]:
    """Batched processor output (images, P, 3 p^2) and (images, P, 2), in prompt order across the
    rows, as each row's images: a row takes images until its image-token positions are filled."""
    pixels = torch.as_tensor(pixel_values, dtype=torch.float32)
    where = torch.as_tensor(positions, dtype=torch.long)
    if pixels.ndim != 3 or where.shape != (*pixels.shape[:2], 2):
        raise ValueError(
            "`pixel_values` must be (images, patches, pixels) with `image_position_ids` (images, patches, 2)"
        )
    real = (where != -1).any(dim=-1).sum(dim=-1)
    images = [ImageInput(pixels[j], where[j], int(real[j]) // kernel**2) for j in range(len(pixels))]
    out, k = [], 0
    for i, row in enumerate(rows):
        need, taken = row.count(image_token_id), []
        while need > 0 and k < len(images):
            taken.append(images[k])
            need -= images[k].num_soft_tokens
            k += 1
        if need != 0:
            raise ValueError(f"`input_ids` row {i}: its image-token positions do not match the images given")
        out.append(tuple(taken))
    if k != len(images):
        raise ValueError(f"{len(images)} images for {k} runs of image tokens in `input_ids`")
    return out
