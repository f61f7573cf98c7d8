"""LoRA adapters in PEFT's format, written and read: `adapter_config.json` plus
`adapter_model.safetensors` with PEFT's key names, so an adapter trained here loads with `peft`
onto the transformers model, and one trained there loads here.

Module paths are those of transformers' `DiffusionGemmaForBlockDiffusion`, whose encoder and
decoder passes have separate modules for each text layer (`model.encoder.language_model.layers.N`
and `model.decoder.layers.N`) that tie one weight, so PEFT adapts each pass on its own. dgemma
writes the same adapter for both. Read back, an adapter whose two passes agree is merged into the
one shared weight; one whose passes differ (what PEFT training on the reference gives) is applied
per pass at run time (`PassLoRALinear`), the shared weight untouched. Plain LoRA only: rank and alpha per adapter, scale alpha / r; rsLoRA, DoRA, per-module
rank or alpha patterns, biases and `modules_to_save` are refused with a message naming them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from dgemma.config.files import CheckpointError, inside, read_json
from dgemma.train.lora import LoRADelta

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_SHARED = "model.encoder.language_model."  # PEFT's name for a text layer (the first path to it)
_DECODER = "model.decoder."
_KEY = "base_model.model."


def reference_paths(name: str) -> list[str]:
    """Our module name -> its modules in transformers' model: a text layer's encoder and decoder
    modules (distinct modules there, tying one weight), or the decoder's own (self-conditioning)."""
    return [_SHARED + name, _DECODER + name] if name.startswith("layers.") else [_DECODER + name]


def our_name(path: str) -> tuple[str, bool] | None:
    """A module path -> (our module name, whether it is the decoder pass's module)."""
    for prefix, decoder in ((_SHARED, False), (_DECODER, True)):
        if path.startswith(prefix):
            return path[len(prefix) :], decoder
    return None


def adapters(model: nn.Module) -> dict[str, LoRADelta]:
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, LoRADelta):
                    out[name] = p
    return out


def save_adapter(model: nn.Module, out_dir: str | Path, base_model: str = "") -> Path:
    """Write the model's LoRA adapters (before any merge) in PEFT's format; atomic."""
    found = adapters(model)
    if not found:
        raise ValueError("the model has no LoRA adapters to save")
    ranks = {d.A.shape[0] for d in found.values()}
    scales = {d.scale for d in found.values()}
    if len(ranks) != 1 or len(scales) != 1:
        raise ValueError("PEFT's format takes one rank and one alpha for all adapted layers")
    rank, scale = ranks.pop(), scales.pop()
    tensors, paths = {}, []
    for name, delta in found.items():
        for path in reference_paths(name):  # both passes' modules (tied weights there, one here)
            paths.append(path)
            tensors[f"{_KEY}{path}.lora_A.weight"] = delta.A.detach().float().cpu().contiguous().clone()
            tensors[f"{_KEY}{path}.lora_B.weight"] = delta.B.detach().float().cpu().contiguous().clone()
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": 0.0,
        "target_modules": sorted(paths),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
    (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> list[str]:
    """Attach a PEFT LoRA adapter to the model's linear layers (as parametrizations; merge them
    with `merge_lora` for inference). Returns the adapted module names."""
    adapter_dir = Path(adapter_dir)
    config = read_json(inside(adapter_dir, CONFIG))
    scale = _check_config(config, adapter_dir / CONFIG)
    path = inside(adapter_dir, WEIGHTS)
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
    pairs: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        stem, _, kind = key.removeprefix(_KEY).rpartition(".lora_")
        where = our_name(stem)
        if kind not in ("A.weight", "B.weight") or where is None:
            raise CheckpointError(f"{path}: tensor {key} is not a LoRA weight of a text layer")
        pairs.setdefault(where, {})[kind[0]] = tensor
    modules = dict(model.named_modules())
    adapted = sorted({name for name, _ in pairs})
    for name in adapted:
        module = modules.get(name)
        sides = {decoder: pairs.get((name, decoder)) for decoder in (False, True)}
        for decoder, pair in sides.items():
            if pair is not None:
                _check_pair(module, pair, config["r"], f"{path}: {(_DECODER if decoder else _SHARED) + name}")
        if not name.startswith("layers.") or _same(sides[False], sides[True]):  # one weight, both passes
            pair = sides[True] or sides[False]
            parametrize.register_parametrization(module, "weight", _delta(module, pair, scale))
        else:
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent], attr, PassLoRALinear(module, sides, scale, model))
    return adapted


