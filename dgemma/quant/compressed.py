"""Checkpoints quantized with compressed-tensors (llm-compressor's format, what RedHatAI's FP8 and
NVFP4 DiffusionGemma checkpoints use), read packed.

A quantized linear layer `X` is stored as
    float-quantized (FP8)      X.weight (float8_e4m3fn), X.weight_scale (per tensor, row, group or block)
    naive-quantized (int8)     X.weight (int8), X.weight_scale
    nvfp4-pack-quantized       X.weight_packed (uint8, two E2M1 per byte, low nibble first),
                               X.weight_scale (float8 per 16 inputs), X.weight_global_scale (float32);
                               the weight is E2M1 * weight_scale / weight_global_scale
Activation scales (`input_scale`, `input_global_scale`) are not needed: weights are unpacked and
the layer computes at load dtype. llm-compressor writes a MoE's experts one by one
(`experts.E.gate_proj` / `up_proj` / `down_proj`); they are stacked here into the two banks,
still packed. Layers the recipe ignored are plain float tensors and load as usual.
"""

from __future__ import annotations

import re

import torch

from dgemma.config.files import CheckpointError
from dgemma.quant.packed import Format, Packed

QUANT_METHOD = "compressed-tensors"
FORMATS = ("float-quantized", "naive-quantized", "nvfp4-pack-quantized", "dense", "mixed-precision")
_PARTS = (
    "weight",
    "weight_packed",
    "weight_scale",
    "weight_global_scale",
    "input_scale",
    "input_global_scale",
)
_EXPERT = re.compile(r"^layers\.(\d+)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_EXPERT_PART = re.compile(
    r"^layers\.(\d+)\.experts\.\d+\.(?:gate_proj|up_proj|down_proj)\.(?:weight|input)\w*$"
)


def check_config(raw: dict, where: str) -> None:
    """Refuse, naming the format, what cannot be read packed."""
    formats = {raw.get("format")} | {
        g.get("format") for g in (raw.get("config_groups") or {}).values() if isinstance(g, dict)
    }
    bad = sorted(str(f) for f in formats - {None} if f not in FORMATS)
    if bad:
        raise CheckpointError(
            f"{where}: compressed-tensors format {bad[0]!r} is not read by dgemma; it reads "
            "float-quantized (FP8), naive-quantized (int8) and nvfp4-pack-quantized checkpoints"
        )


