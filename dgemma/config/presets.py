"""Published model shapes, for accounting without weights (`dgemma inspect --config NAME`).

DiffusionGemma 26B-A4B is Gemma 4 26B-A4B's backbone: 30 layers (five sliding-window layers of
1024 tokens, then one global layer), hidden size 2816, 16 query heads, 8 KV heads of 256 on
sliding layers and 2 of 512 on global ones (keys are the values there), a shared dense MLP of 2112,
128 experts of 704 with 8 routed per token, a 262,144-token vocabulary tied to the output head.
These give its 25.2B total and 3.8B active parameters, which the accounting test checks.
"""

from __future__ import annotations

from typing import Any

from dgemma.config.model import MODEL_TYPE, TEXT_MODEL_TYPE, ModelConfig

PRESETS: dict[str, dict[str, Any]] = {
    "diffusiongemma-26b-a4b": {
        "model_type": MODEL_TYPE,
        "canvas_length": 256,
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": TEXT_MODEL_TYPE,
            "vocab_size": 262_144,
            "hidden_size": 2816,
            "intermediate_size": 2112,
            "num_hidden_layers": 30,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 256,
            "global_head_dim": 512,
            "num_global_key_value_heads": 2,
            "attention_k_eq_v": True,
            "num_experts": 128,
            "top_k_experts": 8,
            "moe_intermediate_size": 704,
            "sliding_window": 1024,
            "max_position_embeddings": 262_144,
            "use_bidirectional_attention": "vision",
        },
        # Gemma 4's vision tower: 27 layers of 1152 (16 heads of 72), 16-pixel patches pooled 3 x 3
        "vision_config": {
            "model_type": "gemma4_vision",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 72,
            "patch_size": 16,
            "pooling_kernel_size": 3,
            "position_embedding_size": 10_240,
            "standardize": True,
        },
        "image_token_id": 258_880,
        "boi_token_id": 255_999,
        "eoi_token_id": 258_882,
        "vision_soft_tokens_per_image": 280,
    },
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(PRESETS)}")
    return ModelConfig.from_hf(PRESETS[name])
