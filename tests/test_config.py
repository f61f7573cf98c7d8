"""Config parsing: both per-layer spellings, the reference's defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from dgemma.config import LayerType, ModelConfig, RopeType
from dgemma.model.layers import rope_inv_freq


def _hf(**text):
    base = dict(
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=16,
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=64,
        intermediate_size=48,
    )
    return {"model_type": "diffusion_gemma", "canvas_length": 16, "text_config": {**base, **text}}


def test_gemma4_style_global_fields_equal_per_layer_config():
    a = ModelConfig.from_hf(_hf(global_head_dim=16, num_global_key_value_heads=1))
    b = ModelConfig.from_hf(_hf(per_layer_config={"05": {"head_dim": 16, "num_key_value_heads": 1}}))
    assert a == b
    assert a.layer_types == (LayerType.SLIDING,) * 5 + (LayerType.FULL,)  # the default 5:1 pattern
    assert a.layers[5].head_dim == 16 and a.layers[5].num_kv_heads == 1 and not a.layers[5].has_v_proj
    assert a.layers[0].head_dim == 8 and a.layers[0].has_v_proj


def test_reference_defaults():
    c = ModelConfig.from_hf(_hf(layer_types=["sliding_attention"] * 6))
    assert c.layer_types[-1] is LayerType.FULL  # forced, as the reference does
    assert c.layers[-1].head_dim == 512  # global_head_dim defaults to 512
    assert c.rope[LayerType.FULL].rope_type is RopeType.PROPORTIONAL
    assert c.final_logit_softcapping == 30.0 and c.sliding_window == 512 and c.canvas_length == 16


def test_proportional_rope_leaves_tail_unrotated():
    c = ModelConfig.from_hf(_hf(global_head_dim=16))
    inv = rope_inv_freq(c.rope[LayerType.FULL], 16)
    assert inv.shape == (8,) and (inv[2:] == 0).all() and (inv[:2] > 0).all()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(num_experts=None), "num_experts"),
        (dict(top_k_experts=8), "top_k_experts"),
        (dict(use_bidirectional_attention="all"), "use_bidirectional_attention"),
        (dict(layer_types=["weird"] * 6), "layer_types"),
        (dict(per_layer_config={"1": {"intermediate_size": 7}}), "per_layer_config"),
        (
            dict(rope_parameters={"sliding_attention": {"rope_type": "yarn"}, "full_attention": {}}),
            "rope_type",
        ),
        (dict(hidden_activation="tanh"), "hidden_activation"),
        (dict(num_attention_heads=3), "num_attention_heads"),
    ],
)
def test_errors_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf(_hf(**change))


def test_wrong_model_type():
    with pytest.raises(ValueError, match="model_type 'gemma4'"):
        ModelConfig.from_hf({"model_type": "gemma4", "text_config": {}})
