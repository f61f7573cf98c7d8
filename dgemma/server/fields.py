"""Reading typed fields of a JSON request body; every problem an ApiError with an OpenAI-style body."""

from __future__ import annotations

import math
from typing import Any


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def int_field(body: dict, name: str, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"`{name}` must be an integer, got {type(value).__name__}", name)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ApiError(400, f"`{name}` must be {bound}, got {value}", name)
    return value


def bool_field(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"`{name}` must be true or false", name)
    return value


def is_number(value: Any) -> bool:
    """A finite real number (not a bool, not an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_ids(items: list) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) for t in items)


def dict_field(body: dict, key: str) -> dict:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


MAX_DEPTH = 64


def check_text(value: Any, path: str = "", depth: int = 0) -> None:
    """Every string in a parsed JSON body (keys too) must be valid Unicode: a lone surrogate such as
    "\\ud800" parses as JSON but cannot be encoded or tokenized. Nesting is bounded as well."""
    if depth > MAX_DEPTH:
        raise ApiError(
            400, f"the request body nests deeper than {MAX_DEPTH} levels", path.split(".")[0] or None
        )
    if isinstance(value, str):
        _check_string(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(key, path)
            check_text(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{path}[{i}]", depth + 1)


def _check_string(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        param = path.split(".")[0].split("[")[0] or None
        raise ApiError(400, f"`{path or 'a key'}` holds invalid Unicode (a lone surrogate)", param) from None
