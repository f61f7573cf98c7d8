"""Binding and running the server: in the foreground for `dgemma serve`, or in a thread for tests and benches."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn

from dgemma.api import Model
from dgemma.server.app import DgemmaServer, ServerSettings
from dgemma.server.transport import GuardedH11Protocol


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(2048)
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM / SIGINT first drain: new requests get 503 with Retry-After, requests in
    flight get `settings.shutdown_grace` seconds to finish, the rest end with an error body (or an
    error event and [DONE] in a stream); then uvicorn closes. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, app: DgemmaServer):
        super().__init__(config)
        self.dgemma = app

    def handle_exit(self, sig, frame) -> None:
        if self.dgemma.draining:
            self.force_exit = True
            self.should_exit = True
            return
        self.dgemma.draining = True
        threading.Thread(target=self._drain, name="dgemma-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.dgemma.settings.shutdown_grace
        while self.dgemma.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.dgemma.worker.shutdown()
        self.dgemma.ar.shutdown()
        time.sleep(0.5)  # the failed requests' error bodies and events go out
        self.should_exit = True


def _uvicorn(server: DgemmaServer) -> uvicorn.Server:
    config = uvicorn.Config(
        server.app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        http=type("Protocol", (GuardedH11Protocol,), {"header_timeout_s": server.settings.header_timeout}),
        limit_concurrency=server.settings.max_connections,
        timeout_keep_alive=5,
    )
    return DrainingServer(config, server)


def serve_forever(model: Model, settings: ServerSettings, on_ready: Callable[[str], None]) -> None:
    """Bind, report the URL through `on_ready`, and serve until interrupted."""
    sock = _bind(settings.host, settings.port)
    server = DgemmaServer(model, settings)
    host, port = sock.getsockname()[:2]
    on_ready(f"http://{host}:{port}")
    _uvicorn(server).run(sockets=[sock])


@contextlib.contextmanager
def running_server(model: Model, settings: ServerSettings) -> Iterator[tuple[str, DgemmaServer]]:
    """Serve in a background thread on `settings.port` (0: any free port); yields (base URL, server)."""
    sock = _bind(settings.host, settings.port)
    server = DgemmaServer(model, settings)
    runner = _uvicorn(server)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}", server
    finally:
        runner.should_exit = True
        thread.join(timeout=15)
        server.worker.close()
        server.ar.close()
        sock.close()
