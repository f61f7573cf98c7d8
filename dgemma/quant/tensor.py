"""Weight-only quantization of one tensor along its last (input) dimension, and back.

    int8   symmetric per output channel: q = round(w / s) in [-127, 127], s = max|w| / 127 per row
    int4   symmetric per group of `group_size` inputs: q in [-8, 7], s = max|w| / 7 per group,
           two values packed per byte (low nibble first), stored as uint8

Leading dimensions (an expert bank's E) are kept; scales are float16 by default (as llama.cpp
stores its blocks' scales; float32 on request), shaped to broadcast over the rows (int8:
(..., out, 1)) or groups (int4: (..., out, in / group, 1)); values are rounded against the stored
scale, so the round trip stays within half a step of it. Quantizing goes a
slice of the leading dimension at a time, so a bank never has a float32 copy in memory whole.
"""

from __future__ import annotations

import torch

INT8_MAX = 127
INT4_MAX = 7


def check_shape(shape: torch.Size | tuple[int, ...], bits: int, group_size: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"weights quantize to 8 or 4 bits, not {bits}")
    if bits == 4 and (group_size < 2 or group_size % 2 or shape[-1] % group_size):
        raise ValueError(
            f"int4 needs an even `group_size` dividing the input dimension {shape[-1]}, got {group_size}"
        )


def quantize(
    weight: torch.Tensor, bits: int, group_size: int = 32, scale_dtype: torch.dtype = torch.float16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(qdata, scale) of `weight` (float, any leading dims)."""
    check_shape(weight.shape, bits, group_size)
    if weight.ndim > 2:  # a slice at a time into outputs allocated once (no stacked copy)
        q0, s0 = quantize(weight[0], bits, group_size, scale_dtype)
        qdata = torch.empty((*weight.shape[:-2], *q0.shape), dtype=q0.dtype)
        scale = torch.empty((*weight.shape[:-2], *s0.shape), dtype=s0.dtype)
        flat_q, flat_s, flat_w = (
            qdata.view(-1, *q0.shape),
            scale.view(-1, *s0.shape),
            weight.reshape(-1, *weight.shape[-2:]),
        )
        flat_q[0], flat_s[0] = q0, s0
        for i in range(1, flat_w.shape[0]):
            flat_q[i], flat_s[i] = quantize(flat_w[i], bits, group_size, scale_dtype)
        return qdata, scale
    w = weight.float()
    tiny = torch.finfo(scale_dtype).tiny
    if bits == 8:
        scale = (w.abs().amax(dim=-1, keepdim=True) / INT8_MAX).clamp_(min=tiny).to(scale_dtype)
        return torch.round(w / scale.float()).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scale
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // group_size, group_size)
    scale = (groups.abs().amax(dim=-1, keepdim=True) / INT4_MAX).clamp_(min=tiny).to(scale_dtype)
    q = torch.round(groups / scale.float()).clamp_(-INT4_MAX - 1, INT4_MAX).to(torch.int16) + 8  # 0..15
    q = q.reshape(*w.shape[:-1], w.shape[-1] // 2, 2)
    return (q[..., 0] | (q[..., 1] << 4)).to(torch.uint8), scale


def dequantize(
    qdata: torch.Tensor, scale: torch.Tensor, bits: int, dtype: torch.dtype, group_size: int = 32
) -> torch.Tensor:
    """The weight back in `dtype` (what the layer computes with; the product is taken at float32
    or `dtype`, whichever is wider than the scale)."""
    compute = torch.promote_types(torch.promote_types(scale.dtype, dtype), torch.float32)
    if bits == 8:
        return (qdata.to(compute) * scale.to(compute)).to(dtype)
    low = (qdata & 0x0F).to(torch.int8) - 8
    high = (qdata >> 4).to(torch.int8) - 8
    values = torch.stack((low, high), dim=-1).reshape(*qdata.shape[:-1], qdata.shape[-1] * 2)
    groups = values.reshape(*values.shape[:-1], values.shape[-1] // group_size, group_size)
    return (groups.to(compute) * scale.to(compute)).reshape(values.shape).to(dtype)


def quantized_nbytes(shape: tuple[int, ...], bits: int, group_size: int = 32, scale_bytes: int = 2) -> int:
    """Bytes the quantized data and scales of a weight of `shape` take."""
    numel = 1
    for d in shape:
        numel *= d
    rows = numel // shape[-1]
    if bits == 8:
        return numel + rows * scale_bytes
    return numel // 2 + (numel // group_size) * scale_bytes
