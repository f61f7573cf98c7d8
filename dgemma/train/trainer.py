"""The training loop: AdamW, warmup + cosine decay, clipping, accumulation, checkpoints, exact resume.

Everything random is a function of (seed, step): data come from a dataset indexed by step, and the
corruption generator is reseeded per micro-batch. So a run restored from a checkpoint continues
with bit-for-bit the state an uninterrupted run would have had.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from dgemma.model import DiffusionGemma
from dgemma.train import checkpoint
from dgemma.train.batch import Example, collate
from dgemma.train.distributed import World, shard_layers, unshard_layers
from dgemma.train.lora import apply_lora
from dgemma.train.objective import ObjectiveConfig, batch_counts, compute_loss


class Dataset(Protocol):
    def examples(self, index: int, count: int) -> list[Example]:
        """The `count` examples of micro-batch `index`, the same on every call."""
        ...


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    autocast_bf16: bool = False
    freeze_router: bool = False
    lora_rank: int = 0  # 0: full fine-tuning
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    encoder_only: bool = False  # the autoregressive baseline: AR loss alone
    checkpoint_every: int = 100
    fsdp: bool = False  # shard the layers over the processes (FSDP2); sharded checkpoints
    log_every: int = 10
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("`lr` and `grad_clip` must be > 0 and `warmup_steps` >= 0")

    def learning_rate(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


def _optimizer(model: DiffusionGemma, config: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


@dataclass
class TrainResult:
    step: int
    metrics: list[dict]
    checkpoint: Path | None


def train(
    model: DiffusionGemma,
    data: Dataset,
    config: TrainConfig,
    out_dir: Path,
    pad_id: int,
    on_log: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    notice: Callable[[str], None] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    world: World | None = None,
) -> TrainResult:
    """Train `model` in place, resuming from `out_dir`'s latest readable checkpoint if there is one.

    `stop_after` ends the call after that many steps of this call (a run can then be resumed);
    `notice` receives a line for each damaged checkpoint skipped on resume; `on_checkpoint(step)`
    runs after each checkpoint is written (an evaluation, say: its time is not counted as training).
    With several processes (`world`, `distributed.py`) each takes its share of every batch and
    process 0 alone writes checkpoints and metrics and calls `on_log` / `on_checkpoint`.
    """
    world = world or World()
    if config.batch_size % world.size:
        raise ValueError(f"`batch_size` {config.batch_size} must divide over the {world.size} processes")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.train().requires_grad_(True)
    for tower in (model.vision_tower, model.embed_vision):  # training reads text: the tower stays as loaded
        if tower is not None:
            tower.requires_grad_(False)
    if config.lora_rank:
        apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets, seed=config.seed)
    if config.freeze_router:
        for layer in model.layers:
            layer.router.requires_grad_(False)
    sharded = config.fsdp and world.size > 1
    if sharded and on_checkpoint is not None:
        raise ValueError("evaluating at checkpoints needs the whole model in one process: drop --fsdp")
    if sharded:
        shard_layers(model)
    optimizer = _optimizer(model, config)
    step, metrics = 0, []
    store = checkpoint.Store(out_dir / "checkpoints", world, sharded=config.fsdp)
    state = store.load_latest(model, optimizer, notice=notice or _stderr)
    if state is not None:
        step, metrics = state["step"], state["metrics"]
    last = None if state is None else out_dir / "checkpoints" / f"step-{step:07d}"
    device = model.device
    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    window: list[tuple[float, float, float, int]] = []
    started = time.perf_counter()
    saved = last
    while step < end:
        lr = config.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        window.append(_train_step(model, data, config, optimizer, step, pad_id, device, world, sharded))
        step += 1
        if step % config.log_every == 0 or step == end:
            metrics.append(_summarize(window, step, lr, time.perf_counter() - started))
            window, started = [], time.perf_counter()
            if on_log and world.main:
                on_log(metrics[-1])
        if step % config.checkpoint_every == 0 or step == end:
            state = {"metrics": metrics, "config": _jsonable(asdict(config))}
            saved = store.save(step, model, optimizer, state)
            if world.main:
                _write_metrics(out_dir, metrics)
            world.barrier()
            if on_checkpoint is not None and world.main:
                on_checkpoint(step)
                model.train()
                started = time.perf_counter()
    if sharded:
        unshard_layers(model)  # whole weights in every process again, for export and inference
    model.eval().requires_grad_(False)
    return TrainResult(step, metrics, saved)  # LoRA adapters stay attached; `export` merges them


def _train_step(
    model, data, config, optimizer, step, pad_id, device, world, sharded
) -> tuple[float, float, float, int]:
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, diffusion, ar, tokens
    for micro in range(config.grad_accum):
        index = step * config.grad_accum + micro
        mine = world.shard(data.examples(index, config.batch_size))
        batch = collate([e for _, e in mine], model.config.canvas_length, pad_id).to(device)
        generators = [  # one per example, by its place in the run: the same however batches are split
            torch.Generator(device=device).manual_seed(
                (config.seed * 1_000_000_007 + index * config.batch_size + j) % 2**63
            )
            for j, _ in mine
        ]
        counts = world.sum(torch.stack(batch_counts(batch)))  # the global batch's
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.autocast_bf16):
            out = compute_loss(
                model,
                batch,
                config.objective,
                generators,
                config.encoder_only,
                (counts[0], counts[1]),
                collective=sharded,
            )
        (out.loss / config.grad_accum).backward()
        parts = torch.stack([out.loss.detach(), out.diffusion.detach(), out.ar.detach()]).double()
        totals[:3] += parts / config.grad_accum
        totals[3] += batch.num_tokens
    totals = world.sum(totals).cpu()  # summed over processes
    trainable = [p for p in model.parameters() if p.requires_grad]
    world.sum_grads(trainable)  # the replicated ones; FSDP has summed the sharded ones already
    world.clip_grads(trainable, config.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(totals[0]), float(totals[1]), float(totals[2]), int(totals[3])


def _summarize(window, step: int, lr: float, seconds: float) -> dict:
    n = len(window)
    return {
        "step": step,
        "loss": sum(w[0] for w in window) / n,
        "diffusion_loss": sum(w[1] for w in window) / n,
        "ar_loss": sum(w[2] for w in window) / n,
        "lr": lr,
        "tokens_per_s": sum(w[3] for w in window) / max(seconds, 1e-9),
    }


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _write_metrics(out_dir: Path, metrics: list[dict]) -> None:
    tmp = out_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    tmp.replace(out_dir / "metrics.jsonl")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
