"""GGML's block formats decoded in torch (on any device), so a GGUF weight stays packed in memory
and is unpacked one layer at a time as the layer runs.

A row of `n` weights is `n / block_size` blocks of `type_size` bytes each (llama.cpp's ggml-common.h
layouts; little-endian). Decoded here: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32) and the K-quants
Q4_K, Q5_K, Q6_K (super-blocks of 256), the types llama.cpp's Q4_K_M / Q5_K_M / Q6_K / Q8_0 / Q4_0
files are made of. Any other type the `gguf` package can decode goes through its NumPy code on the
CPU (correct, slower). tests/test_gguf.py checks every decoder here against the `gguf` package's.
"""

from __future__ import annotations

import torch

QK_K = 256
# type id -> (name, weights per block, bytes per block), from ggml.h / GGML_QUANT_SIZES
TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    12: ("Q4_K", QK_K, 144),
    13: ("Q5_K", QK_K, 176),
    14: ("Q6_K", QK_K, 210),
    30: ("BF16", 1, 2),
}
FLOAT_TYPES = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(..., 2) little-endian bytes -> (..., 1) float32."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(..., k) bytes -> (..., 2k): every byte's low nibbles first, then the high ones."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def _bits(qh: torch.Tensor, count: int) -> torch.Tensor:
    """(..., count / 8) bytes -> (..., count) bits, least significant bit of the first byte first."""
    shifts = torch.arange(8, device=qh.device, dtype=torch.uint8)
    return ((qh.unsqueeze(-1) >> shifts) & 1).reshape(*qh.shape[:-1], count)


def _q8_0(b):
    return _f16(b[:, :2]) * b[:, 2:].contiguous().view(torch.int8).float()


def _q4_0(b):
    return _f16(b[:, :2]) * (_nibbles(b[:, 2:]).float() - 8)


def _q4_1(b):
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).float() + _f16(b[:, 2:4])


def _q5(b, offset):
    high = _bits(b[:, offset : offset + 4], 32) << 4
    return (_nibbles(b[:, offset + 4 :]) | high).float()


def _q5_0(b):
    return _f16(b[:, :2]) * (_q5(b, 2) - 16)


def _q5_1(b):
    return _f16(b[:, :2]) * _q5(b, 4) + _f16(b[:, 2:4])


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 packed bytes of Q4_K / Q5_K -> eight 6-bit scales and eight 6-bit mins."""
    a, m, c = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    scales = torch.cat((a & 0x3F, (c & 0x0F) | ((a >> 2) & 0x30)), dim=-1)
    mins = torch.cat((m & 0x3F, (c >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return scales.float(), mins.float()


def _k_affine(b, q):
    """Q4_K / Q5_K: q (n, 8, 32) sub-block values -> d * scale * q - dmin * min."""
    scales, mins = _k_scales(b[:, 4:16])
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    return ((d * scales).unsqueeze(-1) * q - (dmin * mins).unsqueeze(-1)).reshape(-1, QK_K)


def _q4_k(b):
    qs = b[:, 16:].reshape(-1, 4, 32)  # four 32-byte chunks, each two sub-blocks (low, high nibbles)
    q = torch.stack((qs & 0x0F, qs >> 4), dim=2).reshape(-1, 8, 32)
    return _k_affine(b, q.float())


def _q5_k(b):
    qh, qs = b[:, 16:48], b[:, 48:].reshape(-1, 4, 32)
    low = torch.stack((qs & 0x0F, qs >> 4), dim=2).reshape(-1, 8, 32)
    shifts = torch.arange(8, device=b.device, dtype=torch.uint8).view(1, 8, 1)
    high = (qh.unsqueeze(1) >> shifts) & 1  # sub-block j takes bit j of each of the 32 bytes
    return _k_affine(b, (low | (high << 4)).float())


def _q6_k(b):
    ql, qh = b[:, :128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    scales = b[:, 192:208].contiguous().view(torch.int8).float()
    d = _f16(b[:, 208:210])
    low = torch.stack((ql & 0x0F, ql >> 4), dim=2).reshape(-1, 2, 4, 32)  # per half: 4 runs of 32
    shifts = torch.tensor([0, 2, 4, 6], device=b.device, dtype=torch.uint8).view(1, 1, 4, 1)
    high = (qh.unsqueeze(2) >> shifts) & 0x03
    q = ((low | (high << 4)).to(torch.int16) - 32).reshape(-1, 16, 16).float()
    return ((d * scales).unsqueeze(-1) * q).reshape(-1, QK_K)


DECODERS = {2: _q4_0, 3: _q4_1, 6: _q5_0, 7: _q5_1, 8: _q8_0, 12: _q4_k, 13: _q5_k, 14: _q6_k}


def type_name(qtype: int) -> str:
    if qtype in TYPES:
        return TYPES[qtype][0]
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(qtype).name
    except (ImportError, ValueError):
        return f"type {qtype}"


def row_bytes(qtype: int, columns: int) -> int:
    """Bytes one row of `columns` weights takes; ValueError when the type is unknown or the row
    is not a whole number of blocks."""
    block, size = _sizes(qtype)
    if columns % block:
        raise ValueError(f"{type_name(qtype)} rows are blocks of {block} weights; a row of {columns} is not")
    return columns // block * size


def _sizes(qtype: int) -> tuple[int, int]:
    if qtype in TYPES:
        return TYPES[qtype][1:]
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        return GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    except (ImportError, ValueError, KeyError):
        raise ValueError(f"GGML tensor type {qtype} is unknown") from None


def dequantize(blocks: torch.Tensor, qtype: int, columns: int, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (..., rows, row_bytes) -> (..., rows, columns) in `dtype`."""
    lead = blocks.shape[:-1]
    block, size = _sizes(qtype)
    flat = blocks.reshape(-1, size)
    if qtype in DECODERS:
        values = DECODERS[qtype](flat)
    else:  # a type decoded only by the gguf package (NumPy, CPU)
        import numpy as np
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize as np_dequantize

        array = np_dequantize(flat.cpu().numpy().reshape(-1, size), GGMLQuantizationType(qtype))
        values = torch.from_numpy(np.ascontiguousarray(array)).to(blocks.device)
    return values.reshape(*lead, columns).to(dtype)
