"""Data-parallel training over processes: `torchrun --nproc-per-node N -m dgemma train ...`.

Each step's global batch (`--batch-size`) is split across the processes by example (process r
takes examples r, r + N, ...). Every example draws its noise level, corruption and
self-conditioning coin from its own generator, seeded by the run seed and its global index, and
every process normalizes its loss by the global batch's supervised-position counts, so the summed
gradients are those of the one-process run: the same losses and the same weights for any N (up to
float summation order). Gradients are summed with one all-reduce per step (gloo on the CPU, NCCL on
CUDA); every process then takes the same optimizer step. Only process 0 writes checkpoints,
metrics and the export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list[tuple[int, object]]:
        """(index in the global batch, item) of this process's share."""
        return [(i, item) for i, item in enumerate(items) if i % self.size == self.rank]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the processes (in place; unchanged with one process)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every replicated parameter's gradient over the processes, as one flat all-reduce
        (sharded parameters' gradients are summed by FSDP's reduce-scatter)."""
        params = [p for p in params if not isinstance(p, DTensor)]
        if self.size == 1 or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def clip_grads(self, params: list[torch.nn.Parameter], max_norm: float) -> None:
        """Scale the gradients so their global L2 norm is at most `max_norm` (as
        torch.nn.utils.clip_grad_norm_, which does it where nothing is sharded)."""
        if not any(isinstance(p, DTensor) for p in params):
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return
        grads = [p.grad for p in params if p.grad is not None]
        shards = sum(
            (g.to_local().double().pow(2).sum() for g in grads if isinstance(g, DTensor)),
            torch.zeros((), dtype=torch.float64),
        )
        whole = sum(
            (g.double().pow(2).sum() for g in grads if not isinstance(g, DTensor)),
            torch.zeros((), dtype=torch.float64),
        )
        total = (self.sum(shards) + whole).sqrt()
        scale = min(1.0, max_norm / (float(total) + 1e-6))
        for g in grads:
            g.mul_(scale)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: torch.device) -> World:
    """The world torchrun launched this process into (its WORLD_SIZE / RANK / MASTER_* variables);
    one process when not launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def close_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard_layers(model: nn.Module) -> None:
    """FSDP2 over the processes: each transformer block's parameters (and so their gradients and
    optimizer state) split between them, gathered for its forward and backward. The embedding,
    final norm and self-conditioning block stay whole in every process (their gradients are
    summed as in data parallelism). Gradients are summed, not averaged: the loss is already
    normalized by the global batch."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.layers:
        fully_shard(layer)
        layer.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
        layer.set_gradient_divide_factor(1.0)


def unshard_layers(model: nn.Module) -> None:
    """Replace every sharded parameter with its whole tensor, in every process (a collective)."""
    for layer in model.layers:
        for module in layer.modules():
            for name, p in list(module._parameters.items()):
                if isinstance(p, DTensor):
                    whole = p.full_tensor().detach()
                    module._parameters[name] = nn.Parameter(whole, requires_grad=p.requires_grad)
