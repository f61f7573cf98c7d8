"""Examples as token ids, and their collation into canvases for the block-diffusion objective.

A response (ending in EOS) is cut into canvases of `canvas_length`; the last canvas is filled up
with the pad token, and those fill positions are supervised too, so the model learns to settle the
tail of a finished canvas confidently (the adaptive stop reads the whole canvas's entropy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    response: list[int]  # ends with an EOS token
    clean: tuple[int, ...] = ()  # response positions given as clean context: never corrupted, no loss

    def __post_init__(self) -> None:
        if not self.prompt or not self.response:
            raise ValueError("an example needs a non-empty prompt and response")


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T) prompt + canvas-padded response, right-padded
    starts: torch.Tensor  # (B, n) position of each canvas's first token
    targets: torch.Tensor  # (B, n*C) clean canvas tokens
    supervised: torch.Tensor  # (B, n*C) bool: positions the diffusion loss covers
    ar_targets: torch.Tensor  # (B, T) next token at each position, -100 where unsupervised
    clean: torch.Tensor  # (B, n*C) bool: positions kept clean in the canvas (clamped at inference)

    def to(self, device: torch.device) -> Batch:
        tensors = (self.ids, self.starts, self.targets, self.supervised, self.ar_targets, self.clean)
        return Batch(*(t.to(device) for t in tensors))

    @property
    def num_tokens(self) -> int:
        return int(self.supervised.sum())


def collate(examples: list[Example], canvas_length: int, pad_id: int) -> Batch:
    C = canvas_length
    canvases = [math.ceil(len(e.response) / C) for e in examples]
    n = max(canvases)
    T = max(len(e.prompt) + k * C for e, k in zip(examples, canvases, strict=True))
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    starts = torch.zeros(B, n, dtype=torch.long)
    targets = torch.full((B, n * C), pad_id, dtype=torch.long)
    supervised = torch.zeros(B, n * C, dtype=torch.bool)
    ar_targets = torch.full((B, T), -100, dtype=torch.long)
    clean = torch.zeros(B, n * C, dtype=torch.bool)
    for b, (e, k) in enumerate(zip(examples, canvases, strict=True)):
        p, r = len(e.prompt), len(e.response)
        response = e.response + [pad_id] * (k * C - r)
        ids[b, : p + k * C] = torch.tensor(e.prompt + response)
        starts[b] = p + torch.arange(n) * C  # canvases past k are padding: unsupervised
        targets[b, : k * C] = torch.tensor(response)
        supervised[b, : k * C] = True
        ar_targets[b, p - 1 : p + r - 1] = torch.tensor(e.response)  # position t predicts token t + 1
        if e.clean:
            clean[b, list(e.clean)] = True
            supervised[b, list(e.clean)] = False
    return Batch(ids, starts, targets, supervised, ar_targets, clean)
