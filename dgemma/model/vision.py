"""The Gemma 4 vision tower and the projection of its soft tokens into the text model's space.

Numerics follow transformers 5.23.0 (`Gemma4VisionModel`, `DiffusionGemmaMultimodalEmbedder`):

- patches (B, P, 3 * p * p) in [0, 1] are mapped to [-1, 1] and projected; each patch adds a
  learned x and a learned y embedding; padding patches (position (-1, -1)) get none;
- the encoder layers attend bidirectionally over the real patches, with q/k/v norms, scale 1.0
  and a 2-D rotation: the first half of each head rotates with the x position, the second half
  with the y position;
- each k x k block of patches (k = pooling_kernel_size) is averaged into one soft token, scaled by
  sqrt(hidden) in float32, optionally standardised, and the padding blocks are dropped;
- the embedder normalises (no weight) and projects each soft token to the text hidden size.

Module and parameter names follow the checkpoint's `model.encoder.vision_tower.*` and
`model.encoder.embed_vision.*` tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgemma.config.vision import VisionConfig
from dgemma.model.layers import RMSNorm, activation


class ClippableLinear(nn.Module):
    """A bias-free linear layer whose input and output may be clamped to ranges the checkpoint stores."""

    def __init__(self, config: VisionConfig, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.clipped = config.use_clipped_linears
        if self.clipped:
            for name in ("input_min", "output_min"):
                self.register_buffer(name, torch.tensor(-float("inf")))
            for name in ("input_max", "output_max"):
                self.register_buffer(name, torch.tensor(float("inf")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.clipped:
            return self.linear(x)
        x = torch.clamp(x, self.input_min, self.input_max)
        return torch.clamp(self.linear(x), self.output_min, self.output_max)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def rotate_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, P, heads, D): the first D/2 channels rotate by the x angles, the rest by the y angles."""
    half = x.shape[-1] // 2
    cos, sin = cos[:, :, None], sin[:, :, None]
    parts = [_rotate(x[..., s], cos[..., s], sin[..., s]) for s in (slice(0, half), slice(half, 2 * half))]
    return torch.cat(parts, dim=-1)


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        H, D = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            D,
        )
        self.q_proj = ClippableLinear(config, H, self.num_heads * D)
        self.k_proj = ClippableLinear(config, H, self.num_kv_heads * D)
        self.v_proj = ClippableLinear(config, H, self.num_kv_heads * D)
        self.o_proj = ClippableLinear(config, self.num_heads * D, H)
        self.q_norm = RMSNorm(D, config.rms_norm_eps)
        self.k_norm = RMSNorm(D, config.rms_norm_eps)
        self.v_norm = RMSNorm(D, config.rms_norm_eps, with_scale=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        B, P, _ = x.shape
        D = self.head_dim
        q = rotate_2d(self.q_norm(self.q_proj(x).view(B, P, -1, D)), cos, sin)
        k = rotate_2d(self.k_norm(self.k_proj(x).view(B, P, -1, D)), cos, sin)
        v = self.v_norm(self.v_proj(x).view(B, P, -1, D))
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            scale=1.0,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, P, -1))


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        H, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = ClippableLinear(config, H, inner)
        self.up_proj = ClippableLinear(config, H, inner)
        self.down_proj = ClippableLinear(config, inner, H)
        self.act = activation(config.hidden_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class VisionLayer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        H, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = VisionAttention(config)
        self.mlp = VisionMLP(config)
        self.input_layernorm = RMSNorm(H, eps)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.pre_feedforward_layernorm = RMSNorm(H, eps)
        self.post_feedforward_layernorm = RMSNorm(H, eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class PatchEmbedder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.input_proj = nn.Linear(config.patch_pixels, config.hidden_size, bias=False)
        self.position_embedding_table = nn.Parameter(
            torch.ones(2, config.position_embedding_size, config.hidden_size)
        )

    def forward(self, pixels: torch.Tensor, positions: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = self.input_proj((2 * (pixels - 0.5)).to(self.input_proj.weight.dtype))
        where = positions.clamp(min=0)
        table = self.position_embedding_table
        pos = F.embedding(where[..., 0], table[0]) + F.embedding(where[..., 1], table[1])
        return x + torch.where(padding[..., None], 0.0, pos)


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.num_hidden_layers))


class VisionTower(nn.Module):
    """Patches (B, P, 3 p^2) and their (x, y) positions (B, P, 2) -> soft tokens (N, hidden) of the real blocks."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedder = PatchEmbedder(config)
        self.encoder = VisionEncoder(config)
        if config.standardize:
            self.register_buffer("std_bias", torch.zeros(config.hidden_size))
            self.register_buffer("std_scale", torch.ones(config.hidden_size))
        spatial = config.head_dim // 2
        inv = 1.0 / (config.rope_theta ** (torch.arange(0, spatial, 2, dtype=torch.float) / spatial))
        self.register_buffer("inv_freq", inv, persistent=False)

    def reset_rope(self) -> None:
        """Recompute the rotation's frequencies where the weights are (after building on meta)."""
        spatial = self.config.head_dim // 2
        device = self.patch_embedder.input_proj.weight.device
        exponents = torch.arange(0, spatial, 2, dtype=torch.float, device=device) / spatial
        self.inv_freq = 1.0 / (self.config.rope_theta**exponents)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B, P, D): x angles twice, then y angles twice (each half rotates one axis)."""
        angles = positions[..., None].float() * self.inv_freq.float()  # (B, P, 2, D/4)
        ax, ay = angles[..., 0, :], angles[..., 1, :]
        both = torch.cat([ax, ax, ay, ay], dim=-1)
        return both.cos().to(dtype), both.sin().to(dtype)

    def forward(self, pixel_values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        k = self.config.pooling_kernel_size
        B, P, _ = pixel_values.shape
        length = P // (k * k)
        padding = (positions == -1).all(dim=-1)
        x = self.patch_embedder(pixel_values, positions, padding)
        cos, sin = self.rope(positions, x.dtype)
        mask = (~padding)[:, None, None, :]  # every patch reads the real patches of its image
        for layer in self.encoder.layers:
            x = layer(x, cos, sin, mask)
        x = x.masked_fill(padding[..., None], 0.0)
        pooled, real = _pool(x, positions, k, length)
        pooled = pooled.float() * self.config.hidden_size**0.5
        tokens = pooled[real]
        if self.config.standardize:
            tokens = (tokens - self.std_bias.float()) * self.std_scale.float()
        return tokens.to(x.dtype)


def _pool(x: torch.Tensor, positions: torch.Tensor, k: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each k x k block of patches: (B, length, H) and which blocks hold a real patch (B, length)."""
    if x.shape[1] == length:
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    where = positions.clamp(min=0)
    width = where[..., 0].max(dim=-1, keepdim=True)[0] + 1
    block = torch.div(where, k, rounding_mode="floor")
    index = block[..., 0] + (width // k) * block[..., 1]  # (B, P)
    weights = F.one_hot(index.long(), length).float() / (k * k)  # (B, P, length)
    pooled = weights.transpose(1, 2) @ x.float()
    real = (weights != 0).any(dim=1)
    return pooled.to(x.dtype), real


class MultimodalEmbedder(nn.Module):
    """Soft tokens (N, vision hidden) -> text embeddings (N, text hidden): a weightless norm, then a projection."""

    def __init__(self, vision_hidden: int, text_hidden: int, eps: float):
        super().__init__()
        self.embedding_pre_projection_norm = RMSNorm(vision_hidden, eps, with_scale=False)
        self.embedding_projection = nn.Linear(vision_hidden, text_hidden, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding_projection(self.embedding_pre_projection_norm(tokens))
