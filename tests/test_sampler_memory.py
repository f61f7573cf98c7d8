"""A row's denoising step holds at most two full-vocabulary float32 tensors: its logits and the probabilities."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import sys

import pytest
import torch

from dgemma.config import SamplerConfig
from dgemma.sampling import denoise_step
from dgemma.sampling.constraints import CanvasConstraint

C, V = 16, 262_144  # 16 MiB per full-vocabulary float32 canvas
M_MMAP_THRESHOLD = -3

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def _peak_new_bytes(fn) -> int:
    """Resident memory the call added at its peak: every large block is its own mmap (threshold
    fixed at 1 MiB, so glibc does not start serving them from pages already resident)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    base = _status("VmRSS")
    fn()
    return _status("VmHWM") - base


@pytest.mark.parametrize("constrained", [False, True])
def test_step_adds_one_vocabulary_tensor_at_most(constrained: bool) -> None:
    g = torch.Generator().manual_seed(0)
    constraint = None
    if constrained:
        fixed = torch.zeros(C, dtype=torch.bool)
        fixed[:4] = True
        constraint = CanvasConstraint(
            fixed, torch.zeros(C, dtype=torch.long), torch.rand(C, V, generator=g) < 0.5
        )
        assert constraint.disallowed is not None  # built once per canvas, not per step
    sampler = SamplerConfig(max_denoising_steps=8)
    canvas, history = torch.zeros(C, dtype=torch.long), torch.full((1, C), -1)
    step = lambda logits: denoise_step(logits, canvas, history, 4, sampler, g, constraint)  # noqa: E731
    step(torch.randn(C, V, generator=g))  # the first call of a process initializes kernels' buffers
    vocab_tensor = C * V * 4
    for _ in range(2):
        logits = torch.randn(C, V, generator=g)
        added = _peak_new_bytes(lambda logits=logits: step(logits))
        assert added <= 1.25 * vocab_tensor, f"step added {added / vocab_tensor:.2f} vocabulary tensors"
