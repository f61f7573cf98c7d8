"""Live terminal view of Sudoku canvases converging: givens plain, settled cells green, changing cells yellow."""

from __future__ import annotations

from collections.abc import Iterator

from rich.columns import Columns
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from dgemma.engine.events import CommitEvent, DoneEvent, DraftEvent, Event
from dgemma.tasks import sudoku
from dgemma.tasks.sudoku.format import SudokuFormat


def grid_text(puzzle: str, draft: str, previous: str) -> Text:
    text = Text()
    for r in range(9):
        if r and r % 3 == 0:
            text.append("------+-------+------\n", style="dim")
        for c in range(9):
            i = r * 9 + c
            if c and c % 3 == 0:
                text.append("| ", style="dim")
            ch = draft[i] if i < len(draft) and draft[i] in "123456789" else "."
            style = (
                "bold"
                if puzzle[i] != "0"
                else ("green" if i < len(previous) and previous[i] == ch else "yellow")
            )
            text.append(ch + " ", style=style)
        text.append("\n")
    return text


def watch(events: Iterator[Event], puzzles: list[str], fmt: SudokuFormat, console: Console) -> DoneEvent:
    drafts = [""] * len(puzzles)
    previous = [""] * len(puzzles)
    titles = ["waiting"] * len(puzzles)
    done = None

    def render() -> Columns:
        return Columns(
            [
                Panel(grid_text(p, d, q), title=t, expand=False)
                for p, d, q, t in zip(puzzles, drafts, previous, titles, strict=True)
            ]
        )

    with Live(render(), console=console, refresh_per_second=12) as live:
        for event in events:
            if isinstance(event, DraftEvent):
                previous[event.row] = drafts[event.row]
                drafts[event.row] = fmt.grid(event.tokens.tolist())
                titles[event.row] = f"step {event.step}"
            elif isinstance(event, CommitEvent):
                grid = fmt.grid(event.tokens)
                ok = sudoku.is_valid_solution(puzzles[event.row], grid)
                previous[event.row] = drafts[event.row] = grid
                titles[event.row] = f"{'solved' if ok else 'wrong'} in {event.steps} steps"
            elif isinstance(event, DoneEvent):
                done = event
            live.update(render())
    return done
