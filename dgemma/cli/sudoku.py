"""`dgemma sudoku ...`: train, evaluate and use the Sudoku model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dgemma.cli.common import (
    add_load_flags,
    add_sampler_flags,
    add_train_flags,
    load_kwargs,
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
        "--pool-size", type=int, default=20000, help="generated puzzles; examples are their symmetries"
    )
    tr.add_argument("--hidden-size", type=int, default=128)
    tr.add_argument("--layers", type=int, default=6)
    tr.add_argument("--experts", type=int, default=8)
    tr.add_argument("--ar-baseline", action="store_true", help="train the encoder alone with the AR loss")
    tr.add_argument("--init-from", type=Path, default=None, help="start from an exported model directory")
    tr.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="N",
        help="every N steps, solve --eval-n held-out puzzles (run/eval.jsonl, eval.png)",
    )
    tr.add_argument("--eval-n", type=int, default=100)
    tr.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="end this call after N steps (0: export the latest checkpoint only); rerun to resume",
    )

    ev = cmds.add_parser("eval", help="solve rate on held-out puzzles or a puzzle file, by givens bucket")
    ev.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    ev.add_argument(
        "--file", type=Path, default=None, help="puzzle file (81 characters a line, optional solution)"
    )
    ev.add_argument(
        "--n", type=int, default=None, help="held-out puzzles (default 100), or the first N of --file"
    )
    ev.add_argument(
        "--givens", default=None, help="only puzzles with LO-HI givens (held-out default: 22-35; file: all)"
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    _add_solver_flags(ev)

    de = cmds.add_parser("demo", help="watch held-out puzzles being solved, then the solve rate")
    de.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    de.add_argument("--n", type=int, default=4, help="puzzles to watch")
    de.add_argument("--eval-n", type=int, default=50, help="puzzles for the solve rate")
    de.add_argument("--seed", type=int, default=0)
    add_load_flags(de)

    so = cmds.add_parser(
        "solve",
        help="solve puzzles given as 81 characters (0 or . for blanks); a wrong answer is marked 'unsolved'",
    )
    so.add_argument("puzzles", nargs="*")
    so.add_argument("--file", type=Path, help="a puzzle file (81 characters a line, optional solution)")
    so.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    so.add_argument("--seed", type=int, default=0, help="puzzle i uses seed + i")
    so.add_argument("--json", action="store_true", help="print grids, validity, steps and attempts as JSON")
    _add_solver_flags(so)


def _add_solver_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("solver (modes are reported separately, never mixed)")
    g.add_argument("--mode", choices=["diffusion", "ar"], default="diffusion")
    g.add_argument(
        "--clamp-givens",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="givens as clamped canvas positions (default; --no-clamp-givens: in the prompt only)",
    )
    g.add_argument(
        "--candidates",
        action="store_true",
        help="each blank may only become a digit its row, column and box of givens leave open",
    )
    g.add_argument(
        "--verify-retries",
        type=int,
        default=0,
        metavar="N",
        help="rerun a wrong grid with a new seed, up to N times",
    )
    add_sampler_flags(parser)
    add_load_flags(parser)


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "solve": _solve, "demo": _demo}[args.sudoku_command](args)


def _model_dir(path: Path | None) -> Path:
    from dgemma.apps.sudoku import bundled_model

    return path if path is not None else bundled_model()


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    import dgemma
    from dgemma.apps.sudoku import evaluate, solver_requests
    from dgemma.apps.sudoku.view import watch
    from dgemma.generation import run
    from dgemma.tasks import sudoku
    from dgemma.tasks.sudoku.format import SudokuFormat

    if not 1 <= args.n <= 16 or not 1 <= args.eval_n <= MAX_EVAL_PUZZLES:
        raise ValueError(f"--n must be between 1 and 16, --eval-n between 1 and {MAX_EVAL_PUZZLES}")
    model = dgemma.load(_model_dir(args.model), **load_kwargs(args))
    console = Console()
    shown = sudoku.heldout_puzzles(args.n, seed=args.seed + 1)
    events = run.stream(model.model, solver_requests(model, [p.puzzle for p in shown], seed=args.seed))
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
    from dgemma.apps.sudoku import SudokuTrainSpec, train_sudoku, training_pool

    spec = SudokuTrainSpec(
        out_dir=args.out,
        train=train_config(args, encoder_only=args.ar_baseline),
        pool_size=args.pool_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_experts=args.experts,
        init_from=args.init_from,
        device=args.device,
        eval_every=args.eval_every,
        eval_n=args.eval_n,
    )
    if args.eval_every < 0 or not 1 <= args.eval_n <= MAX_EVAL_PUZZLES:
        raise ValueError(f"--eval-every must be >= 0 and --eval-n between 1 and {MAX_EVAL_PUZZLES}")
    from rich.progress import Progress

    with Progress() as bar:  # the pool is generated once per run directory, then read back
        task = bar.add_task("puzzle pool", total=args.pool_size)
        training_pool(spec, progress=lambda n: bar.update(task, completed=n))
    if args.stop_after is not None and args.stop_after < 0:
        raise ValueError("--stop-after must be >= 0")
    result = train_with_progress(
        lambda on_log: train_sudoku(spec, on_log=on_log, stop_after=args.stop_after), args.steps, args.out
    )
    evals = args.out / "run" / "eval.jsonl"
    if evals.is_file():
        _plot_evals([json.loads(line) for line in evals.read_text().splitlines()], args.out / "eval.png")
    print(f"step {result.step}: loss {result.metrics[-1]['loss']:.4f}; model in {args.out / 'model'}")
    return 0


def _options(args: argparse.Namespace):
    from dgemma.apps.sudoku import SolveOptions, SolverMode

    mode = SolverMode(args.mode)
    options = SolveOptions(
        mode=mode,
        clamp_givens=args.clamp_givens and mode is SolverMode.DIFFUSION,
        candidates=args.candidates,
        verify_retries=args.verify_retries,
    )
    overrides = sampler_overrides(args)
    if overrides and mode is SolverMode.AR:
        raise ValueError("sampler settings need --mode diffusion")
    SamplerConfig().replace(**overrides)  # bad settings fail before the weights load
    return options, overrides


def _checked(puzzles: list[tuple[str, str]]) -> list[str]:
    """Puzzles as 81 '0'-blank characters, each refused (naming where it came from) when malformed,
    contradictory, under 17 givens or provably unsolvable, all before any model work."""
    from dgemma.tasks import sudoku

    out = []
    for where, text in puzzles:
        try:
            cells = sudoku.parse(text)
            sudoku.check_puzzle(cells)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        out.append(sudoku.to_text(cells))
    return out


def _file_puzzles(path: Path) -> list[tuple[str, str]]:
    from dgemma.tasks.sudoku.files import read_puzzles

    return [(f"{path}:{p.line}", p.puzzle) for p in read_puzzles(path)]


def _eval(args: argparse.Namespace) -> int:
    import dgemma
    from dgemma.apps.sudoku import evaluate
    from dgemma.tasks import sudoku
    from dgemma.tasks.sudoku.files import FilePuzzle

    options, overrides = _options(args)
    if args.n is not None and not 1 <= args.n <= MAX_EVAL_PUZZLES:
        raise ValueError(f"--n must be between 1 and {MAX_EVAL_PUZZLES}")
    lo, hi = _givens_range(args.givens)
    if args.file is not None:
        given = [(w, p) for w, p in _file_puzzles(args.file) if lo <= sum(ch not in "0." for ch in p) <= hi]
        checked = _checked(given[: args.n] if args.n else given)
        if not checked:
            raise ValueError(f"{args.file}: no puzzle with {lo}-{hi} givens")
        puzzles = [FilePuzzle(p, None, i + 1) for i, p in enumerate(checked)]
        source = str(args.file) if args.givens is None else f"{args.file}, {lo}-{hi} givens"
    else:
        lo, hi = (22, 35) if args.givens is None else (lo, hi)
        puzzles = sudoku.heldout_puzzles(args.n or 100, givens=(lo, hi), seed=args.seed)
        source = f"held-out puzzles, {lo}-{hi} givens"
    model = dgemma.load(_model_dir(args.model), **load_kwargs(args))
    report = {"source": source, **evaluate(model, puzzles, options=options, seed=args.seed, **overrides)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def _givens_range(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 81
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"--givens must look like 22-35, got {text!r}") from None
    if not 0 <= lo <= hi <= 81:
        raise ValueError(f"--givens must be a range within 0-81, got {text!r}")
    return lo, hi


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['source']}: {report['n']} puzzles", title_justify="left")
    for col in ("givens / label", "puzzles", "solved"):
        table.add_column(col, justify="right")
    for bucket, row in {**report["by_givens"], **report["by_difficulty"]}.items():
        table.add_row(bucket, str(row["n"]), f"{row['solve_rate']:.1%}")
    table.add_row("all", str(report["n"]), f"{report['solve_rate']:.1%}", style="bold")
    console = Console()
    console.print(table)
    console.print(
        f"mode {report['mode']}, givens clamped: {report['clamp_givens']}, candidates: {report['candidates']}, "
        f"verify retries: {report['verify_retries']}; mean {report['mean_steps']:.1f} denoising steps, "
        f"{report['mean_attempts']:.2f} attempts, {report['puzzles_per_s']:.1f} puzzles/s"
    )


MAX_EVAL_PUZZLES = 100_000
UNSOLVED = "unsolved"  # marks a line whose grid is NOT a valid solution


def _solve(args: argparse.Namespace) -> int:
    import sys

    import dgemma
    from dgemma.apps.sudoku import solve

    options, overrides = _options(args)
    given = [(f"puzzle {i + 1}", p) for i, p in enumerate(args.puzzles)]
    if args.file:
        given += _file_puzzles(args.file)
    if not given:
        raise ValueError("give puzzles as arguments or with --file")
    cells = _checked(given)
    model = dgemma.load(_model_dir(args.model), **load_kwargs(args))
    result = solve(model, cells, options=options, seed=args.seed, **overrides)
    valid = result.valid
    if args.json:
        rows = [
            {"puzzle": p, "solution": g, "valid": v, "steps": s, "attempts": a}
            for p, g, v, s, a in zip(cells, result.grids, valid, result.steps, result.attempts, strict=True)
        ]
        print(json.dumps({"results": rows, "seconds": result.seconds}))
    else:
        for g, v in zip(result.grids, valid, strict=True):
            print(g if v else f"{UNSOLVED} {_shown(g)}")
    solved = sum(valid)
    print(f"dgemma: solved {solved} of {len(cells)} puzzles", file=sys.stderr)
    return 0 if solved == len(cells) else 1


def _shown(grid: str) -> str:
    """A wrong grid as 81 characters, '.' where the model wrote no digit."""
    cells = [ch if ch in "123456789" else "." for ch in grid[:81]]
    return "".join(cells) + "." * (81 - len(cells))


def _plot_evals(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["solve_rate"] for r in rows], "o-", label="held-out puzzles solved")
    ax.plot(steps, [r["blank_cell_accuracy"] for r in rows], "s-", label="blank cells right")
    ax.axhline(1 / 9, color="gray", ls=":", label="chance per cell")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
