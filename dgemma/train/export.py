"""Write a trained model as a Hugging Face checkpoint directory.

The result loads with `dgemma.load` and with transformers 5.23.0's
`DiffusionGemmaForBlockDiffusion.from_pretrained`: weights under the `model.decoder.*` names (the
encoder shares them), the encoder's own layer scalars under `model.encoder.language_model.*`, and
a config.json, generation_config.json and the tokenizer files beside them. The directory is
written under a temporary name and renamed, so it is never seen half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from dgemma.config import SamplerConfig
from dgemma.model import DiffusionGemma
from dgemma.model.loader import checkpoint_name
from dgemma.train.lora import merge_lora

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


def checkpoint_tensors(model: DiffusionGemma) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "encoder_layer_scalar":
            for i in range(model.config.num_hidden_layers):
                tensors[f"model.encoder.language_model.layers.{i}.layer_scalar"] = tensor[i : i + 1]
        else:
            tensors[checkpoint_name(name)] = tensor
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def export(
    model: DiffusionGemma,
    out_dir: Path,
    sampler: SamplerConfig,
    config_json: dict[str, Any] | None = None,
    tokenizer_dir: Path | None = None,
    max_new_tokens: int = 256,
) -> Path:
    """Export to `out_dir` (replaced if it exists). `config_json` defaults to the model's own `to_hf()`.

    LoRA adapters, if any, are merged into the model's weights first (in place).
    """
    merge_lora(model)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = model.config
    save_file(checkpoint_tensors(model), tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config_json or config.to_hf(), indent=2))
    generation = {
        "max_new_tokens": max_new_tokens,
        "max_denoising_steps": sampler.max_denoising_steps,
        "sampler_config": {
            "_cls_name": "EntropyBoundSamplerConfig",
            "entropy_bound": float(sampler.entropy_bound),
        },
        "t_min": float(sampler.t_min),
        "t_max": float(sampler.t_max),
        "stability_threshold": sampler.stability_threshold,
        "confidence_threshold": float(sampler.confidence_threshold),
        "eos_token_id": list(config.eos_token_ids),
        "pad_token_id": config.pad_token_id,
    }
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
    for name in TOKENIZER_FILES:
        if tokenizer_dir is not None and (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, tmp / name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
