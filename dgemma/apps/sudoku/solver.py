"""Solving Sudoku with the model: solver modes, engine requests, evaluation, the bundled model.

Modes are reported separately, never mixed in one number: the headline (givens clamped in the
canvas, the diffusion sampler, no rule-based help), `candidates`, `verify_retries`, and AR decoding.
Evaluation reports the solve rate overall, by givens bucket and by difficulty label, with mean
denoising steps, attempts and puzzles per second; any valid completion that keeps every given counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from dgemma.api import Model
from dgemma.config import SamplerConfig
from dgemma.generation.run import complete
from dgemma.tasks import sudoku
from dgemma.tasks.sudoku.format import CANVAS_LENGTH, SudokuFormat

# the reference defaults: in a sweep on held-out puzzles they beat shorter, colder schedules
DEFAULT_SAMPLER = SamplerConfig()


BUNDLED = Path(__file__).resolve().parents[2] / "assets" / "sudoku"


def bundled_model() -> Path:
    """The Sudoku model shipped inside the package."""
    if not (BUNDLED / "config.json").is_file():
        raise FileNotFoundError(f"the bundled Sudoku model is missing from {BUNDLED}; pass --model DIR")
    return BUNDLED


class SolverMode(StrEnum):
    DIFFUSION = "diffusion"
    AR = "ar"


@dataclass(frozen=True)
class SolveOptions:
    """How the model solves. The default is the headline mode: the givens clamped in the canvas and
    the diffusion sampler, with no rule-based help. `candidates` restricts each blank to the digits
    its row, column and box of GIVENS leave open (computed once: no propagation, no search);
    `verify_retries` checks each grid and reruns a wrong one with a new seed up to that many times."""

    mode: SolverMode = SolverMode.DIFFUSION
    clamp_givens: bool = True
    candidates: bool = False
    verify_retries: int = 0

    def __post_init__(self) -> None:
        if self.mode is SolverMode.AR and (self.candidates or self.verify_retries):
            raise ValueError("--candidates and --verify-retries need diffusion mode")
        if self.candidates and not self.clamp_givens:
            raise ValueError("--candidates needs the givens clamped (drop --no-clamp-givens)")
        if not 0 <= self.verify_retries <= MAX_VERIFY_RETRIES:
            raise ValueError(f"--verify-retries must be between 0 and {MAX_VERIFY_RETRIES}")


MAX_VERIFY_RETRIES = 32
RETRY_SEED_STRIDE = 1_000_003


@dataclass
class SolveResult:
    grids: list[str]  # what the model wrote (may be invalid: check with sudoku.is_valid_solution)
    steps: list[int]  # denoising steps (AR: decoder passes), summed over attempts
    attempts: list[int]  # model runs per puzzle (1 without verify retries)
    seconds: float
    puzzles: list[str] = field(default_factory=list)

    @property
    def valid(self) -> list[bool]:
        return [sudoku.is_valid_solution(p, g) for p, g in zip(self.puzzles, self.grids, strict=True)]


def solver_requests(
    model: Model,
    puzzles: list[str],
    seed: int | list[int] = 0,
    options: SolveOptions = SolveOptions(),
    **sampler: Any,
):
    """Engine requests for puzzles. With `clamp_givens` the givens are also clamped canvas positions
    (as is the final <eos>), and the blanks may only become digits 1-9 (with `candidates`, only
    the digits the givens leave open in that cell's row, column and box)."""
    fmt = SudokuFormat(model.codec.tokenizer)
    prompts = [fmt.prompt(p) for p in puzzles]
    requests = model.requests(prompts, max_new_tokens=CANVAS_LENGTH, seed=seed, **sampler)
    if not options.clamp_givens:
        return requests
    digits = tuple(fmt.ids[d] for d in "123456789")
    out = []
    for req, puzzle in zip(requests, puzzles, strict=True):
        cells = sudoku.parse(puzzle)
        fixed = {i: fmt.ids[str(v)] for i, v in enumerate(cells) if v}
        fixed[sudoku.SIZE] = fmt.ids["<eos>"]
        if options.candidates:
            cand = sudoku.candidates(cells)
            allowed = {i: tuple(fmt.ids[str(d)] for d in cand[i]) for i, v in enumerate(cells) if not v}
        else:
            allowed = {i: digits for i, v in enumerate(cells) if not v}
        out.append(replace(req, fixed=fixed, allowed=allowed))
    return out


def solve(
    model: Model,
    puzzles: list[str],
    options: SolveOptions = SolveOptions(),
    seed: int = 0,
    batch_size: int = 16,
    **sampler: Any,
) -> SolveResult:
    """Model outputs for puzzles. Puzzle `i` uses seed `seed + i` (so its output does not depend on
    its batch-mates); retry `k` uses `seed + i + k * RETRY_SEED_STRIDE`."""
    n = len(puzzles)
    grids, steps, attempts = [""] * n, [0] * n, [0] * n
    start = time.perf_counter()
    todo = list(range(n))
    for attempt in range(options.verify_retries + 1):
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo : lo + batch_size]
            seeds = [seed + i + attempt * RETRY_SEED_STRIDE for i in chunk]
            out_grids, out_steps = _run_seeded(model, [puzzles[i] for i in chunk], seeds, options, sampler)
            for i, g, k in zip(chunk, out_grids, out_steps, strict=True):
                grids[i], steps[i], attempts[i] = g, steps[i] + k, attempts[i] + 1
        todo = [i for i in todo if not sudoku.is_valid_solution(puzzles[i], grids[i])]
        if not todo:
            break
    return SolveResult(grids, steps, attempts, time.perf_counter() - start, puzzles=list(puzzles))


