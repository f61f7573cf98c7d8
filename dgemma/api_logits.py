"""The logits methods of `dgemma.Model`: one encoder or decoder pass over given token ids (and
images), with transformers' argument names, for parity checks against the reference."""

from __future__ import annotations

from typing import Any

import torch

from dgemma.config import ModelConfig
from dgemma.engine.cache import KVCache
from dgemma.engine.passes import decode_rows, encode_rows, ragged_rows, split_images
from dgemma.model import DiffusionGemma


class LogitsMethods:
    """Mixed into `Model` (which sets `model` and `config`)."""

    model: DiffusionGemma
    config: ModelConfig

    @torch.inference_mode()
    def encoder_logits(
        self,
        input_ids: Any,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal LM logits (B, T, V) of the encoder; positions the mask excludes are zero.
        `pixel_values`, `image_position_ids`: the images of the image-token runs, as transformers'
        Gemma 4 processor returns them (all rows' images in order)."""
        rows, layout = ragged_rows(input_ids, attention_mask, as_prompt_list)
        cache = self._cache(rows, extra=0)
        images = self._images(rows, pixel_values, image_position_ids)
        hidden, _ = encode_rows(self.model, cache, list(range(len(rows))), rows, images)
        logits = self.model.logits(hidden)
        out = torch.zeros(*layout.shape, self.config.vocab_size, device=logits.device)
        for i, positions in enumerate(layout):
            where = positions.nonzero().squeeze(-1)
            out[i, where] = logits[i, : len(where)]
        return out

    @torch.inference_mode()
    def decoder_logits(
        self,
        input_ids: Any,
        canvas: torch.Tensor,
        self_conditioning_logits: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Canvas logits (B, C, V) of the decoder given each prompt (and its images) as the cached prefix."""
        rows, _ = ragged_rows(input_ids, attention_mask, as_prompt_list)
        canvas = torch.as_tensor(canvas, dtype=torch.long, device=self.model.device)
        if canvas.ndim != 2 or canvas.shape[0] != len(rows):
            raise ValueError(f"`canvas` must have shape (batch={len(rows)}, C), got {tuple(canvas.shape)}")
        cache = self._cache(rows, extra=canvas.shape[1])
        encode_rows(
            self.model,
            cache,
            list(range(len(rows))),
            rows,
            self._images(rows, pixel_values, image_position_ids),
        )
        soft = None
        if self_conditioning_logits is not None:
            soft = self.model.soft_embedding(self_conditioning_logits.to(self.model.device))
        hidden = decode_rows(self.model, cache, list(range(len(rows))), canvas, soft)
        return self.model.logits(hidden)

    def _images(self, rows: list[list[int]], pixels: Any, positions: Any) -> list | None:
        if pixels is None:
            return None
        if positions is None or self.config.vision is None:
            raise ValueError("`pixel_values` need `image_position_ids` and a model with a vision tower")
        vision = self.config.vision
        return split_images(rows, pixels, positions, vision.image_token_id, vision.pooling_kernel_size)

    def _cache(self, rows: list[list[int]], extra: int) -> KVCache:
        capacity = max(len(r) for r in rows) + extra
        return KVCache(self.config, len(rows), capacity, self.model.dtype, self.model.device)


def as_prompt_list(prompts: Any) -> list[Any]:
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist() if prompts.ndim == 2 else [prompts.tolist()]
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(
            "`prompts` must be a string, a chat, a list of token ids, or a non-empty list of these"
        )
    first = prompts[0]
    if isinstance(first, int | dict):  # one token-id prompt, or one chat
        return [list(prompts)]
    return list(prompts)
