"""The linear temperature schedule of the reference's `LinearTemperatureScheduleLogitsProcessor`."""

from __future__ import annotations

import torch


def linear_temperature(steps_remaining: int, max_steps: int, t_min: float, t_max: float) -> torch.Tensor:
    """t_min + (t_max - t_min) * n / N, n counting the steps still to run (N at the first step, 1 at the last).

    Returned as a 0-dim float32 tensor computed as the reference computes it (the step is an int32
    tensor there), so logits divided by it round exactly as the reference's do.
    """
    step = torch.tensor(steps_remaining, dtype=torch.int32)
    return t_min + ((t_max - t_min) * (step / max_steps))
