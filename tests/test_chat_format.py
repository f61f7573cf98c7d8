"""Gemma 4's real chat template (tests/data/chat_templates) through dgemma's renderer, compared
with transformers' apply_chat_template on the same chats; the reasoning markers read from that
template and tokenizer; the split of reasoning from answer, on every prefix of a generation."""

from __future__ import annotations

import logging

import pytest

from dgemma.generation.reasoning import ReasoningFormat, split
from dgemma.text import TextCodec
from tests.checkpoint import make_checkpoint, make_gemma4_checkpoint

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "nullable": True},
                "hours": {"type": "array", "items": {"type": "integer"}},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat"],
                },
            },
            "required": ["city"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "now",
        "description": "The time",
        "parameters": {"type": "object", "properties": {}},
    },
}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
SHAPES = {
    "one user turn": ([{"role": "user", "content": "Hello there"}], None),
    "system prompt": (
        [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Hi"}],
        None,
    ),
    "developer prompt": (
        [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hi"}],
        None,
    ),
    "several turns": (
        [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
        ],
        None,
    ),
    "earlier reasoning in content": (
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "<|channel>thought\nadd them<channel|>It is 4."},
            {"role": "user", "content": "Thanks"},
        ],
        None,
    ),
    "earlier reasoning as a field": (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "reasoning_content": "call the tool", "tool_calls": [CALL]},
        ],
        [WEATHER],
    ),
    "reasoning under another name": (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "reasoning": "a tool knows", "tool_calls": [CALL]},
        ],
        [WEATHER],
    ),
    "image parts": (
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image"},
                    {"type": "text", "text": "Be short."},
                ],
            }
        ],
        None,
    ),
    "audio and video parts": (
        [{"role": "user", "content": [{"type": "audio"}, {"type": "video"}, {"type": "text", "text": "Describe"}]}],
        None,
    ),
    "tool declarations": ([{"role": "user", "content": "Weather in Paris?"}], [WEATHER, CLOCK]),
    "tool call and OpenAI tool result": (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
        ],
        [WEATHER],
    ),
    "tool responses on the model turn": (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [CALL],
                "tool_responses": [{"name": "get_weather", "response": {"temp": 21, "sky": "clear"}}],
            },
        ],
        [WEATHER],
    ),
    "tool call with text arguments": (
        [
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "now", "arguments": ""}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "<|channel>thought\nx<channel|>Noon."}]},
        ],
        [CLOCK],
    ),
}  # fmt: skip
TEMPLATE_FILES = ["gemma4.jinja", "gemma4-31B-it-interleaved.jinja"]


@pytest.fixture(scope="module", params=TEMPLATE_FILES)
def gemma4(request, tmp_path_factory):
    """(dgemma codec, transformers tokenizer) of a tiny checkpoint with one of the real templates."""
    from transformers import PreTrainedTokenizerFast

    logging.getLogger("transformers").setLevel(logging.ERROR)
    directory = tmp_path_factory.mktemp("gemma4")
    make_gemma4_checkpoint(directory, template=request.param)
    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    hf.chat_template = (directory / "chat_template.jinja").read_text()
    return TextCodec.from_dir(directory), hf


@pytest.mark.parametrize("thinking", [None, False, True])
@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rendering_equals_transformers_on_the_real_template(gemma4, shape, thinking, generation_prompt):
    codec, hf = gemma4
    messages, tools = SHAPES[shape]
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    ours = codec.render_chat(messages, generation_prompt, tools, kwargs)
    theirs = hf.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt, **kwargs
    )
    assert ours == theirs
    assert codec.encode_chat(messages, generation_prompt, tools, kwargs) == hf.encode(
        theirs, add_special_tokens=False
    )


def test_thinking_switch_and_earlier_reasoning_as_the_template_writes_them(gemma4):
    codec, _ = gemma4
    chat = SHAPES["earlier reasoning in content"][0]
    on = codec.render_chat(chat, template_kwargs={"enable_thinking": True})
    off = codec.render_chat(chat, template_kwargs={"enable_thinking": False})
    assert on.startswith("<bos><|turn>system\n<|think|>") and on.endswith("<|turn>model\n")
    assert off.endswith("<|turn>model\n<|channel>thought\n<channel|>") and "<|think|>" not in off
    for text in (on, off):  # the earlier turn's reasoning is gone, its answer kept
        assert "add them" not in text and "<|turn>model\nIt is 4.<turn|>" in text


