"""Sudoku grids: the 81-character text format, the checker, a solution counter, and difficulty analysis.

A grid is 81 cells in row-major order; 0 is a blank. Nothing here is random: generation lives in
`generate.py`, the language-model format in `format.py`.
"""

from __future__ import annotations

import time
from enum import StrEnum

SIZE = 81
MIN_GIVENS = 17  # no proper Sudoku has fewer
ALL_DIGITS = 0x3FE  # bits 1..9
ROW = tuple(i // 9 for i in range(SIZE))
COL = tuple(i % 9 for i in range(SIZE))
BOX = tuple((i // 27) * 3 + (i % 9) // 3 for i in range(SIZE))
# the 27 houses (rows, columns, boxes) as cell-index tuples, and each cell's 20 peers
HOUSES = tuple(tuple(i for i in range(SIZE) if key[i] == h) for key in (ROW, COL, BOX) for h in range(9))
PEERS = tuple(
    tuple(j for j in range(SIZE) if j != i and (ROW[j] == ROW[i] or COL[j] == COL[i] or BOX[j] == BOX[i]))
    for i in range(SIZE)
)


class Difficulty(StrEnum):
    """What a puzzle needs: naked and hidden singles alone, or more (pairs, chains, search)."""

    SINGLES = "singles"
    HARDER = "harder"


def parse(text: str) -> list[int]:
    """81 characters, digits with '0' or '.' for blanks (whitespace ignored) -> cells; ValueError otherwise."""
    chars = [ch for ch in text if not ch.isspace()]
    if len(chars) != SIZE:
        raise ValueError(f"a puzzle needs {SIZE} cells, got {len(chars)}")
    cells = []
    for i, ch in enumerate(chars):
        if ch in "0.":
            cells.append(0)
        elif ch in "123456789":
            cells.append(int(ch))
        else:
            raise ValueError(f"cell {i + 1} is {ch!r}; use digits 1-9, and 0 or . for blanks")
    return cells


def to_text(cells: list[int]) -> str:
    return "".join(str(c) for c in cells)


def used_masks(cells: list[int]) -> tuple[list[int], list[int], list[int]] | None:
    """Used-digit bitmasks per row, column and box; None if the givens already conflict."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(cells):
        if v:
            bit = 1 << v
            if (rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & bit:
                return None
            rows[ROW[i]] |= bit
            cols[COL[i]] |= bit
            boxes[BOX[i]] |= bit
    return rows, cols, boxes


def conflicting_cells(cells: list[int]) -> list[int]:
    """Filled cells that share a digit with a peer (sorted cell indices)."""
    return [i for i, v in enumerate(cells) if v and any(cells[j] == v for j in PEERS[i])]


def candidates(cells: list[int]) -> list[tuple[int, ...]]:
    """Per cell, the digits its row, column and box leave open (a filled cell: its own digit)."""
    out = []
    for i, v in enumerate(cells):
        if v:
            out.append((v,))
        else:
            used = {cells[j] for j in PEERS[i]}
            out.append(tuple(d for d in range(1, 10) if d not in used))
    return out


def most_constrained(
    grid: list[int], cells: list[int] | range, rows: list[int], cols: list[int], boxes: list[int]
) -> tuple[int, int]:
    """The blank cell among `cells` with the fewest open digits, and its open-digit bitmask; (-1, 0)
    when none is blank. A cell with at most one option ends the scan early."""
    best, best_free, best_count = -1, 0, 10
    for i in cells:
        if grid[i] == 0:
            free = ALL_DIGITS & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]])
            n = free.bit_count()
            if n < best_count:
                best, best_free, best_count = i, free, n
                if n <= 1:
                    break
    return best, best_free


class SearchTimeout(Exception):
    """The solution count did not finish within its time budget."""


def count_solutions(cells: list[int], limit: int = 2, timeout_s: float | None = None) -> int:
    """Number of completions of the grid, counting no further than `limit`."""
    return _search(cells, limit, timeout_s)[0]


def _search(cells: list[int], limit: int, timeout_s: float | None = None) -> tuple[int, list[int] | None]:
    """Depth-first search, most constrained cell first: (completions up to `limit`, the first one).
    Raises SearchTimeout past `timeout_s` seconds."""
    masks = used_masks(cells)
    if masks is None:
        return 0, None
    rows, cols, boxes = masks
    grid = list(cells)
    empty = [i for i, v in enumerate(grid) if v == 0]
    found = 0
    first: list[int] | None = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    nodes = 0

    def search() -> bool:  # True: stop, the limit is reached
        nonlocal found, first, nodes
        nodes += 1
        if deadline is not None and nodes % 256 == 0 and time.monotonic() > deadline:
            raise SearchTimeout
        best, best_free = most_constrained(grid, empty, rows, cols, boxes)
        if best < 0:
            found += 1
            first = first or list(grid)
            return found >= limit
        r, c, b = ROW[best], COL[best], BOX[best]
        free = best_free
        while free:
            bit = free & -free
            free ^= bit
            grid[best] = bit.bit_length() - 1
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            stop = search()
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            grid[best] = 0
            if stop:
                return True
        return False

    search()
    return found, first


def solve(cells: list[int]) -> list[int] | None:
    """The unique completion, or None if there is none or more than one."""
    count, first = _search(cells, limit=2)
    return first if count == 1 else None


def any_solution(cells: list[int], timeout_s: float | None = None) -> list[int] | None:
    """One completion (the puzzle may have several), None when there is none."""
    return _search(cells, limit=1, timeout_s=timeout_s)[1]


def is_valid_solution(puzzle: str | list[int], candidate: str | list[int]) -> bool:
    """True when `candidate` is a complete valid grid that keeps every given of `puzzle`."""
    try:
        givens = parse(puzzle) if isinstance(puzzle, str) else list(puzzle)
        grid = parse(candidate) if isinstance(candidate, str) else list(candidate)
    except ValueError:
        return False
    if len(grid) != SIZE or 0 in grid or any(g and g != v for g, v in zip(givens, grid, strict=True)):
        return False
    return used_masks(grid) is not None


def solve_by_singles(cells: list[int]) -> list[int]:
    """Fill naked singles (a cell with one candidate) and hidden singles (a digit with one place in a
    house) until neither applies; returns the grid reached (blanks left where singles stop)."""
    grid = list(cells)
    progress = True
    while progress:
        progress = False
        cand = candidates(grid)
        for i in range(SIZE):
            if not grid[i] and len(cand[i]) == 1:
                grid[i] = cand[i][0]
                progress = True
        if progress:
            continue
        for house in HOUSES:
            for d in range(1, 10):
                places = [i for i in house if not grid[i] and d in cand[i]]
                if len(places) == 1 and d not in (grid[i] for i in house):
                    grid[places[0]] = d
                    progress = True
                    break
            if progress:
                break
    return grid


def difficulty(cells: list[int]) -> Difficulty:
    """SINGLES when naked and hidden singles alone complete the grid, HARDER otherwise."""
    grid = solve_by_singles(cells)
    return Difficulty.SINGLES if 0 not in grid and used_masks(grid) is not None else Difficulty.HARDER


def cell_name(i: int) -> str:
    return f"r{ROW[i] + 1}c{COL[i] + 1}"


def check_puzzle(cells: list[int], timeout_s: float = 2.0) -> None:
    """Refuse what no solver should be asked: fewer than 17 givens, givens that conflict, and (as far
    as a search finishes within `timeout_s`) a puzzle with no solution. ValueError saying which."""
    givens = sum(1 for v in cells if v)
    if givens < MIN_GIVENS:
        raise ValueError(f"has {givens} givens; a proper Sudoku has at least {MIN_GIVENS}")
    conflicts = conflicting_cells(cells)
    if conflicts:
        i = conflicts[0]
        j = next(j for j in PEERS[i] if cells[j] == cells[i])
        raise ValueError(f"givens conflict: {cell_name(i)} and {cell_name(j)} both hold {cells[i]}")
    try:
        if any_solution(cells, timeout_s=timeout_s) is None:
            raise ValueError("has no solution")
    except SearchTimeout:  # not proven unsolvable in time: let the model try
        pass
