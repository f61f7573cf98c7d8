"""Swapping a model's layers for quantized ones before its weights load, and quantizing each
checkpoint tensor as it is read (so the full-precision model never exists in memory)."""

from __future__ import annotations

import torch

from dgemma.model.transformer import DiffusionGemma
from dgemma.quant.modules import QuantExperts, QuantLinear
from dgemma.quant.scheme import QuantScheme
from dgemma.quant.tensor import check_shape, quantize

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def prepare(model: DiffusionGemma, scheme: QuantScheme) -> dict[str, str]:
    """Replace the targeted layers of a (meta-device) model with quantized ones. Returns, per
    checkpoint weight name, the prefix its `qweight` and `scale` take instead."""
    targets: dict[str, str] = {}
    for i, block in enumerate(model.layers):
        groups = []
        if "attention" in scheme.components:
            groups.append(("self_attn", block.self_attn, _ATTENTION))
        if "mlp" in scheme.components:
            groups.append(("mlp", block.mlp, _MLP))
        for where, module, names in groups:
            for name in names:
                linear = getattr(module, name)
                if linear is None:  # a layer whose values are its keys
                    continue
                check_shape(linear.weight.shape, scheme.bits, scheme.group_size)
                setattr(
                    module,
                    name,
                    QuantLinear(linear.in_features, linear.out_features, linear.bias is not None, scheme),
                )
                targets[f"layers.{i}.{where}.{name}.weight"] = f"layers.{i}.{where}.{name}."
        if "experts" in scheme.components:
            for bank in (block.experts.gate_up_proj, block.experts.down_proj):
                check_shape(bank.shape, scheme.bits, scheme.group_size)
            block.experts = QuantExperts(model.config, scheme)
            for bank in ("gate_up_proj", "down_proj"):
                targets[f"layers.{i}.experts.{bank}"] = f"layers.{i}.experts.{bank}_"
    if "vision" in scheme.components and model.vision_tower is not None:
        targets |= _prepare_tower(model, scheme)
    return targets


def _prepare_tower(model: DiffusionGemma, scheme: QuantScheme) -> dict[str, str]:
    """The tower's attention and MLP projections (its patch embedder and the projection into the
    text model stay): each whose input width the group size divides."""
    from dgemma.model.vision import ClippableLinear

    targets = {}
    for path, module in model.vision_tower.named_modules():
        if not isinstance(module, ClippableLinear):
            continue
        linear = module.linear
        try:
            check_shape(linear.weight.shape, scheme.bits, scheme.group_size)
        except ValueError:  # e.g. the 26B tower's MLP rows of 4304 in groups of 32: kept
            continue
        module.linear = QuantLinear(linear.in_features, linear.out_features, False, scheme)
        targets[f"vision_tower.{path}.linear.weight"] = f"vision_tower.{path}.linear."
    return targets


def packed_dtypes(model: DiffusionGemma) -> dict[str, torch.dtype]:
    """State-dict names of the quantized layers' packed weights and scales, with their dtypes."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, QuantLinear | QuantExperts):
            for name, buffer in module.named_buffers(recurse=False):
                if name.endswith(("qweight", "scale")):
                    out[f"{prefix}.{name}"] = buffer.dtype
    return out


def quantized_state(
    prefix: str, tensor: torch.Tensor, scheme: QuantScheme, device: torch.device
) -> dict[str, torch.Tensor]:
    """The `qweight` / `scale` entries of one checkpoint tensor."""
    qweight, scale = quantize(tensor, scheme.bits, scheme.group_size, scheme.scale_torch_dtype)
    return {f"{prefix}qweight": qweight.to(device), f"{prefix}scale": scale.to(device)}
