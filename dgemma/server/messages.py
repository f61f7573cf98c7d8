"""Chat messages as OpenAI clients send them -> what the chat template renders."""

from __future__ import annotations

from dgemma.server.fields import ApiError
from dgemma.text import REASONING_FIELDS


def flatten(index: int, message: dict) -> dict:
    """A message whose content is a list of text parts becomes one string; with `image_url` parts
    it stays a list of text and image parts (in order) for the image processor; other parts are refused."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [_part(index, j, part) for j, part in enumerate(content)]
        if all(p["type"] == "text" for p in parts):
            content = "".join(p["text"] for p in parts)
        else:
            content = parts
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


def _part(index: int, j: int, part: object) -> dict:
    where = f"messages[{index}].content[{j}]"
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if isinstance(part, dict) and part.get("type") == "image_url":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else None
        if not isinstance(url, str) or not url:
            raise ApiError(
                400, f"`{where}.image_url.url` must be a string (a data:image/... URL)", "messages"
            )
        return {"type": "image_url", "image_url": {"url": url}}
    raise ApiError(400, f"`{where}` must be a text or an image_url part", "messages")
