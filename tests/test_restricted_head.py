"""The LM head over the allowed ids alone, where every free position of a canvas is limited to a few
tokens (numbers, enums, booleans, Sudoku digits): the same step as the full head's, fewer FLOPs."""

from __future__ import annotations

import json

import jsonschema
import torch

from dgemma.sampling import constraints as constraints_module
from dgemma.sampling import denoise_step
from dgemma.sampling.constraints import CanvasConstraint

NUMBERS = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 999},
        "flag": {"type": "boolean"},
        "kind": {"enum": ["red", "green"]},
    },
    "required": ["n", "flag", "kind"],
}


def _constraint(C, V, allowed_ids, fixed_at=(), kept=None):
    fixed = torch.zeros(C, dtype=torch.bool)
    tokens = torch.zeros(C, dtype=torch.long)
    allowed = torch.zeros(C, V, dtype=torch.bool)
    allowed[:, allowed_ids] = True
    for p in fixed_at:
        fixed[p], tokens[p] = True, 1 + p
    return CanvasConstraint(fixed, tokens, allowed, kept)


def test_head_ids_only_when_every_kept_free_position_is_limited():
    C, V = 6, 100
    c = _constraint(C, V, [3, 5, 9], fixed_at=(0, 1))
    assert c.head_ids.tolist() == [3, 5, 9]
    wide = _constraint(C, V, list(range(60)))  # more than half the vocabulary
    assert wide.head_ids is None
    free = _constraint(C, V, [3])
    free.allowed[4] = True  # one position free to become anything
    assert free.head_ids is None
    assert CanvasConstraint(free.fixed, free.tokens, free.allowed, kept=4).head_ids.tolist() == [3]
    assert _constraint(C, V, [3], fixed_at=range(C)).head_ids is None  # nothing to sample
    assert CanvasConstraint(c.fixed, c.tokens, None).head_ids is None


def test_a_step_with_the_restricted_head_is_the_full_heads(conditioned):
    """The same tokens, canvas and self-conditioning input from the head over the allowed ids
    as from the full head, on the model's own hidden states."""
    _, _, model = conditioned
    C, V = model.config.canvas_length, model.config.vocab_size
    hidden = torch.randn(C, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    c = _constraint(C, V, [11, 40, 41, 97, 200], fixed_at=(0, 3))
    sampler = model.builder.sampler
    history = torch.full((sampler.stability_threshold, C), -1, dtype=torch.long)
    canvas = torch.zeros(C, dtype=torch.long)
    with torch.inference_mode():
        full = model.model.logits(hidden)
        few = c.widen(model.model.logits(hidden, c.head_ids), V)
        torch.testing.assert_close(few[:, c.head_ids], full[:, c.head_ids], rtol=1e-5, atol=1e-5)
        a, b = (
            denoise_step(x, canvas, history, 4, sampler, torch.Generator().manual_seed(1), c)
            for x in (full, few)
        )
    assert torch.equal(a.argmax, b.argmax) and torch.equal(a.canvas, b.canvas) and a.stop == b.stop
    torch.testing.assert_close(a.probs, b.probs, rtol=1e-5, atol=1e-6)


def test_generation_uses_it_and_still_validates(conditioned, monkeypatch):
    _, _, model = conditioned
    widths = []
    real = model.model.logits

    def spy(hidden, ids=None, **options):
        widths.append(model.config.vocab_size if ids is None else int(ids.numel()))
        return real(hidden, ids, **options)

    monkeypatch.setattr(model.model, "logits", spy)
    out = model.generate("hi", json_schema=NUMBERS, seed=0, max_denoising_steps=3, json_candidates=1)
    jsonschema.validate(json.loads(out.texts[0]), NUMBERS)
    assert widths and min(widths) < model.config.vocab_size // 4  # digits, true/false, the options
    restricted = out.token_ids[0]
    monkeypatch.setattr(constraints_module, "HEAD_SHARE", -1.0)  # never restrict
    again = model.generate("hi", json_schema=NUMBERS, seed=0, max_denoising_steps=3, json_candidates=1)
    assert again.token_ids[0] == restricted
