"""Quantized checkpoints written in the tests the way the tools people use write them: GGUF files
with the `gguf` package (llama.cpp's tensor names for DiffusionGemma), compressed-tensors FP8 and
NVFP4 checkpoints with the `compressed-tensors` package's own compressors; and beside each, the
float checkpoint of its dequantized weights (what the quantized load must compute exactly)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dgemma.quant import ggml
from dgemma.quant.gguf_file import _GLOBAL, _LAYER

DECODER, ENCODER = "model.decoder.", "model.encoder.language_model."
SMALL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)


def text_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's text-model tensors under their checkpoint names (no vision tower)."""
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        keep = [
            k for k in f.keys() if k.startswith(DECODER) or (k.startswith(ENCODER) and "layer_scalar" in k)
        ]
        return {k: f.get_tensor(k) for k in keep}


def copy_small_files(source: Path, out: Path, config: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    if config is not None:
        (out / "config.json").write_text(json.dumps(config))


def write_float(source: Path, out: Path, tensors: dict[str, torch.Tensor]) -> Path:
    copy_small_files(source, out)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    return out


# --- GGUF ----------------------------------------------------------------------------------------

_TO_GGUF = {v: k for k, v in _GLOBAL.items()} | {v: k for k, v in _LAYER.items() if k != "layer_output_scale"}


def gguf_name(ours: str) -> str:
    if ours in _TO_GGUF:
        return _TO_GGUF[ours]
    _, layer, rest = ours.split(".", 2)
    return f"blk.{layer}.{_TO_GGUF[rest]}"


def random_blocks(
    qtype: int, rows: int, columns: int, generator: np.random.Generator, scale=0.003
) -> np.ndarray:
    """Valid blocks of `qtype` holding random values: random bytes with the float16 scale fields
    set to small finite numbers (any other byte pattern is a valid code)."""
    width = ggml.row_bytes(qtype, columns)
    _, _, size = ggml.TYPES[qtype]
    blocks = generator.integers(0, 256, (rows * width // size, size), dtype=np.uint8)
    fields = {2: [0], 3: [0, 2], 6: [0], 7: [0, 2], 8: [0], 12: [0, 2], 13: [0, 2], 14: [208]}[qtype]
    for at in fields:
        d = (np.abs(generator.standard_normal(blocks.shape[0])) * scale + scale / 4).astype(np.float16)
        blocks[:, at : at + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, width)


def write_gguf(
    source: Path, out: Path, pick, seed: int = 0, arch: str = "diffusion-gemma", **meta
) -> tuple[Path, Path]:
    """A GGUF file of `source`'s text weights, each weight matrix in the type `pick(name, shape)`
    returns (None: F32), written with gguf.GGUFWriter; and the float checkpoint of its
    dequantized weights. Returns (gguf directory, float directory)."""
    import gguf
    from gguf.quants import quantize

    config = json.loads((source / "config.json").read_text())["text_config"]
    writer_dir = out / "gguf"
    copy_small_files(source, writer_dir)
    path = writer_dir / "model-Q.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(meta.get("block_count", config["num_hidden_layers"]))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_expert_count(config["num_experts"])
    writer.add_expert_used_count(config["top_k_experts"])
    rng = np.random.default_rng(seed)
    dequantized: dict[str, torch.Tensor] = {}
    for name, tensor in text_tensors(source).items():
        if name.startswith(ENCODER):
            layer = name.split(".")[4]
            writer.add_tensor(f"blk.{layer}.enc_layer_output_scale.weight", tensor.float().numpy())
            dequantized[name] = tensor
            continue
        ours = name[len(DECODER) :]
        qtype = pick(ours, tuple(tensor.shape)) if tensor.ndim >= 2 else None
        if qtype is None:
            writer.add_tensor(gguf_name(ours), tensor.float().numpy())
            dequantized[name] = tensor.float()
            continue
        rows, columns = int(np.prod(tensor.shape[:-1])), tensor.shape[-1]
        if qtype in (2, 3, 6, 7, 8):  # types the gguf package quantizes: the real weights
            blocks = quantize(tensor.float().numpy().reshape(rows, columns), gguf.GGMLQuantizationType(qtype))
        else:  # K-quants (no Python quantizer): random valid blocks
            blocks = random_blocks(qtype, rows, columns, rng)
        blocks = blocks.reshape(*tensor.shape[:-1], -1)
        writer.add_tensor(gguf_name(ours), blocks, raw_dtype=gguf.GGMLQuantizationType(qtype))
        values = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(qtype))
        dequantized[name] = torch.from_numpy(np.ascontiguousarray(values)).reshape(tensor.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer_dir, write_float(source, out / "float", dequantized)


# --- compressed-tensors --------------------------------------------------------------------------


def _quantizable(ours: str) -> bool:
    """What llm-compressor's recipes quantize: the Linear layers, minus the router (ignored)."""
    return ours.endswith("_proj.weight") and ".router." not in ours


def write_compressed(source: Path, out: Path, scheme: str) -> tuple[Path, Path]:
    """`source` quantized with compressed-tensors ("fp8": float-quantized, per channel, dynamic
    activations; "nvfp4": nvfp4-pack-quantized, groups of 16), experts one by one as llm-compressor
    writes them; and the float checkpoint of the package's own decompression of those weights."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    if scheme == "fp8":
        args = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True)
        fmt = "float-quantized"
    else:
        args = QuantizationArgs(
            num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True
        )
        fmt = "nvfp4-pack-quantized"
    qscheme = QuantizationScheme(targets=["Linear"], weights=args)
    compressor = BaseCompressor.get_value_from_registry(fmt)

    def compress(w: torch.Tensor) -> tuple[dict, torch.Tensor]:
        w = w.float()
        state = {"weight": w}
        if scheme == "fp8":
            lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
        else:
            state["weight_global_scale"] = generate_gparam(w.amin(), w.amax())
            groups = w.reshape(w.shape[0], -1, 16)
            lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
        scale, zero = calculate_qparams(lo, hi, args, global_scale=state.get("weight_global_scale"))
        state |= {"weight_scale": scale, "weight_zero_point": zero}
        packed = compressor.compress(state, qscheme)
        if scheme == "fp8":
            back = compressor.decompress(dict(packed), qscheme)["weight"].float()
        else:  # the package's own unpacking and dequantization, in float32 (its decompress rounds to bf16)
            codes = packed["weight_packed"]
            values = unpack_fp4_from_uint8(codes, codes.shape[0], codes.shape[1] * 2, dtype=torch.float32)
            back = dequantize(
                values,
                packed["weight_scale"].float(),
                args=args,
                global_scale=packed["weight_global_scale"],
                dtype=torch.float32,
            )
        return {k: v for k, v in packed.items() if k != "weight_zero_point"}, back

    stored: dict[str, torch.Tensor] = {}
    dequantized: dict[str, torch.Tensor] = {}
    for name, tensor in text_tensors(source).items():
        ours = name[len(DECODER) :] if name.startswith(DECODER) else None
        if ours is not None and ours.endswith(("experts.gate_up_proj", "experts.down_proj")):
            half = tensor.shape[1] // 2
            rebuilt = []
            for e in range(tensor.shape[0]):
                pieces = (
                    [("gate_proj", tensor[e, :half]), ("up_proj", tensor[e, half:])]
                    if ours.endswith("gate_up_proj")
                    else [("down_proj", tensor[e])]
                )
                back = []
                for proj, w in pieces:
                    packed, values = compress(w)
                    prefix = f"{name.rsplit('.', 1)[0]}.{e}.{proj}"
                    stored |= {f"{prefix}.{k}": v for k, v in packed.items()}
                    back.append(values)
                rebuilt.append(torch.cat(back))
            dequantized[name] = torch.stack(rebuilt)
        elif ours is not None and _quantizable(ours):
            packed, values = compress(tensor)
            stored |= {f"{name[: -len('.weight')]}.{k}": v for k, v in packed.items()}
            dequantized[name] = values
        else:
            stored[name] = tensor
            dequantized[name] = tensor
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": args.model_dump(), "format": fmt}},
        "ignore": ["lm_head", "re:.*router.*"],
        "quantization_status": "compressed",
    }
    quant_dir = out / scheme
    copy_small_files(source, quant_dir, config)
    save_file({k: v.contiguous() for k, v in stored.items()}, str(quant_dir / "model.safetensors"))
    return quant_dir, write_float(source, out / f"{scheme}-float", dequantized)
