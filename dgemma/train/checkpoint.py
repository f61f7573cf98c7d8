"""Training checkpoints: written atomically, read back into exactly the same state, never pickled.

A checkpoint is a directory `step-NNNNNNN/` holding `model.safetensors` (trainable tensors),
`optimizer.safetensors` (AdamW moments and step counts) and `state.json` (step, metrics, config);
or, for a run with `--fsdp`, a torch.distributed.checkpoint directory (`.metadata` and one
`__R_0.distcp` shard per process, the trainable tensors and the optimizer state) beside
`state.json`: every process writes its own share, and any number of processes (one included)
reads it back, resharded.
It is written into a temporary directory and renamed into place, so a kill at any moment leaves
either the previous checkpoint or the new one, never half of one. `latest` names the newest; the
last `keep` checkpoints stay on disk. On resume a checkpoint that cannot be read (a disk that lost
data, a truncated copy) falls back to the one before it with a notice; a `latest` pointer that names
no checkpoint is an error, never a silent restart from step 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

STEP_DIR = re.compile(r"step-\d{7}")
DEFAULT_KEEP = 3


class CheckpointReadError(ValueError):
    """A training checkpoint cannot be used; the message names the file."""


class Store:
    """A run's checkpoint directory as the processes of one run see it: the plain format written by
    process 0, or (`sharded`) the torch.distributed.checkpoint format written by all of them."""

    def __init__(self, directory: Path, world, sharded: bool = False):
        self.directory, self.world, self.sharded = directory, world, sharded

    def save(self, step: int, model, optimizer, state: dict[str, Any]) -> Path:
        if self.sharded:
            return save_sharded(self.directory, step, model, optimizer, state, self.world)
        if self.world.main:
            return save(self.directory, step, model, optimizer, state)
        return self.directory / f"step-{step:07d}"

    def load_latest(self, model, optimizer, notice: Callable[[str], None]) -> dict[str, Any] | None:
        return load_latest(self.directory, model, optimizer, notice)


def _dcp_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))


def save_sharded(
    directory: Path, step: int, model, optimizer, state: dict[str, Any], world, keep: int = DEFAULT_KEEP
) -> Path:
    """Checkpoint `step` in torch.distributed.checkpoint's format, every process writing its shard
    into one temporary directory that process 0 renames into place once all have finished."""
    import torch.distributed.checkpoint as dcp

    final = directory / f"step-{step:07d}"
    tmp = directory / f".tmp-step-{step:07d}"
    if world.main:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    world.barrier()
    model_state, optimizer_state = _dcp_state(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp))
    world.barrier()
    if world.main:
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}))
        _publish(directory, tmp, final, keep)
    world.barrier()
    return final


def _load_sharded(path: Path, model, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_state, optimizer_state = _dcp_state(model, optimizer)
    try:
        dcp.load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(path))
    except Exception as err:  # DCP wraps reader failures of every rank in its own error type
        raise CheckpointReadError(
            f"{path} is damaged (sharded checkpoint): {str(err).splitlines()[0][:160]}"
        ) from None
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        # frozen weights are not in the checkpoint (dcp.load fails on any trainable one missing)
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )


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
    keep: int = DEFAULT_KEEP,
) -> Path:
    """Write checkpoint `step` under `directory` atomically, point `latest` at it, and delete all
    but the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:07d}"
    tmp = directory / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, tmp / "model.safetensors")
    save_file(_optimizer_tensors(optimizer, _param_names(optimizer, model)), tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}))
    _publish(directory, tmp, final, keep)
    return final


def _publish(directory: Path, tmp: Path, final: Path, keep: int) -> None:
    """Make a written checkpoint visible at once: data synced, renamed, `latest` pointed at it."""
    for f in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = directory / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, directory / "latest")
    for old in _step_dirs(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _step_dirs(directory: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name))


def latest(directory: Path) -> Path | None:
    """The checkpoint `latest` names; None when the run has none. A pointer naming no checkpoint
    directory is a CheckpointReadError."""
    pointer = directory / "latest"
    if not pointer.is_file():
        dirs = _step_dirs(directory)  # killed between the first rename and its pointer
        return dirs[-1] if dirs else None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointReadError(f"{pointer} cannot be read ({err}); fix or delete it") from None
    if not STEP_DIR.fullmatch(name) or not (directory / name).is_dir():
        raise CheckpointReadError(
            f"{pointer} names {name[:60]!r}, which is not a checkpoint in {directory}; "
            "fix the pointer (e.g. to the newest step-NNNNNNN) or delete it to restart"
        )
    return directory / name


def load_latest(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    notice: Callable[[str], None],
) -> dict[str, Any] | None:
    """Restore the newest readable checkpoint, falling back to older ones (each skip reported through
    `notice`); None when there is none. CheckpointReadError when none of them can be read."""
    first = latest(directory)
    if first is None:
        return None
    candidates = [first] + [p for p in reversed(_step_dirs(directory)) if p.name < first.name]
    problems = []
    for path in candidates:
        try:
            return load(path, model, optimizer)
        except CheckpointReadError as err:
            problems.append(str(err))
            later = candidates[len(problems)] if len(problems) < len(candidates) else None
            if later is not None:
                notice(f"dgemma: {err}; resuming from {later.name} instead")
    raise CheckpointReadError(f"no readable checkpoint in {directory}: {problems[0]}")


def _read(path: Path, what: str, reader):
    try:
        return reader(path)
    except FileNotFoundError:
        raise CheckpointReadError(f"{path} is missing ({what})") from None
    except Exception as err:  # safetensors and json raise their own types for damaged files
        raise CheckpointReadError(f"{path} is damaged ({what}): {str(err).splitlines()[0][:120]}") from None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer from checkpoint `path`; returns its state.json. Every file is read
    and checked before anything is changed, so a damaged checkpoint leaves the model as it was."""
    state = _read(path / "state.json", "training state", lambda p: json.loads(p.read_text(encoding="utf-8")))
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("step"), int)
        or not isinstance(state.get("metrics"), list)
    ):
        raise CheckpointReadError(f"{path / 'state.json'} is damaged (training state): no step or metrics")
    sharded_model = any(isinstance(p, DTensor) for p in model.parameters())
    if (path / ".metadata").is_file():
        _load_sharded(path, model, optimizer)
        return state
    if sharded_model:
        raise CheckpointReadError(f"{path} was written by a run without --fsdp; resume it without --fsdp")
    weights = _read(path / "model.safetensors", "weights", load_file)
    tensors = _read(path / "optimizer.safetensors", "optimizer state", load_file)
    params = dict(model.named_parameters())
    for name, tensor in weights.items():
        if name not in params:
            raise CheckpointReadError(
                f"{path / 'model.safetensors'} has tensor {name}, which the model lacks"
            )
        if tensor.shape != params[name].shape:
            raise CheckpointReadError(
                f"{path / 'model.safetensors'}: {name} has shape {tuple(tensor.shape)}, "
                f"the model {tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
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
    return state
