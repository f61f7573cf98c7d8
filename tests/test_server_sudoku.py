"""POST /v1/sudoku: the CLI's solver and rules over HTTP (givens clamped, bad puzzles refused up
front, a wrong grid never presented as a solution), streamed with drafts for the playground."""

from __future__ import annotations

import json

import pytest

import dgemma
from dgemma.apps.sudoku import bundled_model
from dgemma.apps.sudoku.solver import SolveOptions, solve
from dgemma.server.app import ServerSettings
from dgemma.server.launch import running_server
from dgemma.tasks import sudoku
from tests.server_helpers import http, post_json, sse_events

EASY = sudoku.heldout_puzzles(1, givens=(45, 50))[0].puzzle
HARD = sudoku.heldout_puzzles(8, givens=(22, 24))  # the bundled model solves few of these
_blank = EASY.index("0")  # a blank beside a given of its row, made that given's twin
CONFLICT = (
    EASY[:_blank]
    + next(c for c in EASY[9 * (_blank // 9) : 9 * (_blank // 9) + 9] if c != "0")
    + EASY[_blank + 1 :]
)


@pytest.fixture(scope="module")
def solver():
    model = dgemma.load(bundled_model())
    with running_server(model, ServerSettings(port=0, model_name="sudoku")) as (url, _):
        yield model, url


@pytest.mark.parametrize("candidates", [False, True])
def test_the_answer_is_the_cli_solvers(solver, candidates):
    model, url = solver
    status, out = post_json(
        url, "/v1/sudoku", {"puzzle": EASY.replace("0", "."), "seed": 3, "candidates": candidates}
    )
    assert status == 200, out
    expected = solve(model, [EASY], SolveOptions(candidates=candidates), seed=3)
    assert out["object"] == "sudoku.solution" and out["puzzle"] == EASY
    assert out["grid"] == expected.grids[0]
    assert out["solved"] == sudoku.is_valid_solution(EASY, out["grid"]) is True
    assert out["solution"] == out["grid"] and out["usage"]["denoising_steps"] == expected.steps[0]


def test_a_wrong_grid_is_never_given_as_a_solution(solver):
    model, url = solver
    answers = [post_json(url, "/v1/sudoku", {"puzzle": p.puzzle, "seed": 0})[1] for p in HARD]
    wrong = [a for a in answers if not a["solved"]]
    assert wrong, "the bundled model solved every hard puzzle: pick harder ones"
    for a in wrong:
        assert a["solution"] is None and not sudoku.is_valid_solution(a["puzzle"], a["grid"])
        assert all(g == "0" or g == c for g, c in zip(a["puzzle"], a["grid"], strict=False))  # givens kept


def test_streamed_with_drafts_the_givens_are_clamped(solver):
    _, url = solver
    body = {"puzzle": EASY, "seed": 3, "stream": True, "include_drafts": True}
    status, _, raw = http(url, "POST", "/v1/sudoku", json.dumps(body))
    assert status == 200
    events = sse_events(raw)
    drafts = [c["draft"] for e in events for c in e.get("choices", []) if "draft" in c]
    assert drafts
    for d in drafts:  # every given's position is clamped from the first step
        assert all(d["marks"][i] == "c" for i, v in enumerate(EASY) if v != "0")
    final = events[-1]
    assert final["object"] == "sudoku.solution" and final["solved"] is True
    _, plain = post_json(url, "/v1/sudoku", {"puzzle": EASY, "seed": 3})
    assert final["grid"] == plain["grid"]


@pytest.mark.parametrize(
    "puzzle,message",
    [
        ("12345", "81"),
        (CONFLICT, "conflict"),
        ("123456789" + "0" * 72, "givens"),
        (None, "string"),
    ],
)
def test_bad_puzzles_are_400s_naming_the_field(solver, puzzle, message):
    _, url = solver
    status, out = post_json(url, "/v1/sudoku", {"puzzle": puzzle})
    assert status == 400 and out["error"]["param"] == "puzzle" and message in out["error"]["message"], out


def test_unknown_fields_and_a_model_that_is_not_a_sudoku_model(solver, model):
    _, url = solver
    status, out = post_json(url, "/v1/sudoku", {"puzzle": EASY, "max_tokens": 5})
    assert status == 400 and out["error"]["param"] == "max_tokens"
    with running_server(model, ServerSettings(port=0, model_name="tiny")) as (other, _):
        status, out = post_json(other, "/v1/sudoku", {"puzzle": EASY})
    assert status == 400 and "not a Sudoku model" in out["error"]["message"]
