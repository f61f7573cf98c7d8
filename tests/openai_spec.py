"""Response shapes of OpenAI's published API spec (openai-openapi, components/schemas), written out
as JSON Schema for the fields the spec requires: names, types, nullability and enums. Extensions
(drafts, diffusion usage figures) are additive, so extra properties are allowed everywhere."""

from __future__ import annotations

NULLABLE_STR = {"type": ["string", "null"]}
FINISH = {"enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]}
USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {k: {"type": "integer"} for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
}
HEAD = {
    "id": {"type": "string"},
    "created": {"type": "integer"},
    "model": {"type": "string"},
    "system_fingerprint": NULLABLE_STR,
}


def _envelope(obj: str, usage: dict, choice: dict) -> dict:
    """A response object of the spec: id, created, model, object, usage and a list of choices."""
    return {
        "type": "object",
        "required": ["id", "choices", "created", "model", "object"],
        "properties": {
            **HEAD,
            "object": {"const": obj},
            "usage": usage,
            "choices": {"type": "array", "items": choice},
        },
    }


# CreateChatCompletionResponse; its message is ChatCompletionResponseMessage (with tool calls)
CHAT_COMPLETION = _envelope(
    "chat.completion",
    USAGE,
    {
        "type": "object",
        "required": ["finish_reason", "index", "message", "logprobs"],
        "properties": {
            "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]},
            "index": {"type": "integer"},
            "logprobs": {"type": ["object", "null"]},
            "message": {
                "type": "object",
                "required": ["content", "refusal", "role"],
                "properties": {
                    "content": {"type": ["string", "null"]},
                    "refusal": {"type": ["string", "null"]},
                    "role": {"const": "assistant"},
                    "tool_calls": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "type", "function"],
                            "properties": {
                                "id": {"type": "string"},
                                "type": {"const": "function"},
                                "function": {
                                    "type": "object",
                                    "required": ["name", "arguments"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "arguments": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
)

# CreateChatCompletionStreamResponse; the delta is ChatCompletionStreamResponseDelta
CHAT_CHUNK = _envelope(
    "chat.completion.chunk",
    {"anyOf": [USAGE, {"type": "null"}]},
    {
        "type": "object",
        "required": ["delta", "finish_reason", "index"],
        "properties": {
            "delta": {
                "type": "object",
                "properties": {
                    "content": {"type": ["string", "null"]},
                    "refusal": {"type": ["string", "null"]},
                    "role": {"enum": ["developer", "system", "user", "assistant", "tool"]},
                    "tool_calls": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["index"],
                            "properties": {
                                "index": {"type": "integer"},
                                "id": {"type": "string"},
                                "type": {"const": "function"},
                                "function": {"type": "object"},
                            },
                        },
                    },
                },
            },
            "finish_reason": {
                "anyOf": [
                    {"enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]},
                    {"type": "null"},
                ]
            },
            "index": {"type": "integer"},
            "logprobs": {"type": ["object", "null"]},
        },
    },
)


def _completion(finish: dict, usage: dict) -> dict:
    choice = {
        "type": "object",
        "required": ["finish_reason", "index", "logprobs", "text"],
        "properties": {
            "finish_reason": finish,
            "index": {"type": "integer"},
            "logprobs": {"type": ["object", "null"]},
            "text": {"type": "string"},
        },
    }
    return _envelope("text_completion", usage, choice)


COMPLETION = _completion({"enum": ["stop", "length", "content_filter"]}, USAGE)  # CreateCompletionResponse
# the spec streams CreateCompletionResponse objects; finish_reason is null until a choice ends
COMPLETION_CHUNK = _completion(
    {"enum": ["stop", "length", "content_filter", None]}, {"anyOf": [USAGE, {"type": "null"}]}
)

MODEL = {  # Model
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}

MODELS = {  # ListModelsResponse
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL}},
}

ERROR = {  # ErrorResponse
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "param", "type"],
            "properties": {
                "code": NULLABLE_STR,
                "message": {"type": "string"},
                "param": NULLABLE_STR,
                "type": {"type": "string"},
            },
        }
    },
}
