"""`tool_choice: "auto"`: the model answers freely, with the tools declared in its prompt, and
decides between text and calls in its own call syntax (`dgemma/generation/tool_format.py`).

Each call it writes is resolved:
- a declared name whose arguments parse and validate: that call, as written;
- a declared name whose arguments do not: a repair stage writes them through the structured-output
  engine under the function's schema (same prompt and seed), so they validate;
- a name nobody declared, or a call that does not parse at all: kept in the text, never returned
  as a broken `tool_calls` entry.
With `parallel_tool_calls: false` only the first call counts. The server runs the same stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dgemma.generation.prompts import FieldError, RequestBuilder
from dgemma.generation.reasoning import ReasoningFormat, split
from dgemma.generation.run import GenerationOutput, complete, run_json, texts
from dgemma.generation.tool_format import ToolCallFormat, find_calls
from dgemma.generation.tools import ForcedTool, ToolCall
from dgemma.structured.generate import DEFAULT_ROUNDS, JsonJob, JsonPlan
from dgemma.structured.validate import validate
from dgemma.text import TextCodec


@dataclass(frozen=True)
class AutoTools:
    """What tool_choice auto needs: the call syntax, and each declared function's plan."""

    format: ToolCallFormat
    plans: dict[str, JsonPlan]
    parallel: bool = True

    @classmethod
    def build(
        cls,
        builder: RequestBuilder,
        tools: list[ForcedTool],
        parallel: bool | None,
        max_string_tokens: int | None = None,
        declared: list | None = None,
    ) -> AutoTools:
        fmt = ToolCallFormat.of(builder.codec, declared)
        if fmt is None:
            raise FieldError(
                "`tool_choice: auto` needs a chat template that writes tool calls with their own "
                'markers; this one does not: send `"required"` or name the function',
                "tool_choice",
            )
        plans = {t.name: builder.json_plan(t.parameters, max_string_tokens, "tools") for t in tools}
        return cls(fmt, plans, parallel is not False)


@dataclass
class Resolution:
    """One answer under tool_choice auto: its text, and its calls (None: a repair writes it)."""

    content: str
    blocks: int = 0  # calls written, whatever became of them
    calls: list[ToolCall | None] = field(default_factory=list)
    repairs: list[tuple[int, str]] = field(default_factory=list)  # (index in calls, function name)

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def fill(self, index: int, name: str, arguments: str) -> None:
        self.calls[index] = ToolCall(name, arguments)


def resolve(codec: TextCodec, auto: AutoTools, ids: list[int]) -> Resolution:
    """The text and calls of generated `ids` (see the module docstring)."""
    content, found = find_calls(codec, auto.format, ids)
    kept_as_text = []
    out = Resolution(content, len(found))
    for call in found:
        if call.name not in auto.plans or (out.calls and not auto.parallel):
            kept_as_text.append(call.text)
            continue
        schema = auto.plans[call.name].schema
        if call.arguments is not None and not validate(call.arguments, schema):
            out.calls.append(ToolCall(call.name, json.dumps(call.arguments, ensure_ascii=False)))
        else:
            out.repairs.append((len(out.calls), call.name))
            out.calls.append(None)
    out.content = " ".join(t for t in (content, *kept_as_text) if t)
    return out


def repair_job(auto: AutoTools, name: str, base: Any, rounds: int | None = None) -> JsonJob:
    """The stage that writes `name`'s arguments under its schema, for the request `base`."""
    return JsonJob(auto.plans[name], base, DEFAULT_ROUNDS if rounds is None else rounds)


def run_auto_tools(
    model: Any,
    codec: TextCodec,
    auto: AutoTools,
    requests: list[Any],
    rounds: int | None = None,
    reasoning: ReasoningFormat | None = None,
) -> GenerationOutput:
    """Free answers to `requests`, then their calls resolved and any repairs run (batched).
    `texts` are the answers' text outside calls; `tool_calls[i]` the calls, possibly none."""
    out = texts(codec, complete(model, requests))
    answers = out.token_ids
    if reasoning is not None:
        parts = [
            split(codec, reasoning, ids, reasoning.opens_inside(r.prompt))
            for ids, r in zip(answers, requests, strict=True)
        ]
        answers = [[ids[i] for i in p.content_positions] for ids, p in zip(answers, parts, strict=True)]
        out.reasoning = [p.reasoning for p in parts]
    found = [resolve(codec, auto, ids) for ids in answers]
    pending = [
        (row, k, name, repair_job(auto, name, r, rounds))
        for row, (res, r) in enumerate(zip(found, requests, strict=True))
        for k, name in res.repairs
    ]
    if pending:
        fixed = run_json(model, [job for *_, job in pending])
        for (row, k, name, job), arguments in zip(pending, fixed.texts, strict=True):
            found[row].fill(k, name, json.dumps(json.loads(arguments), ensure_ascii=False))
            stats = out.stats[row]  # one answer's figures over its free stage and its repairs
            stats.add(job.stats)
            stats.num_tokens = len(out.token_ids[row])
            stats.rounds += job.stats.rounds
            stats.repaired_slots += job.stats.repaired_slots
            stats.resolved_slots += job.stats.resolved_slots
    out.texts = [res.content for res in found]
    out.tool_calls = [list(res.calls) for res in found]
    return out
