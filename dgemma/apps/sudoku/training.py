"""Training the Sudoku model (or its AR baseline): the puzzle pool, the training examples, the run.

The pool is generated once per run directory, in parallel processes, and kept there; examples are
random symmetries of pool puzzles, drawn deterministically by index so a resumed run sees exactly the
data an uninterrupted one would. Half of them keep their givens clean in the canvas (never corrupted,
no loss), matching the solver's clamped givens; the other half see their givens only in the prompt.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from dgemma.api import Model, load
from dgemma.apps.sudoku.solver import DEFAULT_SAMPLER, evaluate
from dgemma.config import GenerationDefaults, ModelConfig
from dgemma.model.init import init_model
from dgemma.tasks import sudoku
from dgemma.tasks.sudoku.format import (
    CANVAS_LENGTH,
    CHAT_TEMPLATE,
    SudokuFormat,
    build_tokenizer,
    model_config,
)
from dgemma.text import SpecialTokens, TextCodec
from dgemma.train.batch import Example
from dgemma.train.export import export
from dgemma.train.trainer import TrainConfig, TrainResult, train


def build_pool(
    seed: int,
    size: int,
    givens: tuple[int, int] = (22, 50),
    cache: Path | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> list[sudoku.Puzzle]:
    """Training puzzles 0..size-1 of the seeded stream, generated in parallel processes; with `cache`
    they are read from (or written atomically to) that file, one `puzzle,solution` line each."""
    if cache is not None and cache.is_file():
        lines = cache.read_text().split()
        if len(lines) == size:
            return [sudoku.Puzzle(*line.split(",")) for line in lines]
    pool: list[sudoku.Puzzle] = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as ex:
        make = partial(sudoku.train_puzzle, seed, givens=givens)
        for p in ex.map(make, range(size), chunksize=64):
            pool.append(p)
            if progress:
                progress(len(pool))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text("".join(f"{p.puzzle},{p.solution}\n" for p in pool))
        os.replace(tmp, cache)
    return pool


class SudokuData:
    """Training examples by index: random symmetries of a pool of generated puzzles (each from its
    own randomly searched grid)."""

    def __init__(self, fmt: SudokuFormat, seed: int, pool: list[sudoku.Puzzle], clamped_share: float = 0.5):
        if not pool:
            raise ValueError("the training pool is empty")
        self.fmt, self.seed, self.clamped_share, self.pool = fmt, seed, clamped_share, pool

    def examples(self, index: int, count: int) -> list[Example]:
        rng = random.Random(f"dgemma-sudoku-batch-{self.seed}-{index}")
        out = []
        for _ in range(count):
            p = sudoku.transform(rng.choice(self.pool), rng)
            clean: tuple[int, ...] = ()
            if rng.random() < self.clamped_share:  # givens and <eos> clean in the canvas, as clamping does
                clean = (*(i for i, ch in enumerate(p.puzzle) if ch != "0"), sudoku.SIZE)
            out.append(Example(self.fmt.prompt(p.puzzle), self.fmt.response(p.solution), clean))
        return out


@dataclass(frozen=True)
class SudokuTrainSpec:
    out_dir: Path
    train: TrainConfig
    pool_size: int = 20000
    givens: tuple[int, int] = (22, 50)
    hidden_size: int = 128
    num_layers: int = 6
    num_experts: int = 8
    init_from: Path | None = None  # continue from an exported model instead of random weights
    device: str = "cpu"
    eval_every: int = 0  # steps between held-out evaluations (0: none); a multiple of checkpoint_every
    eval_n: int = 100

    def __post_init__(self) -> None:  # checked before the pool is generated (minutes of work)
        if self.eval_every < 0 or self.eval_every % self.train.checkpoint_every:
            raise ValueError("--eval-every must be a multiple of --checkpoint-every")


def training_pool(
    spec: SudokuTrainSpec, progress: Callable[[int], None] | None = None
) -> list[sudoku.Puzzle]:
    """The run's puzzle pool: generated once (in parallel) and kept in `out_dir/run/`."""
    lo, hi = spec.givens
    cache = spec.out_dir / "run" / f"pool-{spec.train.seed}-{spec.pool_size}-{lo}-{hi}.txt"
    return build_pool(spec.train.seed, spec.pool_size, spec.givens, cache=cache, progress=progress)


def train_sudoku(
    spec: SudokuTrainSpec, on_log: Callable[[dict], None] | None = None, stop_after: int | None = None
):
    """Train (resuming if `out_dir/run` has checkpoints) and export to `out_dir/model`. With
    `spec.eval_every`, every that many steps (at a checkpoint) the model solves `spec.eval_n`
    held-out puzzles and the result goes to `out_dir/run/eval.jsonl`."""
    fmt = SudokuFormat(build_tokenizer())
    config_json = model_config(spec.hidden_size, spec.num_layers, spec.num_experts)
    if spec.init_from is not None:
        model = load(spec.init_from, dtype="float32", device=spec.device).model
    else:
        model = init_model(ModelConfig.from_hf(config_json), seed=spec.train.seed, device=spec.device)
    data = SudokuData(fmt, spec.train.seed, training_pool(spec))
    on_checkpoint = _evaluator(spec, model, fmt) if spec.eval_every else None
    result: TrainResult = train(
        model,
        data,
        spec.train,
        spec.out_dir / "run",
        pad_id=0,
        on_log=on_log,
        stop_after=stop_after,
        on_checkpoint=on_checkpoint,
    )
    tok_dir = spec.out_dir / "run" / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    fmt.tokenizer.save(str(tok_dir / "tokenizer.json"))
    shutil.copy2(CHAT_TEMPLATE, tok_dir / "chat_template.jinja")
    export(model, spec.out_dir / "model", DEFAULT_SAMPLER, config_json, tok_dir, max_new_tokens=CANVAS_LENGTH)
    return result


def _evaluator(spec: SudokuTrainSpec, model, fmt: SudokuFormat) -> Callable[[int], None]:
    """A checkpoint hook: solve held-out puzzles with the training model, append to eval.jsonl."""
    puzzles = sudoku.heldout_puzzles(spec.eval_n)
    path = spec.out_dir / "run" / "eval.jsonl"
    eos = fmt.ids["<eos>"]
    wrapped = Model(
        model,
        TextCodec(fmt.tokenizer, None, SpecialTokens()),
        DEFAULT_SAMPLER,
        GenerationDefaults(CANVAS_LENGTH, (eos,), 0),
    )

    def hook(step: int) -> None:
        if step % spec.eval_every:
            return
        model.eval()
        with torch.inference_mode():
            report = evaluate(wrapped, puzzles)
        keep = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        keep = [r for r in keep if r["step"] < step]  # a resumed run rewrites what came after its checkpoint
        keep.append(
            {
                "step": step,
                **{k: report[k] for k in ("solve_rate", "blank_cell_accuracy", "mean_steps", "by_givens")},
            }
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, path)

    return hook
