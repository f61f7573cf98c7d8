"""Sudoku solve rates by solver mode and puzzle source, in one run: a markdown table and a JSON record.

    .venv/bin/python bench/sudoku_modes.py [--model DIR] [--ar-model DIR] [--n 300] [--out bench/out/sudoku]

Sources: the project's held-out puzzles (22-35 givens) and the third-party files in bench/data/
(the first N puzzles with 22-35 givens of each). Modes, each its own row, never mixed: the default
(givens clamped, diffusion sampler), --candidates, --verify-retries 3, and the AR-trained baseline
(--ar-model, decoded next-token). Every figure comes from `dgemma.apps.sudoku.evaluate`, the code
behind `dgemma sudoku eval`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgemma  # noqa: E402
from dgemma.apps.sudoku import SolveOptions, SolverMode, bundled_model, evaluate  # noqa: E402
from dgemma.tasks import sudoku  # noqa: E402
from dgemma.tasks.sudoku.files import read_puzzles  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
BUCKETS = ("22-26", "27-30", "31-35")


def sources(n: int) -> dict[str, list]:
    out = {"held-out (dgemma generator)": sudoku.heldout_puzzles(n)}
    for name in ("dokusan", "py_sudoku"):
        puzzles = [p for p in read_puzzles(DATA / f"sudoku_{name}.txt") if 22 <= p.num_givens <= 35]
        out[f"{name.replace('_', '-')} (PyPI)"] = puzzles[:n]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="diffusion model (default: the bundled one)")
    ap.add_argument("--ar-model", type=Path, default=None, help="the AR-trained baseline")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("bench/out/sudoku"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = dgemma.load(args.model or bundled_model())
    runs = [
        ("default", model, SolveOptions()),
        ("--candidates", model, SolveOptions(candidates=True)),
        ("--verify-retries 3", model, SolveOptions(verify_retries=3)),
    ]
    if args.ar_model is not None:
        runs.append(
            ("AR baseline", dgemma.load(args.ar_model), SolveOptions(mode=SolverMode.AR, clamp_givens=False))
        )
    rows = []
    for source, puzzles in sources(args.n).items():
        for mode, m, options in runs:
            report = evaluate(m, puzzles, options=options, seed=0)
            rows.append({**report, "source": source, "mode": mode})
            print(f"{source:30s} {mode:20s} {report['solve_rate']:.1%}", file=sys.stderr, flush=True)
    record = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "n": args.n, "rows": rows}
    (args.out / "sudoku_modes.json").write_text(json.dumps(record, indent=2))
    columns = ["source", "mode", "solved", *BUCKETS, "singles", "harder", "steps", "attempts", "puzzles/s"]
    print("| " + " | ".join(columns) + " |")
    print("| --- " * len(columns) + "|")
    for r in rows:
        buckets = [
            f"{r['by_givens'][b]['solve_rate']:.1%} ({r['by_givens'][b]['n']})"
            if b in r["by_givens"]
            else "-"
            for b in BUCKETS
        ]
        labels = [
            f"{r['by_difficulty'][d]['solve_rate']:.1%} ({r['by_difficulty'][d]['n']})"
            if d in r["by_difficulty"]
            else "-"
            for d in ("singles", "harder")
        ]
        print(
            f"| {r['source']} | {r['mode']} | **{r['solve_rate']:.1%}** of {r['n']} | {' | '.join(buckets)} | "
            f"{' | '.join(labels)} | {r['mean_steps']:.1f} | {r['mean_attempts']:.2f} | {r['puzzles_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
