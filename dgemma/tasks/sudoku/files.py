"""Puzzle files: one puzzle a line, 81 characters with '0' or '.' for blanks, optionally followed by
a solution (separated by whitespace or a comma). Blank lines and lines starting with '#' are skipped.
A file's puzzles may have several solutions: checkers accept any valid completion."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dgemma.tasks.sudoku.grid import SIZE, is_valid_solution, parse, to_text

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class FilePuzzle:
    puzzle: str  # 81 characters, '0' for blanks
    solution: str | None  # the file's solution, checked against the puzzle, if it gave one
    line: int

    @property
    def num_givens(self) -> int:
        return sum(ch != "0" for ch in self.puzzle)


def read_puzzles(path: Path) -> list[FilePuzzle]:
    """The puzzles of a file; ValueError naming `file:line` for anything malformed."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB")
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8", errors="strict").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f for f in re.split(r"[\s,;]+", text) if f]
        if len(fields) > 2 or len(fields[0]) != SIZE:
            raise ValueError(
                f"{path}:{n}: expected 81 puzzle characters, optionally a solution after a space or comma"
            )
        try:
            puzzle = to_text(parse(fields[0]))
            solution = to_text(parse(fields[1])) if len(fields) == 2 else None
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
        if solution is not None and not is_valid_solution(puzzle, solution):
            raise ValueError(f"{path}:{n}: the solution given does not solve the puzzle")
        out.append(FilePuzzle(puzzle, solution, n))
    if not out:
        raise ValueError(f"{path}: no puzzles")
    return out
