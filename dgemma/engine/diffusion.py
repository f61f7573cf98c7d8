"""The block-diffusion generation loop: prefill, then per canvas denoise until stopped and commit.

    prefill every prompt into the cache (one ragged encoder pass)
    while a request is unfinished:
        start a random canvas for each unfinished request
        while a canvas is still denoising: one decoder pass over those rows, one sampler step each
        commit: keep each canvas's argmax up to EOS / max_new_tokens; encode it if more is needed

Each request has its own random generator, so its tokens do not depend on its batch-mates.
The loop is a generator of events; the last one carries the completions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dgemma.engine.cache import KVCache
from dgemma.engine.events import CommitEvent, DoneEvent, DraftEvent, Event
from dgemma.engine.passes import decode_rows, encode_rows
from dgemma.engine.request import Request, check_fits
from dgemma.engine.results import Completion, FinishReason, RowStats
from dgemma.model import DiffusionGemma
from dgemma.sampling import denoise_step
from dgemma.sampling.constraints import CanvasConstraint


@dataclass
class _Row:
    """Mutable state of one request while it runs."""

    index: int
    request: Request
    generator: torch.Generator
    stats: RowStats = field(default_factory=RowStats)
    tokens: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    canvas: torch.Tensor | None = None
    argmax: torch.Tensor | None = None
    history: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    constraint: CanvasConstraint | None = None
    entropy: float = 0.0
    step: int = 0
    denoising: bool = False


def slots_needed(request: Request, canvas_length: int) -> int:
    return len(request.prompt) + math.ceil(request.max_new_tokens / canvas_length) * canvas_length


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_diffusion(
    model: DiffusionGemma, requests: list[Request], emit_drafts: bool = False
) -> Iterator[Event]:
    """Generate for every request; yields Draft (if asked) and Commit events, then one Done event."""
    config, device = model.config, model.device
    C = config.canvas_length
    capacity = check_fits(requests, config, lambda r: slots_needed(r, C))
    cache = KVCache(config, len(requests), capacity, model.dtype, device)
    rows = [_Row(i, r, r.generator(device)) for i, r in enumerate(requests)]

    # inference mode is entered per phase (in _timed), never across a yield: the consumer runs
    # between events, and must not find it switched on
    _timed(
        rows,
        "prefill_s",
        device,
        lambda: encode_rows(model, cache, [r.index for r in rows], [r.request.prompt for r in rows]),
    )
    canvas_index = 0
    while active := [r for r in rows if r.finish is None]:
        for row in active:
            _start_canvas(row, C, config.vocab_size, canvas_index)
        while denoising := [r for r in active if r.denoising]:
            yield from _denoise_step(model, cache, denoising, canvas_index, emit_drafts)
        yield from _commit(model, cache, active, canvas_index)
        canvas_index += 1
    yield DoneEvent([Completion(r.tokens, r.finish, r.stats) for r in rows])


def _timed(rows: list[_Row], phase: str, device: torch.device, fn):
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = fn()
    _sync(device)
    elapsed = time.perf_counter() - start
    for row in rows:
        setattr(row.stats, phase, getattr(row.stats, phase) + elapsed)
    return out


def _start_canvas(row: _Row, canvas_length: int, vocab_size: int, canvas_index: int) -> None:
    device = row.generator.device
    row.canvas = torch.randint(0, vocab_size, (canvas_length,), generator=row.generator, device=device)
    row.constraint = row.request.constraint(canvas_index, canvas_length, vocab_size, device)
    if row.constraint is not None:  # clamped tokens are clean context from the first step
        row.canvas = row.constraint.clamp(row.canvas)
    row.argmax = row.canvas
    row.history = torch.full(
        (row.request.sampler.stability_threshold, canvas_length), -1, dtype=torch.long, device=device
    )
    row.soft, row.step, row.denoising = None, 0, True


def _denoise_step(
    model: DiffusionGemma, cache: KVCache, rows: list[_Row], canvas_index: int, emit_drafts: bool
) -> Iterator[Event]:
    """One decoder pass over the rows still denoising, then one sampler step per row."""
    events: list[Event] = []

    def run() -> None:
        canvas = torch.stack([r.canvas for r in rows])
        soft = None
        if any(r.soft is not None for r in rows):
            zeros = torch.zeros(
                canvas.shape[1], model.config.hidden_size, dtype=model.dtype, device=canvas.device
            )
            soft = torch.stack([zeros if r.soft is None else r.soft for r in rows])
        hidden = decode_rows(model, cache, [r.index for r in rows], canvas, soft)
        for i, row in enumerate(rows):
            sampler = row.request.sampler
            out = denoise_step(
                model.logits(hidden[i]),
                row.canvas,
                row.history,
                sampler.max_denoising_steps - row.step,
                sampler,
                row.generator,
                row.constraint,
            )
            row.canvas, row.argmax, row.history = out.canvas, out.argmax, out.history
            free = out.entropy if row.constraint is None else out.entropy[~row.constraint.fixed]
            row.entropy = float(free.mean()) if free.numel() else 0.0
            row.soft = model.soft_embedding(out.processed_logits.to(model.dtype))
            row.step += 1
            row.stats.decoder_forwards += 1
            if out.stop or row.step >= sampler.max_denoising_steps:
                row.denoising = False
            if emit_drafts:
                events.append(
                    DraftEvent(row.index, canvas_index, row.step, out.argmax.cpu(), int(out.accepted.sum()))
                )

    _timed(rows, "denoise_s", model.device, run)
    yield from events


def _commit(model: DiffusionGemma, cache: KVCache, rows: list[_Row], canvas_index: int) -> Iterator[Event]:
    """Keep each row's final argmax canvas (cut at EOS and max_new_tokens); encode those that go on."""
    events: list[Event] = []
    going_on: list[_Row] = []
    for row in rows:
        canvas = row.argmax.tolist()
        kept, row.finish = _cut(canvas, row.request, len(row.tokens))
        row.tokens.extend(kept)
        row.stats.canvases += 1
        row.stats.steps_per_canvas.append(row.step)
        row.stats.entropy_per_canvas.append(row.entropy)
        row.stats.num_tokens = len(row.tokens)
        events.append(CommitEvent(row.index, canvas_index, kept, row.step))
        if row.finish is None:
            going_on.append(row)
    if going_on:
        _timed(
            going_on,
            "commit_s",
            model.device,
            lambda: encode_rows(
                model, cache, [r.index for r in going_on], [r.argmax.tolist() for r in going_on]
            ),
        )
    yield from events


def _cut(canvas: list[int], request: Request, num_generated: int) -> tuple[list[int], FinishReason | None]:
    """The tokens of a finished canvas to keep, and why generation ends (None: it goes on)."""
    eos = set(request.eos_token_ids)
    room = request.max_new_tokens - num_generated
    for i, tok in enumerate(canvas[:room]):
        if tok in eos:
            return canvas[:i], FinishReason.STOP
    if room <= len(canvas):
        return canvas[:room], FinishReason.LENGTH
    return canvas, None
