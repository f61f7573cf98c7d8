"""Weights kept in the packed form a downloaded checkpoint stores them in (GGUF blocks, compressed-
tensors FP8 or NVFP4), and the layers that compute with them, unpacking one layer at a time.

`Packed` is one weight as read: its format, the stored tensors, and the shape it unpacks to.
`install` puts it into a model built on the meta device: a linear layer becomes a `PackedLinear`,
an expert bank moves into a `PackedExperts`; anything else (the token embedding, a norm) is
unpacked once at load, since it is read a row at a time or is tiny.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgemma.model.layers import Experts
from dgemma.quant import ggml

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # FP4 magnitudes by their 3 low bits


@dataclass(frozen=True)
class Format:
    """How stored tensors unpack: "gguf" (GGML blocks of `qtype`), "fp8" (float8 values times a
    scale grid), "nvfp4" (E2M1 pairs per byte, FP8 scales per 16, one float32 global scale)."""

    kind: str
    qtype: int = 0

    def __str__(self) -> str:
        return f"GGUF {ggml.type_name(self.qtype)}" if self.kind == "gguf" else self.kind.upper()


@dataclass
class Packed:
    format: Format
    tensors: dict[str, torch.Tensor]
    shape: torch.Size

    def unpack(self, dtype: torch.dtype) -> torch.Tensor:
        return unpack(self.format, self.tensors, self.shape, dtype)


def unpack(fmt: Format, t: dict[str, torch.Tensor], shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    if fmt.kind == "gguf":
        return ggml.dequantize(t["blocks"], fmt.qtype, shape[-1], dtype)
    if fmt.kind == "fp8":
        return (t["weight"].float() * _grid(t["weight_scale"].float(), shape)).to(dtype)
    if fmt.kind == "nvfp4":
        codes = t["weight_packed"]
        codes = torch.stack((codes & 0x0F, codes >> 4), dim=-1).reshape(shape)
        table = _e2m1_table(codes.device)
        scale = t["weight_scale"].float() / t["weight_global_scale"].float()
        return (table[codes.long()] * _grid(scale, shape)).to(dtype)
    raise ValueError(f"unknown packed format {fmt.kind!r}")


@functools.lru_cache(maxsize=8)
def _e2m1_table(device: torch.device) -> torch.Tensor:
    """The 16 FP4 values by code (sign in the high bit), built once per device: a packed layer
    unpacks at every call."""
    return torch.tensor(E2M1 + tuple(-v for v in E2M1), device=device)


def _grid(scale: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A scale of shape (..., a, b) over a weight (..., rows, cols): each scale covers a
    ceil(rows / a) x ceil(cols / b) tile (a tensor, a row, a group, or a block of both)."""
    rows, cols = shape[-2], shape[-1]
    if scale.ndim < 2:  # one per tensor, or one per row
        scale = scale.reshape(-1, 1) if scale.numel() == rows else scale.reshape(1, 1)
    a, b = scale.shape[-2], scale.shape[-1]
    if a not in (1, rows):
        scale = scale.repeat_interleave(-(-rows // a), dim=-2)[..., :rows, :]
    if b not in (1, cols):
        scale = scale.repeat_interleave(-(-cols // b), dim=-1)[..., :cols]
    return scale


class PackedLinear(nn.Module):
    """y = x W^T (+ b) with W held packed; unpacked at each call."""

    def __init__(self, packed: Packed, bias: nn.Parameter | None):
        super().__init__()
        self.format, self.shape = packed.format, packed.shape
        self.out_features, self.in_features = packed.shape
        for key, tensor in packed.tensors.items():
            self.register_buffer(key, tensor)
        self._keys = tuple(packed.tensors)
        self.bias = bias

    def weight_as(self, dtype: torch.dtype) -> torch.Tensor:
        return unpack(self.format, {k: getattr(self, k) for k in self._keys}, self.shape, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_as(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.format}"


class PackedExperts(Experts):
    """Routed experts whose banks (either or both) are held packed."""

    def __init__(self, experts: Experts):
        nn.Module.__init__(self)
        self.gate_up_proj, self.down_proj = experts.gate_up_proj, experts.down_proj
        self.act, self.dense_inference = experts.act, experts.dense_inference
        self.dense_compiled = experts.dense_compiled
        self.formats: dict[str, tuple[Format, tuple[str, ...], torch.Size]] = {}

    def hold(self, bank: str, packed: Packed) -> None:
        delattr(self, bank)
        for key, tensor in packed.tensors.items():
            self.register_buffer(f"{bank}_{key}", tensor)
        self.formats[bank] = (packed.format, tuple(packed.tensors), packed.shape)

    def _bank(self, bank: str, dtype: torch.dtype) -> torch.Tensor:
        if bank not in self.formats:
            return getattr(self, bank)
        fmt, keys, shape = self.formats[bank]
        return unpack(fmt, {k: getattr(self, f"{bank}_{k}") for k in keys}, shape, dtype)

    def banks(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self._bank("gate_up_proj", dtype), self._bank("down_proj", dtype)


def install(model: nn.Module, name: str, packed: Packed, dtype: torch.dtype, device: torch.device) -> dict:
    """Place the packed weight `name` (our state-dict name) into `model` (built on meta).
    Returns the state-dict entries to load in its place."""
    packed = Packed(
        packed.format, {k: v.to(device, copy=True) for k, v in packed.tensors.items()}, packed.shape
    )
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    # the vision tower and the router read their weights directly: unpacked once, like norms
    computes = not name.startswith(("vision_tower.", "embed_vision.")) and ".router." not in name
    if computes and isinstance(owner, nn.Linear) and leaf == "weight":
        parent_name, _, child = owner_name.rpartition(".")
        layer = PackedLinear(packed, owner.bias)
        setattr(model.get_submodule(parent_name), child, layer)
        return {f"{owner_name}.{k}": v for k, v in packed.tensors.items()}
    if isinstance(owner, Experts) and leaf in ("gate_up_proj", "down_proj"):
        if not isinstance(owner, PackedExperts):
            parent_name, _, child = owner_name.rpartition(".")
            owner = PackedExperts(owner)
            setattr(model.get_submodule(parent_name), child, owner)
        owner.hold(leaf, packed)
        return {f"{owner_name}.{leaf}_{k}": v for k, v in packed.tensors.items()}
    return {name: packed.unpack(dtype)}  # read by row or tiny: unpacked once


def holds_quantized(model: nn.Module) -> bool:
    """Whether any layer of `model` keeps its weight quantized (loaded packed or quantized at load)."""
    from dgemma.quant.modules import QuantExperts, QuantLinear

    kinds = (PackedLinear, PackedExperts, QuantLinear, QuantExperts)
    return any(isinstance(m, kinds) for m in model.modules())
