"""Running requests: events as they happen, completions at the end, text out, structured rounds.

Every caller that runs a fixed list of requests to the end goes through `complete` (or `stream`
when it wants the events); the server's continuous-batching worker is the one other engine driver.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dgemma.engine.autoregressive import run_autoregressive
from dgemma.engine.diffusion import run_diffusion
from dgemma.engine.events import DoneEvent, Event
from dgemma.engine.request import Request
from dgemma.engine.results import Completion, FinishReason, RowStats, TokenLogprob
from dgemma.generation.reasoning import ReasoningFormat, split
from dgemma.model import DiffusionGemma
from dgemma.structured.generate import JsonJob
from dgemma.text import TextCodec


class Mode(StrEnum):
    DIFFUSION = "diffusion"
    AR = "ar"


@dataclass
class GenerationOutput:
    """One entry per prompt, in order."""

    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[FinishReason]
    stats: list[RowStats]
    logprobs: list[list[TokenLogprob] | None] | None = None  # per prompt, when asked for
    tool_calls: list[list[Any]] | None = None  # per prompt, its generation.tools.ToolCalls, with `tools=`
    # per prompt, the reasoning block split off its text (None: none written), for chat prompts of a
    # checkpoint whose template has a thinking switch
    reasoning: list[str | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "texts": self.texts,
            "token_ids": self.token_ids,
            "finish_reasons": [f.value for f in self.finish_reasons],
            "stats": [s.to_dict() for s in self.stats],
        }
        return out if self.reasoning is None else {**out, "reasoning": self.reasoning}


def stream(
    model: DiffusionGemma, requests: list[Request], mode: Mode | str = Mode.DIFFUSION, drafts: bool = True
) -> Iterator[Event]:
    """The events of a run: drafts (diffusion, if asked), commits, then one DoneEvent."""
    if Mode(mode) is Mode.AR:
        return run_autoregressive(model, requests)
    return run_diffusion(model, requests, emit_drafts=drafts)


def final(events: Iterable[Event]) -> DoneEvent:
    """Drain a run's events; the DoneEvent every run ends with."""
    done = None
    for event in events:
        if isinstance(event, DoneEvent):
            done = event
    if done is None:
        raise RuntimeError("the generation run ended without its Done event")
    return done


def complete(
    model: DiffusionGemma, requests: list[Request], mode: Mode | str = Mode.DIFFUSION
) -> list[Completion]:
    """Run every request to its end (no drafts); one Completion per request, in order."""
    return final(stream(model, requests, mode, drafts=False)).completions


def texts(codec: TextCodec | None, completions: list[Completion]) -> GenerationOutput:
    """Completions as text (empty strings for a checkpoint without a tokenizer)."""
    return GenerationOutput(
        [codec.decode(c.token_ids) if codec else "" for c in completions],
        [c.token_ids for c in completions],
        [c.finish_reason for c in completions],
        [c.stats for c in completions],
        [c.logprobs for c in completions] if any(c.logprobs is not None for c in completions) else None,
    )


def split_reasoning(
    out: GenerationOutput, codec: TextCodec, fmt: ReasoningFormat, prompts: list[list[int]]
) -> None:
    """Move each text's reasoning block out of `out.texts` into `out.reasoning` (`prompts`, one
    per text, tell whether the template left a block open for the model)."""
    parts = [
        split(codec, fmt, ids, fmt.opens_inside(p)) for ids, p in zip(out.token_ids, prompts, strict=True)
    ]
    out.texts = [part.content for part in parts]
    out.reasoning = [part.reasoning for part in parts]


def run_json(model: DiffusionGemma, jobs: list[JsonJob]) -> GenerationOutput:
    """Run structured jobs' rounds to the end (the open ones share each round's batch); their JSON."""
    while pending := [j for j in jobs if not j.done]:
        batches = [j.requests() for j in pending]  # a first round with candidates: one per layout
        done = iter(complete(model, [r for batch in batches for r in batch]))
        for job, batch in zip(pending, batches, strict=True):
            job.update_all([(c.token_ids, c.stats, c.logprobs) for c in itertools.islice(done, len(batch))])
    return GenerationOutput(
        [j.text() for j in jobs],
        [j.tokens for j in jobs],
        [FinishReason.STOP for _ in jobs],
        [j.stats for j in jobs],
    )
