"""Training checkpoints: written atomically, read back into exactly the same state, never pickled.

A checkpoint is a directory `step-NNNNNNN/` holding `model.safetensors` (trainable tensors),
`optimizer.safetensors` (AdamW moments and step counts) and `state.json` (step, metrics, config).
It is written into a temporary directory and renamed into place, so a kill at any moment leaves
either the previous checkpoint or the new one, never half of one. `latest` names the newest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    out = {}
    for param_id, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{names[param_id]}::{key}"] = torch.as_tensor(value).contiguous().clone()
    return out


def _param_names(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[int, str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return {i: by_id[id(p)] for i, p in enumerate(flat)}


def save(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write checkpoint `step` under `directory` atomically and point `latest` at it."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:07d}"
    tmp = directory / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, tmp / "model.safetensors")
    save_file(_optimizer_tensors(optimizer, _param_names(optimizer, model)), tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}))
    for f in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = directory / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, directory / "latest")
    return final


def latest(directory: Path) -> Path | None:
    pointer = directory / "latest"
    if not pointer.is_file():
        return None
    path = directory / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer from checkpoint `path`; returns its state.json."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(path / "model.safetensors").items():
            if name not in params:
                raise ValueError(f"checkpoint {path} has tensor {name}, which the model lacks")
            params[name].copy_(tensor)
    tensors = load_file(path / "optimizer.safetensors")
    names = _param_names(optimizer, model)
    opt_state = optimizer.state_dict()
    opt_state["state"] = {}
    for param_id, name in names.items():
        entry = {
            key.split("::", 1)[1]: value for key, value in tensors.items() if key.split("::", 1)[0] == name
        }
        if entry:
            opt_state["state"][param_id] = entry
    optimizer.load_state_dict(opt_state)
    return json.loads((path / "state.json").read_text())
