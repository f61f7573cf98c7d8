"""`dgemma sudoku` end to end on a tiny model trained in the test (quality is not the point here)."""

from __future__ import annotations

import json

import pytest

from dgemma.tasks import sudoku
from tests.test_cli import _one_line_error, run

TINY = ["--hidden-size", "32", "--layers", "3", "--experts", "4", "--pool-size", "8", "--batch-size", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sudoku")
    proc = run("sudoku", "train", "--out", str(out), "--steps", "6", "--checkpoint-every", "3", *TINY)
    assert proc.returncode == 0, proc.stderr
    return out


def test_train_writes_model_metrics_and_plot(trained):
    assert (trained / "model" / "config.json").is_file() and (trained / "model" / "tokenizer.json").is_file()
    metrics = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert (trained / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_solve_and_eval(trained):
    puzzle = sudoku.heldout_puzzles(1)[0].puzzle.replace("0", ".")
    proc = run("sudoku", "solve", "--model", str(trained / "model"), puzzle, "--json")
    assert proc.returncode in (0, 1), proc.stderr  # 1: some output was not a full grid (untrained model)
    result = json.loads(proc.stdout)["results"][0]
    assert (
        result["puzzle"] == puzzle.replace(".", "0")
        and isinstance(result["valid"], bool)
        and result["steps"] >= 1
    )
    proc = run("sudoku", "eval", "--model", str(trained / "model"), "--n", "3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 3 and 0 <= report["solve_rate"] <= 1 and report["mean_steps"] >= 1


def test_ar_baseline_trains_and_evaluates(tmp_path):
    proc = run("sudoku", "train", "--out", str(tmp_path), "--steps", "3", "--ar-baseline", *TINY)
    assert proc.returncode == 0, proc.stderr
    proc = run("sudoku", "eval", "--model", str(tmp_path / "model"), "--n", "2", "--mode", "ar")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mode"] == "ar"


def test_bad_puzzles_give_one_line_errors(trained):
    model = str(trained / "model")
    _one_line_error(run("sudoku", "solve", "--model", model, "123"), "a puzzle needs 81 cells, got 3")
    _one_line_error(run("sudoku", "solve", "--model", model, "x" * 81), "cell 1 is 'x'")
    _one_line_error(run("sudoku", "solve", "--model", model), "give puzzles")


def test_clamped_givens_are_kept_and_blanks_are_digits(trained):
    puzzles = [p.puzzle for p in sudoku.heldout_puzzles(3)]
    proc = run("sudoku", "solve", "--model", str(trained / "model"), "--clamp-givens", "--json", *puzzles)
    assert proc.returncode == 0, proc.stderr
    for row in json.loads(proc.stdout)["results"]:
        grid, puzzle = row["solution"], row["puzzle"]
        assert len(grid) == 81 and set(grid) <= set("123456789")
        assert all(g == p for g, p in zip(grid, puzzle, strict=True) if p != "0")


def test_bundled_model_runs_the_demo_with_no_model_argument():
    """The README's run command: the shipped model loads from the package and the demo completes."""
    from dgemma.apps.sudoku import bundled_model

    assert (bundled_model() / "model.safetensors").stat().st_size < 25 * 2**20
    proc = run("sudoku", "demo", "--n", "1", "--eval-n", "4")
    assert proc.returncode == 0, proc.stderr
    assert "held-out puzzles" in proc.stdout and "denoising steps" in proc.stdout
    proc = run("sudoku", "eval", "--n", "4")
    assert proc.returncode == 0 and json.loads(proc.stdout)["n"] == 4


def test_shipped_model_solves_at_least_80_percent_of_100_fixed_puzzles():
    """The bundled model against the issue's bar, on the first 100 held-out puzzles (22-35 givens)."""
    import dgemma
    from dgemma.apps.sudoku import bundled_model, evaluate
    from dgemma.tasks import sudoku

    report = evaluate(dgemma.load(bundled_model()), sudoku.heldout_puzzles(100))
    assert report["solve_rate"] >= 0.80, report
