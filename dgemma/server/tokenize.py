"""The tokenizer over HTTP, in vLLM's shape: GET /tokenizer_info, POST /tokenize, POST /detokenize.

Clients that count or build tokens themselves use these instead of loading the tokenizer
(lm-evaluation-harness's `tokenizer_backend=remote`, which it picks on its own when they answer).
"""

from __future__ import annotations

from typing import Any

from dgemma.api import Model
from dgemma.server.fields import ApiError, bool_field, is_ids
from dgemma.text import check_messages


def tokenizer_info(model: Model, capacity: int) -> dict[str, Any]:
    codec = _codec(model)
    special = codec.special
    return {
        "tokenizer_class": "tokenizers.Tokenizer",
        "bos_token": special.bos_token,
        "eos_token": special.eos_token,
        "pad_token": special.pad_token,
        "chat_template": codec.chat_template,
        "model_max_length": capacity,
        "vocab_size": model.config.vocab_size,
    }


def tokenize(body: Any, model: Model, capacity: int) -> dict[str, Any]:
    """{prompt, add_special_tokens?} or {messages, add_generation_prompt?} -> {tokens, count, max_model_len}."""
    codec = _codec(model)
    if not isinstance(body, dict) or set(body) - {
        "model",
        "prompt",
        "messages",
        "add_special_tokens",
        "add_generation_prompt",
    }:
        raise ApiError(400, "`/tokenize` takes `prompt` (with `add_special_tokens`) or `messages`", "prompt")
    if ("prompt" in body) == ("messages" in body):
        raise ApiError(400, "send exactly one of `prompt` and `messages`", "prompt")
    if "prompt" in body:
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise ApiError(400, "`prompt` must be a string", "prompt")
        special = body.get("add_special_tokens")
        tokens = (
            codec.encode_raw(prompt)
            if special is None or bool_field(body, "add_special_tokens")
            else codec.encode_plain(prompt)
        )
    else:
        messages = body["messages"]
        try:
            check_messages(messages)
            tokens = codec.encode_chat(messages, body.get("add_generation_prompt") is not False)
        except ValueError as err:
            raise ApiError(400, str(err), "messages") from None
    return {"tokens": tokens, "count": len(tokens), "max_model_len": capacity}


def detokenize(body: Any, model: Model) -> dict[str, Any]:
    codec = _codec(model)
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if (
        not isinstance(tokens, list)
        or not is_ids(tokens)
        or any(not 0 <= t < model.config.vocab_size for t in tokens)
    ):
        raise ApiError(
            400, f"`tokens` must be a list of token ids in 0..{model.config.vocab_size - 1}", "tokens"
        )
    return {"prompt": codec.decode(tokens)}


def _codec(model: Model):
    if model.codec is None:
        raise ApiError(400, "this model has no tokenizer.json", "model")
    return model.codec
