"""Candidate layouts: where a schema leaves a choice, the model makes it.

A schema's layout has choice points where more than one layout validates: an `anyOf` / `oneOf`
branch or a type list (`Optional[X]`: X or null), an optional property (written or left out), an
array's length within `minItems` / `maxItems`. The rules (normalize.py, schema.py) take the first
branch, write every optional property and write 3 items; each candidate changes ONE point from
that (shallow points first, then each point's further options), up to `limit` layouts in all,
identical layouts dropped. Every candidate is a complete layout that validates like the rules' one.

All candidates run the first round as one batch, each scored by how well the model agrees with
its literal text: the mean log-probability, at temperature 1, of its clamped tokens at the last
denoising step of each canvas (`CanvasConstraint.fixed_logprob`), the model seeing that layout's
keys and its own values. The best-scoring one (ties: the rules' one) goes on to the next rounds
from its own first-round tokens; the others are dropped.
"""

from __future__ import annotations

from typing import Any

from dgemma.structured.schema import Layout, compile_schema

DEFAULT_CANDIDATES = 4
MAX_CANDIDATES = 16
# a schema whose normalization takes more work than this gets no candidates: each is a fresh
# compilation, and the few schemas that large (SchemaStore's biggest) would take seconds
MAX_CANDIDATE_WORK = 20_000
TRIES_PER_CANDIDATE = 3  # compilations tried per candidate wanted (some give no new layout)


def alternatives(schema: Any, base: Layout, limit: int) -> list[tuple[dict[str, int], Layout]]:
    """Up to `limit - 1` layouts of `schema` other than `base` (its rules' layout), each with the
    one choice that made it (`{"$.a?": 1}`: property a left out)."""
    if limit <= 1 or base.work > MAX_CANDIDATE_WORK or not base.points:
        return []
    options = sorted(
        ((k, point) for point, n in base.points.items() for k in range(1, n)),
        key=lambda kp: (kp[0], _depth(kp[1])),
    )
    seen = {signature(base)}
    out: list[tuple[dict[str, int], Layout]] = []
    for k, point in options[: TRIES_PER_CANDIDATE * limit]:
        try:
            layout = compile_schema(schema, {point: k})
        except ValueError:  # that option does not lay out here (a branch the rules passed over)
            continue
        if (key := signature(layout)) not in seen:
            seen.add(key)
            out.append(({point: k}, layout))
            if len(out) == limit - 1:
                break
    return out


def signature(layout: Layout) -> tuple:
    return tuple(p if isinstance(p, str) else (p.kind, p.path, p.options) for p in layout.parts)


def best(scores: list[tuple[float, int]]) -> int:
    """The candidate with the highest mean clamped-token log-probability (ties: the earlier)."""
    means = [total / count if count else float("-inf") for total, count in scores]
    return max(range(len(means)), key=lambda k: (means[k], -k))


def _depth(point: str) -> int:
    return point.count(".") + point.count("[")
