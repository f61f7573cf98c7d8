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
        """Sum every parameter's gradient over the processes, as one flat all-reduce."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

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
