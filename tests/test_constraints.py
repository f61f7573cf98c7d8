"""Canvas constraints: clamped tokens never change, allowed sets hold, edits keep the outside exactly."""

from __future__ import annotations

import random

import pytest
import torch

from dgemma.config import SamplerConfig
from dgemma.engine.diffusion import run_diffusion
from dgemma.engine.events import CommitEvent, DraftEvent
from dgemma.engine.request import Request
from dgemma.sampling import denoise_step
from dgemma.sampling.constraints import CanvasConstraint

SAMPLER = SamplerConfig(max_denoising_steps=6, entropy_bound=0.5)


def test_denoise_step_never_samples_or_renoises_clamped_positions():
    g = torch.Generator().manual_seed(0)
    C, V = 16, 40
    fixed = torch.rand(C, generator=g) < 0.4
    tokens = torch.randint(0, V, (C,), generator=g)
    allowed = torch.rand(C, V, generator=g) < 0.3
    allowed[:, 0] = True
    constraint = CanvasConstraint(fixed, tokens, allowed)
    canvas = constraint.clamp(torch.randint(0, V, (C,), generator=g))
    history = torch.full((1, C), -1)
    for step in range(30):
        out = denoise_step(
            5 * torch.randn(C, V, generator=g), canvas, history, 6 - step % 6, SAMPLER, g, constraint
        )
        assert torch.equal(out.canvas[fixed], tokens[fixed]) and torch.equal(out.argmax[fixed], tokens[fixed])
        free = ~fixed
        assert allowed[free.nonzero().squeeze(-1), out.argmax[free]].all()  # argmax within the allowed sets
        accepted_free = free & out.accepted
        assert allowed[accepted_free.nonzero().squeeze(-1), out.canvas[accepted_free]].all()
        assert (out.entropy[fixed] == 0).all()  # clamped positions take no entropy budget
        canvas, history = out.canvas, out.history


def test_engine_keeps_clamped_tokens_in_every_draft_and_commit(model):
    V, C = model.config.vocab_size, model.config.canvas_length
    rng = random.Random(1)
    fixed = {p: rng.randrange(5, V) for p in rng.sample(range(30), 12)}  # across four canvases
    allowed = {p: (7, 8, 9) for p in range(30) if p not in fixed and p % 5 == 0}
    req = Request([5, 6, 7, 8, 9, 10], 30, SAMPLER, 3, (), fixed=fixed, allowed=allowed, banned=(1, 2))
    drafts = commits = 0
    tokens = []
    for event in run_diffusion(model.model, [req], emit_drafts=True):
        if isinstance(event, DraftEvent):
            drafts += 1
            for p, tok in fixed.items():
                if p // C == event.canvas_index:
                    assert int(event.tokens[p % C]) == tok
        elif isinstance(event, CommitEvent):
            commits += 1
            tokens += event.tokens
    assert drafts >= 4 and commits == 4 and len(tokens) == 30
    assert all(tokens[p] == t for p, t in fixed.items())
    assert all(tokens[p] in (7, 8, 9) for p in allowed)
    assert not {1, 2} & {t for p, t in enumerate(tokens) if p not in fixed}


@pytest.mark.parametrize("seed", range(5))
def test_edit_keeps_text_outside_the_span(model, seed):
    text = "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b"
    rng = random.Random(seed)
    start = rng.randrange(len(text))
    end = rng.randrange(start, len(text) + 1)
    r = model.edit(text, start, end, length=rng.choice([1, 3, "auto"]), seed=seed, max_denoising_steps=4)
    assert r.text[:start] == text[:start] and r.text[len(r.text) - (len(text) - end) :] == text[end:]
    assert r.text == text[:start] + r.fill + text[end:]


