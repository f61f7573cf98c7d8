"""`dgemma inspect` (parameters and memory of a checkpoint, or a published shape, as it would load) and
`dgemma quantize` (a checkpoint written quantized)."""

from __future__ import annotations

import argparse
import json

from dgemma.cli.common import add_load_flags, load_kwargs


def add_parser(sub) -> None:
    ins = sub.add_parser("inspect", help="parameter counts, weight bytes as loaded, KV-cache bytes per token")
    source = ins.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint directory (its config.json; no weights are read)")
    source.add_argument("--config", help="a published shape instead: diffusiongemma-26b-a4b")
    ins.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    ins.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_load_flags(ins, adapter=False)


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from dgemma.config.presets import preset
    from dgemma.model.loader import read_model_config
    from dgemma.quant.accounting import memory_report
    from dgemma.quant.scheme import QuantScheme

    quant = load_kwargs(args)
    scheme = QuantScheme.parse(quant["quantize"], quant["group_size"], quant.get("quantize_components"))
    if args.model is not None:
        from pathlib import Path

        from dgemma.model.loader import has_vision, weight_files
        from dgemma.quant.gguf_file import gguf_file

        path = Path(args.model)
        gguf = gguf_file(path) if path.exists() else None
        config = read_model_config(path.parent if gguf is not None and path.is_file() else path)
        vision = gguf is None and has_vision(weight_files(path))
    else:
        config, vision, gguf = preset(args.config), True, None  # the published checkpoints ship the tower
    if gguf is not None:
        if scheme is not None:
            raise ValueError(f"--quantize: {gguf} holds GGUF quantized weights already")
        from dgemma.quant.accounting import gguf_report

        report = gguf_report(gguf, config, getattr(torch, args.dtype))
    else:
        report = memory_report(config, scheme, getattr(torch, args.dtype), vision)
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{args.model or args.config}: {report['scheme']}, float weights in {report['dtype']}"
    )
    for column in ("component", "parameters", "bytes as loaded"):
        table.add_column(column, justify="left" if column == "component" else "right")
    for name, row in report["components"].items():
        table.add_row(name, f"{row['params']:,}", _size(row["bytes"]))
    table.add_row("total", f"{report['total_params']:,}", _size(report["weight_bytes"]), style="bold")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"active parameters per token: {report['active_params']:,}")
    console.print(f"KV cache: {_size(report['kv_bytes_per_token'])} per token ({report['dtype']})")
    return 0


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def add_quantize_parser(sub) -> None:
    qz = sub.add_parser("quantize", help="write a checkpoint with int8 / int4 weights that dgemma.load reads")
    qz.add_argument("--model", required=True, help="the full-precision checkpoint directory")
    qz.add_argument("--out", required=True, help="where to write the quantized checkpoint")
    qz.add_argument("--scheme", choices=["int8", "int4"], required=True)
    qz.add_argument("--group-size", type=int, default=None, help="int4: inputs per scale (default 32)")
    qz.add_argument(
        "--quantize-components",
        default=None,
        help="comma-separated: experts, attention, mlp (default), vision",
    )


def cmd_quantize(args: argparse.Namespace) -> int:
    from dgemma.quant.save import quantize_checkpoint
    from dgemma.quant.scheme import QuantScheme

    args.quantize = args.scheme
    quant = load_kwargs(args)
    scheme = QuantScheme.parse(quant["quantize"], quant["group_size"], quant.get("quantize_components"))
    out = quantize_checkpoint(args.model, args.out, scheme)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print(f"wrote {out} ({size / 2**20:.1f} MiB of weights, {args.scheme})")
    return 0
