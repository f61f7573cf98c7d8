"""The one engine loop of a server: a thread that owns the DiffusionEngine and steps it while work exists.

HTTP handlers never touch the engine. They submit requests (with a callback for their events) and
cancel them through an inbox the loop drains between steps, so requests join the running batch as
soon as a cache row is free and leave the moment they finish or their client goes away.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dgemma.engine.diffusion import DiffusionEngine
from dgemma.engine.events import CommitEvent, Event, FailEvent, FinishEvent
from dgemma.engine.request import Request
from dgemma.model import DiffusionGemma
from dgemma.server.metrics import ServerMetrics

log = logging.getLogger("dgemma.server")

Sink = Callable[[int, Event | Exception], None]  # (ticket, event or failure), called on the loop thread


class QueueFull(Exception):
    """More requests are waiting for a cache row than the server accepts."""


class ShuttingDown(Exception):
    """The server is stopping; requests still in flight end with this."""


@dataclass
class _Submission:
    ticket: int
    request: Request
    drafts: bool
    sink: Sink


class EngineWorker:
    def __init__(self, model: DiffusionGemma, max_batch: int, capacity: int, max_queue: int):
        self.model, self.max_batch, self.capacity, self.max_queue = model, max_batch, capacity, max_queue
        self.engine = DiffusionEngine(model, max_batch, capacity)
        self.metrics = ServerMetrics(lambda: self.queue_depth, lambda: self.engine.num_active)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: list[_Submission] = []
        self._cancels: set[int] = set()
        self._tickets = itertools.count()
        self._by_engine_id: dict[int, _Submission] = {}
        self._engine_id: dict[int, int] = {}
        self._stopping = False
        self._shutdown = False
        self._thread = threading.Thread(target=self._loop, name="dgemma-engine", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._inbox) + self.engine.num_waiting

    def submit(self, requests: list[Request], drafts: bool, sink: Sink, force: bool = False) -> list[int]:
        """Queue requests together (all or none); returns their tickets. Raises QueueFull unless `force`
        (a later round of a request already admitted)."""
        with self._lock:
            if not force and self.queue_depth + len(requests) > self.max_queue:
                raise QueueFull(f"{self.queue_depth} requests are waiting (limit {self.max_queue})")
            tickets = [next(self._tickets) for _ in requests]
            self._inbox += [_Submission(t, r, drafts, sink) for t, r in zip(tickets, requests, strict=True)]
            self._wake.notify()
        return tickets

    def cancel(self, tickets: list[int]) -> None:
        """Stop work on these tickets (finished ones are ignored); their cache rows free up."""
        with self._lock:
            self._cancels.update(tickets)
            self._wake.notify()

    @property
    def in_flight(self) -> int:
        """Requests queued or running."""
        with self._lock:
            return len(self._inbox) + len(self._by_engine_id)

    def shutdown(self) -> None:
        """Fail every queued and running request with ShuttingDown (between engine steps)."""
        with self._lock:
            self._shutdown = True
            self._wake.notify()

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while (
                    not self._stopping
                    and not self._shutdown
                    and not self._inbox
                    and not self._cancels
                    and not self.engine.busy
                ):
                    self._wake.wait()
                if self._stopping:
                    return
                if self._shutdown:
                    self._shutdown = False
                    queued, self._inbox = self._inbox, []
                    for sub in queued:
                        sub.sink(sub.ticket, ShuttingDown("the server is shutting down"))
                    self._fail_all(ShuttingDown("the server is shutting down"))
                    continue
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, set()
                # added while holding the lock so queue_depth never misses them in between
                for sub in inbox:
                    if sub.ticket in cancels:
                        continue
                    rid = self.engine.add(sub.request, sub.drafts)
                    self._by_engine_id[rid] = sub
                    self._engine_id[sub.ticket] = rid
                for ticket in cancels:
                    rid = self._engine_id.pop(ticket, None)
                    if rid is not None:
                        self.engine.cancel(rid)
                        self._by_engine_id.pop(rid, None)
            if self.engine.busy:
                self._step()

    def _step(self) -> None:
        try:
            events = self.engine.step()
        except Exception as err:  # rows fail alone inside the engine; this is a bug in the engine itself
            log.exception("engine step failed; failing the requests in flight")
            self._fail_all(err)
            return
        for event in events:
            sub = self._by_engine_id.get(event.row)
            if sub is None:
                continue
            if isinstance(event, CommitEvent):
                self.metrics.canvases.inc()
                self.metrics.generated_tokens.inc(len(event.tokens))
                self.metrics.denoising_steps.inc(event.steps)
            elif isinstance(event, FinishEvent | FailEvent):
                if isinstance(event, FailEvent):
                    log.warning("request %s failed alone: %s", sub.ticket, event.error)
                self._by_engine_id.pop(event.row, None)
                self._engine_id.pop(sub.ticket, None)
            sub.sink(sub.ticket, event)

    def _fail_all(self, err: Exception) -> None:
        subs = list(self._by_engine_id.values())
        self._by_engine_id.clear()
        self._engine_id.clear()
        self.engine = DiffusionEngine(self.model, self.max_batch, self.capacity)
        for sub in subs:
            sub.sink(sub.ticket, err)
