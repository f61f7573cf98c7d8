"""`response_format: {"type": "json_object"}`: the model's answer as a JSON object, always.

The model writes freely (no schema means no layout to clamp into the canvas); the finished text is
then turned into an object, the first rule that applies winning:

1. `as_generated`: the text holds a JSON object (from its first `{`, as `json.JSONDecoder` reads
   it): that object's text, exactly as the model wrote it; text around it is dropped.
2. `repaired`: json-repair (a library for LLM output) recovers a non-empty object from the text
   from its first `{` (missing quotes, commas, brackets, a cut-off end).
3. `wrapped`: otherwise `{"text": <the whole answer>}`, so nothing the model wrote is lost.
"""

from __future__ import annotations

import json
from enum import StrEnum

import json_repair


class ObjectMethod(StrEnum):
    AS_GENERATED = "as_generated"
    REPAIRED = "repaired"
    WRAPPED = "wrapped"


def as_json_object(text: str) -> tuple[str, ObjectMethod]:
    """(JSON text of an object, how it was obtained) for a model's answer `text`."""
    start = text.find("{")
    if start >= 0:
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nesting past Python's limit
            value = None
        if isinstance(value, dict):
            return text[start:end], ObjectMethod.AS_GENERATED
        try:
            repaired = json_repair.loads(text[start:])
            if isinstance(repaired, dict) and repaired:
                return json.dumps(repaired, ensure_ascii=False), ObjectMethod.REPAIRED
        except Exception:  # noqa: BLE001 - the library's failure modes (recursion, ...) are not documented
            pass
    return json.dumps({"text": text.strip()}, ensure_ascii=False), ObjectMethod.WRAPPED
