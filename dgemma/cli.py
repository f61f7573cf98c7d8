"""The `dgemma` command: one entry point, a subcommand per job.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from dgemma.cli_common import (
    EXIT_USAGE,
    Parser,
    add_sampler_flags,
    add_train_flags,
    sampler_overrides,
    train_config,
    train_with_progress,
)
from dgemma.config import SamplerConfig


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dgemma", description="DiffusionGemma: block-diffusion text generation")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    gen = sub.add_parser("generate", help="generate text from a prompt")
    gen.add_argument(
        "prompts", nargs="+", metavar="PROMPT", help="prompt text ('-' reads stdin); several make a batch"
    )
    gen.add_argument("--model", required=True, help="checkpoint directory (Hugging Face layout)")
    gen.add_argument(
        "--mode",
        choices=["diffusion", "ar"],
        default="diffusion",
        help="block diffusion or next-token decoding",
    )
    gen.add_argument(
        "--raw", action="store_true", help="tokenize the prompt as is, without the chat template"
    )
    gen.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0, help="random seed (prompt i uses seed + i)")
    gen.add_argument("--temperature", type=float, default=0.0, help="--mode ar only: 0 is greedy")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    gen.add_argument("--device", default="cpu")
    gen.add_argument(
        "--compile", action="store_true", help="torch.compile the model (slow first run, faster after)"
    )
    gen.add_argument("--json", action="store_true", help="print ids, text and stats as one JSON object")
    gen.add_argument("--show-steps", action="store_true", help="show the canvas being refined, live")
    gen.add_argument(
        "--json-schema",
        default=None,
        metavar="FILE",
        help="JSON Schema file: output always parses and validates",
    )
    add_sampler_flags(gen)

    inf = sub.add_parser("infill", help="fill the gap between a prefix and a suffix")
    inf.add_argument("--model", required=True)
    inf.add_argument("--prefix", required=True, help="text before the gap ('-' reads stdin)")
    inf.add_argument("--suffix", required=True, help="text after the gap")
    inf.add_argument("--length", default="auto", help="gap length in tokens, or 'auto'")
    inf.add_argument("--seed", type=int, default=0)
    inf.add_argument("--json", action="store_true", help="print text, fill, length and scores as JSON")
    add_sampler_flags(inf)

    ed = sub.add_parser("edit", help="regenerate a span of a text in place")
    ed.add_argument("--model", required=True)
    ed.add_argument("--text", required=True, help="the text ('-' reads stdin)")
    ed.add_argument("--start", type=int, required=True, help="first character of the span")
    ed.add_argument("--end", type=int, required=True, help="one past the last character of the span")
    ed.add_argument("--length", default="auto", help="new span length in tokens, or 'auto'")
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--json", action="store_true")
    add_sampler_flags(ed)

    tr = sub.add_parser("train", help="fine-tune a checkpoint on JSONL data (prompt/response or messages)")
    tr.add_argument("--model", required=True, help="checkpoint directory to start from")
    tr.add_argument("--data", required=True, help="JSONL file: {prompt, response} or {messages} per line")
    tr.add_argument("--out", required=True, help="run directory: checkpoints, metrics, loss.png, model/")
    add_train_flags(tr, steps=100, batch_size=8, lr=1e-4, warmup=10, ar_weight=1.0)

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
    sv.add_argument("--max-connections", type=int, default=1024, help="open connections before answering 503")
    sv.add_argument("--served-model-name", default=None, help="the `model` clients name (default: dir name)")
    sv.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    sv.add_argument("--device", default="cpu")
    sv.add_argument("--compile", action="store_true", help="torch.compile the model")

    from dgemma import cli_bench, cli_sudoku

    cli_sudoku.add_parser(sub, Parser)
    cli_bench.add_parser(sub)
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    import dgemma

    prompts = [sys.stdin.read() if p == "-" else p for p in args.prompts]
    SamplerConfig().replace(**sampler_overrides(args))  # fail on bad settings before loading weights
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer, got {args.max_new_tokens}")
    schema = _read_schema(args) if args.json_schema else None
    model = dgemma.load(args.model, dtype=args.dtype, device=args.device, compile=args.compile)
    if schema is not None:
        out = model.generate(
            prompts, json_schema=schema, seed=args.seed, raw=args.raw, **sampler_overrides(args)
        )
        _print_outputs(out, args.json)
        return 0
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        raw=args.raw,
        temperature=args.temperature,
        **sampler_overrides(args),
    )
    if args.show_steps and model.codec is not None:
        from rich.console import Console

        from dgemma.live import show_live

        events = model.stream(prompts, mode=args.mode, drafts=True, **kwargs)
        done = show_live(events, model.codec, len(prompts), Console(stderr=args.json))
        out = model.finish(done.completions)
    else:
        out = model.generate(prompts, mode=args.mode, **kwargs)
    if args.json or not args.show_steps:
        _print_outputs(out, args.json)
    return 0


def _read_schema(args: argparse.Namespace):
    from dgemma.structured.schema import compile_schema

    if args.mode != "diffusion" or args.show_steps or args.max_new_tokens is not None:
        raise ValueError("`--json-schema` works in diffusion mode, without --show-steps or --max-new-tokens")
    try:
        with open(args.json_schema, encoding="utf-8") as f:
            schema = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{args.json_schema}: not valid JSON ({err})") from None
    compile_schema(schema)  # unsupported keywords fail before the weights load
    return schema


def _print_outputs(out, as_json: bool) -> None:
    if as_json:
        results = [
            {"text": t, "token_ids": ids, "finish_reason": f.value, "stats": s.to_dict()}
            for t, ids, f, s in zip(out.texts, out.token_ids, out.finish_reasons, out.stats, strict=True)
        ]
        print(json.dumps(results[0] if len(results) == 1 else {"results": results}))
    else:
        for text in out.texts:
            print(text)


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import dgemma
    from dgemma.config.files import read_json
    from dgemma.train.data import ShuffledData, read_jsonl
    from dgemma.train.export import export
    from dgemma.train.trainer import train

    config = train_config(args)
    model = dgemma.load(args.model, dtype="float32", device=args.device)
    if model.codec is None:
        raise ValueError(f"{args.model} has no tokenizer.json; training data is text")
    eos = model.defaults.eos_token_ids
    if not eos:
        raise ValueError(f"{args.model} defines no end-of-sequence token")
    examples = read_jsonl(Path(args.data), model.codec, eos[0], model.config.max_position_embeddings)
    data = ShuffledData(examples, args.seed)
    out = Path(args.out)
    pad = model.config.pad_token_id or 0
    result = train_with_progress(
        lambda log: train(model.model, data, config, out, pad, on_log=log), config.steps, out
    )
    source = Path(args.model)
    config_json = read_json(source / "config.json")
    export(
        model.model, out / "model", model.sampler_defaults, config_json, source, model.defaults.max_new_tokens
    )
    print(f"step {result.step}: loss {result.metrics[-1]['loss']:.4f}; model in {out / 'model'}")
    return 0


def _length(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"`--length` must be a positive integer or 'auto', got {value!r}")
    return int(value)


def _print_fill(result, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "text": result.text,
                    "fill": result.fill,
                    "length": result.length,
                    "score": result.score,
                    "candidates": result.candidates,
                }
            )
        )
    else:
        print(result.text)


def _fill(args: argparse.Namespace, text_arg: str, call) -> int:
    """Shared by infill and edit: read stdin for '-', check flags before loading, print the result."""
    import dgemma

    text = sys.stdin.read() if text_arg == "-" else text_arg
    length = _length(args.length)
    overrides = sampler_overrides(args)
    SamplerConfig().replace(**overrides)  # fail on bad settings before loading weights
    model = dgemma.load(args.model)
    _print_fill(call(model, text, length, seed=args.seed, **overrides), args.json)
    return 0


def cmd_infill(args: argparse.Namespace) -> int:
    return _fill(args, args.prefix, lambda m, text, n, **kw: m.infill(text, args.suffix, n, **kw))


def cmd_edit(args: argparse.Namespace) -> int:
    return _fill(args, args.text, lambda m, text, n, **kw: m.edit(text, args.start, args.end, n, **kw))


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
    model = dgemma.load(path, dtype=args.dtype, device=args.device, compile=args.compile)
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
        model_name=args.served_model_name or name,
    )
    serve_forever(
        model, settings, lambda url: print(f"dgemma: serving {settings.model_name!r} at {url}", flush=True)
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dgemma import cli_bench

    return cli_bench.run(args)


def cmd_sudoku(args: argparse.Namespace) -> int:
    from dgemma import cli_sudoku

    return cli_sudoku.run(args)


COMMANDS = {
    "generate": cmd_generate,
    "infill": cmd_infill,
    "edit": cmd_edit,
    "train": cmd_train,
    "serve": cmd_serve,
    "bench": cmd_bench,
    "sudoku": cmd_sudoku,
}


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 500 else text[:497] + "..."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as err:
        print(f"dgemma: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as err:  # generation failed (e.g. non-finite logits from NaN weights)
        print(f"dgemma: error: generation failed: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
