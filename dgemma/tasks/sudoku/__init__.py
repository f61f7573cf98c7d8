"""Sudoku in one place: grids and the checker (`grid`), random puzzles (`generate`), puzzle files
(`files`), the model's token format and chat template (`format`), puzzle checks before any model work. Used by training data, the solver app, demos and benchmarks alike."""

from dgemma.tasks.sudoku.generate import (
    MAX_GIVENS,
    Puzzle,
    heldout_puzzles,
    make_puzzle,
    random_solution,
    train_puzzle,
    transform,
)
from dgemma.tasks.sudoku.grid import (
    MIN_GIVENS,
    SIZE,
    Difficulty,
    any_solution,
    candidates,
    cell_name,
    check_puzzle,
    conflicting_cells,
    count_solutions,
    difficulty,
    is_valid_solution,
    parse,
    solve,
    solve_by_singles,
    to_text,
)

__all__ = [
    "MAX_GIVENS",
    "MIN_GIVENS",
    "SIZE",
    "Difficulty",
    "Puzzle",
    "any_solution",
    "candidates",
    "cell_name",
    "check_puzzle",
    "conflicting_cells",
    "count_solutions",
    "difficulty",
    "heldout_puzzles",
    "is_valid_solution",
    "make_puzzle",
    "parse",
    "random_solution",
    "solve",
    "solve_by_singles",
    "to_text",
    "train_puzzle",
    "transform",
]
