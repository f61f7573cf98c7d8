"""`dgemma serve`: the OpenAI-compatible server (flags, checks, then uvicorn in the foreground)."""

from __future__ import annotations

import argparse

from dgemma.cli.common import add_load_flags, load_kwargs


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    sv.add_argument("--model", default=None, help="checkpoint directory (default: the bundled Sudoku model)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    sv.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    sv.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1 routes")
    sv.add_argument("--max-batch", type=int, default=32, help="requests denoised together (cache rows)")
    sv.add_argument("--max-queue", type=int, default=256, help="waiting requests before answering 429")
    sv.add_argument("--max-context", type=int, default=None, help="positions per request (default 8192)")
    sv.add_argument(
        "--request-timeout", type=float, default=300.0, help="seconds before a request is cancelled"
    )
    sv.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="seconds in-flight requests get after SIGTERM"
    )
    sv.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="largest request body (default 1 MiB; 32 MiB for a model that takes images)",
    )
    sv.add_argument("--max-connections", type=int, default=1024, help="open connections before answering 503")
    sv.add_argument("--no-ui", action="store_true", help="do not serve the playground page at /")
    sv.add_argument("--served-model-name", default=None, help="the `model` clients name (default: dir name)")
    sv.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    sv.add_argument("--device", default="cpu")
    sv.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_load_flags(sv)


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    import dgemma
    from dgemma.server.app import ServerSettings
    from dgemma.server.launch import serve_forever

    for name in ("max_batch", "max_queue", "max_context", "max_connections"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be a positive integer, got {value}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"`--port` must be in 0..65535, got {args.port}")
    if not args.request_timeout > 0:
        raise ValueError(f"`--request-timeout` must be > 0, got {args.request_timeout}")
    if not 0 <= args.shutdown_grace <= 3600:
        raise ValueError(f"`--shutdown-grace` must be in [0, 3600] seconds, got {args.shutdown_grace}")
    if args.model is None:
        from dgemma.apps.sudoku import bundled_model

        path, name = bundled_model(), "dgemma-sudoku"
    else:
        path = Path(args.model)
        name = path.resolve().name
    model = dgemma.load(path, dtype=args.dtype, device=args.device, compile=args.compile, **load_kwargs(args))
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_context=args.max_context,
        request_timeout=args.request_timeout,
        shutdown_grace=args.shutdown_grace,
        max_connections=args.max_connections,
        max_body_bytes=args.max_body_bytes,
        model_name=args.served_model_name or name,
        ui=not args.no_ui,
    )
    serve_forever(
        model,
        settings,
        lambda url: print(
            f"dgemma: serving {settings.model_name!r} at {url}"
            + ("" if args.no_ui else f" (playground: {url}/)"),
            flush=True,
        ),
    )
    return 0
