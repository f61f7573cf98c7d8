"""The `dgemma` command: one entry point, a subcommand per job.

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from dgemma.config import SamplerConfig

EXIT_USAGE = 2


def add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per SamplerConfig field, spelled with underscores (as in the API) or dashes."""
    group = parser.add_argument_group("diffusion sampler (defaults from generation_config.json)")
    for f in dataclasses.fields(SamplerConfig):
        flags = [f"--{f.name}"]
        if "_" in f.name:
            flags.append(f"--{f.name.replace('_', '-')}")
        group.add_argument(
            *flags, dest=f.name, type=type(f.default), default=None, help=f.metadata.get("help")
        )


def sampler_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SamplerConfig)
        if getattr(args, f.name) is not None
    }


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (`dgemma ... --help` shows the usage)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dgemma", description="DiffusionGemma: block-diffusion text generation")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    tr.add_argument("--steps", type=int, default=100)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--grad-accum", type=int, default=1)
    tr.add_argument("--lr", type=float, default=1e-4)
    tr.add_argument("--warmup-steps", type=int, default=10)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--ar-weight", type=float, default=1.0, help="weight of the encoder's AR loss")
    tr.add_argument("--self-conditioning-prob", type=float, default=0.5)
    tr.add_argument("--freeze-router", action="store_true")
    tr.add_argument("--lora-rank", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    tr.add_argument("--lora-alpha", type=float, default=16.0)
    tr.add_argument(
        "--lora-targets",
        default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        help="comma-separated module names that get adapters",
    )
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    tr.add_argument("--device", default="cpu", help="where to train, e.g. cpu or cuda")
    tr.add_argument("--checkpoint-every", type=int, default=50)

    from dgemma import cli_sudoku

    cli_sudoku.add_parser(sub, _Parser)
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    import dgemma

    prompts = [sys.stdin.read() if p == "-" else p for p in args.prompts]
    SamplerConfig().replace(**sampler_overrides(args))  # fail on bad settings before loading weights
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer, got {args.max_new_tokens}")
    model = dgemma.load(args.model, dtype=args.dtype, device=args.device, compile=args.compile)
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
    if args.json:
        results = [
            {"text": t, "token_ids": ids, "finish_reason": f.value, "stats": s.to_dict()}
            for t, ids, f, s in zip(out.texts, out.token_ids, out.finish_reasons, out.stats, strict=True)
        ]
        print(json.dumps(results[0] if len(results) == 1 else {"results": results}))
    elif not args.show_steps:
        for text in out.texts:
            print(text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import dgemma
    from dgemma.cli_sudoku import train_with_progress
    from dgemma.model.loader import read_json
    from dgemma.train.data import ShuffledData, read_jsonl
    from dgemma.train.export import export
    from dgemma.train.objective import ObjectiveConfig
    from dgemma.train.trainer import TrainConfig

    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        autocast_bf16=args.bf16,
        freeze_router=args.freeze_router,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
        checkpoint_every=args.checkpoint_every,
        log_every=1,
        objective=ObjectiveConfig(
            ar_weight=args.ar_weight, self_conditioning_prob=args.self_conditioning_prob
        ),
    )
    model = dgemma.load(args.model, dtype="float32", device=args.device)
    if model.codec is None:
        raise ValueError(f"{args.model} has no tokenizer.json; training data is text")
    eos = model.defaults.eos_token_ids
    if not eos:
        raise ValueError(f"{args.model} defines no end-of-sequence token")
    data = read_jsonl(Path(args.data), model.codec, eos[0], model.config.max_position_embeddings)
    out = Path(args.out)
    result = train_with_progress(
        model.model, ShuffledData(data, args.seed), config, out, model.config.pad_token_id or 0
    )
    source = Path(args.model)
    export(
        model.model,
        out / "model",
        model.sampler_defaults,
        read_json(source / "config.json"),
        source,
        model.defaults.max_new_tokens,
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


def cmd_infill(args: argparse.Namespace) -> int:
    import dgemma

    prefix = sys.stdin.read() if args.prefix == "-" else args.prefix
    length = _length(args.length)
    SamplerConfig().replace(**sampler_overrides(args))
    model = dgemma.load(args.model)
    _print_fill(
        model.infill(prefix, args.suffix, length, seed=args.seed, **sampler_overrides(args)), args.json
    )
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    import dgemma

    text = sys.stdin.read() if args.text == "-" else args.text
    length = _length(args.length)
    SamplerConfig().replace(**sampler_overrides(args))
    model = dgemma.load(args.model)
    _print_fill(
        model.edit(text, args.start, args.end, length, seed=args.seed, **sampler_overrides(args)), args.json
    )
    return 0


def cmd_sudoku(args: argparse.Namespace) -> int:
    from dgemma import cli_sudoku

    return cli_sudoku.run(args)


COMMANDS = {
    "generate": cmd_generate,
    "infill": cmd_infill,
    "edit": cmd_edit,
    "train": cmd_train,
    "sudoku": cmd_sudoku,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as err:
        print(f"dgemma: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
