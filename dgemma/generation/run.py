"""Running a fixed list of requests to the end: the completions, in request order."""

from __future__ import annotations

from dgemma.engine.diffusion import run_diffusion
from dgemma.engine.events import DoneEvent
from dgemma.engine.request import Request
from dgemma.engine.results import Completion
from dgemma.model import DiffusionGemma


def complete(model: DiffusionGemma, requests: list[Request]) -> list[Completion]:
    """Denoise every request to its end (no drafts); one Completion per request, in order."""
    done = None
    for event in run_diffusion(model, requests):
        if isinstance(event, DoneEvent):
            done = event
    assert done is not None  # run_diffusion always ends with a DoneEvent
    return done.completions
