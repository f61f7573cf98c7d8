"""The DiffusionGemma text model: one stack of weights run as a causal encoder or a canvas decoder.

Encoder and decoder passes share every weight (one copy in memory); they differ in the attention
plan (causal vs bidirectional, see `attention.py`), in the `layer_scalar` buffers (the checkpoint
keeps one set per pass), and in the decoder's self-conditioning block on the input embeddings.
Module and parameter names follow the checkpoint's `model.decoder.*` names, so loading is a prefix
strip. The model knows nothing of sampling, scheduling or tokenization.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dgemma.config import LayerSpec, LayerType, ModelConfig
from dgemma.model.attention import Attention, AttentionPlan, KVStore
from dgemma.model.layers import Experts, GatedMLP, RMSNorm, Router, rms, rope_inv_freq, rope_tables
from dgemma.model.vision import MultimodalEmbedder, VisionTower

AttentionStep = Callable[[Attention, torch.Tensor], torch.Tensor]


class Block(nn.Module):
    """Attention, then a shared dense MLP and the routed experts side by side, each with its own norms."""

    def __init__(self, config: ModelConfig, spec: LayerSpec):
        super().__init__()
        H, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = Attention(config, spec)
        self.mlp = GatedMLP(H, config.intermediate_size, config.hidden_activation)
        self.router = Router(config)
        self.experts = Experts(config)
        self.input_layernorm = RMSNorm(H, eps)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.pre_feedforward_layernorm = RMSNorm(H, eps)
        self.post_feedforward_layernorm = RMSNorm(H, eps)
        self.post_feedforward_layernorm_1 = RMSNorm(H, eps)
        self.pre_feedforward_layernorm_2 = RMSNorm(H, eps)
        self.post_feedforward_layernorm_2 = RMSNorm(H, eps)
        self.register_buffer("layer_scalar", torch.ones(1))  # the decoder pass's scalar

    def forward(self, x: torch.Tensor, attention: AttentionStep, layer_scalar: torch.Tensor) -> torch.Tensor:
        """One layer; `attention(self_attn, normed_x)` runs the attention step (cached or not)."""
        # Submodules are called through .forward: this loop runs per layer per denoising step, and
        # nn.Module.__call__'s hook dispatch costs as much as a small kernel here.
        eps = self.input_layernorm.eps
        h = attention(self.self_attn, self.input_layernorm.forward(x))
        x = x + self.post_attention_layernorm.forward(h)

        # The dense MLP's pre-norm, the experts' pre-norm and the router's norm all normalise the
        # same residual: one RMS in float32, three weights (each rounded to x.dtype as the reference's norms are).
        flat = x.reshape(-1, x.shape[-1])
        normed = rms(flat, eps)
        dense = self.mlp.forward((normed * self.pre_feedforward_layernorm.weight.float()).to(x.dtype))
        weights, ids = self.router.forward(flat, normed)
        routed = self.experts.forward(
            (normed * self.pre_feedforward_layernorm_2.weight.float()).to(x.dtype), weights, ids
        )
        # post-norms of both branches in one call
        both = rms(torch.stack([dense, routed]), eps)
        dense = (both[0] * self.post_feedforward_layernorm_1.weight.float()).to(x.dtype)
        routed = (both[1] * self.post_feedforward_layernorm_2.weight.float()).to(x.dtype)
        x = x + self.post_feedforward_layernorm.forward((dense + routed).view(x.shape))
        return x * layer_scalar


class SelfConditioning(nn.Module):
    """post_norm(embeds + MLP(pre_norm(soft_embeds))): feeds the previous step's beliefs back in."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        H = config.hidden_size
        self.pre_norm = RMSNorm(H, config.rms_norm_eps)
        self.post_norm = RMSNorm(H, config.rms_norm_eps, with_scale=False)
        mlp = GatedMLP(H, config.intermediate_size, config.hidden_activation)
        self.gate_proj, self.up_proj, self.down_proj, self.act = (
            mlp.gate_proj,
            mlp.up_proj,
            mlp.down_proj,
            mlp.act,
        )

    def forward(self, embeds: torch.Tensor, soft_embeds: torch.Tensor | None) -> torch.Tensor:
        if soft_embeds is None:  # first step: the reference passes zeros, whose MLP output is exactly 0
            return self.post_norm(embeds)
        h = self.pre_norm(soft_embeds)
        return self.post_norm(embeds + self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h)))


