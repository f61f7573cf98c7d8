"""Write Sudoku puzzle files from generators nobody on the project wrote, for `dgemma sudoku eval --file`.

- dokusan (PyPI `dokusan`): unique-solution puzzles, difficulty by its `avg_rank`;
- py-sudoku (PyPI `py-sudoku`): random removal from a solved grid; puzzles may have several
  solutions (any valid completion counts).

Both are dev dependencies. The files written are committed under `bench/data/` so every run and
CI evaluates the same puzzles; this script regenerates them bit for bit:

    python bench/sudoku_third_party_puzzles.py --out bench/data
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from rich.progress import track


def dokusan_puzzles(n: int) -> list[str]:
    from dokusan import generators  # draws from the global `random`, seeded per puzzle below

    out = []
    for i in track(range(n), description="dokusan"):
        random.seed(f"dokusan-{i}")
        rank = random.choice((20, 40, 80, 150, 300))
        out.append(str(generators.random_sudoku(avg_rank=rank)))
    return out


def py_sudoku_puzzles(n: int) -> list[str]:
    from sudoku import Sudoku

    out = []
    for i in track(range(n), description="py-sudoku"):
        rng = random.Random(f"py-sudoku-{i}")
        p = Sudoku(3, seed=i).difficulty(rng.uniform(0.45, 0.73))
        out.append("".join(str(v or 0) for row in p.board for v in row))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/data"))
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make, source in (
        ("dokusan", dokusan_puzzles, "dokusan 0.1.0 (PyPI), random_sudoku(avg_rank in 20..300)"),
        ("py_sudoku", py_sudoku_puzzles, "py-sudoku 2.0.0 (PyPI), Sudoku(3, seed=i).difficulty(0.45..0.73)"),
    ):
        puzzles = make(args.n)
        header = f"# {len(puzzles)} puzzles from {source}; written by bench/sudoku_third_party_puzzles.py\n"
        (args.out / f"sudoku_{name}.txt").write_text(header + "".join(p + "\n" for p in puzzles))
        print(f"{args.out / f'sudoku_{name}.txt'}: {len(puzzles)} puzzles")


if __name__ == "__main__":
    main()
