"""Adaptive stopping: a canvas stops once its argmax is stable and the model is confident about it."""

from __future__ import annotations

import torch


def push_history(history: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """Drop the oldest of the (S, C) argmax canvases and append the newest."""
    return torch.cat([history[1:], argmax[None]], dim=0)


def is_stable(history: torch.Tensor, argmax: torch.Tensor) -> bool:
    """True when the last S argmax canvases all equal this one (always true for S == 0)."""
    return bool((history == argmax[None]).all())


def is_confident(entropy: torch.Tensor, confidence_threshold: float) -> bool:
    """True when the mean token entropy of the canvas is below the threshold."""
    return bool(entropy.mean() < confidence_threshold)
