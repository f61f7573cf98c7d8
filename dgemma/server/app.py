"""The HTTP application: OpenAI-compatible routes over one engine worker.

    POST /v1/chat/completions, POST /v1/completions   (stream or not; drafts with include_drafts)
    GET  /v1/models, /v1/models/{id}, /health, /metrics

Every refusal is an OpenAI-style error body with a 4xx status; a request that cannot be served in
`request_timeout` seconds is cancelled (504); a client that goes away cancels its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dgemma.api import Model
from dgemma.engine.events import CommitEvent, DraftEvent, FinishEvent
from dgemma.server.choice import ChoiceText
from dgemma.server.protocol import ApiError, Job, parse_chat, parse_completion
from dgemma.server.responses import ChunkWriter, full_response
from dgemma.server.worker import EngineWorker, QueueFull

DEFAULT_CONTEXT = 8192


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 32  # cache rows: requests denoised together
    max_queue: int = 256  # requests waiting for a row before 429
    max_context: int | None = None  # positions per row (default: the model's limit, at most 8192)
    request_timeout: float = 300.0  # seconds
    max_body_bytes: int = 1 << 20
    model_name: str = "dgemma"


class _Disconnected(Exception):
    pass


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class DgemmaServer:
    def __init__(self, model: Model, settings: ServerSettings):
        self.model, self.settings, self.name = model, settings, settings.model_name
        limit = model.config.max_position_embeddings
        capacity = min(settings.max_context or DEFAULT_CONTEXT, limit)
        self.worker = EngineWorker(model.model, settings.max_batch, capacity, settings.max_queue)
        self.metrics = self.worker.metrics
        self.created = int(time.time())
        routes = [
            Route("/v1/chat/completions", self._endpoint(parse_chat), methods=["POST"]),
            Route("/v1/completions", self._endpoint(parse_completion), methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model_info, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
        ]
        handlers = {
            ApiError: self._api_error,
            HTTPException: self._http_error,
            Exception: self._internal_error,
        }
        self.app = Starlette(routes=routes, exception_handlers=handlers, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.worker.close()

    # ---- plain routes

    async def models(self, request: HttpRequest) -> Response:
        self._authorize(request)
        return self._count("/v1/models", JSONResponse({"object": "list", "data": [self._model_card()]}))

    async def model_info(self, request: HttpRequest) -> Response:
        self._authorize(request)
        if request.path_params["model_id"] != self.name:
            raise ApiError(
                404,
                f"the model {request.path_params['model_id']!r} does not exist",
                "model",
                code="model_not_found",
            )
        return JSONResponse(self._model_card())

    async def health(self, request: HttpRequest) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "active_rows": self.worker.engine.num_active,
                "queue_depth": self.worker.queue_depth,
            }
        )

    async def metrics_text(self, request: HttpRequest) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "dgemma"}

    # ---- generation

    def _endpoint(self, parse: Callable[..., Job]):
        async def handle(request: HttpRequest) -> Response:
            path = request.url.path
            try:
                self._authorize(request)
                body = await self._json(request)
                job = parse(body, self.model, self.name, self.worker.capacity)
                run = _Run(self, job)
            except ApiError as err:
                return self._count(path, error_response(err))
            if job.stream:
                self.metrics.requests.inc(endpoint=path, status="200")
                return StreamingResponse(run.sse(request), media_type="text/event-stream")
            try:
                body = await run.collect(request)
            except ApiError as err:
                return self._count(path, error_response(err))
            except _Disconnected:
                return Response(status_code=499)
            return self._count(path, JSONResponse(body))

        return handle

    async def _json(self, request: HttpRequest) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes")
        raw = await request.body()
        if len(raw) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes")
        if not raw.strip():
            raise ApiError(400, "the request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise ApiError(400, f"the request body is not valid JSON: {str(err)[:120]}") from None

    def _authorize(self, request: HttpRequest) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(
                401, "missing or incorrect API key (Authorization: Bearer ...)", code="invalid_api_key"
            )

    def _count(self, endpoint: str, response: Response) -> Response:
        self.metrics.requests.inc(endpoint=endpoint, status=str(response.status_code))
        return response

    async def _api_error(self, request: HttpRequest, exc: Exception) -> Response:
        return self._count(request.url.path, error_response(exc))

    async def _http_error(self, request: HttpRequest, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        message = {
            404: f"no route {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        err = ApiError(status, message.get(status, str(getattr(exc, "detail", "bad request"))), kind=kind)
        return error_response(err)

    async def _internal_error(self, request: HttpRequest, exc: Exception) -> Response:
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", kind="server_error"))


class _Run:
    """One HTTP request's choices in flight: events from the engine thread arrive on an asyncio queue."""

    def __init__(self, server: DgemmaServer, job: Job):
        self.server, self.job = server, job
        self.start = time.perf_counter()
        self.first_canvas: float | None = None
        self.rid = ("chatcmpl-" if job.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.choices = [ChoiceText(server.model.codec, job.stop) for _ in job.requests]
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(ticket: int, event: Any) -> None:
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, (ticket, event))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        try:
            self.tickets = server.worker.submit(job.requests, job.include_drafts, sink)
        except QueueFull as err:
            raise ApiError(
                429,
                f"server busy: {err}; retry shortly",
                kind="rate_limit_error",
                headers={"Retry-After": "1"},
            ) from None
        self.index = {t: i for i, t in enumerate(self.tickets)}
        server.metrics.prompt_tokens.inc(sum(job.prompt_tokens) * job.n)

    async def updates(self, request: HttpRequest) -> AsyncIterator[tuple[str, int, Any]]:
        """('draft' | 'text' | 'finish', choice index, payload) until every choice is done."""
        deadline = self.start + self.server.settings.request_timeout
        try:
            while not all(c.done for c in self.choices):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise ApiError(
                        504,
                        f"the request ran past the server's timeout of {self.server.settings.request_timeout:g} s",
                        kind="timeout_error",
                    )
                try:
                    ticket, event = await asyncio.wait_for(self.queue.get(), timeout=min(0.5, remaining))
                except TimeoutError:
                    if await request.is_disconnected():
                        raise _Disconnected() from None
                    continue
                i = self.index[ticket]
                choice = self.choices[i]
                if choice.done:
                    continue
                if isinstance(event, Exception):
                    raise ApiError(500, f"generation failed: {type(event).__name__}", kind="server_error")
                for update in self._handle(i, choice, event):
                    yield update
            self.server.metrics.latency.observe(time.perf_counter() - self.start)
        finally:
            self.server.worker.cancel(
                [t for t, c in zip(self.tickets, self.choices, strict=True) if not c.done]
            )

    def _handle(self, i: int, choice: ChoiceText, event: Any) -> list[tuple[str, int, Any]]:
        codec = self.server.model.codec
        if isinstance(event, DraftEvent):
            tokens = event.tokens.tolist()
            draft = {
                "canvas": event.canvas_index,
                "step": event.step,
                "accepted": event.num_accepted,
                "text": codec.decode(tokens) if codec else "",
                "token_ids": tokens,
            }
            return [("draft", i, draft)]
        if isinstance(event, CommitEvent):
            if self.first_canvas is None:
                self.first_canvas = time.perf_counter() - self.start
                self.server.metrics.first_canvas.observe(self.first_canvas)
            delta = choice.add(event.tokens, event.steps)
            if choice.done:  # a stop sequence: this choice needs no more canvases
                self.server.worker.cancel([self.tickets[i]])
                return [("finish", i, delta)]
            return [("text", i, delta)] if delta else []
        if isinstance(event, FinishEvent):
            return [("finish", i, choice.finish(event.completion.finish_reason.value))]
        return []

    async def collect(self, request: HttpRequest) -> dict[str, Any]:
        async for _ in self.updates(request):
            pass
        return full_response(self.job, self.rid, int(time.time()), self.choices)

    async def sse(self, request: HttpRequest) -> AsyncIterator[str]:
        writer = ChunkWriter(self.job, self.rid)
        if self.job.kind == "chat":
            for i in range(len(self.choices)):
                yield _event(writer.role(i))
        try:
            async for kind, i, payload in self.updates(request):
                if kind == "draft":
                    yield _event(writer.draft(i, payload))
                elif kind == "text":
                    yield _event(writer.content(i, payload))
                else:
                    yield _event(writer.content(i, payload, self.choices[i].finish_reason))
            if self.job.include_usage:
                yield _event(writer.usage(self.choices))
        except ApiError as err:
            yield _event(err.body())
        except _Disconnected:
            return
        yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