def assemble(raw: dict[str, torch.Tensor], num_experts: int, where: str) -> dict[str, torch.Tensor | Packed]:
    """Our-named tensors -> our-named weights, quantized layers as `Packed`, experts stacked."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor | Packed] = {}
    for name, tensor in raw.items():
        prefix, _, part = name.rpartition(".")
        if part in _PARTS and (f"{prefix}.weight_scale" in raw):
            groups.setdefault(prefix, {})[part] = tensor
        elif part == "weight_zero_point":
            raise CheckpointError(
                f"{where}: {name}: asymmetric (zero-point) quantization is not read by dgemma"
            )
        else:
            out[name] = tensor
    for prefix, parts in groups.items():
        out[f"{prefix}.weight"] = _packed(prefix, parts, where)
    return _stack_experts(out, num_experts, where)


def _packed(prefix: str, parts: dict[str, torch.Tensor], where: str) -> Packed:
    scale = parts["weight_scale"]
    if "weight_packed" in parts:
        codes, glob = parts["weight_packed"], parts.get("weight_global_scale")
        if codes.dtype != torch.uint8 or glob is None or scale.dtype != torch.float8_e4m3fn:
            raise CheckpointError(
                f"{where}: {prefix}.weight_packed is not NVFP4 (uint8 codes, float8 scales, a global scale): "
                "packed integer formats are not read by dgemma"
            )
        shape = torch.Size((*codes.shape[:-1], codes.shape[-1] * 2))
        tensors = {"weight_packed": codes, "weight_scale": scale, "weight_global_scale": glob.reshape(-1)}
        return Packed(Format("nvfp4"), tensors, shape)
    weight = parts.get("weight")
    if weight is None or weight.dtype not in (torch.float8_e4m3fn, torch.int8):
        raise CheckpointError(f"{where}: {prefix}.weight_scale comes without an FP8 or int8 {prefix}.weight")
    return Packed(Format("fp8"), {"weight": weight, "weight_scale": scale}, weight.shape)


def _stack_experts(tensors: dict, num_experts: int, where: str) -> dict:
    """experts.E.{gate,up,down}_proj.weight -> experts.gate_up_proj (E, 2F, H), experts.down_proj (E, H, F)."""
    layers: dict[int, dict[tuple[int, str], object]] = {}
    for name in [n for n in tensors if _EXPERT.match(n)]:
        layer, expert, proj = _EXPERT.match(name).groups()
        layers.setdefault(int(layer), {})[(int(expert), proj)] = tensors.pop(name)
    for layer, parts in layers.items():
        for e in range(num_experts):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                if (e, proj) not in parts:
                    raise CheckpointError(f"{where}: layer {layer} has no tensor for experts.{e}.{proj}")
        gate_up = [_cat_rows(parts[(e, "gate_proj")], parts[(e, "up_proj")]) for e in range(num_experts)]
        down = [parts[(e, "down_proj")] for e in range(num_experts)]
        tensors[f"layers.{layer}.experts.gate_up_proj"] = _stack(gate_up, where)
        tensors[f"layers.{layer}.experts.down_proj"] = _stack(down, where)
    return tensors


def _rows(packed: Packed) -> dict[str, torch.Tensor]:
    """The tensors with every scale made one per row (from one per tensor or per block of rows),
    so that weights can be joined row-wise and stacked."""
    rows = packed.shape[-2]
    out = dict(packed.tensors)
    for key in ("weight_scale", "weight_global_scale"):
        t = out.get(key)
        if t is None:
            continue
        if t.ndim < 2:
            t = t.reshape(-1, 1) if t.numel() == rows else t.reshape(1, 1)
        if t.shape[-2] != rows:
            t = t.repeat_interleave(-(-rows // t.shape[-2]), dim=-2)[..., :rows, :]
        out[key] = t
    return out


def _cat_rows(a, b):
    if isinstance(a, Packed) != isinstance(b, Packed) or (isinstance(a, Packed) and a.format != b.format):
        raise ValueError("an expert's gate and up projections are stored differently")
    if not isinstance(a, Packed):
        return torch.cat((a, b), dim=-2)
    ta, tb = _rows(a), _rows(b)
    shape = torch.Size((a.shape[0] + b.shape[0], a.shape[1]))
    return Packed(a.format, {k: torch.cat((ta[k], tb[k]), dim=-2) for k in ta}, shape)


def _stack(items: list, where: str):
    first = items[0]
    if any(isinstance(x, Packed) != isinstance(first, Packed) for x in items):
        raise CheckpointError(f"{where}: some experts of a layer are quantized and others are not")
    if not isinstance(first, Packed):
        return torch.stack(items)
    per_row = [_rows(x) for x in items]
    try:
        tensors = {k: torch.stack([p[k] for p in per_row]) for k in per_row[0]}
    except RuntimeError as err:  # scales of different granularity across experts
        raise CheckpointError(f"{where}: the experts of a layer are quantized differently: {err}") from None
    return Packed(first.format, tensors, torch.Size((len(items), *first.shape)))


def belongs(name: str, expected) -> bool:
    """Whether `name` is a stored piece of one of the `expected` weights."""
    m = _EXPERT_PART.match(name)
    if m is not None:
        return f"layers.{m.group(1)}.experts.gate_up_proj" in expected
    prefix, _, part = name.rpartition(".")
    return (part in _PARTS or part == "weight_zero_point") and f"{prefix}.weight" in expected
