"""Next-token requests (`mode: "ar"`) beside the diffusion engine: a thread of their own.

The diffusion worker batches canvases; next-token decoding has another rhythm (one encoder pass
per token), so it runs here, one HTTP request's rows at a time, in its own thread (the weights are
only read; each run has its own cache). Same interface as EngineWorker for a Run: `submit` with a
sink, `cancel`, `metrics`. Events are the engine's: a Commit per token, a Finish per row.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass

from dgemma.engine.autoregressive import run_autoregressive
from dgemma.engine.events import CommitEvent, DoneEvent, FinishEvent
from dgemma.engine.request import Request
from dgemma.model import DiffusionGemma
from dgemma.server.metrics import ServerMetrics
from dgemma.server.worker import QueueFull, ShuttingDown, Sink

log = logging.getLogger("dgemma.server")


@dataclass
class _Batch:
    tickets: list[int]
    requests: list[Request]
    sink: Sink


class ArWorker:
    def __init__(self, model: DiffusionGemma, metrics: ServerMetrics, max_queue: int):
        self.model, self.metrics, self.max_queue = model, metrics, max_queue
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: deque[_Batch] = deque()
        self._cancels: set[int] = set()
        self._tickets = itertools.count()
        self._running: _Batch | None = None
        self._stopping = False
        self._shutdown = False
        self._thread = threading.Thread(target=self._loop, name="dgemma-ar", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._lock:
            running = len(self._running.tickets) if self._running else 0
            return running + sum(len(b.tickets) for b in self._inbox)

    def submit(self, requests: list[Request], drafts: bool, sink: Sink, force: bool = False) -> list[int]:
        """Queue one request's rows (run together as one batch); `drafts` is unused (no canvas)."""
        with self._lock:
            waiting = sum(len(b.tickets) for b in self._inbox)
            if not force and waiting + len(requests) > self.max_queue:
                raise QueueFull(f"{waiting} next-token requests are waiting (limit {self.max_queue})")
            tickets = [next(self._tickets) for _ in requests]
            self._inbox.append(_Batch(tickets, list(requests), sink))
            self._wake.notify()
        return tickets

    def cancel(self, tickets: list[int]) -> None:
        with self._lock:
            self._cancels.update(tickets)

    def shutdown(self) -> None:
        """Fail what is queued and running with ShuttingDown (between tokens)."""
        with self._lock:
            self._shutdown = True
            queued, self._inbox = list(self._inbox), deque()
        for batch in queued:
            for t in batch.tickets:
                batch.sink(t, ShuttingDown("the server is shutting down"))

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._inbox:
                    self._wake.wait()
                if self._stopping:
                    return
                batch = self._running = self._inbox.popleft()
                self._shutdown = False
            try:
                self._run(batch)
            except Exception as err:  # a bug or a bad row: this request fails, the server goes on
                log.exception("next-token run failed")
                for t in batch.tickets:
                    batch.sink(t, err)
            finally:
                with self._lock:
                    self._running = None
                    self._cancels -= set(batch.tickets)

    def _run(self, batch: _Batch) -> None:
        events = run_autoregressive(self.model, batch.requests)
        try:
            for event in events:
                with self._lock:
                    if self._shutdown:
                        for t in batch.tickets:
                            batch.sink(t, ShuttingDown("the server is shutting down"))
                        return
                    if set(batch.tickets) <= self._cancels:
                        return
                if isinstance(event, CommitEvent):
                    self.metrics.generated_tokens.inc(len(event.tokens))
                    batch.sink(batch.tickets[event.row], event)
                elif isinstance(event, DoneEvent):
                    for row, completion in enumerate(event.completions):
                        batch.sink(batch.tickets[row], FinishEvent(row, completion))
        finally:
            events.close()


__all__ = ["ArWorker", "QueueFull"]
