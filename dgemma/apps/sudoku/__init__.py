"""The Sudoku app on the Model API: solving and evaluation (`solver`), training (`training`), the
live grid view (`view`). Puzzles, the checker and the model's format live in `dgemma.tasks.sudoku`."""

from dgemma.apps.sudoku.solver import (
    BUCKETS,
    BUNDLED,
    DEFAULT_SAMPLER,
    MAX_VERIFY_RETRIES,
    SolveOptions,
    SolveResult,
    SolverMode,
    bundled_model,
    evaluate,
    solve,
    solver_requests,
)
from dgemma.apps.sudoku.training import SudokuTrainSpec, train_sudoku, training_pool

__all__ = [
    "BUCKETS",
    "BUNDLED",
    "DEFAULT_SAMPLER",
    "MAX_VERIFY_RETRIES",
    "SolveOptions",
    "SolveResult",
    "SolverMode",
    "SudokuTrainSpec",
    "bundled_model",
    "evaluate",
    "solve",
    "solver_requests",
    "train_sudoku",
    "training_pool",
]
