"""`dgemma sudoku` end to end on a tiny model trained in the test (quality is not the point here)."""

from __future__ import annotations

import json

import pytest

from dgemma.tasks import sudoku
from tests.cli import one_line_error, run, run_subprocess

TINY = ["--hidden-size", "32", "--layers", "3", "--experts", "4", "--pool-size", "8", "--batch-size", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sudoku")
    proc = run("sudoku", "train", "--out", str(out), "--steps", "6", "--checkpoint-every", "3", *TINY)
    assert proc.returncode == 0, proc.stderr
    return out


def test_train_evaluates_on_held_out_puzzles_as_it_goes(tmp_path):
    proc = run(
        "sudoku", "train", "--out", str(tmp_path), "--steps", "4", "--checkpoint-every", "2",
        "--eval-every", "2", "--eval-n", "2", *TINY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["solve_rate"] <= 1 and 0 <= r["blank_cell_accuracy"] <= 1 for r in rows)
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_train_refuses_an_eval_interval_off_the_checkpoints_before_any_work(tmp_path):
    proc = run(
        "sudoku", "train", "--out", str(tmp_path), "--checkpoint-every", "100", "--eval-every", "250", *TINY
    )
    one_line_error(proc, "--eval-every must be a multiple of --checkpoint-every")
    assert not (tmp_path / "run").exists()  # refused before the puzzle pool was generated


def test_train_writes_model_metrics_and_plot(trained):
    assert (trained / "model" / "config.json").is_file() and (trained / "model" / "tokenizer.json").is_file()
    metrics = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert (trained / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_solve_and_eval(trained):
    puzzle = sudoku.heldout_puzzles(1)[0].puzzle.replace("0", ".")
    proc = run("sudoku", "solve", "--model", str(trained / "model"), puzzle, "--json")
    assert proc.returncode in (0, 1), proc.stderr  # 1: the (untrained) model's grid is not a solution
    result = json.loads(proc.stdout)["results"][0]
    assert result["puzzle"] == puzzle.replace(".", "0") and result["steps"] >= 1 and result["attempts"] == 1
    assert result["valid"] == sudoku.is_valid_solution(result["puzzle"], result["solution"])
    assert proc.returncode == (0 if result["valid"] else 1)
    proc = run("sudoku", "eval", "--model", str(trained / "model"), "--n", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 3 and 0 <= report["solve_rate"] <= 1 and report["mean_steps"] >= 1
    assert report["clamp_givens"] is True and sum(b["n"] for b in report["by_givens"].values()) == 3


def test_wrong_answers_are_marked_and_exit_1(trained):
    """An untrained model's grids are wrong: each line says so, stderr sums up, the exit code is 1."""
    puzzles = [p.puzzle for p in sudoku.heldout_puzzles(3)]
    proc = run("sudoku", "solve", "--model", str(trained / "model"), "--no-clamp-givens", *puzzles)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    solved = 0
    for line in lines:
        if line.startswith("unsolved "):
            assert len(line.split()[1]) == 81
        else:
            assert len(line) == 81 and any(sudoku.is_valid_solution(p, line) for p in puzzles)
            solved += 1
    assert solved < 3 and proc.returncode == 1
    assert f"dgemma: solved {solved} of 3 puzzles" in proc.stderr


def test_eval_reads_puzzle_files_with_optional_solutions(trained, tmp_path):
    ps = sudoku.heldout_puzzles(4)
    f = tmp_path / "p.txt"
    f.write_text("# a comment\n" + "".join(f"{p.puzzle.replace('0', '.')} {p.solution}\n" for p in ps[:2]))
    f.write_text(f.read_text() + "\n" + ps[2].puzzle + "\n" + ps[3].puzzle + "," + ps[3].solution + "\n")
    proc = run("sudoku", "eval", "--model", str(trained / "model"), "--file", str(f), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 4 and report["source"] == str(f)
    proc = run("sudoku", "eval", "--model", str(trained / "model"), "--file", str(f))
    assert proc.returncode == 0 and "all" in proc.stdout and "solved" in proc.stdout, proc.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text(ps[0].puzzle + "\n" + ps[1].puzzle + " " + ps[0].solution + "\n")
    one_line_error(run("sudoku", "eval", "--file", str(bad)), f"{bad}:2: the solution given does not solve")


def _unsolvable() -> str:
    """A unique puzzle with one blank set to a wrong digit that conflicts with no given."""
    p = sudoku.heldout_puzzles(1)[0]
    cells = sudoku.parse(p.puzzle)
    for i, v in enumerate(cells):
        for d in sudoku.candidates(cells)[i] if not v else ():
            if str(d) != p.solution[i]:
                trial = list(cells)
                trial[i] = d
                if sudoku.count_solutions(trial) == 0:
                    return sudoku.to_text(trial)
    raise AssertionError("no unsolvable variant found")


def test_puzzles_no_solver_should_get_are_refused_before_loading():
    p = sudoku.heldout_puzzles(1)[0].puzzle
    i = p.index("0")
    j = next(j for j in range(9) if p[j] != "0" and j != i)
    clash = list(p)
    clash[i if i < 9 else 0] = p[j]  # the same digit twice in row 1
    clash = "".join(clash)
    for args, match in (
        (["0" * 81], "puzzle 1: has 0 givens; a proper Sudoku has at least 17"),
        ([p, _unsolvable()], "puzzle 2: has no solution"),
        (["123"], "puzzle 1: a puzzle needs 81 cells, got 3"),
        (["x" * 81], "cell 1 is 'x'"),
        ([], "give puzzles"),
    ):
        one_line_error(run("sudoku", "solve", "--model", "/nonexistent", *args), match)
    if sudoku.conflicting_cells(sudoku.parse(clash)):
        one_line_error(run("sudoku", "solve", "--model", "/nonexistent", clash), "givens conflict")
    one_line_error(
        run("sudoku", "solve", "--model", "/nonexistent", p, "--mode", "ar", "--candidates"), "diffusion"
    )
    one_line_error(
        run("sudoku", "solve", "--model", "/nonexistent", p, "--verify-retries", "99"), "--verify-retries"
    )


def test_candidates_restrict_blanks_to_the_digits_the_givens_leave(trained):
    puzzles = [p.puzzle for p in sudoku.heldout_puzzles(3)]
    proc = run("sudoku", "solve", "--model", str(trained / "model"), "--candidates", "--json", *puzzles)
    assert proc.returncode in (0, 1), proc.stderr
    for row in json.loads(proc.stdout)["results"]:
        cand = sudoku.candidates(sudoku.parse(row["puzzle"]))
        assert all(int(ch) in cand[i] for i, ch in enumerate(row["solution"]))


def test_verify_retries_rerun_wrong_grids(trained):
    puzzles = [p.puzzle for p in sudoku.heldout_puzzles(2)]
    proc = run(
        "sudoku", "solve", "--model", str(trained / "model"), "--verify-retries", "2", "--json", *puzzles
    )
    for row in json.loads(proc.stdout)["results"]:
        assert row["attempts"] == (1 if row["valid"] else 3)  # wrong after every try: all 3 attempts used


def test_ar_baseline_trains_and_evaluates(tmp_path):
    proc = run("sudoku", "train", "--out", str(tmp_path), "--steps", "3", "--ar-baseline", *TINY)
    assert proc.returncode == 0, proc.stderr
    proc = run("sudoku", "eval", "--model", str(tmp_path / "model"), "--n", "2", "--mode", "ar", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mode"] == "ar"


def test_clamped_givens_are_kept_and_blanks_are_digits(trained):
    puzzles = [p.puzzle for p in sudoku.heldout_puzzles(3)]
    proc = run(
        "sudoku", "solve", "--model", str(trained / "model"), "--json", *puzzles
    )  # clamped: the default
    assert proc.returncode in (0, 1), proc.stderr
    for row in json.loads(proc.stdout)["results"]:
        grid, puzzle = row["solution"], row["puzzle"]
        assert len(grid) == 81 and set(grid) <= set("123456789")
        assert all(g == p for g, p in zip(grid, puzzle, strict=True) if p != "0")


@pytest.mark.slow  # over 10 s on the 2-core machine; CI runs it (./scripts/test --all)
def test_bundled_model_runs_the_demo_with_no_model_argument():
    """The README's run command: the shipped model loads from the package and the demo completes."""
    from dgemma.apps.sudoku import bundled_model

    assert (bundled_model() / "model.safetensors").stat().st_size < 25 * 2**20
    proc = run_subprocess("sudoku", "demo", "--n", "1", "--eval-n", "4")  # through `python -m dgemma`
    assert proc.returncode == 0, proc.stderr
    assert "held-out puzzles" in proc.stdout and "denoising steps" in proc.stdout
    proc = run("sudoku", "eval", "--n", "4", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["n"] == 4


@pytest.mark.slow  # over 10 s on the 2-core machine; CI runs it (./scripts/test --all)
def test_shipped_model_keeps_its_measured_solve_rate_on_100_fixed_puzzles():
    """A gate on the bundled model: the first 100 held-out puzzles of the new generator (22-35
    givens), default solver (givens clamped). It measured 27 of 100 (blank cells 72.9% right) when
    shipped (run v3: step 5,500 annealed over 1,400 steps, then 600 more; docs/sudoku.md); the gate
    leaves room for float rounding across CPUs and fails on a model that lost it (the one before
    measured 16 / 67.6%)."""
    import dgemma
    from dgemma.apps.sudoku import bundled_model, evaluate
    from dgemma.tasks import sudoku

    report = evaluate(dgemma.load(bundled_model()), sudoku.heldout_puzzles(100))
    assert report["solve_rate"] >= GATE, report
    assert report["blank_cell_accuracy"] >= 0.68, report


GATE = 0.17