def test_suffix_survives_tokenizer_merges_across_the_gap(model):
    tok = model.codec.tokenizer
    prefix, suffix = "Sunl", "ight scatters"
    joined = tok.encode(prefix + suffix, add_special_tokens=False).ids
    apart = (
        tok.encode(prefix, add_special_tokens=False).ids + tok.encode(suffix, add_special_tokens=False).ids
    )
    assert joined != apart  # the tokenizer merges across this boundary
    r = model.infill(prefix, suffix, length=2, max_denoising_steps=4)
    assert r.text.startswith(prefix) and r.text.endswith(suffix) and r.text == prefix + r.fill + suffix


def test_gap_longer_than_a_canvas_and_auto_length(model):
    C = model.config.canvas_length
    r = model.infill("def f(x):\n", "\n    return y", length=2 * C + 3, max_denoising_steps=3)
    assert r.length == 2 * C + 3 and r.text.endswith("\n    return y")
    auto = model.infill("a", "b", candidates=(1, 5, 12), max_denoising_steps=3)
    assert set(auto.candidates) == {1, 5, 12} and auto.score == min(auto.candidates.values())
    assert auto.length == min(auto.candidates, key=lambda n: (auto.candidates[n], n))


def test_bad_constraint_input(model):
    with pytest.raises(ValueError, match="length"):
        model.infill("a", "b", length=0)
    with pytest.raises(ValueError, match="length"):
        model.infill("a", "b", length="long")
    with pytest.raises(ValueError, match="start"):
        model.edit("abc", 2, 1)
    with pytest.raises(ValueError, match="position 9"):
        Request([5], 4, SAMPLER, 0, (), fixed={9: 5})
    with pytest.raises(ValueError, match="diffusion mode"):
        from dgemma.engine.autoregressive import run_autoregressive

        list(run_autoregressive(model.model, [Request([5], 4, SAMPLER, 0, (), fixed={1: 5})]))


def test_infill_and_edit_commands(checkpoint):
    import json

    from tests.cli import one_line_error, run, run_subprocess

    d = str(checkpoint[0])
    proc = run_subprocess(  # the infill command's smoke test through `python -m dgemma`
        "infill",
        "--model",
        d,
        "--prefix",
        "def add(a, b):\n    return ",
        "--suffix",
        "\n",
        "--length",
        "3",
        "--json",
        "--max_denoising_steps",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["length"] == 3 and out["text"] == "def add(a, b):\n    return " + out["fill"] + "\n"
    text = "The quick brown fox."
    proc = run(
        "edit", "--model", d, "--text", text, "--start", "4", "--end", "9", "--max_denoising_steps", "3"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The ") and proc.stdout.endswith(" brown fox.\n")
    one_line_error(run("edit", "--model", d, "--text", "abc", "--start", "2", "--end", "1"), "start")
    one_line_error(run("infill", "--model", d, "--prefix", "a", "--suffix", "b", "--length", "x"), "--length")


def test_fully_clamped_canvases_cost_no_denoising_steps(model):
    """A canvas whose kept positions are all clamped is committed as it is: no decoder pass (a
    structured-output round renoising one slot pays only for the canvases that slot touches)."""
    C = model.config.canvas_length
    fixed = {p: 7 + p % 5 for p in range(2 * C)}  # canvases 0 and 1 clamped, canvas 2 free
    req = Request([3, 4, 5], 3 * C, SAMPLER, 0, (), fixed=fixed)
    (completion,) = [e for e in run_diffusion(model.model, [req]) if hasattr(e, "completions")][0].completions
    assert completion.token_ids[: 2 * C] == [fixed[p] for p in range(2 * C)]
    assert completion.stats.steps_per_canvas[:2] == [0, 0] and completion.stats.steps_per_canvas[2] >= 1
    assert completion.stats.decoder_passes == completion.stats.steps_per_canvas[2]
    short = Request([3, 4, 5], C // 2, SAMPLER, 0, (), fixed={p: 9 for p in range(C // 2)})  # the rest is cut
    (done,) = [e for e in run_diffusion(model.model, [short]) if hasattr(e, "completions")]
    assert done.completions[0].token_ids == [9] * (C // 2) and done.completions[0].stats.decoder_passes == 0
