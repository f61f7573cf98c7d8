"""The model configuration, read from a Hugging Face checkpoint's config.json.

`ModelConfig` mirrors the text half of `DiffusionGemmaConfig` (transformers 5.23.0), with every
per-layer choice resolved up front into a `LayerSpec`, so the model code never re-derives it.
`SamplerConfig` holds the diffusion sampler's knobs with the defaults of `generation_config.json`.
This module does no I/O and imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dgemma.config.vision import VisionConfig

MODEL_TYPE = "diffusion_gemma"
TEXT_MODEL_TYPE = "diffusion_gemma_text"
# transformers builds a vision tower from config.json even for text-only use; this one is tiny (its weights go unused)
MINIMAL_VISION_CONFIG = {
    "model_type": "gemma4_vision",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
}


class LayerType(StrEnum):
    SLIDING = "sliding_attention"
    FULL = "full_attention"


class RopeType(StrEnum):
    DEFAULT = "default"
    PROPORTIONAL = "proportional"


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding of one layer type: which frequencies rotate and which stay fixed."""

    rope_type: RopeType
    theta: float
    partial_rotary_factor: float = 1.0
    factor: float = 1.0


@dataclass(frozen=True)
class LayerSpec:
    """Everything that differs between layers, resolved from `layer_types` and `per_layer_config`."""

    layer_type: LayerType
    head_dim: int
    num_kv_heads: int

    @property
    def is_sliding(self) -> bool:
        return self.layer_type is LayerType.SLIDING

    @property
    def has_v_proj(self) -> bool:
        # Full-attention layers have no v_proj: their values are the (un-normed) keys.
        return self.is_sliding


_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "silu", "relu")
_PER_LAYER_FIELDS = {"head_dim", "num_key_value_heads"}


