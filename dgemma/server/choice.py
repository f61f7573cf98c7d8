"""One choice of a response as it streams: tokens in, text deltas out, stop sequences applied.

Text is decoded from all tokens so far (so multi-token characters come out whole), and a delta
holds back any tail that could still become a stop sequence or an unfinished character. With
response_format json_object everything is held back until the end, when the answer becomes an
object (`dgemma/structured/json_object.py`) and goes out in one delta. With a reasoning format the
reasoning block is split off by token (`dgemma/generation/reasoning.py`) and goes out as its own
deltas; stop sequences and json_object apply to the answer alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from dgemma.engine.results import TokenLogprob
from dgemma.generation.auto_tools import Resolution
from dgemma.generation.reasoning import ReasoningFormat, split
from dgemma.generation.tools import ToolCall
from dgemma.structured.generate import JsonJob
from dgemma.structured.json_object import ObjectMethod, as_json_object
from dgemma.text import TextCodec

REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Delta:
    """What a canvas adds to a choice: answer text, and reasoning text."""

    content: str = ""
    reasoning: str = ""

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning)


class ChoiceText:
    def __init__(
        self,
        codec: TextCodec | None,
        stop: list[str],
        json_object: bool = False,
        reasoning: ReasoningFormat | None = None,
        inside: bool = False,
        hold: bool = False,
    ):
        self.codec, self.stop, self.json_object = codec, stop, json_object
        self.hold = hold or json_object  # nothing goes out before the end (tool_choice auto)
        self.tool_calls: list[ToolCall] | None = None  # the calls this choice makes
        self.repairs: list[tuple[int, str, JsonJob]] = []  # tool_choice auto: arguments being rewritten
        self.resolution: Resolution | None = None
        self.completion = None  # the engine's Completion, once it finishes
        self.format = reasoning if codec is not None else None
        self.inside = inside  # the prompt left a reasoning block open
        self.reasoning: str | None = None  # the reasoning so far, None while there is no block
        self.reasoning_sent = 0
        self.content_positions: list[int] | None = None  # with a format: which tokens are the answer
        self.object_method: ObjectMethod | None = None
        self.logprobs: list[TokenLogprob] = []  # per token, when the request asked for them
        self.tool_name: str | None = None  # forced tools: the function this choice calls
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0  # characters of `text` already sent
        self.finish_reason: str | None = None
        self.canvases = 0
        self.steps = 0  # decoder passes over this choice's canvases
        self.rounds = 0  # response_format json_schema: generation rounds, and slots repaired
        self.repaired = 0
        self.resolved = 0  # slots that took a valid value from their alternatives (structured/resolve.py)
        self.candidates = 0  # candidate layouts its first round ran (0: the schema left no choice)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def add(self, tokens: list[int], steps: int) -> Delta:
        """Append a committed canvas's tokens; returns the text now safe to send. May end the choice."""
        self.tokens += tokens
        self.canvases += 1
        self.steps += steps
        self.text = self._decode(final=False)
        cut = self._stop_at()
        if cut is not None:
            self.text = self.text[:cut]
            self.finish_reason = "stop"
            return self._final()
        return Delta(self._flush(len(self.text) - self._held_back()), self._flush_reasoning())

    def finish(self, reason: str) -> Delta:
        """The engine finished this choice; returns whatever text was still held back."""
        if self.finish_reason is None:
            self.finish_reason = reason
        return self._final()

    def _decode(self, final: bool) -> str:
        if self.codec is None:
            return ""
        if self.format is None:
            return self.codec.decode(self.tokens)
        part = split(self.codec, self.format, self.tokens, self.inside, final)
        self.reasoning, self.content_positions = part.reasoning, part.content_positions
        return part.content

    def _final(self) -> Delta:
        if self.format is not None:
            self._decode(final=True)  # the reasoning's end is no longer held back; the answer stays as cut
        if self.json_object and self.object_method is None:
            self.text, self.object_method = as_json_object(self.text)
            if self.object_method is ObjectMethod.AS_GENERATED:  # a whole object: nothing was cut off it
                self.finish_reason = "stop"
        return Delta(self._flush(len(self.text)), self._flush_reasoning())

    def _flush_reasoning(self) -> str:
        if self.reasoning is None or len(self.reasoning) <= self.reasoning_sent:
            return ""
        delta = self.reasoning[self.reasoning_sent :]
        self.reasoning_sent = len(self.reasoning)
        return delta

    def answer_tokens(self) -> tuple[list[int], list[TokenLogprob]]:
        """The answer's tokens (reasoning and its markers left out) and their log-probabilities."""
        if self.content_positions is None:
            return self.tokens, self.logprobs
        ids = [self.tokens[i] for i in self.content_positions]
        return ids, [self.logprobs[i] for i in self.content_positions if i < len(self.logprobs)]

    def _flush(self, upto: int) -> str:
        delta = self.text[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return delta

    def _stop_at(self) -> int | None:
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.sent - longest)
        found = [i for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        if self.hold:
            return len(self.text)
        tail = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    tail = max(tail, k)
                    break
        if self.text.endswith(REPLACEMENT):  # an incomplete multi-byte character
            tail = max(tail, len(self.text) - len(self.text.rstrip(REPLACEMENT)))
        return tail
