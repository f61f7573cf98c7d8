"""Rules every entry point applies the same way when it turns prompts into engine requests."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

SEED_RANGE = 2**63  # seeds are taken modulo this; a random seed is drawn from [0, SEED_RANGE)


def seeds_for(seed: int | Sequence[int] | None, n: int) -> list[int]:
    """Per-request seeds: an int S gives S, S + 1, ... (modulo SEED_RANGE); a list gives one seed
    per request; None draws one random base and counts up from it."""
    if seed is None:
        base = secrets.randbits(63)
        return [(base + i) % SEED_RANGE for i in range(n)]
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [(seed + i) % SEED_RANGE for i in range(n)]
    if isinstance(seed, str | bytes) or not isinstance(seed, Sequence):
        raise ValueError(f"`seed` must be an int, a list of {n} ints, or None")
    seeds = list(seed)
    if len(seeds) != n or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"`seed` must be an int or a list of {n} ints")
    return [s % SEED_RANGE for s in seeds]
