"""The image half of a DiffusionGemma checkpoint's config.json: the Gemma 4 vision tower and the
token ids that place images in a prompt.

Fields and defaults are those of transformers 5.23.0's `Gemma4VisionConfig` and the image fields of
`DiffusionGemmaConfig` (`image_token_id`, `boi_token_id`, `eoi_token_id`). The text config's
`use_bidirectional_attention: "vision"` (the 26B-A4B checkpoint sets it) lets the soft tokens of
one image attend to each other both ways in the encoder; every other position stays causal.
This module does no I/O and imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VISION_MODEL_TYPE = "gemma4_vision"
_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "silu", "relu")
_ROPE_TYPES = ("axial", "default")  # checkpoints write "default" for the tower's axial rotation


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 16
    num_attention_heads: int = 12
    num_key_value_heads: int = 12
    head_dim: int = 64
    hidden_activation: str = "gelu_pytorch_tanh"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 100.0
    pooling_kernel_size: int = 3
    patch_size: int = 16
    position_embedding_size: int = 10 * 1024
    use_clipped_linears: bool = False
    standardize: bool = False
    # the prompt side, from the top level of config.json
    image_token_id: int = 258_880
    boi_token_id: int = 255_999
    eoi_token_id: int = 258_882
    soft_tokens_per_image: int = 280  # `vision_soft_tokens_per_image`: the image processor's default budget
    bidirectional: bool = False  # text_config.use_bidirectional_attention == "vision"

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "pooling_kernel_size",
            "patch_size",
            "position_embedding_size",
            "soft_tokens_per_image",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"vision_config field `{name}` must be a positive integer, got {value!r}")
        if self.head_dim % 4:
            raise ValueError(
                f"vision_config field `head_dim` must be a multiple of 4 (two rotated axes), got {self.head_dim}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                "vision_config: `num_attention_heads` is not a multiple of `num_key_value_heads`"
            )
        if self.hidden_activation not in _ACTIVATIONS:
            raise ValueError(f"vision_config field `hidden_activation` is {self.hidden_activation!r}")

    @property
    def patch_pixels(self) -> int:
        return 3 * self.patch_size**2

    def to_hf(self) -> dict[str, Any]:
        """This tower as config.json's `vision_config` (the prompt-side ids live at the top level)."""
        return {
            "model_type": VISION_MODEL_TYPE,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_activation": self.hidden_activation,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"rope_type": "axial", "rope_theta": self.rope_theta},
            "pooling_kernel_size": self.pooling_kernel_size,
            "patch_size": self.patch_size,
            "position_embedding_size": self.position_embedding_size,
            "use_clipped_linears": self.use_clipped_linears,
            "standardize": self.standardize,
        }

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> VisionConfig | None:
        """The vision side of a parsed config.json, or None when it declares no vision tower."""
        raw = config.get("vision_config")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ValueError("config.json field `vision_config` must be an object")
        if raw.get("model_type", VISION_MODEL_TYPE) != VISION_MODEL_TYPE:
            raise ValueError(
                f"vision_config has model_type {raw.get('model_type')!r}, expected {VISION_MODEL_TYPE!r}"
            )
        rope = raw.get("rope_parameters") or {}
        if rope.get("rope_type", "axial") not in _ROPE_TYPES:
            raise ValueError(f"vision_config rope_type {rope.get('rope_type')!r} is not the axial rotation")
        defaults = cls()

        def get(name: str, key: str | None = None) -> Any:
            value = raw.get(key or name)
            return getattr(defaults, name) if value is None else value

        def top(name: str, key: str) -> Any:
            value = config.get(key)
            return getattr(defaults, name) if value is None else value

        text = config.get("text_config") or {}
        return cls(
            hidden_size=get("hidden_size"),
            intermediate_size=get("intermediate_size"),
            num_hidden_layers=get("num_hidden_layers"),
            num_attention_heads=get("num_attention_heads"),
            num_key_value_heads=get("num_key_value_heads"),
            head_dim=get("head_dim"),
            hidden_activation=get("hidden_activation"),
            rms_norm_eps=float(get("rms_norm_eps")),
            rope_theta=float(rope.get("rope_theta", defaults.rope_theta)),
            pooling_kernel_size=get("pooling_kernel_size"),
            patch_size=get("patch_size"),
            position_embedding_size=get("position_embedding_size"),
            use_clipped_linears=bool(get("use_clipped_linears")),
            standardize=bool(get("standardize")),
            image_token_id=int(top("image_token_id", "image_token_id")),
            boi_token_id=int(top("boi_token_id", "boi_token_id")),
            eoi_token_id=int(top("eoi_token_id", "eoi_token_id")),
            soft_tokens_per_image=int(top("soft_tokens_per_image", "vision_soft_tokens_per_image")),
            bidirectional=text.get("use_bidirectional_attention") == "vision",
        )
