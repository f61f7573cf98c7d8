"""Load a DiffusionGemma checkpoint directory (Hugging Face layout) into `DiffusionGemma`.

Weights come from `model.safetensors` or the shards listed in `model.safetensors.index.json`,
memory-mapped: tensors already in the requested dtype on the CPU are used in place, never copied
into a second full set. Pickle files are never read. The model is built on the meta device and
the checkpoint's tensors are assigned to it, so nothing is initialised twice.
"""

from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from dgemma.config import ModelConfig
from dgemma.config.files import CheckpointError, inside, read_json
from dgemma.model.transformer import DiffusionGemma
from dgemma.quant.scheme import QuantScheme

log = logging.getLogger("dgemma")

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DECODER = "model.decoder."
_ENCODER = "model.encoder.language_model."
_VISION = ("model.encoder.vision_tower.", "model.encoder.embed_vision.")
_ENCODER_SCALAR = re.compile(r"^model\.encoder\.language_model\.layers\.(\d+)\.layer_scalar$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadReport:
    skipped_vision: int = 0
    unexpected: list[str] = field(default_factory=list)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on the CPU and bfloat16 on accelerators unless asked otherwise."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"`dtype` must be one of {', '.join(_DTYPES)}, got {dtype}")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def read_model_config(directory: Path) -> ModelConfig:
    raw = read_json(inside(directory, "config.json"))
    if raw.get("tie_word_embeddings") is False:
        raise CheckpointError(
            f"{directory / 'config.json'}: tie_word_embeddings is false (separate encoder, decoder and lm_head "
            "weights); dgemma loads the tied layout that DiffusionGemma checkpoints use"
        )
    try:
        return ModelConfig.from_hf(raw)
    except ValueError as err:
        raise CheckpointError(f"{directory / 'config.json'}: {err}") from None


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files that hold the weights, in the order the index lists them."""
    single, index = inside(directory, SINGLE_FILE), inside(directory, INDEX_FILE)
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no `weight_map`")
        files = [inside(directory, name, listed_in=index) for name in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index} lists shard {f.name}, which is missing from {directory}")
        return files
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
    hint = (
        f" (found {', '.join(pickles)}: pickle checkpoints are never loaded; convert them to safetensors)"
        if pickles
        else ""
    )
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}{hint}")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None


def _read_tensors(files: list[Path], expected: dict[str, torch.Size], num_layers: int, parts: bool = False):
    """Collect the text-model tensors under our names; encoder-only aliases fill gaps. `parts`:
    also the pieces a compressed-tensors checkpoint stores a weight in (scales, per-expert weights)."""
    from dgemma.quant.compressed import belongs

    def wanted(ours: str) -> bool:
        return ours in expected or (parts and belongs(ours, expected))

    found: dict[str, torch.Tensor] = {}
    aliases: dict[str, torch.Tensor] = {}
    encoder_scalars: dict[int, torch.Tensor] = {}
    report = LoadReport()
    for path in files:
        handle = _open(path)
        for name in handle.keys():
            try:
                if name.startswith(_VISION):
                    ours = name[len("model.encoder.") :]
                    if wanted(ours):
                        found[ours] = handle.get_tensor(name)
                    else:
                        report.skipped_vision += 1
                elif name.startswith(_DECODER) and wanted(name[len(_DECODER) :]):
                    found[name[len(_DECODER) :]] = handle.get_tensor(name)
                elif m := _ENCODER_SCALAR.match(name):
                    if int(m.group(1)) < num_layers:
                        encoder_scalars[int(m.group(1))] = handle.get_tensor(name)
                elif name.startswith(_ENCODER) and wanted(name[len(_ENCODER) :]):
                    aliases[name[len(_ENCODER) :]] = handle.get_tensor(name)
                elif name != "lm_head.weight":  # the head is tied to the embedding
                    report.unexpected.append(name)
            except Exception as err:
                raise CheckpointError(f"{path}: tensor {name} cannot be read: {err}") from None
    for name, tensor in aliases.items():
        found.setdefault(name, tensor)
    return found, encoder_scalars, report


def load_model(
    directory: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    quantize: QuantScheme | None = None,
) -> tuple[DiffusionGemma, LoadReport]:
    """Build the model of a checkpoint directory and assign its weights; with `quantize`, the
    targeted weights are quantized one tensor at a time as they are read (`dgemma/quant`)."""
    from dgemma.quant.gguf_file import gguf_file

    path = Path(directory)
    gguf = gguf_file(path) if path.exists() else None
    directory = path.parent if gguf is not None and path.is_file() else path
    if not directory.is_dir():
        raise CheckpointError(f"model directory not found: {directory}")
    device = torch.device(device)
    dtype = resolve_dtype(dtype, device)
    config = read_model_config(directory)
    stored, compressed = _stored_format(directory)
    if stored is not None and quantize is not None and quantize != stored:
        raise CheckpointError(
            f"{directory} holds {stored} weights already (`dgemma quantize` wrote it); load it without `quantize`"
        )
    if (gguf is not None or compressed) and quantize is not None:
        kind = "GGUF" if gguf is not None else "compressed-tensors"
        raise CheckpointError(
            f"{gguf or directory} holds {kind} quantized weights already; load it without `quantize`"
        )
    files = [] if gguf is not None else weight_files(directory)

    with torch.device("meta"):
        model = DiffusionGemma(config)
        if config.vision is not None and has_vision(files):
            model.attach_vision()
    as_stored: dict[str, torch.dtype] = {}  # packed weights and their scales, read as they are
    if stored is not None:
        from dgemma.quant.apply import packed_dtypes, prepare

        prepare(model, stored)
        as_stored = packed_dtypes(model)
    expected = {k: v.shape for k, v in model.state_dict().items() if k != "encoder_layer_scalar"}
    targets = {}
    if quantize is not None and stored is None:
        from dgemma.quant.apply import prepare, quantized_state

        try:
            targets = prepare(model, quantize)
        except ValueError as err:
            raise ValueError(f"`quantize`: {err}") from None
    if gguf is not None:
        from dgemma.quant.gguf_file import check_metadata, read_gguf

        found, encoder_scalars, unexpected, meta = read_gguf(gguf, config.num_hidden_layers)
        check_metadata(meta, config, gguf)
        report = LoadReport(unexpected=unexpected)
    else:
        found, encoder_scalars, report = _read_tensors(files, expected, config.num_hidden_layers, compressed)
    if compressed:
        from dgemma.quant.compressed import assemble

        found = assemble(found, config.num_experts, str(directory))
    foreign = gguf is not None or compressed

    from dgemma.quant.packed import Packed, install

    state: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        tensor = found.get(name)
        if tensor is None:
            if name.endswith("layer_scalar"):  # optional buffer; the reference initialises it to one
                tensor = torch.ones(shape)
            else:
                raise CheckpointError(
                    f"checkpoint in {gguf or directory} is missing tensor {checkpoint_name(name)}"
                )
        if tensor.shape != shape:
            raise CheckpointError(
                f"tensor {checkpoint_name(name)} has shape {tuple(tensor.shape)}, the config expects {tuple(shape)}"
            )
        if isinstance(tensor, Packed):
            state.update(install(model, name, tensor, dtype, device))
        elif name in targets:
            state.update(quantized_state(targets[name], tensor, quantize, device))
        elif name in as_stored:
            if tensor.dtype != as_stored[name]:
                raise CheckpointError(
                    f"tensor {_DECODER}{name} is {tensor.dtype}; a {stored} checkpoint stores it as {as_stored[name]}"
                )
            state[name] = tensor.to(device=device, copy=True)
        else:  # quantized loads copy the rest too, so nothing keeps the checkpoint's mmap alive
            state[name] = tensor.to(device=device, dtype=dtype, copy=bool(targets or as_stored or foreign))
        found.pop(name, None)
    scalars = [encoder_scalars.get(i, torch.ones(1)).reshape(1) for i in range(config.num_hidden_layers)]
    state["encoder_layer_scalar"] = torch.cat(scalars).to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    del state, found
    if targets or foreign:
        _return_freed_memory()  # quantizing went through float32 slices; give their pages back
    model.reset_rope()
    model.eval().requires_grad_(False)
    if report.skipped_vision:
        log.warning(
            "skipped %d vision-tower tensors: config.json declares no vision tower", report.skipped_vision
        )
    if report.unexpected:
        shown = ", ".join(report.unexpected[:3]) + (" ..." if len(report.unexpected) > 3 else "")
        log.warning("ignored %d unexpected tensors (%s)", len(report.unexpected), shown)
    return model, report


def checkpoint_name(name: str) -> str:
    """Our state-dict name as the checkpoint spells it."""
    if name.startswith(("vision_tower.", "embed_vision.")):
        return "model.encoder." + name
    return _DECODER + name


def has_vision(files: list[Path]) -> bool:
    return any(name.startswith(_VISION) for path in files for name in _open(path).keys())


def _stored_format(directory: Path) -> tuple[QuantScheme | None, bool]:
    """(the scheme of a checkpoint `dgemma quantize` wrote, whether it is a compressed-tensors
    checkpoint), from config.json's quantization_config."""
    raw = read_json(inside(directory, "config.json")).get("quantization_config")
    if raw is None:
        return None, False
    from dgemma.quant.compressed import QUANT_METHOD, check_config

    if isinstance(raw, dict) and raw.get("quant_method") == QUANT_METHOD:
        check_config(raw, str(directory / "config.json"))
        return None, True
    try:
        return QuantScheme.from_config(raw), False
    except ValueError as err:
        raise CheckpointError(f"{directory / 'config.json'}: {err}") from None


def _return_freed_memory() -> None:
    """Ask glibc's allocator to hand freed heap pages back to the system (a no-op elsewhere):
    without it, the float32 temporaries of quantizing stay resident after they are freed."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
