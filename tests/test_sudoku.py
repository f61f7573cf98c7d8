"""The Sudoku task: unique puzzles at the asked difficulty, a checker that rejects, disjoint data streams."""

from __future__ import annotations

import random

import pytest

from dgemma.tasks import sudoku


def test_puzzles_have_unique_solutions_and_asked_givens():
    rng = random.Random(1)
    for givens in (22, 27, 35, 50):
        p = sudoku.make_puzzle(rng, givens)
        cells = sudoku.parse(p.puzzle)
        assert p.num_givens == givens
        assert sudoku.count_solutions(cells) == 1
        assert sudoku.to_text(sudoku.solve(cells)) == p.solution
        assert sudoku.is_valid_solution(p.puzzle, p.solution)


def test_heldout_is_fixed_and_disjoint_from_training():
    a = sudoku.heldout_puzzles(15)
    assert a == sudoku.heldout_puzzles(15)
    assert all(22 <= p.num_givens <= 35 for p in a)
    train = sudoku.train_puzzles(seed=0, givens=(22, 35))
    assert not {p.puzzle for p in a} & {next(train).puzzle for _ in range(60)}
    assert sudoku.heldout_puzzles(3, seed=1) != sudoku.heldout_puzzles(3, seed=0)


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
    # a valid grid that changes a given is rejected: relabel two digits everywhere
    a, b = sol[0], sol[1]
    relabeled = "".join(b if c == a else a if c == b else c for c in sol)
    assert sudoku.is_valid_solution("0" * 81, relabeled)
    assert not sudoku.is_valid_solution(p.puzzle, relabeled)


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
    real = sudoku.make_puzzle
    calls = []

    def flaky(rng, num_givens, max_tries=50):
        calls.append(num_givens)
        if len(calls) == 2:
            raise ValueError("no unique puzzle")
        return real(rng, num_givens, max_tries)

    monkeypatch.setattr(sudoku, "make_puzzle", flaky)
    stream = sudoku.train_puzzles(seed=3, givens=(40, 45))
    got = [next(stream) for _ in range(3)]
    assert len(calls) == 4 and all(40 <= p.num_givens <= 45 for p in got)
