"""Helpers that build tiny random DiffusionGemma checkpoints with the reference implementation.

transformers is a test-only dependency: it is the oracle, never imported by the package.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_TEXT = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    sliding_window=6,
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    num_experts=4,
    top_k_experts=2,
    moe_intermediate_size=16,
    global_head_dim=16,
    num_global_key_value_heads=1,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
TINY_VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=8,
)


def reference_config(
    canvas_length: int = 8, vision: dict | None = None, top: dict | None = None, **text_overrides
):
    """The tiny reference config; `vision` replaces the vision tower's fields, `top` sets top-level
    ones (the image token ids)."""
    from transformers import DiffusionGemmaConfig
    from transformers.models.gemma4 import Gemma4VisionConfig

    text = {**TINY_TEXT, **text_overrides}
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=Gemma4VisionConfig(**(vision or TINY_VISION)),
        canvas_length=canvas_length,
        **(top or {}),
    )


def randomize_(model: torch.nn.Module, seed: int, std: float = 0.15) -> None:
    """Give every parameter and scalar buffer random values, so no term of the forward pass is trivial.

    With the default std the network is far from contractive: through self-conditioning, float
    rounding differences of 1e-6 grow about threefold per denoising step. Tests that compare sampled
    tokens keep the step count short; benchmarks use a smaller std.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                ("norm.weight", "layernorm.weight", "_1.weight", "_2.weight", "scale", "pre_norm.weight")
            ):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.copy_(0.6 + 0.8 * torch.rand(b.shape, generator=g))


def build_reference(
    directory: Path,
    seed: int = 0,
    canvas_length: int = 8,
    std: float = 0.15,
    vision: dict | None = None,
    top: dict | None = None,
    **text_overrides,
):
    """Save a random reference model to `directory` and return it (float32, eval mode)."""
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    config = reference_config(canvas_length, vision, top, **text_overrides)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    randomize_(model, seed, std)
    g = torch.Generator().manual_seed(seed + 1)
    for name, b in model.named_buffers():
        if name.endswith(("std_bias", "std_scale")):  # the vision tower's standardisation
            b.copy_(
                (0.5 + torch.rand(b.shape, generator=g))
                if name.endswith("scale")
                else torch.randn(b.shape, generator=g)
            )
    model.save_pretrained(directory)
    return model
