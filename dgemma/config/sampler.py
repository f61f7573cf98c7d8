"""Sampler and generation defaults, as `generation_config.json` gives them. No torch."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from dgemma.config.model import ModelConfig, _as_id_tuple


def _meta(help_text: str) -> dict[str, str]:
    return {"help": help_text}


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

    def __post_init__(self) -> None:
        _check_int(self, "max_denoising_steps", minimum=1)
        _check_int(self, "stability_threshold", minimum=0)
        for name in ("entropy_bound", "t_min", "t_max", "confidence_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}")
        if self.entropy_bound <= 0:
            raise ValueError(f"`entropy_bound` must be > 0, got {self.entropy_bound}")
        if self.confidence_threshold <= 0:
            raise ValueError(f"`confidence_threshold` must be > 0, got {self.confidence_threshold}")
        if self.t_min < 0:
            raise ValueError(f"`t_min` must be >= 0, got {self.t_min}")
        if self.t_max <= 0 or self.t_max < self.t_min:
            raise ValueError(f"`t_max` must be > 0 and >= t_min ({self.t_min}), got {self.t_max}")

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


def _check_int(obj: Any, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")


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
