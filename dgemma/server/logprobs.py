"""Log-probabilities in the OpenAI shapes: the legacy completions object and chat's `content` list.

Token strings are each token decoded alone (a byte-level BPE piece of a multi-byte character
decodes to U+FFFD on its own; `bytes` in the chat shape are that string's UTF-8 bytes).
"""

from __future__ import annotations

from typing import Any

from dgemma.engine.results import TokenLogprob
from dgemma.text import TextCodec


def covering(codec: TextCodec | None, tokens: list[int], text: str) -> int:
    """How many leading tokens make up `text` (an answer a stop sequence cut short)."""
    if codec is None:
        return len(tokens)
    length = 0
    for i, token in enumerate(tokens):
        if length >= len(text):
            return i
        length += len(codec.decode([token]))
    return len(tokens)


def completion_logprobs(
    codec: TextCodec | None,
    ids: list[int],
    logprobs: list[TokenLogprob | None],
    top: int,
    offset: int = 0,
) -> dict[str, Any]:
    """{tokens, token_logprobs, top_logprobs, text_offset} (None entries: a token with no context)."""
    pieces = [_piece(codec, t) for t in ids]
    offsets, position = [], offset
    for piece in pieces:
        offsets.append(position)
        position += len(piece)
    tops: list[dict[str, float] | None] = []
    for lp in logprobs:
        if lp is None:
            tops.append(None)
            continue
        alternatives: dict[str, float] = {}
        for token, value in lp.top[:top]:
            alternatives.setdefault(_piece(codec, token), value)
        tops.append(alternatives)
    return {
        "tokens": pieces,
        "token_logprobs": [None if lp is None else lp.logprob for lp in logprobs],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    return {key: first[key] + second[key] for key in first}


def chat_logprobs(codec: TextCodec | None, ids: list[int], logprobs: list[TokenLogprob]) -> dict[str, Any]:
    def entry(token: int, value: float) -> dict[str, Any]:
        piece = _piece(codec, token)
        return {"token": piece, "logprob": value, "bytes": list(piece.encode("utf-8"))}

    content = [
        {**entry(t, lp.logprob), "top_logprobs": [entry(a, v) for a, v in lp.top]}
        for t, lp in zip(ids, logprobs, strict=True)
    ]
    return {"content": content, "refusal": None}


def _piece(codec: TextCodec | None, token: int) -> str:
    return codec.decode([token]) if codec is not None else ""
