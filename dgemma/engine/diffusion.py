"""Block-diffusion generation with continuous batching over a fixed pool of KV-cache rows.

    each step of the engine:
        admit waiting requests into free cache rows
        one ragged encoder pass: prompts of admitted rows + the committed canvas of every row going on
        start a fresh random canvas in each of those rows
        one decoder pass over the rows still denoising, then one sampler step per row
        a row whose canvas stopped commits it (argmax, cut at EOS / max_new_tokens) at once; a
        finished request frees its row for the next waiting one

Requests join and leave at any step. A request whose computation raises (a sampler setting that
overflows, non-finite logits) fails alone with a FailEvent: its row is freed and every other row
goes on. A batched pass that raises is retried row by row to find the rows at fault. Each has its own random generator and its own positions, so its
tokens do not depend on which requests share its passes. The sampler works one row at a time, so the
full-vocabulary float32 temporaries (logits, probabilities, entropies) exist for one canvas at once,
never for the whole batch; the self-conditioning signal is kept as the hidden-size soft embedding.
`run_diffusion` runs a fixed list of requests to the end; a server keeps one engine and steps it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dgemma.engine.cache import KVCache
from dgemma.engine.events import CommitEvent, DoneEvent, DraftEvent, Event, FailEvent, FinishEvent
from dgemma.engine.logprobs import token_logprobs
from dgemma.engine.passes import decode_rows, encode_rows
from dgemma.engine.request import Request, check_fits
from dgemma.engine.results import Completion, FinishReason, Phase, RowStats, TokenLogprob
from dgemma.model import DiffusionGemma, reference_numerics
from dgemma.sampling import denoise_step
from dgemma.sampling.constraints import CanvasConstraint


@dataclass
class _Row:
    """Mutable state of one admitted request."""

    id: int
    slot: int  # its cache row
    request: Request
    generator: torch.Generator
    drafts: bool
    stats: RowStats = field(default_factory=RowStats)
    tokens: list[int] = field(default_factory=list)
    pending: list[int] | None = None  # tokens the next encoder pass appends (prompt, then canvases)
    phase: Phase = Phase.PREFILL  # the stats field the next encoder pass is timed into
    canvas: torch.Tensor | None = None
    argmax: torch.Tensor | None = None
    history: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    constraint: CanvasConstraint | None = None
    entropy: float = 0.0
    all_fixed: bool = False  # every generated position of this canvas is clamped
    fixed_score: tuple[float, int] = (0.0, 0)  # this step's clamped-token log-probability (score_fixed)
    step: int = 0
    denoising: bool = False
    canvas_logprobs: list[TokenLogprob] | None = None  # the finished canvas's, when asked for
    logprobs: list[TokenLogprob] | None = None  # of the kept tokens so far


class GenerationError(RuntimeError):
    """A request's computation failed (its FailEvent, raised where one caller owns every request)."""


def slots_needed(request: Request, canvas_length: int) -> int:
    return len(request.prompt) + math.ceil(request.max_new_tokens / canvas_length) * canvas_length


