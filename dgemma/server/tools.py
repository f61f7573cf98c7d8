"""Tool calls on /v1/chat/completions: the `tools` a request declares and the one it must call.

A call named in `tool_choice` (or `"required"` with one tool) is generated through the structured
output path with the function's `parameters` as the schema, so its arguments always parse and
validate. `"required"` with several tools runs two stages per choice: the model picks the name
(`{"name": <one of the names>}`, a choice slot), then writes `{"name": <it, clamped>, "arguments":
...}` under that function's schema. `tool_choice: "auto"` (the model deciding between text and a call, in Gemma 4's own
tool-call format) is refused with a 400 that says what to send instead: it is not built yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dgemma.server.fields import ApiError

MAX_TOOLS = 128
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ForcedTool:
    name: str
    parameters: dict[str, Any]


def call_schema(tool: ForcedTool) -> dict[str, Any]:
    """The second stage of a choice among tools: the chosen name, clamped, and its arguments."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
    }


def choice_schema(tools: list[ForcedTool]) -> dict[str, Any]:
    """The first stage of a choice among tools: the model picks the name (a choice slot)."""
    return {"type": "object", "properties": {"name": {"enum": [t.name for t in tools]}}, "required": ["name"]}


def forced_tools(body: dict) -> list[ForcedTool] | None:
    """The functions one of which this request must call (one when named), or None for a plain
    answer; ApiError for bad input."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if body.get("parallel_tool_calls") not in (None, True, False):
        raise ApiError(400, "`parallel_tool_calls` must be true or false", "parallel_tool_calls")
    if tools in (None, []):
        if choice not in (None, "none"):
            raise ApiError(400, "`tool_choice` needs `tools`", "tool_choice")
        return None
    declared = _declared(tools)
    if choice == "none":
        return None
    if choice in (None, "auto"):
        raise ApiError(
            400,
            "`tool_choice: auto` (the model choosing between text and a call) is not supported yet; "
            'name the function: `tool_choice: {"type": "function", "function": {"name": ...}}`, '
            'or send `"required"` with one tool',
            "tools",
        )
    if choice == "required":
        return list(declared.values())
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise ApiError(
            400, '`tool_choice` must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )  # fmt: skip
    if name not in declared:
        raise ApiError(
            400, f"`tool_choice` names {name[:64]!r}, which `tools` does not declare", "tool_choice"
        )
    return [declared[name]]


def _declared(tools: Any) -> dict[str, ForcedTool]:
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise ApiError(400, f"`tools` must be a list of at most {MAX_TOOLS} function tools", "tools")
    out: dict[str, ForcedTool] = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise ApiError(400, f'`tools[{i}]` must be {{"type": "function", "function": {{...}}}}', "tools")
        name, params = fn.get("name"), fn.get("parameters", EMPTY_PARAMETERS)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ApiError(400, f"`tools[{i}].function.name` must be 1-64 letters, digits, _ or -", "tools")
        if not isinstance(params, dict):
            raise ApiError(400, f"`tools[{i}].function.parameters` must be a JSON Schema object", "tools")
        if name in out:
            raise ApiError(400, f"`tools` declares {name!r} twice", "tools")
        out[name] = ForcedTool(name, params)
    return out
