"""The Sudoku task: grids from a real search, unique puzzles at the asked difficulty, a checker that
rejects, difficulty labels, disjoint data streams."""

from __future__ import annotations

import random

import pytest

from dgemma.tasks import sudoku
from dgemma.tasks.sudoku import generate, grid


def _old_pattern_solution(rng: random.Random) -> list[int]:
    """The generator of the first Sudoku model: one pattern grid under shuffles (kept here as the
    counterexample the new generator must not resemble)."""
    digits = rng.sample(range(1, 10), 9)
    rows = [b * 3 + r for b in rng.sample(range(3), 3) for r in rng.sample(range(3), 3)]
    cols = [s * 3 + c for s in rng.sample(range(3), 3) for c in rng.sample(range(3), 3)]
    return [digits[(3 * (r % 3) + r // 3 + c) % 9] for r in rows for c in cols]


def _mini_line_sets(cells: list[int]) -> int:
    """Distinct digit sets among the 3-cell pieces of rows inside boxes, summed over bands, plus the
    same for columns over stacks. Invariant under every Sudoku symmetry (relabelling, row/column
    permutations within bands/stacks, band/stack permutations, transposition); a grid made from
    the one pattern has the minimum, 3 per band and stack (18)."""
    total = 0
    for transpose in (False, True):
        for band in range(3):
            pieces = set()
            for r in range(band * 3, band * 3 + 3):
                for stack in range(3):
                    idx = [(c * 9 + r) if transpose else (r * 9 + c) for c in range(stack * 3, stack * 3 + 3)]
                    pieces.add(frozenset(cells[i] for i in idx))
            total += len(pieces)
    return total


def test_solutions_cover_more_than_one_grid_class():
    rng = random.Random(0)
    new = [sudoku.random_solution(rng) for _ in range(300)]
    old = [_old_pattern_solution(rng) for _ in range(300)]
    assert all(sudoku.is_valid_solution("0" * 81, sudoku.to_text(g)) for g in new)
    assert {_mini_line_sets(g) for g in old} == {18}  # the old generator: one class
    new_invariants = [_mini_line_sets(g) for g in new]
    assert sum(v == 18 for v in new_invariants) <= 3  # essentially never the pattern class
    assert len(set(new_invariants)) >= 3  # and several different classes
    assert len({sudoku.to_text(g) for g in new}) == 300


def test_puzzles_have_unique_solutions_and_asked_givens():
    rng = random.Random(1)
    for givens in (22, 27, 35, 50, 60):
        p = sudoku.make_puzzle(rng, givens)
        cells = sudoku.parse(p.puzzle)
        assert p.num_givens == givens
        assert sudoku.count_solutions(cells) == 1
        assert sudoku.to_text(sudoku.solve(cells)) == p.solution
        assert sudoku.is_valid_solution(p.puzzle, p.solution)
    with pytest.raises(ValueError, match="num_givens"):
        sudoku.make_puzzle(rng, 61)


def test_difficulty_labels():
    puzzles = sudoku.heldout_puzzles(40)
    labels = {p.difficulty for p in puzzles}
    assert labels == {sudoku.Difficulty.SINGLES, sudoku.Difficulty.HARDER}
    for p in puzzles:
        reached = sudoku.solve_by_singles(sudoku.parse(p.puzzle))
        # singles never place a wrong digit in a unique puzzle
        assert all(v == 0 or str(v) == s for v, s in zip(reached, p.solution, strict=True))
        assert (0 not in reached) == (p.difficulty is sudoku.Difficulty.SINGLES)
    # a well-known puzzle that needs more than singles ("AI Escargot" by Arto Inkala)
    escargot = "100007090030020008009600500005300900010080002600004000300000010040000007007000300"
    assert sudoku.difficulty(sudoku.parse(escargot)) is sudoku.Difficulty.HARDER
    assert sudoku.count_solutions(sudoku.parse(escargot)) == 1


def test_heldout_is_fixed_and_disjoint_from_training():
    a = sudoku.heldout_puzzles(15)
    assert a == sudoku.heldout_puzzles(15)
    assert all(22 <= p.num_givens <= 35 for p in a)
    train = {sudoku.train_puzzle(0, i, givens=(22, 35)).puzzle for i in range(60)}
    assert not {p.puzzle for p in a} & train
    assert sudoku.heldout_puzzles(3, seed=1) != sudoku.heldout_puzzles(3, seed=0)
    assert sudoku.train_puzzle(0, 5) == sudoku.train_puzzle(0, 5)


def test_checker_rejects():
    p = sudoku.heldout_puzzles(1)[0]
    sol = list(p.solution)
    assert sudoku.is_valid_solution(p.puzzle, p.solution)
    assert not sudoku.is_valid_solution(p.puzzle, p.solution[:80])  # short
    assert not sudoku.is_valid_solution(p.puzzle, p.solution.replace(p.solution[0], "0", 1))  # a blank
    swapped = list(sol)
    i = next(i for i in range(9) if p.puzzle[i] == "0")
    j = next(j for j in range(9) if j != i and p.puzzle[j] == "0" and sol[j] != sol[i])
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert not sudoku.is_valid_solution(p.puzzle, "".join(swapped))  # breaks its columns
    assert set(sudoku.conflicting_cells(sudoku.parse("".join(swapped)))) >= {i, j}
    assert sudoku.conflicting_cells(sudoku.parse(p.solution)) == []
    # a valid grid that changes a given is rejected: relabel two digits everywhere
    a, b = sol[0], sol[1]
    relabeled = "".join(b if c == a else a if c == b else c for c in sol)
    assert sudoku.is_valid_solution("0" * 81, relabeled)
    assert not sudoku.is_valid_solution(p.puzzle, relabeled)


def test_candidates_come_from_row_column_and_box():
    p = sudoku.heldout_puzzles(1)[0]
    cells = sudoku.parse(p.puzzle)
    cand = sudoku.candidates(cells)
    for i, options in enumerate(cand):
        assert int(p.solution[i]) in options  # the solution is never excluded
        if not cells[i]:
            peers = {cells[j] for j in grid.PEERS[i]}
            assert set(options) == set(range(1, 10)) - peers


def test_parse_accepts_dots_and_whitespace_and_names_problems():
    p = sudoku.heldout_puzzles(1)[0]
    dotted = p.puzzle.replace("0", ".")
    spaced = "\n".join(dotted[i : i + 9] for i in range(0, 81, 9))
    assert sudoku.parse(spaced) == sudoku.parse(p.puzzle)
    with pytest.raises(ValueError, match="81 cells, got 80"):
        sudoku.parse(p.puzzle[:80])
    with pytest.raises(ValueError, match="cell 5 is 'x'"):
        sudoku.parse(p.puzzle[:4] + "x" + p.puzzle[5:])
    with pytest.raises(ValueError, match="num_givens"):
        sudoku.make_puzzle(random.Random(0), 12)
    assert sudoku.count_solutions([1, 1] + [0] * 79) == 0  # conflicting givens


def test_stream_skips_a_stalled_generation(monkeypatch):
    real = generate.make_puzzle
    calls = []

    def flaky(rng, num_givens, exact=True, max_tries=400):
        calls.append(num_givens)
        if len(calls) == 2:
            raise ValueError("no unique puzzle")
        return real(rng, num_givens, exact, max_tries)

    monkeypatch.setattr(generate, "make_puzzle", flaky)
    got = sudoku.heldout_puzzles(3, givens=(40, 45), seed=9)
    assert len(calls) == 4 and all(40 <= p.num_givens <= 45 for p in got)