def _run_seeded(model: Model, puzzles: list[str], seeds: list[int], options: SolveOptions, sampler: dict):
    """One model run over puzzles with one seed each: (grids, steps per puzzle)."""
    fmt = SudokuFormat(model.codec.tokenizer)
    if options.mode is SolverMode.AR:
        out = model.generate(
            [fmt.prompt(p) for p in puzzles], mode="ar", max_new_tokens=CANVAS_LENGTH, seed=seeds
        )
        return [fmt.grid(ids) for ids in out.token_ids], [s.forward_passes for s in out.stats]
    requests = solver_requests(model, puzzles, seed=seeds, options=options, **sampler)
    completions = complete(model.model, requests)
    return [fmt.grid(c.token_ids) for c in completions], [sum(c.stats.steps_per_canvas) for c in completions]


BUCKETS = ((17, 21), (22, 26), (27, 30), (31, 35), (36, 45), (46, 81))


def evaluate(
    model: Model, puzzles: list, options: SolveOptions = SolveOptions(), **kwargs: Any
) -> dict[str, Any]:
    """Solve rate overall, by givens bucket and by difficulty label, with mean denoising steps,
    attempts and puzzles/s. `puzzles` are `Puzzle`s or `FilePuzzle`s (anything with `.puzzle`);
    any valid completion counts as solved."""
    texts = [p.puzzle for p in puzzles]
    result = solve(model, texts, options=options, **kwargs)
    solved = result.valid
    givens = [sum(ch != "0" for ch in t) for t in texts]
    labels = [sudoku.difficulty(sudoku.parse(t)).value for t in texts]

    def rate(mask: list[bool]) -> dict[str, Any]:
        hits = [s for s, m in zip(solved, mask, strict=True) if m]
        return {"n": len(hits), "solve_rate": sum(hits) / len(hits)}

    by_givens = {}
    for lo, hi in BUCKETS:
        mask = [lo <= g <= hi for g in givens]
        if any(mask):
            by_givens[f"{lo}-{hi}" if hi < 81 else f"{lo}+"] = rate(mask)
    by_difficulty = {
        d.value: rate([lab == d.value for lab in labels]) for d in sudoku.Difficulty if d.value in labels
    }
    known = [getattr(p, "solution", None) for p in puzzles]
    cells = [
        i < len(g) and g[i] == sol[i]
        for t, g, sol in zip(texts, result.grids, known, strict=True)
        if sol
        for i, ch in enumerate(t)
        if ch == "0"
    ]
    return {
        "mode": options.mode.value,
        "clamp_givens": options.clamp_givens,
        "candidates": options.candidates,
        "verify_retries": options.verify_retries,
        "n": len(puzzles),
        "solve_rate": sum(solved) / len(puzzles),
        "by_givens": by_givens,
        "by_difficulty": by_difficulty,
        # blank cells equal to the known unique solution (puzzles whose solution is known)
        "blank_cell_accuracy": sum(cells) / len(cells) if cells else None,
        "mean_steps": sum(result.steps) / len(puzzles),
        "mean_attempts": sum(result.attempts) / len(puzzles),
        "puzzles_per_s": len(puzzles) / result.seconds,
    }
