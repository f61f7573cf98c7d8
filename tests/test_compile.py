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


@pytest.mark.slow
def test_the_compiled_passes_run_without_a_graph_break(conditioned):
    """A host read inside the decoder (an expert capacity, a per-expert count) breaks the graph, and
    dynamo then runs the whole layer loop eagerly: compiled would be no faster than eager. The
    experts' eager dense shortcut is turned off, as on the issue-15 config, where the padded path
    (one host read) runs eagerly."""
    from torch._dynamo.utils import counters

    directory, _, eager = conditioned
    compiled = dgemma.load(directory, compile=True)
    for layer in compiled.model.layers:
        layer.experts.dense_inference = False
    counters.clear()
    prompt = torch.randint(5, eager.config.vocab_size, (11,), generator=torch.Generator().manual_seed(0))
    compiled.generate(prompt.tolist(), max_new_tokens=16, seed=0, **SAMPLER)
    assert not counters["graph_break"], dict(counters["graph_break"])