class PassLoRALinear(nn.Module):
    """A shared linear layer with a LoRA delta per pass (either may be absent): x W^T + s x A^T B^T,
    A and B those of the pass that runs now (the model's `decoding` flag)."""

    def __init__(self, base: nn.Linear, sides: dict[bool, dict | None], scale: float, model: nn.Module):
        super().__init__()
        self.base, self.scale = base, scale
        self._model = [model]  # not a submodule
        for decoder, pair in sides.items():
            prefix = "decoder" if decoder else "encoder"
            for part in ("A", "B"):
                value = (
                    None if pair is None else pair[part].to(base.weight.device, base.weight.dtype, copy=True)
                )
                self.register_buffer(f"{prefix}_{part}", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix = "decoder" if self._model[0].decoding else "encoder"
        A, B = getattr(self, f"{prefix}_A"), getattr(self, f"{prefix}_B")
        y = self.base.forward(x)
        return y if A is None else y + self.scale * F.linear(F.linear(x, A), B)


def _check_pair(module: nn.Module | None, pair: dict[str, torch.Tensor], r: int, where: str) -> None:
    if not isinstance(module, nn.Linear) or set(pair) != {"A", "B"}:
        raise CheckpointError(f"{where} is not a linear layer with lora_A and lora_B")
    out_f, in_f = module.weight.shape
    rank = pair["A"].shape[0]
    if pair["A"].shape != (rank, in_f) or pair["B"].shape != (out_f, rank) or rank != r:
        raise CheckpointError(
            f"{where} has lora_A {tuple(pair['A'].shape)} and lora_B {tuple(pair['B'].shape)}; "
            f"the layer is {out_f}x{in_f} and r is {r}"
        )


def _same(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and all(torch.equal(a[k], b[k]) for k in ("A", "B"))


def _delta(module: nn.Linear, pair: dict[str, torch.Tensor], scale: float) -> LoRADelta:
    out_f, in_f = module.weight.shape
    rank = pair["A"].shape[0]
    delta = LoRADelta(out_f, in_f, rank, scale * rank, torch.Generator()).to(module.weight.device)
    with torch.no_grad():
        delta.A.copy_(pair["A"])
        delta.B.copy_(pair["B"])
    return delta


def _check_config(config: dict[str, Any], where: Path) -> float:
    if config.get("peft_type") != "LORA":
        raise CheckpointError(
            f"{where}: peft_type is {config.get('peft_type')!r}; dgemma reads LORA adapters"
        )
    refused = {
        "use_rslora": bool(config.get("use_rslora")),
        "use_dora": bool(config.get("use_dora")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "bias": config.get("bias", "none") != "none",
        "modules_to_save": bool(config.get("modules_to_save")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
    }
    for field, bad in refused.items():
        if bad:
            raise CheckpointError(f"{where}: `{field}` is not supported (plain LoRA only)")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r < 1 or not isinstance(alpha, int | float):
        raise CheckpointError(f"{where}: `r` must be a positive integer and `lora_alpha` a number")
    return alpha / r


def merge_adapter(model: nn.Module, adapter_dir: str | Path) -> None:
    """Load a PEFT adapter and fold it into the weights (inference)."""
    from dgemma.train.lora import merge_lora

    load_adapter(model, adapter_dir)
    merge_lora(model)
    model.requires_grad_(False)
