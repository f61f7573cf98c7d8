"""Layers whose weights are stored quantized (`dgemma/quant/tensor.py`) and computed with at load
dtype: a linear layer, and the routed experts' two weight banks.

Each layer dequantizes its weight at use, so at most one layer is ever held unpacked, never the
model. (torch's CPU int8 weight kernel, `_weight_int8pack_mm`, was measured at 25-40x slower than
dequantize-then-matmul on this machine's CPU for these shapes, so it is not used; see
docs/quantization.md.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgemma.model.layers import Experts
from dgemma.quant.scheme import QuantScheme
from dgemma.quant.tensor import dequantize


class QuantLinear(nn.Module):
    """y = x W^T (+ b) with W stored as `qweight` and `scale` buffers."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: QuantScheme):
        super().__init__()
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        g, sd = scheme.group_size, scheme.scale_torch_dtype
        if scheme.bits == 8:
            self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scale", torch.empty(out_features, 1, dtype=sd))
        else:
            self.register_buffer("qweight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scale", torch.empty(out_features, in_features // g, 1, dtype=sd))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def weight_as(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(self.qweight, self.scale, self.scheme.bits, dtype, self.scheme.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_as(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.scheme}"


class QuantExperts(Experts):
    """Routed experts whose banks are stored quantized; each forward dequantizes them once."""

    def __init__(self, config, scheme: QuantScheme):
        super().__init__(config)
        E, H, F_ = config.num_experts, config.hidden_size, config.moe_intermediate_size
        del self.gate_up_proj, self.down_proj
        self.scheme = scheme
        for name, (rows, cols) in (("gate_up_proj", (2 * F_, H)), ("down_proj", (H, F_))):
            if scheme.bits == 8:
                q = torch.empty(E, rows, cols, dtype=torch.int8)
                s = torch.empty(E, rows, 1, dtype=scheme.scale_torch_dtype)
            else:
                q = torch.empty(E, rows, cols // 2, dtype=torch.uint8)
                s = torch.empty(E, rows, cols // scheme.group_size, 1, dtype=scheme.scale_torch_dtype)
            self.register_buffer(f"{name}_qweight", q)
            self.register_buffer(f"{name}_scale", s)

    def banks(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        bits, g = self.scheme.bits, self.scheme.group_size
        return (
            dequantize(self.gate_up_proj_qweight, self.gate_up_proj_scale, bits, dtype, g),
            dequantize(self.down_proj_qweight, self.down_proj_scale, bits, dtype, g),
        )
