"""JSONL training data: prompt/response pairs or chat messages, tokenized with the checkpoint's template.

Each line is {"prompt": str, "response": str} or {"messages": [{"role", "content"}, ...]}. For
chats the prompt is every turn before the last, rendered by the chat template with the generation
prompt, and the loss covers only the final assistant turn. A response ends with the checkpoint's
first end-of-sequence token. Examples are read in a seeded order, epoch after epoch, by index.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from dgemma.text import TextCodec
from dgemma.train.batch import Example


def read_jsonl(path: Path, codec: TextCodec, eos_id: int, max_tokens: int) -> list[Example]:
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    examples = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err})") from None
        examples.append(_example(record, codec, eos_id, f"{path}:{n}"))
        if len(examples[-1].prompt) + len(examples[-1].response) > max_tokens:
            raise ValueError(f"{path}:{n}: example is longer than the model's {max_tokens} positions")
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples


def _example(record: object, codec: TextCodec, eos_id: int, where: str) -> Example:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: each line must be a JSON object")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
            raise ValueError(f"{where}: `messages` must end with an assistant turn after at least one other")
        prompt = codec.encode_chat(messages[:-1], add_generation_prompt=True)
        answer = messages[-1].get("content")
    elif isinstance(record.get("prompt"), str) and isinstance(record.get("response"), str):
        prompt = (
            codec.encode_chat([{"role": "user", "content": record["prompt"]}])
            if codec.has_chat_template
            else codec.encode_raw(record["prompt"])
        )
        answer = record["response"]
    else:
        raise ValueError(f"{where}: expected `prompt` and `response` strings, or `messages`")
    if not isinstance(answer, str) or not answer:
        raise ValueError(f"{where}: the response must be non-empty text")
    return Example(prompt, codec.encode_plain(answer) + [eos_id])


class ShuffledData:
    """Examples in a seeded order per epoch; micro-batch `index` is always the same examples."""

    def __init__(self, examples: list[Example], seed: int):
        self.items, self.seed = examples, seed

    def examples(self, index: int, count: int) -> list[Example]:
        out = []
        for k in range(index * count, (index + 1) * count):
            epoch, offset = divmod(k, len(self.items))
            order = random.Random(f"dgemma-data-{self.seed}-{epoch}").sample(
                range(len(self.items)), len(self.items)
            )
            out.append(self.items[order[offset]])
        return out
