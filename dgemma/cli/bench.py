"""`dgemma bench`: a suite on one or more targets, side by side; report.md, report.json and plots."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="measure diffusion against autoregressive decoding on a task suite")
    b.add_argument("--suite", required=True, help="sudoku, json, infill, mixed, or a JSONL file of tasks")
    b.add_argument(
        "--target",
        action="append",
        required=True,
        help="local, local:ar, local@DIR, local:ar@DIR, hf, hf@DIR, or openai:http://HOST:PORT/v1#MODEL (repeatable)",
    )
    b.add_argument(
        "--model", type=Path, default=None, help="checkpoint for local/hf targets (default: bundled)"
    )
    b.add_argument("--out", type=Path, required=True, help="run directory (a rerun resumes it)")
    b.add_argument(
        "--limit", type=int, default=None, help="first N tasks (sudoku: N held-out puzzles, default 100)"
    )
    b.add_argument("--max-retries", type=int, default=0, help="new-seed retries of a task not accepted")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--sweep", default=None, help="a sampler setting and values, e.g. max_denoising_steps=8,16,32,48"
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dgemma.apps.sudoku import bundled_model
    from dgemma.config import SamplerConfig
    from dgemma.harness.report import write_report
    from dgemma.harness.runner import RunSpec, open_run, parse_sweep, run_suite, total_work
    from dgemma.harness.suites import load_suite
    from dgemma.harness.targets import make_target

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"`--limit` must be a positive integer, got {args.limit}")
    if args.max_retries < 0:
        raise ValueError(f"`--max-retries` must be >= 0, got {args.max_retries}")
    sweep = parse_sweep(args.sweep)
    if sweep is not None:
        SamplerConfig().replace(**{sweep[0]: sweep[1][0]})  # an unknown setting fails before loading
    if len(set(args.target)) != len(args.target):
        raise ValueError("each --target may be given once")
    model = args.model or bundled_model()
    tasks = load_suite(args.suite, args.limit, args.seed)
    spec = RunSpec(args.suite, tuple(args.target), str(model), args.limit, args.max_retries, args.seed, sweep)
    console = Console(stderr=True)
    targets = {}
    for t in args.target:
        console.print(f"loading target {t}")
        targets[t] = make_target(t, model)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("tasks", total=total_work(spec, tasks))
        accepted = [0, 0]

        def on_record(record: dict) -> None:
            accepted[0] += record["accepted"]
            accepted[1] += 1
            progress.update(
                bar,
                advance=1,
                description=f"{record['target']} accepted {accepted[0]}/{accepted[1]}",
            )

        progress.update(bar, completed=len(open_run(args.out, spec)))
        records = run_suite(spec, tasks, targets, args.out, on_record)
    machine = f"{platform.machine()}, {_cores()} cores, {platform.system()}, torch {_torch_version()}"
    report = write_report(args.out, spec.to_dict(), records, machine)
    for label, s in report["targets"].items():
        latency = s["latency_median_s"]
        console.print(
            f"{label}: accepted {s['acceptance_rate']:.1%} of {s['tasks']}, "
            f"latency p50 {'-' if latency is None else f'{latency:.3f}'} s"
        )
    print(f"report: {args.out / 'report.md'}")
    return 0


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def _torch_version() -> str:
    import torch

    return torch.__version__
