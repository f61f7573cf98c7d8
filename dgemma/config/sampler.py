"""Sampler and generation defaults, as `generation_config.json` gives them. No torch."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from dgemma.config.model import ModelConfig, _as_id_tuple


def _meta(help_text: str) -> dict[str, str]:
    return {"help": help_text}


# Bounds on every sampler setting, checked before any work: they keep the schedule well conditioned
# (logits / temperature stay finite in float32) and every per-request allocation small.
MAX_DENOISING_STEPS = 1024
MIN_TEMPERATURE = 1e-3  # t_max below this rounds logits / t to inf in float32 for ordinary logits
MAX_TEMPERATURE = 100.0
DRAWS = ("fast", "reference")
MAX_THRESHOLD = 1e6  # entropy_bound, confidence_threshold (entropies are at most log(vocab) per token)


def _finite(name: str, value: Any) -> float:
    """`value` as a float if it is a finite real number (a bool is not; nor an int too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}"[:200])
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"`{name}` must be a finite number; it is too large") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class SamplerConfig:
    """Knobs of the entropy-bound diffusion sampler; CLI flags and request fields derive from these."""

    max_denoising_steps: int = field(default=48, metadata=_meta("denoising steps per canvas at most"))
    entropy_bound: float = field(
        default=0.1, metadata=_meta("entropy budget for accepting tokens per step (higher accepts more)")
    )
    t_min: float = field(default=0.4, metadata=_meta("temperature at the last denoising step"))
    t_max: float = field(default=0.8, metadata=_meta("temperature at the first denoising step"))
    stability_threshold: int = field(
        default=1, metadata=_meta("steps the argmax canvas must stay unchanged before stopping (0: no check)")
    )
    confidence_threshold: float = field(
        default=0.005, metadata=_meta("mean token entropy under which a stable canvas stops")
    )
    draw: str = field(
        default="fast",
        metadata=_meta(
            "how tokens are drawn: fast (inverse CDF, one uniform per position) or reference "
            "(torch.multinomial's draws, as transformers makes them: same seed, same tokens)"
        ),
    )

    def __post_init__(self) -> None:
        _check_int(self, "max_denoising_steps", 1, MAX_DENOISING_STEPS)
        _check_int(self, "stability_threshold", 0, MAX_DENOISING_STEPS)
        if self.draw not in DRAWS:
            raise ValueError(f"`draw` must be one of {', '.join(DRAWS)}, got {self.draw!r}"[:200])
        values = {
            n: _finite(n, getattr(self, n))
            for n in ("entropy_bound", "t_min", "t_max", "confidence_threshold")
        }
        for name in ("entropy_bound", "confidence_threshold"):
            if not 0 < values[name] <= MAX_THRESHOLD:
                raise ValueError(f"`{name}` must be in (0, {MAX_THRESHOLD:g}], got {values[name]:g}")
        if not 0 <= values["t_min"] <= MAX_TEMPERATURE:
            raise ValueError(f"`t_min` must be in [0, {MAX_TEMPERATURE:g}], got {values['t_min']:g}")
        if not MIN_TEMPERATURE <= values["t_max"] <= MAX_TEMPERATURE or values["t_max"] < values["t_min"]:
            raise ValueError(
                f"`t_max` must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] and >= t_min "
                f"({values['t_min']:g}), got {values['t_max']:g}"
            )

    @classmethod
    def from_generation_config(cls, gen: dict[str, Any]) -> SamplerConfig:
        """Read the sampler defaults from a parsed `generation_config.json`; unset keys keep our defaults."""
        values: dict[str, Any] = {}
        sampler = gen.get("sampler_config")
        if isinstance(sampler, dict) and sampler.get("entropy_bound") is not None:
            values["entropy_bound"] = sampler["entropy_bound"]
        for f in fields(cls):
            if f.name != "entropy_bound" and gen.get(f.name) is not None:
                values[f.name] = gen[f.name]
        return cls(**values)

    def replace(self, **overrides: Any) -> SamplerConfig:
        """A copy with the given fields changed; unknown names raise `ValueError`."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown sampler setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _check_int(obj: Any, name: str, minimum: int, maximum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
        raise ValueError(f"`{name}` must be an integer in [{minimum}, {maximum}], got {shown}")


@dataclass(frozen=True)
class GenerationDefaults:
    """Length and special-token defaults from `generation_config.json` (falling back to config.json)."""

    max_new_tokens: int = 256
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @classmethod
    def from_generation_config(cls, gen: dict[str, Any], model: ModelConfig) -> GenerationDefaults:
        eos = gen.get("eos_token_id")
        pad = gen.get("pad_token_id")
        return cls(
            max_new_tokens=int(gen.get("max_new_tokens") or 256),
            eos_token_ids=_as_id_tuple(eos) if eos is not None else model.eos_token_ids,
            pad_token_id=pad if pad is not None else model.pad_token_id,
        )
