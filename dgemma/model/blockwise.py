"""The cache-free, differentiable pass for training: whole sequences, every canvas at once.

The encoder reads prompt + response causally (sliding layers see the last W positions, as at
inference). Every canvas of the response is then decoded in one batched pass: canvas k of a row
attends to the encoder's keys at all positions before its start (sliding layers: the last W - 1 of
them) and, bidirectionally, to its own tokens. That is exactly what the decoder sees at inference
once canvases 0..k-1 are committed; tests/test_blockwise.py checks the two paths agree.
"""

from __future__ import annotations

import torch

from dgemma.model.attention import Attention
from dgemma.model.transformer import DiffusionGemma


def encoder_masks(num_tokens: int, window: int, device: torch.device) -> dict[bool, torch.Tensor]:
    """is_sliding -> (1, 1, T, T) causal mask (sliding: the last `window` positions)."""
    pos = torch.arange(num_tokens, device=device)
    causal = pos[None, :] <= pos[:, None]
    sliding = causal & (pos[None, :] > pos[:, None] - window)
    return {False: causal[None, None], True: sliding[None, None]}


def decoder_masks(
    starts: torch.Tensor, num_tokens: int, canvas_length: int, window: int
) -> dict[bool, torch.Tensor]:
    """is_sliding -> (B, 1, n*C, T + n*C): canvas k reads encoder keys before starts[:, k], and itself."""
    B, n = starts.shape
    device = starts.device
    canvas_of = torch.arange(n * canvas_length, device=device) // canvas_length  # (nC,)
    start = starts[:, canvas_of]  # (B, nC): start position of each query's canvas
    enc_pos = torch.arange(num_tokens, device=device)
    before = enc_pos[None, None, :] < start[:, :, None]  # (B, nC, T)
    recent = enc_pos[None, None, :] >= start[:, :, None] - (window - 1)
    own = (canvas_of[:, None] == canvas_of[None, :]).expand(B, -1, -1)  # (B, nC, nC)
    full = torch.cat([before, own], dim=-1)
    sliding = torch.cat([before & recent, own], dim=-1)
    return {False: full[:, None], True: sliding[:, None]}


Contexts = list[tuple[torch.Tensor, torch.Tensor]]


def encode_full(model: DiffusionGemma, ids: torch.Tensor) -> tuple[torch.Tensor, Contexts]:
    """Causal pass over clean tokens (B, T): final hidden (B, T, H) and every layer's keys and values."""
    config = model.config
    T = ids.shape[1]
    scalars = model.layer_scalars(encoder=True)
    x = model.embed(ids)
    ropes = model.rope(torch.arange(T, device=ids.device)[None], x.dtype)
    masks = encoder_masks(T, config.sliding_window, ids.device)
    contexts: Contexts = []
    for i, layer in enumerate(model.layers):
        cos, sin = ropes[config.layers[i].layer_type]

        def encode(attn: Attention, h: torch.Tensor, cos=cos, sin=sin) -> torch.Tensor:
            out, kv = attn.forward_context(h, cos, sin, None, masks[attn.is_sliding])
            contexts.append(kv)
            return out

        x = layer(x, encode, scalars[i])  # through __call__: FSDP's hooks gather the layer
    return model.norm(x), contexts


def decode_canvases(
    model: DiffusionGemma,
    contexts: Contexts,
    canvases: torch.Tensor,
    starts: torch.Tensor,
    soft_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every canvas (B, n*C) decoded in one pass against the encoder's contexts: hidden (B, n*C, H).

    Args:
        contexts: from `encode_full` over the clean tokens of the same rows.
        canvases: the decoder's input, n canvases per row laid end to end.
        starts: position of each canvas's first token (B, n); canvas k decodes positions
            starts[:, k] .. starts[:, k] + C - 1 given the clean tokens before it.
        soft_embeds: self-conditioning embeddings (B, n*C, H), or None (the first denoising step).
    """
    config = model.config
    C = config.canvas_length
    B, n = starts.shape
    if canvases.shape != (B, n * C):
        raise ValueError(f"`canvases` must have shape {(B, n * C)}, got {tuple(canvases.shape)}")
    T = contexts[0][0].shape[1]
    scalars = model.layer_scalars(encoder=False)
    positions = (starts[:, :, None] + torch.arange(C, device=starts.device)).reshape(B, n * C)
    x = model.self_conditioning(model.embed(canvases), soft_embeds)
    ropes = model.rope(positions, x.dtype)
    masks = decoder_masks(starts, T, C, config.sliding_window)
    for i, layer in enumerate(model.layers):
        cos, sin = ropes[config.layers[i].layer_type]

        def decode(attn: Attention, h: torch.Tensor, cos=cos, sin=sin, i=i) -> torch.Tensor:
            return attn.forward_context(h, cos, sin, contexts[i], masks[attn.is_sliding])[0]

        x = layer(x, decode, scalars[i])
    return model.norm(x)


def forward_blockwise(
    model: DiffusionGemma,
    ids: torch.Tensor,
    canvases: torch.Tensor,
    starts: torch.Tensor,
    soft_embeds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of the encoder (B, T, H) and of every canvas (B, n*C, H); see the module doc."""
    encoder_hidden, contexts = encode_full(model, ids)
    return encoder_hidden, decode_canvases(model, contexts, canvases, starts, soft_embeds)