@dataclass(frozen=True)
class ModelConfig:
    """The text model of a DiffusionGemma checkpoint (the vision tower is not used)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    sliding_window: int
    layers: tuple[LayerSpec, ...]
    rope: dict[LayerType, RopeSpec]
    canvas_length: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    final_logit_softcapping: float | None = 30.0
    max_position_embeddings: int = 131_072
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 2
    eos_token_ids: tuple[int, ...] = (1,)
    vision: VisionConfig | None = None  # the image side, when config.json declares a vision tower

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_experts",
            "top_k_experts",
            "moe_intermediate_size",
            "sliding_window",
            "canvas_length",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config field `{name}` must be a positive integer, got {value!r}")
        if self.top_k_experts > self.num_experts:
            raise ValueError(
                f"config field `top_k_experts` ({self.top_k_experts}) exceeds `num_experts` ({self.num_experts})"
            )
        if len(self.layers) != self.num_hidden_layers:
            raise ValueError(
                f"config field `layer_types` has {len(self.layers)} entries for {self.num_hidden_layers} layers"
            )
        for i, spec in enumerate(self.layers):
            if self.num_attention_heads % spec.num_kv_heads:
                raise ValueError(
                    f"layer {i}: `num_attention_heads` ({self.num_attention_heads}) is not a multiple of "
                    f"its `num_key_value_heads` ({spec.num_kv_heads})"
                )
            if spec.head_dim % 2:
                raise ValueError(
                    f"layer {i}: `head_dim` must be even for rotary embeddings, got {spec.head_dim}"
                )
        if self.hidden_activation not in _ACTIVATIONS:
            raise ValueError(
                f"config field `hidden_activation` is {self.hidden_activation!r}; supported: {', '.join(_ACTIVATIONS)}"
            )

    @property
    def layer_types(self) -> tuple[LayerType, ...]:
        return tuple(spec.layer_type for spec in self.layers)

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelConfig:
        """Build from a parsed `config.json` of a DiffusionGemmaForBlockDiffusion checkpoint."""
        model_type = config.get("model_type")
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"config.json has model_type {model_type!r}; dgemma loads {MODEL_TYPE!r} checkpoints"
            )
        text = config.get("text_config")
        if not isinstance(text, dict):
            raise ValueError("config.json has no `text_config` object")
        if text.get("model_type", TEXT_MODEL_TYPE) != TEXT_MODEL_TYPE:
            raise ValueError(
                f"text_config has model_type {text.get('model_type')!r}, expected {TEXT_MODEL_TYPE!r}"
            )
        text_only = cls._from_text_config(
            text,
            canvas_length=config.get("canvas_length", 256),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        )
        return dataclasses.replace(text_only, vision=VisionConfig.from_hf(config))

    @classmethod
    def _from_text_config(
        cls, text: dict[str, Any], canvas_length: int, tie_word_embeddings: bool
    ) -> ModelConfig:
        def get(name: str, default: Any) -> Any:
            value = text.get(name, default)
            return default if value is None and default is not None else value

        for required in ("num_experts", "top_k_experts", "moe_intermediate_size"):
            if text.get(required) is None:
                raise ValueError(
                    f"text_config field `{required}` is missing: DiffusionGemma layers are MoE layers"
                )
        bidirectional = text.get("use_bidirectional_attention")
        if bidirectional == "all":
            raise ValueError(
                "text_config field `use_bidirectional_attention` is 'all' (a bidirectional encoder); "
                "DiffusionGemma's block-autoregressive encoder must be causal"
            )
        if bidirectional not in (None, "vision"):
            raise ValueError(
                f"text_config field `use_bidirectional_attention` has unknown value {bidirectional!r}"
            )

        num_layers = get("num_hidden_layers", 30)
        layer_types = _resolve_layer_types(text.get("layer_types"), num_layers)
        layers = _resolve_layer_specs(text, layer_types, get("head_dim", 256), get("num_key_value_heads", 4))
        rope = _resolve_rope(text.get("rope_parameters"), layer_types)

        eos = text.get("eos_token_id", 1)
        return cls(
            vocab_size=get("vocab_size", 262_144),
            hidden_size=get("hidden_size", 2304),
            intermediate_size=get("intermediate_size", 9216),
            num_hidden_layers=num_layers,
            num_attention_heads=get("num_attention_heads", 8),
            num_experts=text["num_experts"],
            top_k_experts=text["top_k_experts"],
            moe_intermediate_size=text["moe_intermediate_size"],
            sliding_window=get("sliding_window", 512),
            layers=layers,
            rope=rope,
            canvas_length=canvas_length,
            hidden_activation=get("hidden_activation", "gelu_pytorch_tanh"),
            rms_norm_eps=float(get("rms_norm_eps", 1e-6)),
            attention_bias=bool(get("attention_bias", False)),
            final_logit_softcapping=text.get("final_logit_softcapping", 30.0),
            max_position_embeddings=get("max_position_embeddings", 131_072),
            tie_word_embeddings=tie_word_embeddings,
            pad_token_id=text.get("pad_token_id", 0),
            bos_token_id=text.get("bos_token_id", 2),
            eos_token_ids=_as_id_tuple(eos),
        )

    def to_hf(self) -> dict[str, Any]:
        """A config.json for this model that dgemma and transformers 5.23.0 both load (text only)."""
        base = next((s for s in self.layers if s.is_sliding), self.layers[0])
        per_layer = {
            str(i): {"head_dim": s.head_dim, "num_key_value_heads": s.num_kv_heads}
            for i, s in enumerate(self.layers)
            if (s.head_dim, s.num_kv_heads) != (base.head_dim, base.num_kv_heads)
        }
        rope = {
            t.value: {"rope_type": r.rope_type.value, "rope_theta": r.theta}
            | (
                {"partial_rotary_factor": r.partial_rotary_factor}
                if r.rope_type is RopeType.PROPORTIONAL
                else {}
            )
            | ({"factor": r.factor} if r.factor != 1.0 else {})
            for t, r in self.rope.items()
        }
        text = {
            "model_type": TEXT_MODEL_TYPE,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": base.num_kv_heads,
            "head_dim": base.head_dim,
            "per_layer_config": per_layer,
            "layer_types": [t.value for t in self.layer_types],
            "sliding_window": self.sliding_window,
            "rope_parameters": rope,
            "num_experts": self.num_experts,
            "top_k_experts": self.top_k_experts,
            "moe_intermediate_size": self.moe_intermediate_size,
            "hidden_activation": self.hidden_activation,
            "rms_norm_eps": self.rms_norm_eps,
            "attention_bias": self.attention_bias,
            "final_logit_softcapping": self.final_logit_softcapping,
            "max_position_embeddings": self.max_position_embeddings,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids),
            "tie_word_embeddings": True,
        }
        return {
            "model_type": MODEL_TYPE,
            "architectures": ["DiffusionGemmaForBlockDiffusion"],
            "canvas_length": self.canvas_length,
            "tie_word_embeddings": True,
            "text_config": text,
            "vision_config": dict(MINIMAL_VISION_CONFIG) if self.vision is None else self.vision.to_hf(),
        } | ({} if self.vision is None else self._image_ids())

    def _image_ids(self) -> dict[str, int]:
        v = self.vision
        return {
            "image_token_id": v.image_token_id,
            "boi_token_id": v.boi_token_id,
            "eoi_token_id": v.eoi_token_id,
            "vision_soft_tokens_per_image": v.soft_tokens_per_image,
        }


def _as_id_tuple(value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _resolve_layer_types(raw: list[str] | None, num_layers: int) -> tuple[LayerType, ...]:
    if raw is None:
        # The reference's default pattern: five sliding layers, then one full layer.
        raw = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(num_layers)]
    try:
        types = [LayerType(t) for t in raw]
    except ValueError as err:
        raise ValueError(f"text_config field `layer_types` has an unknown entry: {err}") from None
    if types and types[-1] is not LayerType.FULL:
        types[-1] = LayerType.FULL  # the reference forces the last layer to full attention
    return tuple(types)


def _resolve_layer_specs(
    text: dict[str, Any], layer_types: tuple[LayerType, ...], head_dim: int, num_kv_heads: int
) -> tuple[LayerSpec, ...]:
    per_layer = text.get("per_layer_config")
    if per_layer is None:
        # Gemma 4 style: full-attention layers take `global_head_dim` (512 unless set) and, when
        # `attention_k_eq_v` holds (true when absent), `num_global_key_value_heads`.
        overrides: dict[str, Any] = {"head_dim": text.get("global_head_dim") or 512}
        global_kv = text.get("num_global_key_value_heads")
        if global_kv is not None and text.get("attention_k_eq_v", True):
            overrides["num_key_value_heads"] = global_kv
        per_layer = {i: overrides for i, t in enumerate(layer_types) if t is LayerType.FULL}
    specs = []
    parsed = {int(k): v for k, v in per_layer.items()}
    for idx in parsed:
        if not 0 <= idx < len(layer_types):
            raise ValueError(
                f"text_config field `per_layer_config` names layer {idx}, outside 0..{len(layer_types) - 1}"
            )
    for i, layer_type in enumerate(layer_types):
        override = parsed.get(i, {})
        unknown = set(override) - _PER_LAYER_FIELDS
        if unknown:
            raise ValueError(
                f"text_config field `per_layer_config` overrides {sorted(unknown)} for layer {i}; "
                f"only {sorted(_PER_LAYER_FIELDS)} may vary per layer"
            )
        specs.append(
            LayerSpec(
                layer_type=layer_type,
                head_dim=int(override.get("head_dim", head_dim)),
                num_kv_heads=int(override.get("num_key_value_heads", num_kv_heads)),
            )
        )
    for layer_type in set(layer_types):
        dims = {s.head_dim for s in specs if s.layer_type is layer_type}
        if len(dims) > 1:
            raise ValueError(
                f"`per_layer_config` gives {layer_type.value} layers different head_dims {sorted(dims)}"
            )
    return tuple(specs)


_DEFAULT_ROPE = {
    LayerType.SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    LayerType.FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}


def _resolve_rope(
    raw: dict[str, Any] | None, layer_types: tuple[LayerType, ...]
) -> dict[LayerType, RopeSpec]:
    raw = raw or {t.value: p for t, p in _DEFAULT_ROPE.items()}
    rope = {}
    for layer_type in set(layer_types):
        params = raw.get(layer_type.value)
        if params is None:
            raise ValueError(f"text_config field `rope_parameters` has no entry for {layer_type.value!r}")
        try:
            rope_type = RopeType(params.get("rope_type", "default"))
        except ValueError:
            raise ValueError(
                f"text_config field `rope_parameters.{layer_type.value}.rope_type` is {params.get('rope_type')!r}; "
                f"supported: {', '.join(t.value for t in RopeType)}"
            ) from None
        prf = float(params.get("partial_rotary_factor", 1.0))
        if rope_type is RopeType.DEFAULT and prf != 1.0:
            raise ValueError(
                f"`rope_parameters.{layer_type.value}`: partial_rotary_factor {prf} needs rope_type 'proportional'"
            )
        rope[layer_type] = RopeSpec(
            rope_type=rope_type,
            theta=float(params.get("rope_theta", 10_000.0)),
            partial_rotary_factor=prf,
            factor=float(params.get("factor", 1.0)),
        )
    return rope
