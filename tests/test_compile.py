"""torch.compile path: the compiled model generates exactly what the eager one does."""

from __future__ import annotations

import pytest
import torch

import dgemma

SAMPLER = dict(max_denoising_steps=8, stability_threshold=1, confidence_threshold=0.005)


@pytest.mark.slow
def test_compiled_generation_equals_eager(conditioned):
    directory, _, eager = conditioned
    compiled = dgemma.load(directory, compile=True)
    V = eager.config.vocab_size
    prompts = [
        torch.randint(5, V, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (9, 14)
    ]
    for prompt in prompts:  # a second prompt length exercises the dynamic shapes
        expected = eager.generate(prompt, max_new_tokens=24, seed=2, **SAMPLER)
        got = compiled.generate(prompt, max_new_tokens=24, seed=2, **SAMPLER)
        assert got.token_ids == expected.token_ids
