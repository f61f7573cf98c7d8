"""POST /v1/sudoku: `dgemma sudoku solve` over HTTP, under the same rules.

    {"puzzle": "53..7....6..195...", "seed": 0, "candidates": false, "stream": false,
     "include_drafts": false}

The puzzle is checked as the CLI checks it (81 cells, '0' or '.' blanks, at least 17 givens, no
conflicting givens, not provably unsolvable within 2 s): otherwise a 400 naming `puzzle`. The model
then runs in the headline mode: the givens clamped in the canvas and the blanks limited to digits
(with `candidates`, to the digits the givens leave open in the cell's row, column and box), through
the engine worker like any request (batched with the others, timed out, cancelled on disconnect).
The answer says whether the grid is a solution: `solution` is the grid only when it is valid, and
`null` otherwise (`grid` is what the model wrote either way), so a wrong grid is never presented
as a solution. Streamed (`stream: true`), the events are text-completion chunks (with `draft`s
when `include_drafts`), then one `sudoku.solution` object, then `[DONE]`.
"""

from __future__ import annotations

from typing import Any

from dgemma.server.fields import ApiError, bool_field, int_field

MAX_PUZZLE_CHARS = 400  # 81 cells with room for separators and line breaks
KNOWN = {"model", "puzzle", "seed", "candidates", "stream", "include_drafts"}


def parse_sudoku(body: Any, model, name: str, capacity: int):
    from dgemma.apps.sudoku.solver import SolveOptions, solver_requests
    from dgemma.generation.prompts import SEED_RANGE
    from dgemma.server.protocol import Job, JobKind
    from dgemma.tasks import sudoku
    from dgemma.tasks.sudoku.format import SudokuFormat

    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise ApiError(
            400, f"unknown field `{unknown[0]}`; /v1/sudoku takes {', '.join(sorted(KNOWN))}", unknown[0]
        )
    if model.codec is None:
        raise ApiError(400, "this model has no tokenizer: it cannot read puzzles", "model")
    try:
        SudokuFormat(model.codec.tokenizer)
    except ValueError:
        raise ApiError(
            400, "this model is not a Sudoku model (its tokenizer has no Sudoku tokens)", "model"
        ) from None
    text = body.get("puzzle")
    if not isinstance(text, str) or len(text) > MAX_PUZZLE_CHARS:
        raise ApiError(400, f"`puzzle` must be a string of at most {MAX_PUZZLE_CHARS} characters", "puzzle")
    try:
        cells = sudoku.parse(text)
        sudoku.check_puzzle(cells)
    except ValueError as err:
        raise ApiError(400, f"`puzzle` {err}", "puzzle") from None
    puzzle = sudoku.to_text(cells)
    if bool_field(body, "include_drafts") and not bool_field(body, "stream"):
        raise ApiError(400, "`include_drafts` applies with `stream: true`", "include_drafts")
    seed = int_field(body, "seed", -SEED_RANGE, SEED_RANGE - 1)
    options = SolveOptions(candidates=bool_field(body, "candidates"))
    requests = solver_requests(model, [puzzle], seed=0 if seed is None else seed, options=options)
    job = Job(
        JobKind.COMPLETION,
        name,
        requests,
        [len(requests[0].prompt)],
        1,
        stream=bool_field(body, "stream"),
        include_drafts=bool_field(body, "include_drafts"),
    )
    job.sudoku = puzzle
    return job


def sudoku_response(job, rid: str, created: int, choices, codec) -> dict[str, Any]:
    from dgemma.tasks import sudoku

    choice = choices[0]
    tokens = choice.completion.token_ids if choice.completion is not None else choice.tokens
    grid = codec.decode(tokens)[: sudoku.SIZE]
    solved = sudoku.is_valid_solution(job.sudoku, grid)
    return {
        "id": rid,
        "object": "sudoku.solution",
        "created": created,
        "model": job.model,
        "puzzle": job.sudoku,
        "solved": solved,
        "solution": grid if solved else None,
        "grid": grid,
        "usage": {
            "completion_tokens": len(tokens),
            "canvases": choice.canvases,
            "denoising_steps": choice.steps,
            "tokens_per_forward": round(len(tokens) / (choice.steps + choice.canvases), 4)
            if choice.steps
            else 0.0,
        },
    }
