"""`dgemma generate`, `dgemma infill`, `dgemma edit`: text from a checkpoint, printed or as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from dgemma.cli.common import add_load_flags, add_sampler_flags, load_kwargs, sampler_overrides
from dgemma.config import SamplerConfig


def add_parsers(sub) -> None:
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
    gen.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image shown before the prompt's text (repeat for several; each prompt gets them all)",
    )
    gen.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0, help="random seed (prompt i uses seed + i)")
    gen.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature, 0 (greedy) to 2: AR draws at T, diffusion runs its schedule T -> T/2 "
        "(default: the checkpoint's schedule; greedy AR)",
    )
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
    gen.add_argument(
        "--tools",
        default=None,
        metavar="FILE",
        help="JSON list of OpenAI-style function tools; with --tool-choice, prints one call per prompt",
    )
    gen.add_argument(
        "--tool-choice",
        default="required",
        help="'required' (the model picks a tool; prints one call per prompt), a function name, or "
        "'auto' (the model answers or calls tools in its own syntax; prints {text, tool_calls} per "
        "prompt) (default: required)",
    )
    gen.add_argument(
        "--json-object",
        action="store_true",
        help="print each answer as a JSON object (as written, repaired, or wrapped: docs/structured.md)",
    )
    gen.add_argument(
        "--think",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the chat template's thinking switch: --think lets the model reason first (the reasoning "
        "is printed dimmed on stderr), --no-think turns it off (default: the template's own)",
    )
    gen.add_argument(
        "--hide-reasoning", action="store_true", help="print the answer only, not the reasoning before it"
    )
    add_sampler_flags(gen)
    add_load_flags(gen)

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


def cmd_generate(args: argparse.Namespace) -> int:
    import dgemma
    from dgemma.generation.prompts import sampler_for

    prompts = [sys.stdin.read() if p == "-" else p for p in args.prompts]
    if args.image:
        prompts = _with_images(prompts, args)
    sampler_for(SamplerConfig(), args.temperature, sampler_overrides(args))  # fail before loading weights
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer, got {args.max_new_tokens}")
    schema = _read_schema(args) if args.json_schema else None
    tools = _read_json_file(args.tools, "--tools") if args.tools else None
    if tools is not None and (
        schema is not None or args.json_object or args.show_steps or args.mode != "diffusion"
    ):
        raise ValueError(
            "`--tools` works in diffusion mode, without --json-schema, --json-object and --show-steps"
        )
    if args.json_object and (schema is not None or args.show_steps):
        raise ValueError("`--json-object` works without --json-schema and --show-steps")
    if args.think is not None and args.raw:
        raise ValueError("`--think` / `--no-think` switch the chat template, which --raw leaves out")
    quant = load_kwargs(args)
    model = dgemma.load(args.model, dtype=args.dtype, device=args.device, compile=args.compile, **quant)
    thinking = {} if args.think is None else {"enable_thinking": args.think}
    if thinking and model.reasoning is None:
        raise ValueError("`--think`: this checkpoint's chat template has no thinking switch")
    if tools is not None:
        choice = args.tool_choice
        if choice not in ("required", "auto"):
            choice = {"type": "function", "function": {"name": choice}}
        out = model.generate(
            prompts,
            tools=tools,
            tool_choice=choice,
            chat_template_kwargs=thinking or None,
            seed=args.seed,
            raw=args.raw,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            **sampler_overrides(args),
        )
        calls = [
            [{"name": c.name, "arguments": json.loads(c.arguments)} for c in cs] for cs in out.tool_calls
        ]
        if choice == "auto":
            rows = [{"text": t, "tool_calls": cs} for t, cs in zip(out.texts, calls, strict=True)]
        else:
            rows = [cs[0] for cs in calls]
        for row in rows if not args.json else [rows[0] if len(rows) == 1 else {"results": rows}]:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if schema is not None:
        out = model.generate(
            prompts,
            json_schema=schema,
            chat_template_kwargs=thinking or None,
            seed=args.seed,
            raw=args.raw,
            max_new_tokens=args.max_new_tokens,  # a cap: the schema's layout must fit
            temperature=args.temperature,
            **sampler_overrides(args),
        )
        _print_outputs(out, args.json)
        return 0
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        raw=args.raw,
        temperature=args.temperature,
        chat_template_kwargs=thinking or None,
        **sampler_overrides(args),
    )
    if args.show_steps and model.codec is not None:
        from rich.console import Console

        from dgemma.cli.live import show_live

        requests = model.requests(prompts, **kwargs)
        events = model.stream(prompts, mode=args.mode, drafts=True, **kwargs)
        done = show_live(events, model.codec, len(prompts), Console(stderr=args.json))
        out = model.finish(done.completions, None if args.raw else [r.prompt for r in requests])
    else:
        out = model.generate(prompts, mode=args.mode, json_object=args.json_object, **kwargs)
    if args.json or not args.show_steps:
        _print_outputs(out, args.json, args.hide_reasoning)
    return 0


def _with_images(prompts: list[str], args: argparse.Namespace) -> list[list[dict]]:
    """Each prompt as one user turn: the images (read and checked now, before the weights load), then its text."""
    from dgemma.images.load import open_image

    if args.raw:
        raise ValueError("`--image` goes through the chat template, which --raw leaves out")
    images = [open_image(path, f"--image {path}") for path in args.image]
    parts = [{"type": "image", "image": image} for image in images]
    return [[{"role": "user", "content": [*parts, {"type": "text", "text": p}]}] for p in prompts]


def _read_json_file(path: str, flag: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise ValueError(f"{flag} {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} {path}: not valid JSON ({err})") from None


def _read_schema(args: argparse.Namespace):
    from dgemma.structured.schema import compile_schema

    if args.mode != "diffusion" or args.show_steps:
        raise ValueError("`--json-schema` works in diffusion mode, without --show-steps")
    try:
        with open(args.json_schema, encoding="utf-8") as f:
            schema = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{args.json_schema}: not valid JSON ({err})") from None
    compile_schema(schema)  # unsupported keywords fail before the weights load
    return schema


def _print_outputs(out, as_json: bool, hide_reasoning: bool = False) -> None:
    """Each answer on stdout (JSON: with its ids and stats); reasoning, unless hidden, dimmed on
    stderr ahead of its answer (JSON: a `reasoning` field)."""
    reasoning = out.reasoning or [None] * len(out.texts)
    if as_json:
        results = [
            {"text": t, "token_ids": ids, "finish_reason": f.value, "stats": s.to_dict()}
            for t, ids, f, s in zip(out.texts, out.token_ids, out.finish_reasons, out.stats, strict=True)
        ]
        for result, thought in zip(results, reasoning, strict=True):
            if thought is not None and not hide_reasoning:
                result["reasoning"] = thought
        print(json.dumps(results[0] if len(results) == 1 else {"results": results}))
        return
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    for text, thought in zip(out.texts, reasoning, strict=True):
        if thought and not hide_reasoning:
            sys.stdout.flush()
            err.print(thought, style="dim", markup=False)
        print(text, flush=True)


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
