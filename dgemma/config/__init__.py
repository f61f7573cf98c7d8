"""Frozen configuration dataclasses read from a checkpoint's JSON files; no torch, no I/O.

`ModelConfig` mirrors the text half of `DiffusionGemmaConfig` (transformers 5.23.0) with every
per-layer choice resolved into a `LayerSpec`; `SamplerConfig` holds the diffusion sampler's knobs.
"""

from dgemma.config.model import (
    MODEL_TYPE,
    TEXT_MODEL_TYPE,
    LayerSpec,
    LayerType,
    ModelConfig,
    RopeSpec,
    RopeType,
)
from dgemma.config.sampler import GenerationDefaults, SamplerConfig

__all__ = [
    "MODEL_TYPE",
    "TEXT_MODEL_TYPE",
    "GenerationDefaults",
    "LayerSpec",
    "LayerType",
    "ModelConfig",
    "RopeSpec",
    "RopeType",
    "SamplerConfig",
]
