"""Diffusion-native infilling and inline editing through clamped canvas positions.

The suffix goes into the canvas as clamped tokens right after a gap of free positions; the model
fills the gap seeing both sides. The returned text is built from the caller's own prefix and
suffix strings around the decoded gap, so everything outside the gap is kept byte for byte, however
the tokenizer would have merged tokens across the gap. With `length="auto"` several gap lengths run
as one batch and the one whose gap the model is most certain of wins: the lowest mean token entropy
over the gap's positions at the last denoising step of each canvas.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dgemma.engine.request import Request
from dgemma.generation.prompts import FieldError, RequestBuilder
from dgemma.generation.run import complete
from dgemma.model import DiffusionGemma

AUTO_LENGTHS = (2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class InfillResult:
    text: str  # prefix + fill + suffix
    fill: str  # the generated gap
    length: int  # gap length in tokens
    score: float  # mean entropy over the gap (lower: the model is more certain)
    candidates: dict[int, float]  # every tried length -> its score


@dataclass(frozen=True)
class InfillPlan:
    """The requests of one infill, a gap length each (run them together), and how to pick."""

    prefix: str
    suffix: str
    lengths: list[int]
    requests: list[Request]

    def result(self, codec, completions: list, canvas_length: int) -> InfillResult:
        """The best gap: the lowest mean entropy over its positions (ties: the shorter)."""
        scores = {
            n: _gap_entropy(c.stats.entropy_per_canvas, n, canvas_length)
            for n, c in zip(self.lengths, completions, strict=True)
        }
        best = min(self.lengths, key=lambda n: (scores[n], n))
        fill = codec.decode(completions[self.lengths.index(best)].token_ids[:best])
        return InfillResult(self.prefix + fill + self.suffix, fill, best, scores[best], scores)


def plan_infill(
    builder: RequestBuilder,
    prefix: str,
    suffix: str,
    length: int | str = "auto",
    seed: int = 0,
    candidates: tuple[int, ...] = AUTO_LENGTHS,
    **sampler: Any,
) -> InfillPlan:
    """The gap requests of an infill (`infill`'s arguments), checked before any work."""
    codec = builder.codec
    if codec is None:
        raise FieldError("infilling needs the checkpoint's tokenizer.json", "prefix")
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise FieldError("`prefix` and `suffix` must be strings", "prefix")
    lengths = _lengths(length, candidates)
    prompt = codec.encode_raw(prefix)
    suffix_ids = codec.encode_plain(suffix) if suffix else []
    banned = tuple(sorted(codec.special_ids() | set(builder.defaults.eos_token_ids)))
    temperature = sampler.pop("temperature", None)
    longest = max(lengths) + len(suffix_ids)
    base = builder.requests(
        [prompt],
        max_new_tokens=longest,
        seed=seed,
        temperature=temperature,
        eos_token_ids=(),
        sampler=sampler,
        length_field="length",
        prompt_field="prefix",
    )[0]
    return InfillPlan(prefix, suffix, lengths, [_gap_request(base, n, suffix_ids, banned) for n in lengths])


def infill(
    model: DiffusionGemma, builder: RequestBuilder, prefix: str, suffix: str, **kwargs: Any
) -> InfillResult:
    """Fill the gap between `prefix` and `suffix` (`plan_infill`'s arguments: `length` in tokens or
    "auto" to try `candidates`, `seed`, `temperature` and the SamplerConfig fields)."""
    plan = plan_infill(builder, prefix, suffix, **kwargs)
    return plan.result(builder.codec, complete(model, plan.requests), builder.canvas_length)


def edit(
    model: DiffusionGemma,
    builder: RequestBuilder,
    text: str,
    start: int,
    end: int,
    length: int | str = "auto",
    **kwargs: Any,
) -> InfillResult:
    """Regenerate text[start:end] in place (character offsets); the rest of `text` is kept byte for byte."""
    if not isinstance(text, str):
        raise FieldError("`text` must be a string", "text")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(text)):
        raise FieldError(
            f"`start` and `end` must satisfy 0 <= start <= end <= {len(text)}, got {start}, {end}", "start"
        )
    return infill(model, builder, text[:start], text[end:], length=length, **kwargs)


def _lengths(length: int | str, candidates: tuple[int, ...]) -> list[int]:
    if length == "auto":
        lengths = sorted(set(candidates))
    elif isinstance(length, int) and not isinstance(length, bool):
        lengths = [length]
    else:
        raise FieldError(f"`length` must be a positive integer or 'auto', got {length!r}", "length")
    if not lengths or any(n < 1 for n in lengths):
        raise FieldError(f"gap lengths must be positive integers, got {lengths}", "length")
    return lengths


def _gap_request(base: Request, gap: int, suffix_ids: list[int], banned: tuple[int, ...]) -> Request:
    fixed = {gap + j: tok for j, tok in enumerate(suffix_ids)}
    return replace(base, max_new_tokens=gap + len(suffix_ids), fixed=fixed, banned=banned)


def _gap_entropy(per_canvas: list[float], gap: int, canvas_length: int) -> float:
    """Mean entropy over the gap, from per-canvas means over each canvas's free positions."""
    total = weight = 0.0
    for k, value in enumerate(per_canvas):
        free = max(0, min(gap, (k + 1) * canvas_length) - k * canvas_length)
        total += value * free
        weight += free
    return total / weight if weight else 0.0
