"""Chat messages as OpenAI clients send them -> what the chat template renders."""

from __future__ import annotations

from dgemma.server.fields import ApiError
from dgemma.text import REASONING_FIELDS


def flatten(index: int, message: dict) -> dict:
    """A message whose content is a list of text parts becomes one string; other parts are refused."""
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ApiError(400, f"`messages[{index}].content` parts must be text parts", "messages")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None:
        content = ""
    flat = {"role": message["role"], "content": content}
    # a turn of a tool exchange keeps what templates render: the calls made, whose result this is
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise ApiError(400, f"`messages[{index}].tool_calls` must be a list of calls", "messages")
        flat["tool_calls"] = calls
    for key in ("tool_call_id", "name", *REASONING_FIELDS):
        if message.get(key) is not None:
            if not isinstance(message[key], str):
                raise ApiError(400, f"`messages[{index}].{key}` must be a string", "messages")
            flat[key] = message[key]
    return flat
