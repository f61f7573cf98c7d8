"""The HTTP application: OpenAI-compatible routes over one engine worker.

    POST /v1/chat/completions, POST /v1/completions   (stream or not; drafts with include_drafts)
    POST /v1/sudoku                                    (a puzzle solved with its givens clamped)
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dgemma.api import Model
from dgemma.engine.results import TokenLogprob
from dgemma.generation.run import Mode
from dgemma.server.ar_worker import ArWorker
from dgemma.server.fields import ApiError, check_text
from dgemma.server.protocol import Job, parse_chat, parse_completion
from dgemma.server.responses import echo_response
from dgemma.server.runs import Disconnected, Run
from dgemma.server.sudoku import parse_sudoku
from dgemma.server.tokenize import detokenize, tokenize, tokenizer_info
from dgemma.server.worker import EngineWorker

DEFAULT_CONTEXT = 8192
UI = Path(__file__).with_name("ui")
TEXT_BODY_BYTES = 1 << 20
IMAGE_BODY_BYTES = 32 << 20  # room for a data URL of the largest image accepted (dgemma/images/load.py)


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 32  # cache rows: requests denoised together
    max_queue: int = 256  # requests waiting for a row before 429
    max_context: int | None = None  # positions per row (default: the model's limit, at most 8192)
    request_timeout: float = 300.0  # seconds
    max_body_bytes: int | None = None  # default: 1 MiB, or 32 MiB for a model that takes images
    header_timeout: float = 10.0  # seconds a connection may take to send its request headers
    body_timeout: float = 30.0  # seconds to receive a request body
    parse_timeout: float = 10.0  # seconds to tokenize, template and compile a schema, off the event loop
    max_connections: int = 1024  # open connections and tasks; past this uvicorn answers 503
    shutdown_grace: float = 10.0  # seconds in-flight requests get to finish after SIGTERM
    model_name: str = "dgemma"
    ui: bool = True  # the playground at / (dgemma/server/ui)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class DgemmaServer:
    def __init__(self, model: Model, settings: ServerSettings):
        self.model, self.settings, self.name = model, settings, settings.model_name
        limit = model.config.max_position_embeddings
        capacity = min(settings.max_context or DEFAULT_CONTEXT, limit)
        self.worker = EngineWorker(model.model, settings.max_batch, capacity, settings.max_queue)
        self.metrics = self.worker.metrics
        self.ar = ArWorker(model.model, self.metrics, settings.max_queue)  # requests with `mode: "ar"`
        self.created = int(time.time())
        self.takes_images = model.builder.images is not None
        self.draining = False  # set on SIGTERM: new generation requests get 503
        self._scoring = asyncio.Semaphore(1)  # echo: one prompt scoring at a time
        routes = [
            Route("/v1/chat/completions", self._endpoint(parse_chat), methods=["POST"]),
            Route("/v1/completions", self._endpoint(parse_completion), methods=["POST"]),
            Route("/v1/sudoku", self._endpoint(parse_sudoku), methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model_info, methods=["GET"]),
            Route("/tokenizer_info", self.tokenizer_info, methods=["GET"]),
            Route(
                "/tokenize",
                self._tokenizer_route(lambda body: tokenize(body, model, self.worker.capacity)),
                methods=["POST"],
            ),
            Route(
                "/detokenize", self._tokenizer_route(lambda body: detokenize(body, model)), methods=["POST"]
            ),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
        ]
        if settings.ui:  # plain files shipped in the package; the page calls the API with relative URLs
            routes += [
                Route("/", lambda _: FileResponse(UI / "index.html"), methods=["GET"]),
                Mount("/ui", StaticFiles(directory=UI), name="ui"),
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
        self.ar.close()

    @property
    def in_flight(self) -> int:
        """Requests queued or running, diffusion and next-token."""
        return self.worker.in_flight + self.ar.in_flight

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

    async def tokenizer_info(self, request: HttpRequest) -> Response:
        self._authorize(request)
        return self._count("/tokenizer_info", JSONResponse(tokenizer_info(self.model, self.worker.capacity)))

    def _tokenizer_route(self, work: Callable[[Any], dict]):
        async def handle(request: HttpRequest) -> Response:
            self._authorize(request)
            body = await self._json(request)
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(work, body), timeout=self.settings.parse_timeout
                )
            except TimeoutError:
                raise ApiError(
                    413, f"tokenizing took more than {self.settings.parse_timeout:g} s; send less"
                ) from None
            return self._count(request.url.path, JSONResponse(result))

        return handle

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
                if self.draining:
                    raise ApiError(
                        503,
                        "the server is shutting down; retry",
                        kind="server_error",
                        headers={"Retry-After": "5"},
                    )
                body = await self._json(request)
                job = await self._parse(parse, body)
                worker = self.ar if job.mode is Mode.AR else self.worker
                run = Run(job, worker, self.model.codec, self.settings.request_timeout)
                if job.echo:
                    run.prompt_logprobs = await self._score(job)
                    if not job.requests:  # max_tokens 0: the prompts scored, nothing generated
                        scored = echo_response(job, run.rid, self.model.codec, run.prompt_logprobs)
                        return self._count(path, JSONResponse(scored))
            except ApiError as err:
                return self._count(path, error_response(err))
            if job.stream:
                self.metrics.requests.inc(endpoint=path, status="200")
                return StreamingResponse(run.sse(request), media_type="text/event-stream")
            try:
                body = await run.collect(request)
            except ApiError as err:
                return self._count(path, error_response(err))
            except Disconnected:
                return Response(status_code=499)
            return self._count(path, JSONResponse(body))

        return handle

    async def _score(self, job: Job) -> list[list[TokenLogprob | None]]:
        """The prompts' log-probabilities under the causal encoder, one scoring at a time, in a
        thread beside the engine's (the weights are only read; each scoring has its own cache)."""
        async with self._scoring:
            return await asyncio.to_thread(self.model.score, job.prompts, job.logprobs or 0)

    async def _parse(self, parse: Callable[..., Job], body: Any) -> Job:
        """Tokenizing, templating and schema compilation run in a worker thread, so the event loop
        (and /health) stays free while they run; past `parse_timeout` the request is refused."""
        work = asyncio.to_thread(parse, body, self.model, self.name, self.worker.capacity)
        try:
            return await asyncio.wait_for(work, timeout=self.settings.parse_timeout)
        except TimeoutError:
            raise ApiError(
                413, f"the request took more than {self.settings.parse_timeout:g} s to prepare; send less"
            ) from None

    async def _json(self, request: HttpRequest) -> Any:
        raw = await self._body(request)
        if not raw.strip():
            raise ApiError(400, "the request body is empty; send a JSON object")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the request body is not valid UTF-8") from None
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise ApiError(400, f"the request body is not valid JSON: {str(err)[:120]}") from None
        check_text(body)
        return body

    async def _body(self, request: HttpRequest) -> bytes:
        """The body, counted as it streams in (chunked bodies too): reading stops past the limit."""
        limit = self.settings.max_body_bytes or (IMAGE_BODY_BYTES if self.takes_images else TEXT_BODY_BYTES)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes")
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the request body is larger than {limit} bytes")
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), timeout=self.settings.body_timeout)
        except TimeoutError:
            raise ApiError(
                408, f"the request body did not arrive within {self.settings.body_timeout:g} s"
            ) from None
        return b"".join(chunks)

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