def test_template_variables_are_checked(gemma4):
    codec, _ = gemma4
    chat = SHAPES["one user turn"][0]
    with pytest.raises(ValueError, match="cannot set 'messages'"):
        codec.render_chat(chat, template_kwargs={"messages": []})
    with pytest.raises(ValueError, match="must be an object"):
        codec.render_chat(chat, template_kwargs=["enable_thinking"])


def test_the_reasoning_markers_come_from_the_template_and_tokenizer(gemma4):
    codec, _ = gemma4
    fmt = ReasoningFormat.of(codec)
    assert fmt is not None and fmt.label == "thought"
    assert (codec.token_text(fmt.start), codec.token_text(fmt.end)) == ("<|channel>", "<channel|>")


def test_a_template_without_a_thinking_switch_has_no_reasoning_format(checkpoint):
    assert ReasoningFormat.of(TextCodec.from_dir(checkpoint[0])) is None


QWEN_STYLE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_another_family_markers_are_found_the_same_way(tmp_path):
    """Qwen 3's switch (thinking on by default, an empty <think> block when off) and its markers,
    which are added tokens but not special ones there."""
    from tokenizers import AddedToken

    make_checkpoint(tmp_path, template=QWEN_STYLE)
    codec = TextCodec.from_dir(tmp_path)
    codec.tokenizer.add_tokens([AddedToken(t, normalized=False) for t in ("<think>", "</think>")])
    codec.tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    fmt = ReasoningFormat.of(codec)
    assert fmt is not None and fmt.label == ""
    assert (codec.token_text(fmt.start), codec.token_text(fmt.end)) == ("<think>", "</think>")
    ids = codec.encode_plain("<think>\nsum it\n</think>\n\nIt is 4.")
    assert (split(codec, fmt, ids).reasoning, split(codec, fmt, ids).content) == ("sum it", "It is 4.")


GENERATIONS = {
    "block then answer": ("<|channel>thought\nLet me add: 2+2 is 4.\n<channel|>It is 4.<turn|>", False),
    "no block": ("It is 4.<turn|>", False),
    "unclosed block": ("<|channel>thought\nstill thinking about ", False),
    "opened by the prompt": ("the sum is 4<channel|>\n\nIt is 4.", True),
    "answer first": ("Sure. <|channel>thought\ncheck<channel|> It is 4.", False),
    "two blocks": ("<|channel>thought\none<channel|>A<|channel>thought\ntwo<channel|>B", False),
    "stray closer": ("It is<channel|> 4.", False),
    "multi-byte text": ("<|channel>thought\nça fait 4 ✓<channel|>C'est 4 ✓", False),
}


@pytest.mark.parametrize("case", list(GENERATIONS))
def test_split_grows_as_a_prefix_and_never_leaks_markers(gemma4, case):
    codec, _ = gemma4
    fmt = ReasoningFormat.of(codec)
    text, inside = GENERATIONS[case]
    ids = codec.encode_plain(text)
    whole = split(codec, fmt, ids, inside)
    for part in (whole.reasoning or "", whole.content):
        assert "<|channel>" not in part and "<channel|>" not in part and "thought\n" not in part
    for k in range(len(ids) + 1):  # what streaming has sent by then is a prefix of the whole
        partial = split(codec, fmt, ids[:k], inside, final=False)
        assert whole.content.startswith(partial.content.rstrip("\ufffd"))
        assert (whole.reasoning or "").startswith((partial.reasoning or "").rstrip("\ufffd"))
    expected = {
        "block then answer": ("Let me add: 2+2 is 4.", "It is 4."),
        "no block": (None, "It is 4."),
        "unclosed block": ("still thinking about", ""),
        "opened by the prompt": ("the sum is 4", "It is 4."),
        "answer first": ("check", "Sure.  It is 4."),
        "two blocks": ("one\n\ntwo", "AB"),
        "stray closer": (None, "It is 4."),
        "multi-byte text": ("ça fait 4 ✓", "C'est 4 ✓"),
    }[case]
    assert (whole.reasoning, whole.content) == expected