def _reference_rows(rows: list[_Row]) -> bool:
    """Whether a pass runs with the reference's rounding: a row in it asked for reference draws
    (its tokens then follow the reference's; its batch-mates' differ from theirs alone by rounding)."""
    return any(r.request.sampler.draw == "reference" for r in rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DiffusionEngine:
    """A pool of `num_rows` cache rows of `capacity` slots each, allocated once; requests come and go."""

    def __init__(self, model: DiffusionGemma, num_rows: int, capacity: int):
        if num_rows < 1 or capacity < 1:
            raise ValueError(f"an engine needs rows and slots, got {num_rows} rows of {capacity} slots")
        self.model = model
        self.cache = KVCache(model.config, num_rows, capacity, model.dtype, model.device)
        self._free = list(range(num_rows))
        self._waiting: deque[tuple[int, Request, bool]] = deque()
        self._rows: dict[int, _Row] = {}
        self._next_id = 0
        self._vocab_buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_active(self) -> int:
        return len(self._rows)

    @property
    def busy(self) -> bool:
        return bool(self._rows or self._waiting)

    def add(self, request: Request, drafts: bool = False) -> int:
        """Queue a request; returns its id (events carry it as `row`). Too long for a row: ValueError."""
        need = check_fits(
            [request], self.model.config, lambda r: slots_needed(r, self.model.config.canvas_length)
        )
        if need > self.capacity:
            raise ValueError(
                f"prompt ({len(request.prompt)} tokens) plus `max_new_tokens` ({request.max_new_tokens}) "
                f"needs {need} positions; this engine's rows hold {self.capacity}"
            )
        rid = self._next_id
        self._next_id += 1
        self._waiting.append((rid, request, drafts))
        return rid

    def cancel(self, rid: int) -> bool:
        """Drop a request, waiting or running; its row is free at once. False if it is not here."""
        if rid in self._rows:
            self._free.append(self._rows.pop(rid).slot)
            self._free.sort()
            return True
        for item in self._waiting:
            if item[0] == rid:
                self._waiting.remove(item)
                return True
        return False

    def step(self) -> list[Event]:
        """Admit, encode, denoise one step, commit; returns the events of this step in order."""
        self._admit()
        events: list[Event] = []
        encoding = sorted((r for r in self._rows.values() if r.pending is not None), key=lambda r: r.slot)
        if encoding:
            self._isolated(lambda rows: self._encode(rows, events), encoding, events)
        denoising = sorted((r for r in self._rows.values() if r.denoising), key=lambda r: r.slot)
        if denoising:
            self._isolated(lambda rows: self._denoise(rows, events), denoising, events)
            for row in denoising:
                if row.id in self._rows and not row.denoising:
                    self._guarded(row, events, self._commit, row, events)
        return events

    def _isolated(self, phase, rows: list[_Row], events: list[Event]) -> None:
        """Run a batched pass; if it raises, run it row by row and fail only the rows that raise. The
        per-row work after a pass is guarded row by row, so a retry never repeats a row's step (and
        cache lengths advance only after a pass succeeds)."""
        try:
            phase(rows)
        except Exception:
            for row in rows:
                if row.id in self._rows:
                    self._guarded(row, events, phase, [row])

    def _guarded(self, row: _Row, events: list[Event], fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:
            self._fail(row, err, events)

    def _fail(self, row: _Row, err: Exception, events: list[Event]) -> None:
        if self._rows.pop(row.id, None) is not None:
            self._free.append(row.slot)
            self._free.sort()
        message = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        events.append(FailEvent(row.id, message))

    def _admit(self) -> None:
        while self._waiting and self._free:
            rid, request, drafts = self._waiting.popleft()
            slot = self._free.pop(0)
            self.cache.lengths[slot] = 0
            row = _Row(rid, slot, request, request.generator(self.model.device), drafts)
            row.pending = list(request.prompt)
            self._rows[rid] = row

    def _encode(self, rows: list[_Row], events: list[Event]) -> None:
        """One ragged causal pass appending each row's pending tokens; then each starts a canvas."""
        model = self.model
        _sync(model.device)
        start = time.perf_counter()
        with torch.inference_mode(), reference_numerics(_reference_rows(rows)):  # per phase
            images = [r.request.images if r.phase is Phase.PREFILL else () for r in rows]
            encode_rows(model, self.cache, [r.slot for r in rows], [r.pending for r in rows], images)
        _sync(model.device)
        elapsed = time.perf_counter() - start
        for row in rows:
            setattr(row.stats, row.phase, getattr(row.stats, row.phase) + elapsed)
            row.stats.encoder_passes += 1
            row.pending, row.phase = None, Phase.COMMIT
            self._guarded(row, events, self._start_canvas, row)
            if row.id in self._rows and not row.denoising:  # every kept position clamped: nothing to denoise
                self._guarded(row, events, self._commit, row, events)

    def _start_canvas(self, row: _Row) -> None:
        config, device = self.model.config, self.model.device
        C = config.canvas_length
        row.canvas = torch.randint(0, config.vocab_size, (C,), generator=row.generator, device=device)
        row.constraint = row.request.constraint(row.stats.canvases, C, config.vocab_size, device)
        if row.constraint is not None:  # clamped tokens are clean context from the first step
            row.canvas = row.constraint.clamp(row.canvas)
        row.argmax = row.canvas
        row.history = torch.full(
            (row.request.sampler.stability_threshold, C), -1, dtype=torch.long, device=device
        )
        row.soft, row.step, row.denoising = None, 0, True
        row.canvas_logprobs = None
        room = min(C, row.request.max_new_tokens - len(row.tokens))
        row.all_fixed = row.constraint is not None and bool(row.constraint.fixed[:room].all())
        if row.all_fixed and not row.request.score_fixed:  # nothing to generate
            row.denoising, row.entropy = False, 0.0

    def _denoise(self, rows: list[_Row], events: list[Event]) -> None:
        """One decoder pass over the rows still denoising, then one sampler step per row."""
        model = self.model
        _sync(model.device)
        start = time.perf_counter()
        with torch.inference_mode(), reference_numerics(_reference_rows(rows)):
            canvas = torch.stack([r.canvas for r in rows])
            soft = None
            if any(r.soft is not None for r in rows):
                zeros = torch.zeros(
                    canvas.shape[1], model.config.hidden_size, dtype=model.dtype, device=canvas.device
                )
                soft = torch.stack([zeros if r.soft is None else r.soft for r in rows])
            hidden = decode_rows(model, self.cache, [r.slot for r in rows], canvas, soft)
            for i, row in enumerate(rows):
                self._guarded(row, events, self._sample, row, hidden[i], events)
        _sync(model.device)
        elapsed = time.perf_counter() - start
        for row in rows:
            row.stats.denoise_s += elapsed

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (logits, probabilities) (canvas, vocabulary) float32 buffers that the rows' sampler
        steps, which run one at a time, write into on a CPU. A fresh tensor of that size is past
        glibc's mmap threshold at the real vocabulary and page-faults on every page each step: a
        (256, 262144) softmax took 360 ms into a fresh tensor and 15 ms into a kept one. None on an
        accelerator, whose caching allocator reuses its blocks already."""
        if self.model.device.type != "cpu":
            return None
        if self._vocab_buffers is None:
            shape = (self.model.config.canvas_length, self.model.config.vocab_size)
            self._vocab_buffers = (torch.empty(shape), torch.empty(shape))
        return self._vocab_buffers

    def _sample(self, row: _Row, hidden: torch.Tensor, events: list[Event]) -> None:
        sampler = row.request.sampler
        few = None if row.constraint is None or row.request.score_fixed else row.constraint.head_ids
        exact = sampler.draw == "reference"  # the reference's numerics as well as its draws
        buffers = self._buffers()  # nothing holds a step's logits or probabilities past this call
        if few is None:
            logits = self.model.logits(hidden, exact=exact, out=None if buffers is None else buffers[0])
        else:  # every free position is limited to a few tokens: the head over those alone
            logits = row.constraint.widen(
                self.model.logits(hidden, few, exact=exact), self.model.config.vocab_size
            )
        if row.request.score_fixed and row.constraint is not None:
            row.fixed_score = row.constraint.fixed_logprob(logits)
        out = denoise_step(
            logits,
            row.canvas,
            row.history,
            sampler.max_denoising_steps - row.step,
            sampler,
            row.generator,
            row.constraint,
            probs_out=None if buffers is None else buffers[1],
        )
        row.canvas, row.argmax, row.history = out.canvas, out.argmax, out.history
        free = out.entropy if row.constraint is None else out.entropy[~row.constraint.fixed]
        row.entropy = float(free.mean()) if free.numel() else 0.0
        row.step += 1
        row.stats.decoder_passes += 1
        if out.stop or row.step >= sampler.max_denoising_steps or row.all_fixed:  # all_fixed: scored once
            row.denoising = False
            if row.request.logprobs is not None:
                row.canvas_logprobs = token_logprobs(out.probs, out.argmax, row.request.logprobs)
        else:  # the next step's self-conditioning input (none after the last step)
            row.soft = self.model.expected_embedding(out.probs)
        if row.drafts:
            fixed = None if row.constraint is None else row.constraint.fixed
            events.append(
                DraftEvent(
                    row.id,
                    row.stats.canvases,
                    row.step,
                    out.argmax.cpu(),
                    int(out.accepted.sum()),
                    draft_marks(out.accepted, fixed),
                )
            )

    def _commit(self, row: _Row, events: list[Event]) -> None:
        """Keep the row's final argmax canvas; finish the request or queue the canvas for encoding."""
        canvas = row.argmax.tolist()
        kept, finish = _cut(canvas, row.request, len(row.tokens))
        row.tokens.extend(kept)
        kept_logprobs = None
        if row.request.logprobs is not None and row.canvas_logprobs is None:  # all clamped, not denoised
            row.canvas_logprobs = [
                TokenLogprob(0.0, ((t, 0.0),) if row.request.logprobs else ()) for t in canvas
            ]
        if row.canvas_logprobs is not None:
            kept_logprobs = row.canvas_logprobs[: len(kept)]
            row.logprobs = (row.logprobs or []) + kept_logprobs
        row.stats.steps_per_canvas.append(row.step)
        row.stats.entropy_per_canvas.append(row.entropy)
        row.stats.fixed_logprob += row.fixed_score[0]
        row.stats.fixed_count += row.fixed_score[1]
        row.fixed_score = (0.0, 0)
        row.stats.num_tokens = len(row.tokens)
        events.append(CommitEvent(row.id, row.stats.canvases, kept, row.step, kept_logprobs))
        row.stats.canvases += 1
        if finish is None:
            row.pending = canvas
            return
        del self._rows[row.id]
        self._free.append(row.slot)
        self._free.sort()
        events.append(FinishEvent(row.id, Completion(row.tokens, finish, row.stats, row.logprobs)))


def draft_marks(accepted: torch.Tensor, fixed: torch.Tensor | None) -> str:
    """One letter per canvas position: 'c' clamped, 'a' accepted this step, 'r' renoised."""
    codes = torch.where(accepted, ord("a"), ord("r"))
    if fixed is not None:
        codes = torch.where(fixed, ord("c"), codes)
    return bytes(codes.to(torch.uint8).cpu().tolist()).decode("ascii")


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


def run_diffusion(
    model: DiffusionGemma, requests: list[Request], emit_drafts: bool = False
) -> Iterator[Event]:
    """Generate for a fixed list of requests; yields Draft (if asked), Commit and Finish events, then Done.

    Event `row`s are indices into `requests`; the Done event holds the completions in request order.
    """
    capacity = check_fits(requests, model.config, lambda r: slots_needed(r, model.config.canvas_length))
    engine = DiffusionEngine(model, len(requests), capacity)
    ids = [engine.add(r, emit_drafts) for r in requests]
    completions: dict[int, Completion] = {}
    while engine.busy:
        events = engine.step()
        for event in events:
            if isinstance(event, FinishEvent):
                completions[event.row] = event.completion
            elif isinstance(event, FailEvent):
                raise GenerationError(f"request {event.row} failed: {event.error}")
        yield from events
    yield DoneEvent([completions[i] for i in ids])
