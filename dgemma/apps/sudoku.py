"""Sudoku workflows: train the small DiffusionGemma (or its AR baseline), evaluate it, solve puzzles.

Evaluation reports what the issue asks: solve rate overall and by number of givens, mean
denoising steps, puzzles per second. A puzzle counts as solved when the output is a valid grid
that keeps every given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dgemma.api import Model, load
from dgemma.config import ModelConfig, SamplerConfig
from dgemma.engine.diffusion import run_diffusion
from dgemma.engine.events import DoneEvent
from dgemma.model.init import init_model
from dgemma.tasks import sudoku
from dgemma.tasks.sudoku_data import CANVAS_LENGTH, SudokuData, SudokuFormat, build_tokenizer, model_config
from dgemma.train.export import export
from dgemma.train.trainer import TrainConfig, TrainResult, train

BUCKETS = ((22, 26), (27, 30), (31, 35), (36, 81))
# the reference defaults: in a sweep on held-out puzzles they beat shorter, colder schedules
DEFAULT_SAMPLER = SamplerConfig()


@dataclass(frozen=True)
class SudokuTrainSpec:
    out_dir: Path
    train: TrainConfig
    pool_size: int = 2000
    givens: tuple[int, int] = (22, 50)
    hidden_size: int = 128
    num_layers: int = 6
    num_experts: int = 8
    init_from: Path | None = None  # continue from an exported model instead of random weights
    device: str = "cpu"


def train_sudoku(
    spec: SudokuTrainSpec, on_log: Callable[[dict], None] | None = None, stop_after: int | None = None
):
    """Train (resuming if `out_dir/run` has checkpoints) and export to `out_dir/model`."""
    fmt = SudokuFormat(build_tokenizer())
    config_json = model_config(spec.hidden_size, spec.num_layers, spec.num_experts)
    if spec.init_from is not None:
        model = load(spec.init_from, dtype="float32", device=spec.device).model
    else:
        model = init_model(ModelConfig.from_hf(config_json), seed=spec.train.seed, device=spec.device)
    data = SudokuData(fmt, spec.train.seed, spec.pool_size, spec.givens)
    result: TrainResult = train(
        model, data, spec.train, spec.out_dir / "run", pad_id=0, on_log=on_log, stop_after=stop_after
    )
    tok_dir = spec.out_dir / "run" / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    fmt.tokenizer.save(str(tok_dir / "tokenizer.json"))
    export(model, spec.out_dir / "model", DEFAULT_SAMPLER, config_json, tok_dir, max_new_tokens=CANVAS_LENGTH)
    return result


BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "sudoku"


def bundled_model() -> Path:
    """The Sudoku model shipped inside the package."""
    if not (BUNDLED / "config.json").is_file():
        raise FileNotFoundError(f"the bundled Sudoku model is missing from {BUNDLED}; pass --model DIR")
    return BUNDLED


def solver_requests(
    model: Model, puzzles: list[str], seed: int = 0, clamp_givens: bool = False, **sampler: Any
):
    """Engine requests for puzzles. With `clamp_givens` the givens are also clamped canvas positions
    (as is the final <eos>), and the blanks may only become digits 1-9."""
    fmt = SudokuFormat(model.codec.tokenizer)
    prompts = [fmt.prompt(p) for p in puzzles]
    requests = model.requests(prompts, max_new_tokens=CANVAS_LENGTH, seed=seed, **sampler)
    if not clamp_givens:
        return requests
    digits = tuple(fmt.ids[d] for d in "123456789")
    out = []
    for req, puzzle in zip(requests, puzzles, strict=True):
        cells = sudoku.parse(puzzle)
        fixed = {i: fmt.ids[str(v)] for i, v in enumerate(cells) if v}
        fixed[sudoku.SIZE] = fmt.ids["<eos>"]
        allowed = {i: digits for i, v in enumerate(cells) if not v}
        out.append(replace(req, fixed=fixed, allowed=allowed))
    return out


def solve(
    model: Model,
    puzzles: list[str],
    mode: str = "diffusion",
    seed: int = 0,
    batch_size: int = 16,
    clamp_givens: bool = False,
    **sampler: Any,
):
    """Model outputs for puzzles: (grids, steps per puzzle, seconds)."""
    fmt = SudokuFormat(model.codec.tokenizer)
    grids, steps = [], []
    start = time.perf_counter()
    for i in range(0, len(puzzles), batch_size):
        chunk = puzzles[i : i + batch_size]
        if mode == "ar":
            prompts = [fmt.prompt(p) for p in chunk]
            out = model.generate(prompts, mode="ar", max_new_tokens=CANVAS_LENGTH, seed=seed + i)
            completions = list(zip(out.token_ids, out.stats, strict=True))
        else:
            requests = solver_requests(model, chunk, seed=seed + i, clamp_givens=clamp_givens, **sampler)
            done = next(e for e in run_diffusion(model.model, requests) if isinstance(e, DoneEvent))
            completions = [(c.token_ids, c.stats) for c in done.completions]
        grids += [fmt.grid(ids) for ids, _ in completions]
        steps += [
            sum(s.steps_per_canvas) if s.steps_per_canvas else s.decoder_forwards for _, s in completions
        ]
    return grids, steps, time.perf_counter() - start


def evaluate(
    model: Model, puzzles: list[sudoku.Puzzle], mode: str = "diffusion", **kwargs: Any
) -> dict[str, Any]:
    grids, steps, seconds = solve(model, [p.puzzle for p in puzzles], mode=mode, **kwargs)
    solved = [sudoku.is_valid_solution(p.puzzle, g) for p, g in zip(puzzles, grids, strict=True)]
    by_givens = {}
    for lo, hi in BUCKETS:
        hits = [s for p, s in zip(puzzles, solved, strict=True) if lo <= p.num_givens <= hi]
        if hits:
            by_givens[f"{lo}-{hi}"] = {"n": len(hits), "solve_rate": sum(hits) / len(hits)}
    return {
        "mode": mode,
        "n": len(puzzles),
        "solve_rate": sum(solved) / len(puzzles),
        "by_givens": by_givens,
        "mean_steps": sum(steps) / len(steps),
        "puzzles_per_s": len(puzzles) / seconds,
    }
