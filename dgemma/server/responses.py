"""OpenAI response bodies: chat completions, text completions, their stream chunks, and usage."""

from __future__ import annotations

import time
from typing import Any

from dgemma.engine.results import TokenLogprob
from dgemma.generation.run import Mode
from dgemma.generation.tools import ToolCall
from dgemma.server.choice import ChoiceText, Delta
from dgemma.server.logprobs import chat_logprobs, completion_logprobs, covering, merge
from dgemma.server.protocol import Job, JobKind
from dgemma.text import TextCodec


def usage(job: Job, choices: list[ChoiceText]) -> dict[str, Any]:
    """OpenAI usage plus the diffusion figures: canvases, denoising steps, tokens per forward pass
    (denoising steps plus the encoder pass that precedes each canvas, as RowStats counts them)."""
    completion = sum(len(c.tokens) for c in choices)
    steps = sum(c.steps for c in choices)
    canvases = sum(c.canvases for c in choices)
    out = {
        "prompt_tokens": sum(job.prompt_tokens),
        "completion_tokens": completion,
        "total_tokens": sum(job.prompt_tokens) + completion,
        "canvases": canvases,
        "denoising_steps": steps,
        "tokens_per_forward": round(completion / (steps + canvases), 4) if steps else 0.0,
    }
    if job.mode is Mode.AR:  # one encoder pass per token, no canvas
        out.update(canvases=0, denoising_steps=0, tokens_per_forward=1.0 if completion else 0.0)
    if job.json_jobs is not None:
        out["json_rounds"] = sum(c.rounds for c in choices)
        out["json_repaired_slots"] = sum(c.repaired for c in choices)
        out["json_resolved_slots"] = sum(c.resolved for c in choices)
        out["json_candidates"] = sum(c.candidates for c in choices)
    return out


def echo_response(
    job: Job, rid: str, codec: TextCodec | None, scored: list[list[TokenLogprob | None]]
) -> dict[str, Any]:
    """`echo` with `max_tokens: 0`: each prompt with its log-probabilities, nothing generated."""
    items = []
    for i, (prompt, logprobs) in enumerate(zip(job.prompts, scored, strict=True)):
        body = None if job.logprobs is None else completion_logprobs(codec, prompt, logprobs, job.logprobs)
        text = codec.decode(prompt) if codec is not None else ""
        items.append({"index": i, "text": text, "finish_reason": "length", "logprobs": body})
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": items,
        "usage": {
            "prompt_tokens": sum(job.prompt_tokens),
            "completion_tokens": 0,
            "total_tokens": sum(job.prompt_tokens),
        },
    }


def tool_call_id(rid: str, index: int, call: int = 0) -> str:
    suffix = f"_{call}" if call else ""
    return f"call_{rid.rsplit('-', 1)[-1][:16]}_{index}{suffix}"


def _calls(rid: str, index: int, calls: list[ToolCall], stream: bool = False) -> list[dict[str, Any]]:
    out = []
    for k, call in enumerate(calls):
        entry = {
            "id": tool_call_id(rid, index, k),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        out.append({"index": k, **entry} if stream else entry)
    return out


def _message(rid: str, index: int, choice: ChoiceText) -> dict[str, Any]:
    if choice.tool_calls is None:
        message = {"role": "assistant", "content": choice.text, "refusal": None}
    else:
        message = {
            "role": "assistant",
            "content": choice.text if choice.tool_name is None and choice.text else None,
            "refusal": None,
            "tool_calls": _calls(rid, index, choice.tool_calls),
        }
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    return message


def full_response(
    job: Job,
    rid: str,
    created: int,
    choices: list[ChoiceText],
    codec: TextCodec | None = None,
    prompt_logprobs: list[list[TokenLogprob | None]] | None = None,
) -> dict[str, Any]:
    """The whole response; `prompt_logprobs` (per prompt) with echo."""

    def generated(c: ChoiceText) -> tuple[list[int], list[TokenLogprob]]:
        ids, logprobs = c.answer_tokens()
        count = covering(codec, ids, c.text)
        return ids[:count], logprobs[:count]

    if job.kind is JobKind.CHAT:
        items = [
            {
                "index": i,
                "message": _message(rid, i, c),
                "finish_reason": c.finish_reason,
                "logprobs": None if job.logprobs is None else chat_logprobs(codec, *generated(c)),
            }
            for i, c in enumerate(choices)
        ]
        obj = "chat.completion"
    else:
        items = []
        for i, c in enumerate(choices):
            prompt = job.prompts[i // job.n] if job.echo else []
            prompt_text = codec.decode(prompt) if codec is not None and prompt else ""
            logprobs = None
            if job.logprobs is not None:
                ids, lps = generated(c)
                logprobs = completion_logprobs(codec, ids, lps, job.logprobs, len(prompt_text))
                if job.echo and prompt_logprobs is not None:
                    head = completion_logprobs(codec, prompt, prompt_logprobs[i // job.n], job.logprobs)
                    logprobs = merge(head, logprobs)
            text = prompt_text + c.text
            items.append({"index": i, "text": text, "finish_reason": c.finish_reason, "logprobs": logprobs})
        obj = "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": job.model,
        "choices": items,
        "usage": usage(job, choices),
    }


class ChunkWriter:
    """Stream chunks of one response: same id, created and model on every chunk."""

    def __init__(self, job: Job, rid: str):
        self.job, self.rid, self.created = job, rid, int(time.time())
        self.object = "chat.completion.chunk" if job.kind is JobKind.CHAT else "text_completion"

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {
            "id": self.rid,
            "object": self.object,
            "created": self.created,
            "model": self.job.model,
            "choices": choices,
        }
        if self.job.include_usage:  # the spec: null on every chunk but the last one
            chunk["usage"] = None
        return {**chunk, **extra}

    def role(self, index: int) -> dict[str, Any]:
        """The first chunk of a chat choice: the assistant role, no content yet."""
        delta = {"role": "assistant", "content": "", "refusal": None}
        return self._chunk([{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}])

    def content(
        self,
        index: int,
        delta: Delta,
        finish_reason: str | None = None,
        tool_calls: list[ToolCall] | None = None,
    ) -> dict[str, Any]:
        """A delta of answer text (chat: and reasoning); the last one of a choice that calls tools
        carries the calls whole."""
        text = delta.content
        if self.job.kind is JobKind.CHAT:
            change = {"reasoning_content": delta.reasoning} if delta.reasoning else {}
            if tool_calls is not None:
                change |= {"content": text} if text and not self.job.calls_tool else {}
                change["tool_calls"] = _calls(self.rid, index, tool_calls, stream=True)
            elif text:
                change["content"] = text
            choice = {"index": index, "delta": change, "finish_reason": finish_reason, "logprobs": None}
        else:
            choice = {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return self._chunk([choice])

    def draft(self, index: int, draft: dict[str, Any]) -> dict[str, Any]:
        """A denoising-step draft: an empty delta plus a `draft` field that OpenAI clients ignore."""
        if self.job.kind is JobKind.CHAT:
            choice = {"index": index, "delta": {}, "finish_reason": None, "logprobs": None, "draft": draft}
        else:
            choice = {"index": index, "text": "", "finish_reason": None, "logprobs": None, "draft": draft}
        return self._chunk([choice])

    def usage(self, choices: list[ChoiceText]) -> dict[str, Any]:
        return self._chunk([], usage=usage(self.job, choices))
