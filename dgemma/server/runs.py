"""One HTTP request in flight: its choices' engine rows, the events coming back, and the answer.

Events arrive from the engine thread on an asyncio queue. A request with response_format
json_schema runs its rounds here: when a choice's round finishes with slots still invalid, the
next round of that choice is submitted at once (the others go on undisturbed).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request as HttpRequest

from dgemma.engine.events import CommitEvent, DraftEvent, FailEvent, FinishEvent
from dgemma.generation.auto_tools import repair_job, resolve
from dgemma.generation.tools import ToolCall, arguments_of, chosen_name, second_stage
from dgemma.server.choice import ChoiceText
from dgemma.server.fields import ApiError
from dgemma.server.infill import infill_response
from dgemma.server.metrics import ServerMetrics
from dgemma.server.protocol import Job, JobKind
from dgemma.server.responses import ChunkWriter, full_response
from dgemma.server.sudoku import sudoku_response
from dgemma.server.worker import EngineWorker, QueueFull, ShuttingDown
from dgemma.text import TextCodec


class Disconnected(Exception):
    """The client went away."""


class Run:
    def __init__(self, job: Job, worker: EngineWorker, codec: TextCodec | None, timeout: float):
        self.job, self.worker, self.codec, self.timeout = job, worker, codec, timeout
        self.metrics: ServerMetrics = worker.metrics
        self.start = time.perf_counter()
        self.first_canvas: float | None = None
        self.rid = ("chatcmpl-" if job.kind is JobKind.CHAT else "cmpl-") + uuid.uuid4().hex[:24]
        self.choices = [
            ChoiceText(
                codec,
                job.stop,
                job.json_object,
                job.reasoning,
                job.reasoning_inside,
                job.auto_tools is not None,
            )
            for _ in job.requests
        ]
        self.prompt_logprobs: list[list] | None = None  # echo: per prompt, set before collecting
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(ticket: int, event: Any) -> None:
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, (ticket, event))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        self.sink = sink
        # a structured choice's first round may run several candidate layouts: (choice, candidate) per request
        batches = [j.requests() for j in job.json_jobs] if job.json_jobs else [[r] for r in job.requests]
        owners = [(i, k) for i, batch in enumerate(batches) for k in range(len(batch))]
        try:
            flat = worker.submit([r for batch in batches for r in batch], job.include_drafts, sink)
        except QueueFull as err:
            raise ApiError(
                429,
                f"server busy: {err}; retry shortly",
                kind="rate_limit_error",
                headers={"Retry-After": "1"},
            ) from None
        self.tickets = [t for t, (_, k) in zip(flat, owners, strict=True) if k == 0]
        self.index = {t: i for t, (i, _) in zip(flat, owners, strict=True)}
        self.candidate = {t: k for t, (i, k) in zip(flat, owners, strict=True) if len(batches[i]) > 1}
        self.gathered: dict[int, dict[int, tuple]] = {}  # choice -> candidate -> its first-round output
        self.ticket = -1  # the ticket of the event being handled
        self.metrics.prompt_tokens.inc(sum(job.prompt_tokens) * job.n)

    async def updates(self, request: HttpRequest) -> AsyncIterator[tuple[str, int, Any]]:
        """('draft' | 'text' | 'finish', choice index, payload) until every choice is done."""
        deadline = self.start + self.timeout
        try:
            while not all(c.done for c in self.choices):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise ApiError(
                        504,
                        f"the request ran past the server's timeout of {self.timeout:g} s",
                        kind="timeout_error",
                    )
                try:
                    ticket, event = await asyncio.wait_for(self.queue.get(), timeout=min(0.5, remaining))
                except TimeoutError:
                    if await request.is_disconnected():
                        raise Disconnected() from None
                    continue
                i = self.index.get(ticket)
                if i is None or self.choices[i].done:
                    continue
                if isinstance(event, ShuttingDown):
                    raise ApiError(
                        503,
                        "the server is shutting down; retry",
                        kind="server_error",
                        headers={"Retry-After": "5"},
                    )
                if isinstance(event, Exception):
                    raise ApiError(500, f"generation failed: {type(event).__name__}", kind="server_error")
                if isinstance(event, FailEvent):  # this request alone; the others go on
                    raise ApiError(
                        500, f"generation failed for this request: {event.error}", kind="server_error"
                    )
                self.ticket = ticket
                if self.job.json_jobs is not None and isinstance(event, FinishEvent):
                    # a structured round's bookkeeping (joint reads, uniqueItems, repairs) can take
                    # tens of milliseconds: off the event loop, so other clients are not held up
                    handled = await asyncio.to_thread(self._handle, i, self.choices[i], event)
                else:
                    handled = self._handle(i, self.choices[i], event)
                for update in handled:
                    yield update
            self.metrics.latency.observe(time.perf_counter() - self.start)
        finally:
            unfinished = [t for t, c in zip(self.tickets, self.choices, strict=True) if not c.done]
            self.worker.cancel(unfinished + list(self.candidate))  # finished tickets are ignored

    def _handle(self, i: int, choice: ChoiceText, event: Any) -> list[tuple[str, int, Any]]:
        if self.job.json_jobs is not None:
            return self._json_round(i, choice, event)
        if choice.repairs:
            return self._repair_round(i, choice, event)
        if isinstance(event, DraftEvent):
            tokens = event.tokens.tolist()
            draft = {
                "canvas": event.canvas_index,
                "step": event.step,
                "accepted": event.num_accepted,
                "marks": event.marks,
                "text": self.codec.decode(tokens) if self.codec else "",
                "token_ids": tokens,
                "pieces": self.codec.pieces(tokens) if self.codec else [],
            }
            return [("draft", i, draft)]
        if isinstance(event, CommitEvent):
            self._first_canvas()
            choice.logprobs += event.logprobs or []
            delta = choice.add(event.tokens, event.steps)
            if choice.done:  # a stop sequence: this choice needs no more canvases
                self.worker.cancel([self.tickets[i]])
                return [("finish", i, delta)]
            return [("text", i, delta)] if delta else []
        if isinstance(event, FinishEvent):
            choice.completion = event.completion
            if self.job.auto_tools is not None:
                return self._resolve_calls(i, choice, event.completion.finish_reason.value)
            return [("finish", i, choice.finish(event.completion.finish_reason.value))]
        return []

    def _resolve_calls(self, i: int, choice: ChoiceText, reason: str) -> list[tuple[str, int, Any]]:
        """tool_choice auto, at the end of the answer: its calls, and repair stages for the ones
        whose arguments do not validate (run one after another on this choice's row)."""
        auto = self.job.auto_tools
        choice.resolution = resolve(self.codec, auto, choice.answer_tokens()[0])
        base = self.job.requests[i]
        choice.repairs = [(k, name, repair_job(auto, name, base)) for k, name in choice.resolution.repairs]
        if choice.repairs:
            self._resubmit(i, choice.repairs[0][2].request())
            return []
        return [("finish", i, self._finish_calls(choice, reason))]

    def _repair_round(self, i: int, choice: ChoiceText, event: Any) -> list[tuple[str, int, Any]]:
        if not isinstance(event, FinishEvent):
            return []
        k, name, job = choice.repairs[0]
        job.update(event.completion.token_ids, event.completion.stats, event.completion.logprobs)
        if not job.done:
            self._resubmit(i, job.request())
            return []
        choice.resolution.fill(k, name, json.dumps(json.loads(job.text()), ensure_ascii=False))
        choice.canvases += job.stats.canvases
        choice.steps += job.stats.decoder_passes
        choice.rounds += job.stats.rounds
        choice.repaired += job.stats.repaired_slots
        choice.resolved += job.stats.resolved_slots
        choice.repairs.pop(0)
        if choice.repairs:
            self._resubmit(i, choice.repairs[0][2].request())
            return []
        return [("finish", i, self._finish_calls(choice, "tool_calls"))]

    def _finish_calls(self, choice: ChoiceText, reason: str):
        found = choice.resolution
        if found.blocks:  # the text outside the calls (and any call kept as text)
            choice.text = found.content
        if found.calls:
            choice.tool_calls, reason = list(found.calls), "tool_calls"
        return choice.finish(reason)

    def _resubmit(self, i: int, request: Any) -> None:
        (ticket,) = self.worker.submit([request], False, self.sink, force=True)
        self.tickets[i] = ticket
        self.index[ticket] = i

    def _json_round(self, i: int, choice: ChoiceText, event: Any) -> list[tuple[str, int, Any]]:
        if not isinstance(event, FinishEvent):
            return []
        job = self.job.json_jobs[i]
        output = (event.completion.token_ids, event.completion.stats, event.completion.logprobs)
        if job.choosing:  # candidate layouts: wait for all of them, then keep the best one
            got = self.gathered.setdefault(i, {})
            got[self.candidate[self.ticket]] = output
            if len(got) < len(job.candidates):
                return []
            job.update_all([got[k] for k in range(len(got))])
        else:
            job.update(*output)
        if not job.done:  # renoise the invalid slots: the next round of this choice alone
            self._resubmit(i, job.request())
            return []
        text = job.text()
        if self.job.tool_plans is not None and choice.tool_name is None:  # the name is chosen
            choice.tool_name = chosen_name(text)
            second = self.job.json_jobs[i] = second_stage(job, choice.tool_name, self.job.tool_plans)
            self._resubmit(i, second.request())
            return []
        if self.job.tool_plans is not None:  # the second stage: {"name": ..., "arguments": ...}
            text = arguments_of(text)
        else:
            choice.tool_name = self.job.tool_name
        self._first_canvas()
        if self.job.calls_tool:
            choice.tool_calls = [ToolCall(choice.tool_name, text)]
        choice.tokens, choice.text = job.tokens, text
        choice.canvases, choice.steps = job.stats.canvases, job.stats.decoder_passes
        choice.rounds, choice.repaired = job.stats.rounds, job.stats.repaired_slots
        choice.resolved = job.stats.resolved_slots
        choice.candidates = job.stats.candidates
        return [("finish", i, choice.finish("tool_calls" if self.job.calls_tool else "stop"))]

    def _first_canvas(self) -> None:
        if self.first_canvas is None:
            self.first_canvas = time.perf_counter() - self.start
            self.metrics.first_canvas.observe(self.first_canvas)

    async def collect(self, request: HttpRequest) -> dict[str, Any]:
        async for _ in self.updates(request):
            pass
        if self.job.infill is not None:
            length = self.worker.model.config.canvas_length
            return infill_response(self.job, self.rid, int(time.time()), self.choices, self.codec, length)
        if self.job.sudoku is not None:
            return sudoku_response(self.job, self.rid, int(time.time()), self.choices, self.codec)
        return full_response(
            self.job, self.rid, int(time.time()), self.choices, self.codec, self.prompt_logprobs
        )

    async def sse(self, request: HttpRequest) -> AsyncIterator[str]:
        writer = ChunkWriter(self.job, self.rid)
        if self.job.kind is JobKind.CHAT:
            for i in range(len(self.choices)):
                yield _event(writer.role(i))
        try:
            async for kind, i, payload in self.updates(request):
                if kind == "draft":
                    yield _event(writer.draft(i, payload))
                elif kind == "text":
                    yield _event(writer.content(i, payload))
                else:
                    choice = self.choices[i]
                    yield _event(writer.content(i, payload, choice.finish_reason, choice.tool_calls))
            if self.job.include_usage:
                yield _event(writer.usage(self.choices))
            if self.job.sudoku is not None:
                yield _event(sudoku_response(self.job, self.rid, int(time.time()), self.choices, self.codec))
        except ApiError as err:
            yield _event(err.body())
        except Disconnected:
            return
        yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