class DiffusionGemma(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, spec) for spec in config.layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_conditioning = SelfConditioning(config)
        self.register_buffer("encoder_layer_scalar", torch.ones(config.num_hidden_layers))
        for layer_type in set(config.layer_types):
            head_dim = next(s.head_dim for s in config.layers if s.layer_type is layer_type)
            inv = rope_inv_freq(config.rope[layer_type], head_dim)
            self.register_buffer(f"inv_freq_{layer_type.value}", inv, persistent=False)
        self._encode, self._decode = self._encode_eager, self._decode_eager
        self.decoding = False  # which pass runs now, for layers that differ by pass (a PEFT adapter's)
        self.vision_tower: VisionTower | None = None  # attached when the checkpoint has its weights
        self.embed_vision: MultimodalEmbedder | None = None

    def attach_vision(self) -> None:
        """Add the vision tower and its embedder (config.vision must be set), uninitialised."""
        vision = self.config.vision
        if vision is None:
            raise ValueError("this model's config declares no vision tower")
        self.vision_tower = VisionTower(vision)
        self.embed_vision = MultimodalEmbedder(
            vision.hidden_size, self.config.hidden_size, vision.rms_norm_eps
        )

    def image_features(self, pixel_values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Images as patches (B, P, 3 p^2) with (x, y) positions (B, P, 2) -> their soft tokens in
        the text embedding space (N, H), image after image."""
        if self.vision_tower is None or self.embed_vision is None:
            raise ValueError("this checkpoint has no vision-tower weights: it takes text only")
        tokens = self.vision_tower(pixel_values.to(self.device), positions.to(self.device))
        return self.embed_vision(tokens).to(self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def reset_rope(self) -> None:
        """Recompute the rotary tables (after building on the meta device)."""
        for layer_type in set(self.config.layer_types):
            head_dim = next(s.head_dim for s in self.config.layers if s.layer_type is layer_type)
            inv = rope_inv_freq(self.config.rope[layer_type], head_dim).to(self.device)
            setattr(self, f"inv_freq_{layer_type.value}", inv)
        if self.vision_tower is not None:
            self.vision_tower.reset_rope()

    def _embed_scale(self) -> torch.Tensor:
        # sqrt(hidden) rounded through float32 to the weight dtype, as the reference's buffer is
        return torch.tensor(self.config.hidden_size**0.5, dtype=torch.float32, device=self.device).to(
            self.dtype
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids) * self._embed_scale()

    def soft_embedding(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected embedding under softmax(logits): (..., V) -> (..., H), as the reference's decoder."""
        return self.expected_embedding(logits.softmax(dim=-1, dtype=torch.float32))

    def expected_embedding(self, probs: torch.Tensor) -> torch.Tensor:
        """probs (..., V) float32 -> (..., H): the sampler's probabilities fed back as they are."""
        w = self.embed_tokens.weight
        return (probs.to(w.dtype) @ w) * self._embed_scale()

    def encode(
        self,
        ids: torch.Tensor,
        store: KVStore,
        plan: AttentionPlan,
        images: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Causal pass over token ids (b, T); writes their keys and values; returns final hidden (b, T, H).

        `images`: where (b, T) bool and soft tokens (N, H) from `image_features`: the N positions
        marked take the soft tokens in row-major order instead of their token embeddings (the
        plan's masks say which of them see each other)."""
        self.decoding = False
        if images is None:
            return self._encode(ids, store, plan)
        where, tokens = images
        if int(where.sum()) != tokens.shape[0]:
            raise ValueError(f"{int(where.sum())} image positions for {tokens.shape[0]} image soft tokens")
        x = self.embed(ids).masked_scatter(where[..., None], tokens.to(self.dtype))
        return self._stack(x, store, plan, self.encoder_layer_scalar)

    def decode(
        self,
        canvas: torch.Tensor,
        store: KVStore,
        plan: AttentionPlan,
        soft_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bidirectional pass over a canvas (b, C) given the cached prefix; returns final hidden (b, C, H)."""
        self.decoding = True
        return self._decode(canvas, store, plan, soft_embeds)

    def compile(self) -> None:
        """Compile the encoder and decoder passes with torch.compile (dynamic shapes).

        The first passes take a while (tens of seconds on a CPU; inductor caches the result on disk);
        afterwards each pass runs as a few fused kernels instead of dozens of small ones.
        """
        self._encode = torch.compile(self._encode_eager, dynamic=True)
        self._decode = torch.compile(self._decode_eager, dynamic=True)

    def _encode_eager(self, ids: torch.Tensor, store: KVStore, plan: AttentionPlan) -> torch.Tensor:
        return self._stack(self.embed(ids), store, plan, self.encoder_layer_scalar)

    def _decode_eager(
        self, canvas: torch.Tensor, store: KVStore, plan: AttentionPlan, soft_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.self_conditioning(self.embed(canvas), soft_embeds)
        return self._stack(x, store, plan, None)

    def logits(
        self,
        hidden: torch.Tensor,
        ids: torch.Tensor | None = None,
        exact: bool = True,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tied LM head with the final tanh softcap, in float32: (..., H) -> (..., V), or over the
        vocabulary entries `ids` alone: (..., len(ids)).

        `exact=False` (no autograd) writes the softcap as cap * (2 sigmoid(2 z / cap) - 1), the same
        function: on a CPU it runs ~4x faster than torch's tanh, within 1e-5 of it for |logits| <= cap
        (tanh itself is within 3e-6 of the float64 value). The sampler's fast mode uses it.
        `out`: a float32 (..., V) buffer the full-vocabulary logits are written into (float32
        weights, no autograd), instead of a fresh tensor.
        """
        weight = self.embed_tokens.weight if ids is None else self.embed_tokens.weight.index_select(0, ids)
        if out is not None and ids is None and weight.dtype == hidden.dtype == torch.float32:
            logits = torch.matmul(hidden, weight.t(), out=out)  # the product F.linear computes
        else:
            logits = F.linear(hidden, weight).float()
        cap = self.config.final_logit_softcapping
        if cap is not None and torch.is_grad_enabled():  # autograd keeps tanh's output
            logits = torch.tanh(logits / cap) * cap
        elif cap is not None and exact:  # in place: the same rounding, no copies
            logits = logits.div_(cap).tanh_().mul_(cap)
        elif cap is not None:
            logits = logits.mul_(2 / cap).sigmoid_().sub_(0.5).mul_(2 * cap)
        return logits

    def rope(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> dict[LayerType, tuple[torch.Tensor, torch.Tensor]]:
        """Rotary tables per layer type for positions (b, T)."""
        return {
            t: rope_tables(getattr(self, f"inv_freq_{t.value}"), positions, dtype)
            for t in set(self.config.layer_types)
        }

    def layer_scalars(self, encoder: bool) -> list[torch.Tensor]:
        if encoder:
            return [self.encoder_layer_scalar[i : i + 1] for i in range(len(self.layers))]
        return [layer.layer_scalar for layer in self.layers]

    def _stack(
        self, x: torch.Tensor, store: KVStore, plan: AttentionPlan, encoder_scalars: torch.Tensor | None
    ) -> torch.Tensor:
        ropes = plan.ropes.get(x.dtype)
        if ropes is None:
            ropes = plan.ropes[x.dtype] = self.rope(plan.positions, x.dtype)
        scalars = self.layer_scalars(encoder=encoder_scalars is not None)
        for i, layer in enumerate(self.layers):
            cos, sin = ropes[self.config.layers[i].layer_type]
            k, v = store.keys[i], store.values[i]

            def cached(attn: Attention, h: torch.Tensor, cos=cos, sin=sin, k=k, v=v) -> torch.Tensor:
                return attn.forward(h, cos, sin, k, v, plan)

            x = layer.forward(x, cached, scalars[i])
        return self.norm(x)
