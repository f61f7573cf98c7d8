"""Tool calls (the server's /v1/chat/completions, `Model.generate(tools=...)`): the `tools` a request
declares and the ones it must call; bad declarations are FieldErrors naming the field.

A call named in `tool_choice` (or `"required"` with one tool) is generated through the structured
output path with the function's `parameters` as the schema, so its arguments always parse and
validate. `"required"` with several tools runs two stages per choice: the model picks the name
(`{"name": <one of the names>}`, a choice slot), then writes `{"name": <it, clamped>, "arguments":
...}` under that function's schema. `tool_choice: "auto"` (the model deciding between text and
calls, in its own call syntax) is `dgemma/generation/auto_tools.py`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dgemma.generation.prompts import FieldError, RequestBuilder
from dgemma.generation.run import GenerationOutput, run_json
from dgemma.model import DiffusionGemma
from dgemma.structured.generate import JsonJob, JsonPlan

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
    answer; FieldError for bad input."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if body.get("parallel_tool_calls") not in (None, True, False):
        raise FieldError("`parallel_tool_calls` must be true or false", "parallel_tool_calls")
    if tools in (None, []):
        if choice not in (None, "none"):
            raise FieldError("`tool_choice` needs `tools`", "tool_choice")
        return None
    declared = _declared(tools)
    if choice in (None, "none", "auto"):
        return None
    if choice == "required":
        return list(declared.values())
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise FieldError(
            '`tool_choice` must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if name not in declared:
        raise FieldError(f"`tool_choice` names {name[:64]!r}, which `tools` does not declare", "tool_choice")
    return [declared[name]]


def auto_tools(body: dict) -> list[ForcedTool] | None:
    """The declared functions when the model decides whether to call one (`tool_choice` "auto",
    OpenAI's default with `tools`), else None."""
    if body.get("tools") in (None, []) or body.get("tool_choice") not in (None, "auto"):
        return None
    return list(_declared(body["tools"]).values())


def _declared(tools: Any) -> dict[str, ForcedTool]:
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise FieldError(f"`tools` must be a list of at most {MAX_TOOLS} function tools", "tools")
    out: dict[str, ForcedTool] = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise FieldError(f'`tools[{i}]` must be {{"type": "function", "function": {{...}}}}', "tools")
        name, params = fn.get("name"), fn.get("parameters", EMPTY_PARAMETERS)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise FieldError(f"`tools[{i}].function.name` must be 1-64 letters, digits, _ or -", "tools")
        if not isinstance(params, dict):
            raise FieldError(f"`tools[{i}].function.parameters` must be a JSON Schema object", "tools")
        if name in out:
            raise FieldError(f"`tools` declares {name!r} twice", "tools")
        out[name] = ForcedTool(name, params)
    return out


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text that validates against the function's parameters


def check_stages(
    builder: RequestBuilder,
    prompts: list[list[int]],
    stages: dict[str, JsonPlan],
    cap: int | None,
    length_field: str = "max_new_tokens",
) -> None:
    """Before any work: every second stage fits under the length cap and in the context."""
    for stage in stages.values():
        builder.json_jobs(prompts, stage, max_new_tokens=cap, length_field=length_field)


def second_stage(job: JsonJob, name: str, stages: dict[str, JsonPlan]) -> JsonJob:
    """The job that writes `name`'s arguments after the first stage chose it: same prompt, seed
    and settings; its stats continue the first stage's (one choice's figures over both)."""
    follow = JsonJob(stages[name], job.base, job.max_rounds)
    follow.stats = job.stats
    return follow


def chosen_name(text: str) -> str:
    return json.loads(text)["name"]


def arguments_of(text: str) -> str:
    """The arguments of a second stage's `{"name": ..., "arguments": ...}` as JSON text."""
    return json.dumps(json.loads(text)["arguments"], ensure_ascii=False)


def run_tool_calls(
    model: DiffusionGemma,
    builder: RequestBuilder,
    prompts: list[list[int]],
    tools: list[ForcedTool],
    rounds: int | None = None,
    max_string_tokens: int | None = None,
    **settings: Any,
) -> GenerationOutput:
    """One call per prompt of one of `tools`: the named one, or the model's pick among several
    (the same two stages as the server's). `texts` are the arguments; `tool_calls` name them."""
    if len(tools) == 1:
        plan = builder.json_plan(tools[0].parameters, max_string_tokens, "tools")
        out = run_json(model, builder.json_jobs(prompts, plan, rounds, **settings))
        out.tool_calls = [[ToolCall(tools[0].name, text)] for text in out.texts]
        return out
    plan = builder.json_plan(choice_schema(tools), max_string_tokens, "tools")
    stages = {t.name: builder.json_plan(call_schema(t), max_string_tokens, "tools") for t in tools}
    check_stages(builder, prompts, stages, settings.get("max_new_tokens"))
    first = builder.json_jobs(prompts, plan, rounds, **settings)
    names = [chosen_name(text) for text in run_json(model, first).texts]
    out = run_json(model, [second_stage(job, name, stages) for job, name in zip(first, names, strict=True)])
    out.texts = [arguments_of(text) for text in out.texts]
    out.tool_calls = [[ToolCall(name, text)] for name, text in zip(names, out.texts, strict=True)]
    return out
