"""Pieces every `dgemma` subcommand shares: the parser, flags derived from the config dataclasses,
the training flags, and training with a progress bar and a loss plot."""

from __future__ import annotations

import argparse
import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dgemma.config import SamplerConfig

if TYPE_CHECKING:  # the trainer imports torch; the parser must not
    from dgemma.train.trainer import TrainConfig, TrainResult

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (`dgemma ... --help` shows the usage)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


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


def add_load_flags(parser: argparse.ArgumentParser, adapter: bool = True) -> None:
    """--quantize int8|int4 and --group-size (weight-only quantization at load, docs/quantization.md),
    and --adapter (a PEFT-format LoRA adapter merged at load)."""
    if adapter:
        parser.add_argument("--adapter", default=None, help="a LoRA adapter directory in PEFT's format")
    parser.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        default=None,
        help="quantize the experts, attention and dense MLP weights as they load (default: full precision)",
    )
    parser.add_argument("--group-size", type=int, default=None, help="int4: inputs per scale (default 32)")
    parser.add_argument(
        "--quantize-components",
        default=None,
        help="comma-separated: experts, attention, mlp (the default: all three), vision (the vision tower)",
    )


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """dgemma.load's quantization arguments from the flags, checked before any weights load."""
    from dgemma.quant.scheme import QuantScheme

    if args.group_size is not None and args.quantize != "int4":
        raise ValueError("`--group-size` applies to --quantize int4")
    components = None
    if args.quantize_components is not None:
        components = tuple(c.strip() for c in args.quantize_components.split(",") if c.strip())
    try:
        QuantScheme.parse(args.quantize, args.group_size, components)
    except ValueError as err:
        raise ValueError(str(err).replace("`quantize_components`", "`--quantize-components`")) from None
    out = {"quantize": args.quantize, "group_size": args.group_size}
    if components is not None:
        out["quantize_components"] = components
    return out if getattr(args, "adapter", None) is None else {**out, "adapter": args.adapter}


def sampler_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SamplerConfig)
        if getattr(args, f.name) is not None
    }


def add_train_flags(
    parser: argparse.ArgumentParser, steps: int, batch_size: int, lr: float, warmup: int, ar_weight: float
) -> None:
    """The trainer's options; defaults differ between fine-tuning and training from scratch."""
    g = parser.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--warmup-steps", type=int, default=warmup)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--ar-weight", type=float, default=ar_weight, help="weight of the encoder's AR loss")
    g.add_argument("--self-conditioning-prob", type=float, default=0.5)
    g.add_argument("--freeze-router", action="store_true")
    g.add_argument("--lora-rank", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    g.add_argument("--lora-alpha", type=float, default=16.0)
    g.add_argument(
        "--lora-targets",
        default=None,
        help="comma-separated module names (default: attention and MLP projections)",
    )
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--device", default="cpu", help="where to train, e.g. cpu or cuda")
    g.add_argument("--checkpoint-every", type=int, default=50)
    g.add_argument(
        "--fsdp",
        action="store_true",
        help="with several processes, shard each layer's weights, gradients and optimizer state "
        "(FSDP2); checkpoints are then sharded (torch.distributed.checkpoint)",
    )


def train_config(args: argparse.Namespace, encoder_only: bool = False) -> TrainConfig:
    from dgemma.train.lora import DEFAULT_TARGETS
    from dgemma.train.objective import ObjectiveConfig
    from dgemma.train.trainer import TrainConfig

    targets = DEFAULT_TARGETS if args.lora_targets is None else args.lora_targets.split(",")
    return TrainConfig(
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
        lora_targets=tuple(t.strip() for t in targets if t.strip()),
        encoder_only=encoder_only,
        checkpoint_every=args.checkpoint_every,
        fsdp=getattr(args, "fsdp", False),
        log_every=1,
        objective=ObjectiveConfig(
            ar_weight=1.0 if encoder_only else args.ar_weight,
            self_conditioning_prob=args.self_conditioning_prob,
        ),
    )


@contextmanager
def progress_bar(total: int):
    """A rich progress bar fed by the trainer's per-step metrics: loss, tokens/s, ETA."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:.0f} tok/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns) as progress:
        task = progress.add_task("training", total=total, loss=float("nan"), tps=0.0)
        yield lambda m: progress.update(task, completed=m["step"], loss=m["loss"], tps=m["tokens_per_s"])


def train_with_progress(run, steps: int, out: Path) -> TrainResult:
    """Run `run(on_log)` under a progress bar, then plot its loss curve to out/loss.png."""
    with progress_bar(steps) as on_log:
        result = run(on_log)
    plot_losses(result.metrics, out / "loss.png")
    return result


def plot_losses(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [m["step"] for m in metrics]
    for key in ("loss", "diffusion_loss", "ar_loss"):
        if any(m[key] for m in metrics):
            ax.plot(steps, [m[key] for m in metrics], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
