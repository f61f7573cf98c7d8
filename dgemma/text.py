"""Text in and out: the checkpoint's `tokenizer.json`, its chat template, and its special tokens.

The chat template comes from `chat_template.jinja` or `tokenizer_config.json`'s `chat_template`
and is rendered in a sandboxed Jinja environment set up as Hugging Face renders templates. Special
token ids always come from the checkpoint's files, never from literals in code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from dgemma.config.files import CheckpointError, inside, read_json

Message = dict[str, Any]
_ROLES = ("system", "user", "assistant", "tool", "developer")
# names a message's reasoning goes by; templates read `reasoning_content` (gpt-oss: `thinking`),
# so both are filled from whichever the caller set, as transformers fills them
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# what the renderer itself passes; `chat_template_kwargs` cannot replace these
_RESERVED = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token", "pad_token"})


@dataclass(frozen=True)
class SpecialTokens:
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # older configs store AddedToken dicts
        return value.get("content")
    return value if isinstance(value, str) else None


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


class TextCodec:
    """Tokenizer plus chat template of one checkpoint."""

    def __init__(self, tokenizer: Tokenizer, chat_template: str | None, special: SpecialTokens):
        self.tokenizer = tokenizer
        self.special = special
        self.chat_template = chat_template
        self._template = None
        if chat_template is not None:
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", _Generation]
            )
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._template = env.from_string(chat_template)
            except jinja2.TemplateSyntaxError as err:
                raise CheckpointError(f"the chat template does not parse: {err}") from None

    @classmethod
    def from_dir(cls, directory: str | Path) -> TextCodec:
        directory = Path(directory)
        path = inside(directory, "tokenizer.json")
        if not path.is_file():
            raise CheckpointError(f"missing file: {path}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:
            raise CheckpointError(f"{path} is not a readable tokenizer: {err}") from None
        config = read_json(inside(directory, "tokenizer_config.json"), required=False)
        template_file = inside(directory, "chat_template.jinja")
        template = template_file.read_text() if template_file.is_file() else config.get("chat_template")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        special = SpecialTokens(
            bos_token=_token_text(config.get("bos_token")),
            eos_token=_token_text(config.get("eos_token")),
            pad_token=_token_text(config.get("pad_token")),
        )
        return cls(tokenizer, template, special)

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def render_chat(
        self,
        messages: list[Message],
        add_generation_prompt: bool = True,
        tools: list | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """The chat template applied to messages (and the request's `tools`, which templates that
        know tools render), as text, the way transformers' apply_chat_template renders it.
        `template_kwargs` are extra template variables (`enable_thinking`, say)."""
        check_messages(messages)
        extra = check_template_kwargs(template_kwargs)
        if self._template is None:
            raise ValueError(
                "this checkpoint has no chat template; send the text as is "
                "(Python: raw=True; CLI: --raw; server: /v1/completions)"
            )
        try:
            return self._template.render(
                **extra,
                messages=[_alias_reasoning(m) for m in messages],
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.special.bos_token or "",
                eos_token=self.special.eos_token or "",
                pad_token=self.special.pad_token or "",
            )
        except jinja2.exceptions.TemplateError as err:
            raise ValueError(f"the chat template rejected the messages: {err}") from None
        except (ArithmeticError, TypeError, LookupError, AttributeError, RecursionError, MemoryError) as err:
            # a template that computes past the sandbox's limits (e.g. range() over 100,000 items)
            raise ValueError(f"the chat template failed: {type(err).__name__}: {str(err)[:200]}") from None

    def encode_chat(
        self,
        messages: list[Message],
        add_generation_prompt: bool = True,
        tools: list | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]:
        # the template writes the special tokens itself, so the tokenizer must not add them again
        text = self.render_chat(messages, add_generation_prompt, tools, template_kwargs)
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_plain(self, text: str) -> list[int]:
        """Text as token ids with no special tokens added (for pieces placed inside a sequence)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_raw(self, text: str) -> list[int]:
        """Plain text, with whatever special tokens the tokenizer's post-processor adds (e.g. BOS)."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def special_ids(self) -> set[int]:
        """Ids of the tokenizer's special tokens (never generated inside an infill gap)."""
        return {i for i, tok in self.tokenizer.get_added_tokens_decoder().items() if tok.special}

    def pieces(self, ids: list[int]) -> list[str]:
        """Each token decoded alone, special tokens shown (a canvas drawn position by position)."""
        return self.tokenizer.decode_batch([[t] for t in ids], skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)


def check_messages(messages: Any) -> None:
    """Raise ValueError naming the first problem in a chat message list."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` must be a non-empty list of {role, content} objects")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ValueError(f"`messages[{i}]` must be an object with `role` and `content`")
        if msg.get("role") not in _ROLES:
            raise ValueError(
                f"`messages[{i}].role` must be one of {', '.join(_ROLES)}, got {msg.get('role')!r}"
            )
        content = msg.get("content")
        if content is None and msg["role"] == "assistant" and msg.get("tool_calls"):
            continue  # a turn that only calls tools
        if not isinstance(content, str | list) or (
            isinstance(content, str) and not content.strip() and msg["role"] == "user"
        ):
            raise ValueError(f"`messages[{i}].content` must be non-empty text")


def check_template_kwargs(kwargs: Any) -> dict[str, Any]:
    """`chat_template_kwargs`: an object of extra template variables, none of the renderer's own."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise ValueError("`chat_template_kwargs` must be an object whose keys are variable names")
    taken = sorted(_RESERVED & set(kwargs))
    if taken:
        raise ValueError(f"`chat_template_kwargs` cannot set {taken[0]!r}; it has its own field")
    return kwargs


def _alias_reasoning(message: Message) -> Message:
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` (templates that mark assistant tokens for training
    masks): rendered as its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
