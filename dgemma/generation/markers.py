"""Blocks a pair of marker tokens delimits in generated ids (reasoning blocks, tool calls)."""

from __future__ import annotations


def marked_blocks(
    ids: list[int], start: int, end: int, inside: bool = False, keep_stray_end: bool = False
) -> tuple[list[int], list[tuple[list[int], bool]]]:
    """(positions of the tokens outside every block, [(a block's tokens, whether it closed)]).

    A block opens at `start` and closes at `end`, markers in neither; `inside`: the ids begin in
    an open block; an `end` outside any block is dropped, or kept as an outside token."""
    outside: list[int] = []
    blocks: list[tuple[list[int], bool]] = []
    current: list[int] | None = [] if inside else None
    for i, token in enumerate(ids):
        if current is None and token == start:
            current = []
        elif current is not None and token == end:
            blocks.append((current, True))
            current = None
        elif current is not None:
            current.append(token)
        elif token != end or keep_stray_end:
            outside.append(i)
    if current is not None:
        blocks.append((current, False))
    return outside, blocks
