"""What the generation loops report while they run; any consumer (CLI view, server stream) takes these."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dgemma.engine.results import Completion, TokenLogprob


@dataclass(frozen=True)
class DraftEvent:
    """After a denoising step: the canvas as the model currently reads it (its argmax)."""

    row: int
    canvas_index: int
    step: int
    tokens: torch.Tensor  # (C,) on the CPU
    num_accepted: int
    # per position, on the CPU: 'c' clamped (a constraint holds it), 'a' accepted this step (its
    # sampled token kept), 'r' renoised (back to noise for the next step)
    marks: str = ""


@dataclass(frozen=True)
class CommitEvent:
    """A canvas (diffusion) or a token (autoregressive) became final; `tokens` are the kept ones."""

    row: int
    canvas_index: int
    tokens: list[int]
    steps: int
    logprobs: list[TokenLogprob] | None = None  # one per kept token, when the request asked


@dataclass(frozen=True)
class FinishEvent:
    """One request is complete (continuous batching reports each request as it ends)."""

    row: int
    completion: Completion


@dataclass(frozen=True)
class FailEvent:
    """One request could not be computed (its row raised); it is dropped, the others go on."""

    row: int
    error: str  # the exception's type and message, one line


@dataclass(frozen=True)
class DoneEvent:
    """The last event of a run: one completion per request, in request order."""

    completions: list[Completion]


Event = DraftEvent | CommitEvent | FinishEvent | FailEvent | DoneEvent
