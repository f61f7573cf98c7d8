"""Numeric keywords of a schema checked before layout: length, item and property counts, and number
bounds (inclusive, exclusive in draft 4 and draft 6 spellings, integer `multipleOf`)."""

from __future__ import annotations

import math
from typing import Any

MAX_ABS_NUMBER = 2**53  # |minimum|, |maximum|: integers a float holds exactly


def number_bounds(schema: dict, path: str, kind: str) -> dict:
    """A number slot's schema with its bounds checked: inclusive `minimum` / `maximum`, exclusive
    ones (draft 6 numbers, or draft 4 booleans next to the inclusive ones), integer `multipleOf`.
    For integers the exclusive bounds become inclusive ones; a range with no valid value is refused."""
    integer = kind == "integer"
    out = dict(schema)
    for key, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = schema.get(key)
        if isinstance(flag, bool):  # draft 4
            out.pop(key)
            if flag and inclusive in schema:
                out[key] = schema[inclusive]
                out.pop(inclusive)
    lo, hi = bounds(out, path, "minimum", "maximum", integer=False, limit=MAX_ABS_NUMBER)
    xlo, xhi = bounds(out, path, "exclusiveMinimum", "exclusiveMaximum", integer=False, limit=MAX_ABS_NUMBER)
    if integer:
        lows = [math.ceil(v) for v in (lo,) if v is not None] + [
            math.floor(v) + 1 for v in (xlo,) if v is not None
        ]
        highs = [math.floor(v) for v in (hi,) if v is not None] + [
            math.ceil(v) - 1 for v in (xhi,) if v is not None
        ]
        out = {k: v for k, v in out.items() if k not in ("exclusiveMinimum", "exclusiveMaximum")}
        if lows:
            out["minimum"] = max(lows)
        if highs:
            out["maximum"] = min(highs)
        step = out.get("multipleOf")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0 or step != int(step):
                raise ValueError(
                    f"json_schema at {path}: unsupported keyword 'multipleOf' {step!r} (a positive whole number)"
                )
            if not finite(step, MAX_ABS_NUMBER):
                raise ValueError(f"json_schema at {path}: `multipleOf` is too large")
            out["multipleOf"] = int(step)
        low, high = out.get("minimum"), out.get("maximum")
        if (
            low is not None
            and high is not None
            and (low > high or (step and _first_multiple(low, int(step)) > high))
        ):
            raise ValueError(f"json_schema at {path}: no integer satisfies the bounds")
        return out
    step = out.get("multipleOf")
    if step is not None:
        if (
            isinstance(step, bool)
            or not isinstance(step, int | float)
            or not finite(step, MAX_ABS_NUMBER)
            or step <= 0
        ):
            raise ValueError(f"json_schema at {path}: `multipleOf` must be a positive number, got {step!r}")
        if step < MIN_STEP:
            raise ValueError(f"json_schema at {path}: `multipleOf` {step!r} is below {MIN_STEP}")
    low = max([v for v in (lo, xlo) if v is not None], default=None)
    high = min([v for v in (hi, xhi) if v is not None], default=None)
    if step is not None and low is not None and high is not None and not multiples(out, low, high, step, 1):
        raise ValueError(f"json_schema at {path}: no multiple of {step} satisfies the bounds")
    if (
        low is not None
        and high is not None
        and (low > high or (low == high and (xlo is not None or xhi is not None)))
    ):
        raise ValueError(f"json_schema at {path}: no number satisfies the bounds")
    return out


MIN_STEP = 1e-6  # smaller steps write more digits than a number slot holds


def multiples(schema: dict, near_low: float, near_high: float, step: float, count: int) -> list[float]:
    """Up to `count` values between the two ends that `schema`'s bounds and `multipleOf` accept (as
    the jsonschema package checks them): whole multiples k * step, written to the step's decimals."""
    from dgemma.structured.validate import number_ok

    decimals = max(0, -math.floor(math.log10(step))) + 2
    first, last = math.ceil(near_low / step), math.floor(near_high / step)
    out = []
    for k in range(first, min(last, first + 50 * count) + 1):
        for v in (k * step, round(k * step, decimals)):
            if number_ok(v, schema) and v not in out:
                out.append(v)
        if len(out) >= count:
            break
    return out


def _first_multiple(low: int, step: int) -> int:
    return -(-low // step) * step


def finite(v: Any, limit: float) -> bool:
    """A number whose magnitude is at most `limit` (huge integers and floats, inf and nan are not)."""
    try:
        return math.isfinite(float(v)) and abs(v) <= limit
    except OverflowError:
        return False


def bounds(
    schema: dict, path: str, low: str, high: str, integer: bool, limit: float = MAX_ABS_NUMBER
) -> tuple[Any, Any]:
    values = []
    for key in (low, high):
        v = schema.get(key)
        ok = v is None or (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and finite(v, limit)
            and (not integer or v == int(v))
        )
        if not ok:
            kind = "whole number" if integer else "number"
            raise ValueError(
                f"json_schema at {path}: `{key}` must be a {kind} of magnitude at most {limit:g}"
            )
        values.append(None if v is None else (int(v) if integer else v))
    if values[0] is not None and values[1] is not None and values[0] > values[1]:
        raise ValueError(f"json_schema at {path}: `{low}` is greater than `{high}`")
    return values[0], values[1]
