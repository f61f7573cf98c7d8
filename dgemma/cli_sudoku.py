"""`dgemma sudoku ...`: train, evaluate and use the Sudoku model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dgemma.cli_common import (
    add_sampler_flags,
    add_train_flags,
    sampler_overrides,
    train_config,
    train_with_progress,
)
from dgemma.config import SamplerConfig


def add_parser(sub, parser_class) -> None:
    sdk = sub.add_parser("sudoku", help="the Sudoku model: train, eval, solve")
    cmds = sdk.add_subparsers(dest="sudoku_command", required=True, parser_class=parser_class)

    tr = cmds.add_parser(
        "train", help="train the small DiffusionGemma (or --ar-baseline) on generated puzzles"
    )
    tr.add_argument("--out", type=Path, required=True, help="run directory (resumes if it holds checkpoints)")
    add_train_flags(tr, steps=2000, batch_size=32, lr=2e-3, warmup=100, ar_weight=0.0)
    tr.add_argument(
        "--pool-size", type=int, default=2000, help="generated puzzles; examples are their symmetries"
    )
    tr.add_argument("--hidden-size", type=int, default=128)
    tr.add_argument("--layers", type=int, default=6)
    tr.add_argument("--experts", type=int, default=8)
    tr.add_argument("--ar-baseline", action="store_true", help="train the encoder alone with the AR loss")
    tr.add_argument("--init-from", type=Path, default=None, help="start from an exported model directory")

    ev = cmds.add_parser("eval", help="solve rate on held-out puzzles")
    ev.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    ev.add_argument("--n", type=int, default=100)
    ev.add_argument("--mode", choices=["diffusion", "ar"], default="diffusion")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--clamp-givens", action="store_true", help="givens also as clamped canvas positions")
    add_sampler_flags(ev)

    de = cmds.add_parser("demo", help="watch held-out puzzles being solved, then the solve rate")
    de.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    de.add_argument("--n", type=int, default=4, help="puzzles to watch")
    de.add_argument("--eval-n", type=int, default=50, help="puzzles for the solve rate")
    de.add_argument("--seed", type=int, default=0)

    so = cmds.add_parser("solve", help="solve puzzles given as 81 characters (0 or . for blanks)")
    so.add_argument("puzzles", nargs="*")
    so.add_argument("--file", type=Path, help="a file with one puzzle per line")
    so.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    so.add_argument("--json", action="store_true", help="print solutions with steps and timing as JSON")
    so.add_argument("--clamp-givens", action="store_true", help="givens also as clamped canvas positions")
    add_sampler_flags(so)


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "solve": _solve, "demo": _demo}[args.sudoku_command](args)


def _model_dir(path: Path | None) -> Path:
    from dgemma.apps.sudoku import bundled_model

    return path if path is not None else bundled_model()


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    import dgemma
    from dgemma.apps.sudoku import evaluate, solver_requests
    from dgemma.apps.sudoku_view import watch
    from dgemma.engine.diffusion import run_diffusion
    from dgemma.tasks import sudoku
    from dgemma.tasks.sudoku_data import SudokuFormat

    model = dgemma.load(_model_dir(args.model))
    console = Console()
    shown = sudoku.heldout_puzzles(args.n, seed=args.seed + 1)
    events = run_diffusion(
        model.model, solver_requests(model, [p.puzzle for p in shown], seed=args.seed), emit_drafts=True
    )
    watch(events, [p.puzzle for p in shown], SudokuFormat(model.codec.tokenizer), console)
    report = evaluate(model, sudoku.heldout_puzzles(args.eval_n), seed=args.seed)
    buckets = ", ".join(
        f"{k} givens {v['solve_rate']:.0%} of {v['n']}" for k, v in report["by_givens"].items()
    )
    console.print(
        f"solved {report['solve_rate']:.1%} of {report['n']} held-out puzzles ({buckets}); "
        f"mean {report['mean_steps']:.1f} denoising steps; {report['puzzles_per_s']:.1f} puzzles/s"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from dgemma.apps.sudoku import SudokuTrainSpec, train_sudoku

    spec = SudokuTrainSpec(
        out_dir=args.out,
        train=train_config(args, encoder_only=args.ar_baseline),
        pool_size=args.pool_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_experts=args.experts,
        init_from=args.init_from,
        device=args.device,
    )
    result = train_with_progress(lambda on_log: train_sudoku(spec, on_log=on_log), args.steps, args.out)
    print(f"step {result.step}: loss {result.metrics[-1]['loss']:.4f}; model in {args.out / 'model'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import dgemma
    from dgemma.apps.sudoku import evaluate
    from dgemma.tasks import sudoku

    if args.clamp_givens and args.mode == "ar":
        raise ValueError("--clamp-givens needs diffusion mode")
    overrides = sampler_overrides(args)
    if overrides and args.mode == "ar":
        raise ValueError("sampler settings need diffusion mode")
    SamplerConfig().replace(**overrides)  # bad settings fail before the weights load
    model = dgemma.load(_model_dir(args.model))
    report = evaluate(
        model,
        sudoku.heldout_puzzles(args.n),
        mode=args.mode,
        seed=args.seed,
        clamp_givens=args.clamp_givens,
        **overrides,
    )
    print(json.dumps(report, indent=2))
    return 0


def _solve(args: argparse.Namespace) -> int:
    import dgemma
    from dgemma.apps.sudoku import solve
    from dgemma.tasks import sudoku

    puzzles = list(args.puzzles)
    if args.file:
        puzzles += [line.strip() for line in args.file.read_text().splitlines() if line.strip()]
    if not puzzles:
        raise ValueError("give puzzles as arguments or with --file")
    cells = [sudoku.to_text(sudoku.parse(p)) for p in puzzles]  # validates every puzzle first
    model = dgemma.load(_model_dir(args.model))
    grids, steps, seconds = solve(model, cells, clamp_givens=args.clamp_givens, **sampler_overrides(args))
    if args.json:
        rows = [
            {"puzzle": p, "solution": g, "valid": sudoku.is_valid_solution(p, g), "steps": s}
            for p, g, s in zip(cells, grids, steps, strict=True)
        ]
        print(json.dumps({"results": rows, "seconds": seconds}))
    else:
        for g in grids:
            print(g)
    return 0 if all(len(g) == sudoku.SIZE for g in grids) else 1
