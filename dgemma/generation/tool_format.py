"""The model's own tool-call syntax, read from its chat template, and calls found in its output.

The format is probed, never written in code: dgemma renders an assistant turn that calls a probe
function with one string argument and reads off the call's markers (the first and last added
tokens around it; Gemma 4: `<|tool_call>` ... `<tool_call|>`), the text ahead of the name
(`call:`), and the string quote (Gemma 4's `<|"|>` token; `"` for JSON-style templates).

Inside a call, arguments are Gemma 4's notation: `{key:value,...}`, strings between quotes, `[...]`,
numbers, `true` / `false` / `null`; a JSON object `{"name": ..., "arguments": {...}}` body (Hermes,
Qwen) parses too. A call whose arguments do not parse is reported by its name alone; what to do
with it (rewrite the arguments under the schema, or keep the call as text) is the caller's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dgemma.generation.markers import marked_blocks

if TYPE_CHECKING:
    from dgemma.text import TextCodec

_NAME, _VALUE = "zzprobe_fn", "zzprobe_value"
_PROBE_USER = {"role": "user", "content": "Hi"}
MAX_DEPTH = 32


@dataclass(frozen=True)
class ToolCallFormat:
    start: int  # token id opening a call
    end: int  # token id closing it
    prefix: str  # text between the opener and the function's name
    quote: str  # the string delimiter of the argument notation

    @classmethod
    def of(cls, codec: TextCodec | None, tools: list | None = None) -> ToolCallFormat | None:
        """The call format of the checkpoint's template, or None when it renders no tool calls."""
        if codec is None or not codec.has_chat_template:
            return None
        call = {"id": "c0", "type": "function", "function": {"name": _NAME, "arguments": {"a": _VALUE}}}
        try:
            plain = codec.render_chat([_PROBE_USER, {"role": "assistant", "content": ""}], False, tools)
            called = codec.render_chat(
                [_PROBE_USER, {"role": "assistant", "content": "", "tool_calls": [call]}], False, tools
            )
        except ValueError:
            return None
        a, b = codec.encode_plain(plain), codec.encode_plain(called)
        head = _common_prefix(a, b)
        tail = _common_prefix(a[head:][::-1], b[head:][::-1])
        ids = b[head : len(b) - tail]
        added = set(codec.tokenizer.get_added_tokens_decoder())
        marks = [i for i, t in enumerate(ids) if t in added]
        if len(marks) < 2 or ids[marks[0]] == ids[marks[-1]]:
            return None
        start, end = ids[marks[0]], ids[marks[-1]]
        body = codec.tokenizer.decode(ids[marks[0] + 1 : marks[-1]], skip_special_tokens=False)
        if _NAME not in body or _VALUE not in body:
            return None
        prefix, rest = body.split(_NAME, 1)
        before = rest.split(_VALUE, 1)[0]  # `{a:<|"|>` (Gemma 4) or `", "arguments": {"a": "` (JSON)
        quote = before[before.rindex(":") + 1 :].strip() if ":" in before else '"'
        return cls(start, end, prefix.lstrip(), quote or '"')


@dataclass
class FoundCall:
    text: str  # the call as written, markers and all
    name: str | None = None  # None: the call does not parse
    arguments: dict[str, Any] | None = None


def find_calls(codec: TextCodec, fmt: ToolCallFormat, ids: list[int]) -> tuple[str, list[FoundCall]]:
    """The text outside calls, and each call (an unclosed one at the end counts as a call)."""
    positions, blocks = marked_blocks(ids, fmt.start, fmt.end, keep_stray_end=True)
    outside = [ids[i] for i in positions]
    calls = [block for block, _ in blocks]
    found = []
    for body_ids in calls:
        body = codec.tokenizer.decode(body_ids, skip_special_tokens=False)
        written = codec.tokenizer.decode([fmt.start, *body_ids, fmt.end], skip_special_tokens=False)
        name, arguments = parse_call(body, fmt)
        found.append(FoundCall(written, name, arguments))
    return codec.decode(outside).strip(), found


def parse_call(body: str, fmt: ToolCallFormat) -> tuple[str | None, dict[str, Any] | None]:
    """(name, arguments) of one call's body; arguments None when only the name reads (they are
    to be written again), both None when not even that does."""
    text = body.strip()
    try:  # a JSON-style body: {"name": ..., "arguments": {...}}
        value = json.loads(text)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            arguments = value.get("arguments", value.get("parameters", {}))
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            return (value["name"], arguments) if isinstance(arguments, dict) else (None, None)
    except (ValueError, RecursionError):
        pass
    if fmt.prefix and text.startswith(fmt.prefix.strip()):
        text = text[len(fmt.prefix.strip()) :]
    brace = text.find("{")
    if brace <= 0:
        return None, None
    name = text[:brace].strip()
    try:
        arguments, rest = _Notation(fmt.quote).value(text[brace:], 0)
    except ValueError:
        return name, None
    if rest.strip() or not isinstance(arguments, dict):
        return name, None
    return name, arguments


class _Notation:
    """Gemma 4's argument notation: JSON with bare keys and its own string quote."""

    def __init__(self, quote: str):
        self.quote = quote

    def value(self, text: str, depth: int) -> tuple[Any, str]:
        if depth > MAX_DEPTH:
            raise ValueError("nested too deep")
        text = text.lstrip()
        if text.startswith(self.quote):
            end = text.find(self.quote, len(self.quote))
            if end < 0:
                raise ValueError("unterminated string")
            return text[len(self.quote) : end], text[end + len(self.quote) :]
        if text.startswith("{"):
            return self._items(text[1:], "}", depth, keyed=True)
        if text.startswith("["):
            return self._items(text[1:], "]", depth, keyed=False)
        token = text[: next((i for i, c in enumerate(text) if c in ",}]"), len(text))].strip()
        rest = text[text.find(token) + len(token) :]
        words = {"true": True, "false": False, "null": None, "None": None, "True": True, "False": False}
        if token in words:
            return words[token], rest
        try:
            number = float(token) if any(c in token for c in ".eE") else int(token)
        except ValueError:
            raise ValueError(f"not a value: {token[:20]!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError("not a finite number")
        return number, rest

    def _items(self, text: str, close: str, depth: int, keyed: bool) -> tuple[Any, str]:
        out: Any = {} if keyed else []
        text = text.lstrip()
        if text.startswith(close):
            return out, text[1:]
        while True:
            if keyed:
                if text.startswith(self.quote) or text.startswith('"'):
                    quote = self.quote if text.startswith(self.quote) else '"'
                    end = text.find(quote, len(quote))
                    key, text = text[len(quote) : end], text[end + len(quote) :]
                    if end < 0:
                        raise ValueError("unterminated key")
                else:
                    colon = text.find(":")
                    if colon <= 0:
                        raise ValueError("a key without a value")
                    key, text = text[:colon].strip(), text[colon:]
                text = text.lstrip()
                if not text.startswith(":"):
                    raise ValueError("a key without a value")
                item, text = self.value(text[1:], depth + 1)
                out[key] = item
            else:
                item, text = self.value(text, depth + 1)
                out.append(item)
            text = text.lstrip()
            if text.startswith(","):
                text = text[1:].lstrip()
            elif text.startswith(close):
                return out, text[1:]
            else:
                raise ValueError("expected a comma or the end")


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
