"""The reasoning channel: the block a thinking model writes before its answer, split off the answer.

The markers are read from the checkpoint's own chat template and tokenizer, never written in
code. A template with a thinking switch closes its generation prompt, with thinking off, with an
empty reasoning block that it leaves out with thinking on (Gemma 4: `<|channel>thought\\n<channel|>`;
Qwen 3: `<think>\\n\\n</think>\\n\\n`). That block's first added token opens reasoning, its last one
closes it, and the text between (Gemma 4's channel name, `thought`) is a label, not reasoning.

The split works on token ids, so it holds across canvases: tokens between an opener and its
closer are reasoning, all others are content, and the markers are in neither. `split` gives the
same answer on any prefix of a generation as text that only grows (reasoning and content are each
a prefix of what the whole generation gives), which is what streaming sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dgemma.generation.markers import marked_blocks

if TYPE_CHECKING:
    from dgemma.text import TextCodec

_PROBE = [{"role": "user", "content": "Hi"}]
_HELD = " \t\r\n\ufffd"  # held back at a growing end: whitespace that may be trailing, a split character


@dataclass(frozen=True)
class ReasoningFormat:
    start: int  # token id opening a reasoning block
    end: int  # token id closing it
    label: str = ""  # what the template writes after the opener (stripped), e.g. "thought"

    @classmethod
    def of(cls, codec: TextCodec | None) -> ReasoningFormat | None:
        """The format the checkpoint's template and tokenizer define, or None (no thinking switch)."""
        if codec is None or not codec.has_chat_template:
            return None
        try:
            prompts = {
                (think, gen): codec.render_chat(_PROBE, gen, template_kwargs={"enable_thinking": think})
                for think in (False, True)
                for gen in (False, True)
            }
        except ValueError:
            return None
        off = _suffix(prompts[False, True], prompts[False, False])
        on = _suffix(prompts[True, True], prompts[True, False])
        if off is None or on is None or off == on or not off.startswith(on):
            return None
        ids = codec.encode_plain(off[len(on) :])
        added = set(codec.tokenizer.get_added_tokens_decoder())
        marks = [i for i, t in enumerate(ids) if t in added]
        if len(marks) < 2 or ids[marks[0]] == ids[marks[-1]]:
            return None
        label = codec.decode(ids[marks[0] + 1 : marks[-1]]).strip()
        return cls(ids[marks[0]], ids[marks[-1]], label)

    def opens_inside(self, prompt: list[int]) -> bool:
        """Whether `prompt` ends inside an open block (the template opened it for the model)."""
        last = {t: i for i, t in enumerate(prompt) if t in (self.start, self.end)}
        return last.get(self.start, -1) > last.get(self.end, -1)


def thinking_kwargs(
    fmt: ReasoningFormat | None, enable_thinking: bool | None, kwargs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Chat-template variables with the thinking switch set (None: the template's default);
    refused for a template without one, where it would silently do nothing."""
    if enable_thinking is None:
        return kwargs
    if not isinstance(enable_thinking, bool):
        raise ValueError(f"`enable_thinking` must be true or false, got {enable_thinking!r}")
    if fmt is None:
        raise ValueError(
            "`enable_thinking`: this checkpoint's chat template has no thinking switch "
            "(no reasoning block it opens or closes)"
        )
    return {**(kwargs or {}), "enable_thinking": enable_thinking}


@dataclass
class Split:
    reasoning: str | None  # None: the generation has no reasoning block
    content: str
    content_positions: list[int] = field(default_factory=list)  # indices of the content tokens


def split(
    codec: TextCodec, fmt: ReasoningFormat, ids: list[int], inside: bool = False, final: bool = True
) -> Split:
    """Reasoning and content of generated `ids`; `inside`: the prompt left a block open; `final`:
    no more tokens come (else an open block's growing end is held back)."""
    positions, blocks = marked_blocks(ids, fmt.start, fmt.end, inside)
    if not blocks:
        return Split(None, codec.decode([ids[i] for i in positions]), positions)
    texts = [_reasoning_text(codec.decode(b), fmt.label, closed or final) for b, closed in blocks]
    content = codec.decode([ids[i] for i in positions])
    if inside or ids[0] == fmt.start:  # the answer follows the block: not its separating whitespace
        content = content.lstrip()
    return Split("\n\n".join(t for t in texts if t), content, positions)


def _reasoning_text(text: str, label: str, whole: bool) -> str:
    text = text.lstrip()
    if label and text.startswith(label):
        text = text[len(label) :]
    elif label and label.startswith(text) and not whole:  # the label is still being written
        return ""
    return text.strip() if whole else text.lstrip().rstrip(_HELD)


def _suffix(text: str, head: str) -> str | None:
    return text[len(head) :] if text.startswith(head) else None
