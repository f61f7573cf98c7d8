"""Terminal live view of a generation: the canvas being refined step by step, then committed."""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from dgemma.engine.events import CommitEvent, DoneEvent, DraftEvent, Event
from dgemma.text import TextCodec


def show_live(events: Iterator[Event], codec: TextCodec, num_rows: int, console: Console) -> DoneEvent:
    """Render drafts in place (committed text plain, the draft canvas highlighted) until Done."""
    committed = [""] * num_rows
    drafts = [""] * num_rows
    status = [""] * num_rows
    done = None

    def render() -> Group:
        parts = []
        for i in range(num_rows):
            line = Text(f"[{i}] {status[i]}\n", style="dim")
            line.append(committed[i])
            line.append(drafts[i], style="bold cyan")
            parts.append(line)
        return Group(*parts)

    with Live(render(), console=console, refresh_per_second=20, transient=False) as live:
        for event in events:
            if isinstance(event, DraftEvent):
                drafts[event.row] = codec.decode(event.tokens.tolist())
                status[event.row] = (
                    f"canvas {event.canvas_index + 1}, step {event.step}, accepted {event.num_accepted}"
                )
            elif isinstance(event, CommitEvent):
                committed[event.row] += codec.decode(event.tokens)
                drafts[event.row] = ""
                status[event.row] = f"canvas {event.canvas_index + 1} committed after {event.steps} steps"
            elif isinstance(event, DoneEvent):
                done = event
            live.update(render())
    return done
