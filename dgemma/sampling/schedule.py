"""The linear temperature schedule of the reference's `LinearTemperatureScheduleLogitsProcessor`."""

from __future__ import annotations


def linear_temperature(steps_remaining: int, max_steps: int, t_min: float, t_max: float) -> float:
    """t_min + (t_max - t_min) * n / N, where n counts the steps still to run (N at the first step, 1 at the last)."""
    return t_min + (t_max - t_min) * (steps_remaining / max_steps)
