"""Torch modules of DiffusionGemma and their checkpoint loader; no engine, serving or training code."""

from dgemma.model.attention import AttentionPlan, KVStore, decoder_plan, encoder_plan
from dgemma.model.layers import reference_numerics
from dgemma.model.loader import CheckpointError, load_model, resolve_dtype
from dgemma.model.transformer import DiffusionGemma

__all__ = [
    "AttentionPlan",
    "CheckpointError",
    "DiffusionGemma",
    "KVStore",
    "decoder_plan",
    "encoder_plan",
    "load_model",
    "reference_numerics",
    "resolve_dtype",
]
